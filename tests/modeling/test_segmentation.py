"""
Semantic segmentation models (disalign.modeling.segmentation): the DisAlign heads' per-pixel
math, stage 2 trains only the alignment, and the post-hoc classifiers (tau-normalisation, logit
adjustment) per pixel against formulas computed here.
"""

import itertools
import math
import os

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer
from PIL import Image
from torch.nn import functional as F

from disalign import DisAlignFCNHead, DistributionAlignment
from disalign.data import build_train_loader
from disalign.input_checks import InputError
from disalign.modeling.decoupled import PostHocClassifier

from conftest import REPO_ROOT, RecordingTrainer, load_config

BASELINE = os.path.join(REPO_ROOT, "configs/Miniature-Seg/deeplabv3plus_R_18_baseline.yaml")
DISALIGN = os.path.join(REPO_ROOT, "configs/Miniature-Seg/deeplabv3plus_R_18_disalign.yaml")
SMALL = ["MODEL.WEIGHTS", "", "SOLVER.IMS_PER_BATCH", 2, "DATALOADER.NUM_WORKERS", 0]


def _set_alignment(alignment, k):
    with torch.no_grad():
        alignment.alpha.copy_(torch.linspace(0.5, 2.0, k))
        alignment.beta.copy_(torch.linspace(-1.0, 1.0, k))
        alignment.confidence.weight.normal_(0, 0.5)


def _expected(alignment, z, y):
    # the confidence is a 1x1 convolution of the features to one channel
    w = alignment.confidence.weight.view(1, -1, 1, 1)
    sigma = torch.sigmoid(F.conv2d(y, w, alignment.confidence.bias))  # (N, 1, h, w)
    s = alignment.alpha.view(1, -1, 1, 1) * z + alignment.beta.view(1, -1, 1, 1)
    return sigma * s + (1 - sigma) * z


def test_fcn_head_aligns_every_pixel_and_class():
    torch.manual_seed(0)
    k, d = 5, 6
    head = DisAlignFCNHead(
        {"res5": ShapeSpec(channels=8, stride=8)},
        in_feature="res5",
        num_classes=k,
        conv_dims=d,
        norm="",
        alignment=DistributionAlignment(k, d),
    ).eval()
    _set_alignment(head.alignment, k)
    features = {"res5": torch.randn(2, 8, 4, 3)}
    with torch.no_grad():
        y = head.convs(features["res5"])
        expected = _expected(head.alignment, head.cls_score(y), y)
        torch.testing.assert_close(head.logits(features), expected)
        logits, _ = head(features)
    assert logits.shape == (2, k, 32, 24)  # upsampled by the feature's stride


def test_deeplab_head_aligns_the_decoder_logits():
    torch.manual_seed(0)
    model = build_model(load_config(DISALIGN, *SMALL)).eval()
    head = model.sem_seg_head
    assert head.alignment.num_aligned == 20 and not hasattr(head, "predictor")
    _set_alignment(head.alignment, 20)
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, 128, 128))  # the crop size
        y = head.layers(features)  # the decoder output
        torch.testing.assert_close(
            head.logits(features), _expected(head.alignment, head.cls_score(y), y)
        )


def test_segmentor_stage2_trains_only_the_alignment(tmp_path):
    torch.manual_seed(0)
    cfg = load_config(DISALIGN, *SMALL, "SOLVER.BASE_LR", 0.5)
    model = build_model(cfg)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        f"sem_seg_head.alignment.{n}"
        for n in ("alpha", "beta", "confidence.weight", "confidence.bias")
    }
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = RecordingTrainer(model, build_train_loader(cfg), build_optimizer(cfg, model))
    trainer.train(0, 2)
    assert trainer.loss_names == [["loss_sem_seg"]] * 2
    assert not model.backbone.training and model.sem_seg_head.training
    assert not model.sem_seg_head.decoder.training
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == trainable and any("running_mean" in k for k in before)


# --- post-hoc classifiers per pixel (disalign.modeling.decoupled.PostHocClassifier) ----------

HAND_WEIGHT = [[3.0, -4.0], [1.0, 0.0], [0.0, 2.0]]  # (K, D) = (3, 2), row norms 5, 1, 2
HAND_NORMS = [5.0, 1.0, 2.0]
HAND_BIAS = [0.5, -0.5, 0.25]
TAU_NORM = os.path.join(REPO_ROOT, "configs/Miniature-Seg/deeplabv3plus_R_18_tau_norm.yaml")
LOGIT_ADJUSTMENT = os.path.join(
    REPO_ROOT, "configs/Miniature-Seg/deeplabv3plus_R_18_logit_adjustment.yaml"
)


def _hand_head(post_hoc):
    """An FCN head with D = 2, K = 3 and the hand-made 1x1 classifier; its (2, 4, 3, 5) input."""
    torch.manual_seed(0)
    head = DisAlignFCNHead(
        {"res5": ShapeSpec(channels=4, stride=8)},
        in_feature="res5",
        num_classes=3,
        conv_dims=2,
        norm="",
        post_hoc=post_hoc,
    )
    with torch.no_grad():
        head.cls_score.weight.copy_(torch.tensor(HAND_WEIGHT).view(3, 2, 1, 1))
        head.cls_score.bias.copy_(torch.tensor(HAND_BIAS))
    return head, {"res5": torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(1))}


def _per_pixel(head, features, formula):
    """
    The head's inference logits (N, K, h, w), and ``formula(j, x)`` computed here for every pixel
    x (its D features as floats, from the head's convolutions) and class j.
    """
    head.eval()
    with torch.no_grad():
        y = head.convs(features["res5"])  # (N, D, h, w)
        logits = head.logits(features)
    assert logits.shape == (2, 3, 3, 5) and (y > 0).sum() > 10  # not all pixels ReLU'd to 0
    expected = torch.zeros_like(logits)
    for n, a, b in itertools.product(range(2), range(3), range(5)):
        x = [float(v) for v in y[n, :, a, b]]
        for j in range(3):
            expected[n, j, a, b] = formula(j, x)
    return logits, expected


def _plain(j, x):
    """Stage 1's logit of class j for the pixel features x: w_j . x + b_j."""
    return sum(w * v for w, v in zip(HAND_WEIGHT[j], x)) + HAND_BIAS[j]


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_per_pixel_tau_norm_equals_the_formula(tau):
    head, features = _hand_head(PostHocClassifier("tau_norm", 3, 2, tau=tau))
    logits, expected = _per_pixel(
        head,
        features,
        lambda j, x: sum(w * v for w, v in zip(HAND_WEIGHT[j], x)) / HAND_NORMS[j] ** tau,
    )
    torch.testing.assert_close(logits, expected)


def test_per_pixel_logit_adjustment_with_given_priors():
    counts = [600, 300, 100]  # pi = 0.6, 0.3, 0.1
    post_hoc = PostHocClassifier("logit_adjustment", 3, 2, tau=0.7, class_counts=lambda: counts)
    head, features = _hand_head(post_hoc)
    pi = [0.6, 0.3, 0.1]
    logits, expected = _per_pixel(
        head, features, lambda j, x: _plain(j, x) - 0.7 * math.log(pi[j])
    )
    torch.testing.assert_close(logits, expected)


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_per_pixel_uniform_priors_change_no_pixels_class(tau):
    post_hoc = PostHocClassifier("logit_adjustment", 3, 2, tau=tau, class_counts=lambda: [5] * 3)
    head, features = _hand_head(post_hoc)
    logits, plain = _per_pixel(head, features, _plain)
    torch.testing.assert_close(logits - plain, torch.full_like(plain, tau * math.log(3)))
    assert torch.equal(logits.argmax(dim=1), plain.argmax(dim=1))
    assert len(plain.argmax(dim=1).unique()) > 1  # pixels of more than one class


def test_per_pixel_tau_zero_gives_stage_1s_logits():
    # logit adjustment: stage 1 itself; tau-normalisation: stage 1 without its bias
    post_hoc = PostHocClassifier("logit_adjustment", 3, 2, tau=0.0, class_counts=lambda: [9, 3, 1])
    logits, plain = _per_pixel(*_hand_head(post_hoc), _plain)
    torch.testing.assert_close(logits, plain)
    logits, expected = _per_pixel(
        *_hand_head(PostHocClassifier("tau_norm", 3, 2, tau=0.0)),
        lambda j, x: _plain(j, x) - HAND_BIAS[j],
    )
    torch.testing.assert_close(logits, expected)


def test_per_pixel_training_mode_is_the_plain_classifier():
    head, features = _hand_head(PostHocClassifier("tau_norm", 3, 2, tau=1.0))
    head.train()
    with torch.no_grad():
        torch.manual_seed(5)  # the same dropout mask twice
        logits = head.logits(features)
        torch.manual_seed(5)
        plain = head.cls_score(head.dropout(head.convs(features["res5"])))
    assert torch.equal(logits, plain)


def test_per_pixel_post_hoc_needs_a_1x1_classifier():
    with pytest.raises(ValueError, match="needs a 1x1 convolution classifier"):
        PostHocClassifier("tau_norm", 3, 2)(torch.randn(1, 2, 4, 4), torch.nn.Conv2d(2, 3, 3))


def _training_pixel_counts(num_classes):
    """Pixels per class of the miniature's training label images, read here."""
    labels = MetadataCatalog.get("miniature_seg_train").sem_seg_root
    counts = np.zeros(256, dtype=np.int64)
    for name in os.listdir(labels):
        pixels = np.asarray(Image.open(os.path.join(labels, name)))
        counts += np.bincount(pixels.ravel(), minlength=256)
    return counts[:num_classes].tolist()


def _post_hoc_module(model):
    (module,) = [m for m in model.modules() if isinstance(m, PostHocClassifier)]
    return module


def test_deeplab_logit_adjustment_priors_are_the_training_pixels_and_tau_is_settable():
    # as a tuner drives it: build the config's model, find its post-hoc module, set its tau
    model = build_model(load_config(LOGIT_ADJUSTMENT, *SMALL)).eval()
    head, post_hoc = model.sem_seg_head, _post_hoc_module(model)
    assert post_hoc is head.post_hoc and post_hoc.tau == 1.0
    counts = _training_pixel_counts(20)
    assert min(counts) < max(counts) / 100  # a long tail: the adjustment is no constant shift
    log_prior = torch.tensor([math.log(n / sum(counts)) for n in counts]).view(1, -1, 1, 1)
    images = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        features = model.backbone(images)
        plain = head.cls_score(head.layers(features))  # (N, K, h, w), stage 1's
        for tau in (0.25, 1.5):
            post_hoc.tau = tau
            torch.testing.assert_close(head.logits(features), plain - tau * log_prior)


def test_deeplab_tau_norm_per_pixel_of_the_decoder_output():
    model = build_model(load_config(TAU_NORM, *SMALL, "MODEL.DECOUPLED.TAU", 0.5)).eval()
    head = model.sem_seg_head
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, 128, 128))
        y = head.layers(features)  # (1, D, h, w)
        weight = head.cls_score.weight[:, :, 0, 0]  # (K, D)
        norms = weight.pow(2).sum(dim=1).sqrt()
        expected = torch.einsum("kd,ndhw->nkhw", weight, y) / norms.pow(0.5).view(1, -1, 1, 1)
        torch.testing.assert_close(head.logits(features), expected, rtol=1e-4, atol=1e-5)


def test_segmentor_training_is_untouched_by_post_hoc():
    # the training loss of a post-hoc config's model is stage 1's, from the same weights
    g = torch.Generator().manual_seed(4)
    batch = [
        {
            "image": torch.randint(0, 256, (3, 128, 128), generator=g, dtype=torch.uint8),
            "sem_seg": torch.randint(0, 20, (128, 128), generator=g),
        }
        for _ in range(2)
    ]
    losses = []
    for config in (BASELINE, TAU_NORM, LOGIT_ADJUSTMENT):
        torch.manual_seed(0)  # the same initial weights
        model = build_model(load_config(config, *SMALL)).train()
        losses.append(model(batch)["loss_sem_seg"])
    assert torch.equal(losses[0], losses[1]) and torch.equal(losses[0], losses[2])


def test_segmentation_refuses_ncm():
    with pytest.raises(InputError, match="'ncm' is for image classification; a segmentation"):
        build_model(load_config(TAU_NORM, *SMALL, "MODEL.DECOUPLED.POST_HOC", "ncm"))
