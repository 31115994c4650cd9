"""
The decoupled long-tail baselines (disalign.modeling.decoupled, and the choice of tau in
tools/compare_methods.py): each checked against values computed here by hand or from the
stage-1 model, not by the functions under test. Their class-balanced sampler is tested in
tests/data/test_resumable.py.
"""

import math
import os
import sys
from collections import Counter

import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer
from torch.nn import functional as F

from disalign.engine.checkpoint import SafeDetectionCheckpointer
from disalign.input_checks import InputError
from disalign.modeling.decoupled import (
    PostHocClassifier,
    adjusted_logits,
    class_mean_features,
    ncm_logits,
    tau_normalized_weight,
)

from conftest import REPO_ROOT, json_class_counts, load_config

sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
import compare_methods  # noqa: E402

MINIATURE = os.path.join(REPO_ROOT, "configs", "Miniature-LT")
K, D = 36, 512  # the miniature's classes, ResNet-18's feature size


def _config(name, *opts):
    return load_config(os.path.join(MINIATURE, name), "MODEL.WEIGHTS", "", *opts)


def _images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return [{"image": image, "label": i % K} for i, image in enumerate(images)]


@pytest.fixture(scope="module")
def stage1_weights(tmp_path_factory):
    """A stage-1 model's checkpoint (random weights, BN statistics moved off their init)."""
    torch.manual_seed(0)
    model = build_model(_config("resnet18_baseline.yaml"))
    model.train()
    with torch.no_grad():
        for _ in range(2):  # BatchNorm running statistics away from 0 / 1
            model.logits(model.preprocess(_images(8)))
        model.cls_score.bias.normal_()
    path = tmp_path_factory.mktemp("stage1") / "model_final.pth"
    torch.save({"model": model.state_dict()}, path)
    return str(path)


def _loaded(config, weights, *opts):
    cfg = _config(config, *opts)
    model = build_model(cfg)
    SafeDetectionCheckpointer(model).load(weights)
    return cfg, model


# --- post-hoc classifiers -------------------------------------------------------------------


def test_tau_zero_leaves_the_logits_unchanged():
    g = torch.Generator().manual_seed(1)
    weight, x = torch.randn(5, 7, generator=g), torch.randn(4, 7, generator=g)
    assert torch.equal(tau_normalized_weight(weight, 0.0), weight)
    head = torch.nn.Linear(7, 5, bias=False)
    head.weight.data.copy_(weight)
    tau_norm = PostHocClassifier("tau_norm", 5, 7, tau=0.0)
    assert torch.equal(tau_norm(x, head), head(x))
    z = torch.randn(4, 5, generator=g)
    assert torch.equal(adjusted_logits(z, [100, 10, 1, 1, 3], 0.0), z)
    counts = [9, 1, 1, 1, 1]
    adjust = PostHocClassifier("logit_adjustment", 5, 7, tau=0.0, class_counts=lambda: counts)
    head.bias = torch.nn.Parameter(torch.randn(5, generator=g))
    assert torch.equal(adjust(x, head), head(x))


def test_tau_norm_equals_the_formula_on_a_hand_made_weight():
    weight = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])  # row norms 5, 1, 2
    expected_tau1 = torch.tensor([[0.6, 0.8], [1.0, 0.0], [0.0, 1.0]])
    assert torch.allclose(tau_normalized_weight(weight, 1.0), expected_tau1)
    expected_half = torch.tensor(
        [[3 / math.sqrt(5), 4 / math.sqrt(5)], [1.0, 0.0], [0.0, 2 / math.sqrt(2)]]
    )
    assert torch.allclose(tau_normalized_weight(weight, 0.5), expected_half)
    # through the post-hoc classifier: the bias is dropped
    head = torch.nn.Linear(2, 3)
    head.weight.data.copy_(weight)
    head.bias.data.fill_(100.0)
    x = torch.tensor([[1.0, 1.0], [2.0, -1.0]])
    logits = PostHocClassifier("tau_norm", 3, 2, tau=1.0)(x, head)
    expected = torch.tensor([[1.4, 1.0, 1.0], [0.4, 2.0, -1.0]])
    assert torch.allclose(logits, expected)


def test_logit_adjustment_by_hand_and_uniform_frequencies_change_no_ranking():
    z = torch.tensor([[2.0, 1.0]])
    # counts 1 and 3: pi = (1/4, 3/4); z - 1 * log(pi)
    expected = torch.tensor([[2.0 - math.log(0.25), 1.0 - math.log(0.75)]])
    assert torch.allclose(adjusted_logits(z, [1, 3], 1.0), expected)
    g = torch.Generator().manual_seed(2)
    z = torch.randn(50, 10, generator=g)
    for tau in (0.5, 1.0, 2.0):
        adjusted = adjusted_logits(z, [7] * 10, tau)
        assert torch.equal(adjusted.argsort(dim=1), z.argsort(dim=1))
        assert torch.allclose(adjusted - z, torch.full_like(z, tau * math.log(10)))


def test_ncm_classifies_class_means_to_their_own_class():
    g = torch.Generator().manual_seed(3)
    labels = torch.arange(6).repeat_interleave(torch.tensor([50, 20, 9, 5, 2, 1]))
    centres = torch.randn(6, 16, generator=g) * 3
    features = centres[labels] + torch.randn(len(labels), 16, generator=g)
    total = class_mean_features(features, labels, 6)
    hand_means = torch.stack([features[labels == c].mean(0) for c in range(6)])
    ncm = PostHocClassifier("ncm", 6, 16)
    assert ncm.needs_class_means
    ncm.set_class_means(total["sums"], total["counts"])
    assert torch.allclose(ncm.class_means, hand_means, atol=1e-5)
    assert torch.equal(ncm(hand_means, None).argmax(dim=1), torch.arange(6))
    cosine = F.normalize(features, dim=1) @ F.normalize(hand_means, dim=1).T
    assert torch.allclose(ncm_logits(features, hand_means), cosine, atol=1e-6)


def test_ncm_model_computes_its_class_means_from_the_training_images(stage1_weights):
    cfg, model = _loaded("resnet18_ncm.yaml", stage1_weights)
    batches = [_images(6, seed=4), _images(4, seed=5)]
    model.class_mean_batches = lambda: iter(batches)
    model.eval()
    outputs = model(batches[0])
    images = [x for batch in batches for x in batch]
    with torch.no_grad():
        features = model.features(model.preprocess(images))
    labels = torch.tensor([x["label"] for x in images])
    seen = sorted(set(labels.tolist()))
    hand = torch.stack([features[labels == c].mean(0) for c in seen])
    assert torch.allclose(model.post_hoc.class_means[seen], hand, atol=1e-5)
    unseen = [c for c in range(K) if c not in seen]
    assert torch.equal(model.post_hoc.class_means[unseen], torch.zeros(len(unseen), D))
    assert len(outputs) == 6 and outputs[0]["logits"].shape == (K,)


# --- LWS and cRT on the stage-1 model --------------------------------------------------------


def test_lws_with_scales_one_equals_stage_1_exactly(stage1_weights):
    _, stage1 = _loaded("resnet18_baseline.yaml", stage1_weights)
    _, lws = _loaded("resnet18_lws.yaml", stage1_weights)
    assert torch.equal(lws.alignment.alpha, torch.ones(K))
    assert lws.alignment.beta is None and lws.alignment.confidence is None
    stage1.eval(), lws.eval()
    inputs = _images(10, seed=6)
    with torch.no_grad():
        assert torch.equal(lws(inputs)[3]["logits"], stage1(inputs)[3]["logits"])
        expected = stage1.logits(stage1.preprocess(inputs))
        assert torch.equal(lws.logits(lws.preprocess(inputs)), expected)


def _train_steps(cfg, model, steps=3):
    model.train()
    optimizer = build_optimizer(cfg, model)
    for step in range(steps):
        loss = sum(model(_images(8, seed=10 + step)).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize(
    "config, trainable",
    [
        ("resnet18_crt.yaml", {"cls_score.weight", "cls_score.bias"}),
        ("resnet18_lws.yaml", {"alignment.alpha"}),
    ],
)
def test_stage_2_trains_only_what_it_should(stage1_weights, config, trainable):
    cfg, model = _loaded(config, stage1_weights)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _train_steps(cfg, model)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == trainable
    # everything else is the stage-1 model's, bit for bit (buffers included)
    stage1 = torch.load(stage1_weights, weights_only=True)["model"]
    for key, value in stage1.items():
        if key not in trainable:
            assert torch.equal(after[key], value), key


def test_crt_reinitialises_the_classifier_from_stage_1_and_resumes_its_own(
    stage1_weights, tmp_path
):
    stage1 = torch.load(stage1_weights, weights_only=True)["model"]
    torch.manual_seed(7)
    cfg, crt = _loaded("resnet18_crt.yaml", stage1_weights)
    torch.manual_seed(7)
    fresh = build_model(_config("resnet18_crt.yaml"))
    # the classifier is the fresh initialisation, N(0, 0.01^2) and zero bias, not stage 1's
    assert torch.equal(crt.cls_score.weight, fresh.cls_score.weight)
    assert torch.equal(crt.cls_score.bias, torch.zeros(K))
    assert not torch.equal(crt.cls_score.weight, stage1["cls_score.weight"])
    assert torch.equal(crt.backbone.stem.conv1.weight, stage1["backbone.stem.conv1.weight"])
    # a checkpoint of the cRT model itself (--resume) loads its trained classifier
    _train_steps(cfg, crt)
    path = tmp_path / "model_0000002.pth"
    torch.save({"model": crt.state_dict()}, path)
    _, resumed = _loaded("resnet18_crt.yaml", str(path))
    for key, value in crt.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


# --- tuning ------------------------------------------------------------------------------------


def test_tau_is_chosen_on_the_held_out_split_only(stage1_weights):
    cfg, model = _loaded("resnet18_logit_adjustment.yaml", stage1_weights)
    model.eval()
    g = torch.Generator().manual_seed(8)
    held_out = (torch.randn(72, D, generator=g).abs(), torch.arange(72) % K)
    asked = []

    def only_held_out(name):
        asked.append(name)
        if name != cfg.MODEL.DECOUPLED.TUNE_DATASET:
            raise AssertionError(f"tuning read '{name}'")
        return held_out

    counts = list(range(1, K + 1))

    def top1(name):
        return compare_methods.accuracies(model, *only_held_out(name), counts)["top1"]

    tau, scores = compare_methods.choose_tau(cfg, [model.post_hoc], top1)
    assert set(asked) == {"miniature_lt_val"}  # once per tau, never the test split
    assert list(scores) == list(cfg.MODEL.DECOUPLED.TAU_GRID) and tau in scores
    # the chosen tau has the best held-out top-1, computed here from the formula with the
    # training frequencies counted from the split file
    with open(MetadataCatalog.get("miniature_lt_train").json_file) as f:
        train = Counter(int(line.split()[1]) for line in f if line.strip())
    prior = torch.tensor([train[c] for c in range(K)], dtype=torch.float64) / sum(train.values())
    z = F.linear(held_out[0], model.cls_score.weight, model.cls_score.bias)
    best = max(
        100.0 * float(((z - t * prior.log().float()).argmax(1) == held_out[1]).float().mean())
        for t in scores
    )
    assert scores[tau] == pytest.approx(best)
    # the reported split, or no held-out split, is refused
    for tune in ("miniature_lt_test", ""):
        cfg.defrost()
        cfg.MODEL.DECOUPLED.TUNE_DATASET = tune
        with pytest.raises(ValueError, match="TUNE_DATASET"):
            compare_methods.choose_tau(cfg, [model.post_hoc], top1)


def test_post_hoc_results_do_not_depend_on_the_test_split_for_tau(stage1_weights):
    g = torch.Generator().manual_seed(9)
    splits = {
        "miniature_lt_train": (torch.randn(100, D, generator=g).abs(), torch.arange(100) % K),
        "miniature_lt_val": (torch.randn(72, D, generator=g).abs(), torch.arange(72) % K),
    }
    taus = []
    for test_seed in (10, 11):
        gt = torch.Generator().manual_seed(test_seed)
        test = (torch.randn(72, D, generator=gt) * test_seed, torch.randperm(72, generator=gt) % K)
        features = {**splits, "miniature_lt_test": test}
        result = compare_methods.post_hoc_results(
            "configs/Miniature-LT/resnet18_tau_norm.yaml", stage1_weights, 1, features.__getitem__
        )
        taus.append((result["tau"], result["held_out_top1"]))
    assert taus[0] == taus[1]


def test_detector_crt_reinitialises_only_the_box_classifier(tmp_path):
    lvis = os.path.join(REPO_ROOT, "configs", "Miniature-LVIS")
    opts = ("MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu")
    torch.manual_seed(0)
    baseline = os.path.join(lvis, "mask_rcnn_R_18_FPN_baseline.yaml")
    stage1 = build_model(load_config(baseline, *opts))
    path = tmp_path / "model_final.pth"
    torch.save({"model": stage1.state_dict()}, path)
    cfg = load_config(os.path.join(lvis, "mask_rcnn_R_18_FPN_crt.yaml"), *opts)
    torch.manual_seed(1)
    fresh = build_model(cfg).state_dict()
    torch.manual_seed(1)
    crt = build_model(cfg)
    SafeDetectionCheckpointer(crt).load(str(path))
    classifier = {f"roi_heads.box_predictor.cls_score.{n}" for n in ("weight", "bias")}
    trainable = {n for n, p in crt.named_parameters() if p.requires_grad}
    assert trainable == classifier
    for key, value in crt.state_dict().items():
        expected = fresh[key] if key in classifier else stage1.state_dict().get(key, value)
        assert torch.equal(value, expected), key
    weight = "roi_heads.box_predictor.cls_score.weight"
    assert not torch.equal(fresh[weight], stage1.state_dict()[weight])


def _detector_predictor(config, *opts):
    cfg = load_config(
        os.path.join(REPO_ROOT, "configs", "Miniature-LVIS", config),
        "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", *opts,
    )  # fmt: skip
    torch.manual_seed(0)
    predictor = build_model(cfg).roi_heads.box_predictor
    with torch.no_grad():
        predictor.cls_score.bias.normal_()
    return cfg, predictor


@pytest.mark.parametrize("tau", [0.5, 1.0])
def test_detector_tau_norm_changes_only_the_foreground_logits(tau):
    _, predictor = _detector_predictor("mask_rcnn_R_18_FPN_tau_norm.yaml", "MODEL.DECOUPLED.TAU",
                                       str(tau))  # fmt: skip
    weight, bias = predictor.cls_score.weight.detach(), predictor.cls_score.bias.detach()
    k = weight.shape[0] - 1
    x = torch.randn(5, weight.shape[1], generator=torch.Generator().manual_seed(1))
    predictor.eval()
    with torch.no_grad():
        scores, _ = predictor(x)
        train_scores, _ = predictor.train()(x)
    for j in range(k):  # foreground: normalised rows, no bias
        norm = math.sqrt(sum(float(v) ** 2 for v in weight[j]))
        torch.testing.assert_close(scores[:, j], x @ weight[j] / norm**tau)
    torch.testing.assert_close(scores[:, k], x @ weight[k] + bias[k])  # background: stage 1's
    torch.testing.assert_close(train_scores, x @ weight.T + bias)  # training: the plain head


def test_detector_logit_adjustment_by_hand():
    cfg, predictor = _detector_predictor(
        "mask_rcnn_R_18_FPN_logit_adjustment.yaml", "MODEL.DECOUPLED.TAU", "0.7"
    )
    counts = json_class_counts(MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).json_file, "images")
    x = torch.randn(5, predictor.cls_score.in_features, generator=torch.Generator().manual_seed(1))
    predictor.eval()
    with torch.no_grad():
        scores, _ = predictor(x)
        plain = predictor.cls_score(x)
    k = len(counts)
    for j in range(k):
        log_prior = math.log(max(counts[j], 1) / sum(max(n, 1) for n in counts))
        torch.testing.assert_close(scores[:, j], plain[:, j] - 0.7 * log_prior)
    torch.testing.assert_close(scores[:, k], plain[:, k])
    assert min(counts) < max(counts)  # the adjustment is not a constant shift


def test_detector_refuses_ncm():
    with pytest.raises(InputError, match="'ncm' is for image classification"):
        _detector_predictor("mask_rcnn_R_18_FPN_tau_norm.yaml", "MODEL.DECOUPLED.POST_HOC", "ncm")
