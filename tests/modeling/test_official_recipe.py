"""
The official code's recipe as config options: the classifier's initialisation (cvpods
DisAlignLinear), the ADE20K head's confidence sigmoid(ReLU(BN(conv1x1))) and mmseg's
"mean over all pixels" weighted cross-entropy; and their one-line errors.
"""

import math
import os

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer
from torch.nn import functional as F

from disalign import DisAlignFCNHead, DistributionAlignment, GRWCrossEntropy
from disalign.data import build_train_loader
from disalign.input_checks import InputError, check_inputs
from disalign.modeling.layers import NormalizedConfidence, build_alignment

from conftest import REPO_ROOT, RecordingTrainer, load_config

CLS_DISALIGN = os.path.join(REPO_ROOT, "configs/Miniature-LT/resnet18_disalign.yaml")
SEG_DISALIGN = os.path.join(REPO_ROOT, "configs/Miniature-Seg/deeplabv3plus_R_18_disalign.yaml")
SMALL = ["MODEL.WEIGHTS", "", "SOLVER.IMS_PER_BATCH", 2, "DATALOADER.NUM_WORKERS", 0]
OFFICIAL_CLS = ["MODEL.DISALIGN.ALPHA_INIT", 2.0, "MODEL.DISALIGN.CONFIDENCE_WEIGHT_INIT", 0.1]


def _official_disalign_linear(x, weight, bias, conf_weight, conf_bias, a, b):
    """cvpods' DisAlignLinear, written out: z^ = (1 + sigma * a) * z + sigma * b."""
    z = x @ weight.t() + bias
    sigma = torch.sigmoid(x @ conf_weight.t() + conf_bias)  # (N, 1)
    return (1 + sigma * a) * z + sigma * b


def test_official_classifier_initialisation_gives_the_official_logits():
    torch.manual_seed(0)
    model = build_model(load_config(CLS_DISALIGN, *SMALL, *OFFICIAL_CLS)).eval().double()
    alignment, cls_score = model.alignment, model.cls_score
    d = cls_score.in_features
    # the official initialisation: a = alpha - 1 = 1, b = beta = 0, constant weight 0.1 and
    # torch's default uniform(-1/sqrt(D), 1/sqrt(D)) bias
    assert torch.equal(alignment.alpha, torch.full((36,), 2.0, dtype=torch.float64))
    assert torch.equal(alignment.beta, torch.zeros(36, dtype=torch.float64))
    assert torch.equal(alignment.confidence.weight, torch.full((1, d), 0.1).double())
    assert 0 < abs(alignment.confidence.bias.item()) <= 1 / math.sqrt(d)

    images = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        x = model.backbone(images)["res5"].mean(dim=(2, 3))  # (N, D), non-negative
        conf = alignment.confidence
        official = _official_disalign_linear(
            x, cls_score.weight, cls_score.bias, conf.weight, conf.bias, 1.0, 0.0
        )
        torch.testing.assert_close(model.logits(images), official, rtol=1e-12, atol=1e-12)
        # sigma near 1 at the start: 0.1 * sum of the pooled features
        assert torch.sigmoid(conf(x)).min() > 0.9
        # and after training moves them: a = alpha - 1, b = beta
        alignment.alpha.copy_(torch.linspace(0.5, 3.0, 36))
        alignment.beta.copy_(torch.linspace(-2.0, 1.0, 36))
        conf.weight.normal_(0, 0.05)
        official = _official_disalign_linear(
            x,
            cls_score.weight,
            cls_score.bias,
            conf.weight,
            conf.bias,
            alignment.alpha - 1,
            alignment.beta,
        )
        torch.testing.assert_close(model.logits(images), official, rtol=1e-12, atol=1e-12)


def test_default_confidence_initialisation_is_the_papers():
    torch.manual_seed(0)
    layer = DistributionAlignment(3, 20000)
    assert layer.confidence.bias.item() == 0.0
    assert abs(layer.confidence.weight.std().item() - 0.01) < 0.0005
    assert abs(layer.confidence.weight.mean().item()) < 0.0005


def test_normalized_confidence_by_hand():
    layer = NormalizedConfidence(2, "BN")
    assert layer.conv.bias is None
    with torch.no_grad():
        layer.conv.weight.copy_(torch.tensor([1.0, -2.0]).view(1, 2, 1, 1))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.5], [3.0, 0.0]])
    # w . x = 1, -2, 1, 3: mean 0.75, biased variance (0.0625 + 7.5625 + 0.0625 + 5.0625) / 4
    c = [1.0, -2.0, 1.0, 3.0]
    var = 12.75 / 4
    eps = layer.norm.eps
    expected = [max((v - 0.75) / math.sqrt(var + eps), 0.0) for v in c]
    out = layer.train()(x)
    torch.testing.assert_close(out, torch.tensor(expected).view(4, 1))
    assert (torch.sigmoid(out) >= 0.5).all()
    # the running statistics moved by momentum 0.1, with the unbiased variance
    torch.testing.assert_close(layer.norm.running_mean, torch.tensor([0.075]))
    torch.testing.assert_close(layer.norm.running_var, torch.tensor([0.9 + 0.1 * 12.75 / 3]))
    # at inference they are used instead of the batch's
    out = layer.eval()(x)
    rm, rv = 0.075, 0.9 + 0.1 * 12.75 / 3
    expected = [max((v - rm) / math.sqrt(rv + eps), 0.0) for v in c]
    torch.testing.assert_close(out, torch.tensor(expected).view(4, 1))


def test_normalized_confidence_initialisation_is_convmodules():
    torch.manual_seed(0)
    layer = NormalizedConfidence(20000, "BN")
    # kaiming normal, fan_out (= 1 output channel x 1 x 1), ReLU gain: std sqrt(2)
    assert abs(layer.weight.std().item() - math.sqrt(2.0)) < 0.03
    assert torch.equal(layer.norm.weight, torch.ones(1))
    assert torch.equal(layer.norm.bias, torch.zeros(1))


def test_fcn_head_with_the_official_confidence_aligns_every_pixel():
    torch.manual_seed(0)
    k, d = 5, 6
    cfg = load_config(SEG_DISALIGN, "MODEL.DISALIGN.CONFIDENCE_NORM", "BN")
    head = DisAlignFCNHead(
        {"res5": ShapeSpec(channels=8, stride=8)},
        in_feature="res5",
        num_classes=k,
        conv_dims=d,
        norm="",
        alignment=build_alignment(cfg, k, d),
    ).train()
    head.dropout.p = 0.0
    alignment = head.alignment
    assert isinstance(alignment.confidence, NormalizedConfidence)
    with torch.no_grad():
        alignment.alpha.copy_(torch.linspace(0.5, 2.0, k))
        alignment.beta.copy_(torch.linspace(-1.0, 1.0, k))
        alignment.confidence.norm.weight.fill_(1.5)
        alignment.confidence.norm.bias.fill_(0.2)
    features = {"res5": torch.randn(2, 8, 4, 3)}
    with torch.no_grad():
        y = head.convs(features["res5"])  # (N, D, h, w)
        z = head.cls_score(y)
        # the official head: ConvModule(D, 1, 1x1, BN, ReLU) on the (N, D, h, w) map, sigmoid
        c = F.conv2d(y, alignment.confidence.weight)  # (N, 1, h, w)
        mean, var = c.mean(), c.var(unbiased=False)
        c = F.relu((c - mean) / torch.sqrt(var + 1e-5) * 1.5 + 0.2)
        sigma = torch.sigmoid(c)
        scale = alignment.alpha.view(1, -1, 1, 1)
        bias = alignment.beta.view(1, -1, 1, 1)
        expected = sigma * (z * scale + bias) + (1 - sigma) * z  # DisAlignFCNHead.forward
        torch.testing.assert_close(head.logits(features), expected)
        # the confidence layer's own output, per pixel (rows): c(x) = ReLU(...) >= 0, so that
        # sigma(x) >= 0.5, with 0.5 reached where the normalised value is negative
        c = alignment.confidence(y.permute(0, 2, 3, 1).reshape(-1, d))
        assert c.shape == (2 * 4 * 3, 1)
        assert (c >= 0).all() and (c == 0).any() and (c > 0).any()
        sigma = torch.sigmoid(c)
        assert (sigma >= 0.5).all() and (sigma < 1).all()


def test_grw_mean_over_all_pixels_by_hand():
    loss = GRWCrossEntropy(1.0, [1, 3], num_classes=2, num_unweighted=1, reduction="mean")
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [5.0, 5.0, 5.0]])
    targets = torch.tensor([0, 1, 2, 255])
    e = math.e
    nll = [math.log(e**2 + 2) - 2, math.log(2 + e) - 1, math.log(2 + e**3) - 3]
    # weights 1.5, 0.5 and 1 (background); divided by all 4 elements, the ignored one included
    expected = (1.5 * nll[0] + 0.5 * nll[1] + 1.0 * nll[2]) / 4
    assert loss(logits, targets, ignore_index=255).item() == pytest.approx(expected, rel=1e-6)
    pixels = logits.t().reshape(1, 3, 2, 2)  # (N, C, H, W)
    assert loss(pixels, targets.reshape(1, 2, 2), ignore_index=255).item() == pytest.approx(
        expected, rel=1e-6
    )
    weighted = GRWCrossEntropy(1.0, [1, 3], num_classes=2, num_unweighted=1)
    assert weighted(logits, targets, ignore_index=255).item() == pytest.approx(
        expected * 4 / 3.0, rel=1e-6
    )


def test_segmentor_stage2_with_the_official_recipe():
    torch.manual_seed(0)
    cfg = load_config(
        SEG_DISALIGN,
        *SMALL,
        "MODEL.DISALIGN.CONFIDENCE_NORM",
        "BN",
        "MODEL.DISALIGN.GRW.REDUCTION",
        "mean",
    )
    model = build_model(cfg)
    assert model.sem_seg_head.grw.reduction == "mean"
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    prefix = "sem_seg_head.alignment."
    names = ("alpha", "beta", "confidence.conv.weight", "confidence.norm.weight")
    assert trainable == {prefix + n for n in (*names, "confidence.norm.bias")}
    alignment = model.sem_seg_head.alignment
    with torch.no_grad():  # away from alpha 1, beta 0, where sigma gets no gradient
        alignment.alpha.copy_(torch.linspace(0.5, 2.0, 20))
        alignment.beta.copy_(torch.linspace(-1.0, 1.0, 20))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = RecordingTrainer(model, build_train_loader(cfg), build_optimizer(cfg, model))
    trainer.train(0, 2)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    # the confidence's BatchNorm trains and tracks its statistics, as the official stage 2 does
    statistics = {
        prefix + f"confidence.norm.{n}"
        for n in ("running_mean", "running_var", "num_batches_tracked")
    }
    assert changed == trainable | statistics


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("MODEL.DISALIGN.CONFIDENCE_WEIGHT_INIT", "'abc'", "CONFIDENCE_WEIGHT_INIT must be None"),
        ("MODEL.DISALIGN.CONFIDENCE_WEIGHT_INIT", "float('nan')", "a finite number, got nan"),
        ("MODEL.DISALIGN.CONFIDENCE_NORM", "'GN'", "CONFIDENCE_NORM must be one of"),
        ("MODEL.DISALIGN.GRW.REDUCTION", "'sum'", "GRW.REDUCTION must be one of"),
    ],
)
def test_bad_official_recipe_values_are_one_line_errors(key, value, message):
    cfg = load_config(SEG_DISALIGN, *SMALL)
    cfg.defrost()
    node, name = cfg, key.split(".")
    for part in name[:-1]:
        node = node[part]
    node[name[-1]] = eval(value)
    with pytest.raises(InputError, match=message) as error:
        check_inputs(cfg, training=False)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("depth", [50, 101])
def test_official_ade20k_configs(depth):
    name = f"fcn_R_{depth}_512x512_160k_disalign"
    paper = load_config(os.path.join(REPO_ROOT, f"configs/ADE20K/{name}.yaml"))
    official = load_config(os.path.join(REPO_ROOT, f"configs/ADE20K/{name}_official.yaml"))
    d, p = official.MODEL.DISALIGN, paper.MODEL.DISALIGN
    assert (p.CONFIDENCE_NORM, p.GRW.RHO, p.GRW.REDUCTION, paper.SOLVER.MAX_ITER) == (
        "",
        0.3,
        "weighted_mean",
        8000,
    )
    assert (d.CONFIDENCE_NORM, d.GRW.RHO, d.GRW.REDUCTION, official.SOLVER.MAX_ITER) == (
        "SyncBN",
        0.2,
        "mean",
        4000,
    )
    official.defrost()
    official.MODEL.DEVICE = "cpu"
    confidence = build_model(official).sem_seg_head.alignment.confidence
    assert isinstance(confidence, NormalizedConfidence)
    assert isinstance(confidence.norm, torch.nn.SyncBatchNorm)
    # the same stage-1 model, and nothing else differs
    assert official.MODEL.WEIGHTS == paper.MODEL.WEIGHTS
    d.CONFIDENCE_NORM, d.GRW.RHO, d.GRW.REDUCTION = "", 0.3, "weighted_mean"
    official.SOLVER.MAX_ITER, official.OUTPUT_DIR = 8000, paper.OUTPUT_DIR
    official.MODEL.DEVICE = paper.MODEL.DEVICE
    assert official == paper


@pytest.mark.parametrize("rpn_train_mode", [False, True])
def test_detector_stage2_rpn_mode(miniature_cfg, rpn_train_mode):
    """
    The official stage 2 keeps the frozen RPN in training mode: proposals from the training
    top-k, and RPN losses that train nothing. The project's default runs it as at inference.
    """
    torch.manual_seed(0)
    cfg = miniature_cfg
    cfg.merge_from_list(["MODEL.DISALIGN.ALIGNMENT_STAGE_RPN_TRAIN_MODE", rpn_train_mode])
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 7  # per image, as PROPOSAL_GENERATOR's training top-k
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 40
    model = build_model(cfg)
    proposal_counts = []
    model.proposal_generator.register_forward_hook(
        lambda module, inputs, output: proposal_counts.extend(len(p) for p in output[0])
    )
    rpn_before = {k: v.clone() for k, v in model.proposal_generator.state_dict().items()}
    trainer = RecordingTrainer(model, build_train_loader(cfg), build_optimizer(cfg, model))
    trainer.train(0, 2)

    assert model.proposal_generator.training == rpn_train_mode
    assert not model.backbone.training and not model.roi_heads.box_head.training
    assert len(proposal_counts) == 2 * cfg.SOLVER.IMS_PER_BATCH
    if rpn_train_mode:
        assert max(proposal_counts) == 7
        assert trainer.loss_names == [["loss_cls", "loss_rpn_cls", "loss_rpn_loc"]] * 2
    else:
        assert min(proposal_counts) > 7 and max(proposal_counts) <= 40
        assert trainer.loss_names == [["loss_cls"]] * 2
    # the RPN's losses train nothing: its parameters and buffers are unchanged
    for key, value in model.proposal_generator.state_dict().items():
        assert torch.equal(value, rpn_before[key]), key
    model.eval()  # evaluation uses the test top-k either way
    assert not model.proposal_generator.training


@pytest.mark.parametrize(
    "version, steps, max_iter", [("LVIS-v0.5", (4000,), 4500), ("LVIS-v1.0", (8000,), 9000)]
)
def test_official_lvis_configs(version, steps, max_iter):
    name = f"configs/{version}/mask_rcnn_R_50_FPN_1x_disalign"
    paper = load_config(os.path.join(REPO_ROOT, f"{name}.yaml"))
    official = load_config(os.path.join(REPO_ROOT, f"{name}_official.yaml"))
    assert (paper.SOLVER.STEPS, paper.SOLVER.MAX_ITER) == ((6000, 8000), 9000)
    assert not paper.MODEL.DISALIGN.ALIGNMENT_STAGE_RPN_TRAIN_MODE
    assert (official.SOLVER.STEPS, official.SOLVER.MAX_ITER) == (steps, max_iter)
    assert official.MODEL.DISALIGN.ALIGNMENT_STAGE_RPN_TRAIN_MODE
    # the same stage-1 model, and nothing else differs
    assert official.MODEL.WEIGHTS == paper.MODEL.WEIGHTS
    official.defrost()
    official.MODEL.DISALIGN.ALIGNMENT_STAGE_RPN_TRAIN_MODE = False
    official.SOLVER.STEPS, official.SOLVER.MAX_ITER = (6000, 8000), 9000
    official.OUTPUT_DIR = paper.OUTPUT_DIR
    assert official == paper
