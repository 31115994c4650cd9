import math
import os

import pytest
import torch
from detectron2.layers import ShapeSpec
from torch.nn import functional as F

from disalign import (
    CosineClassifier,
    DisAlignFastRCNNOutputLayers,
    DisAlignImageClassifier,
    DistributionAlignment,
)

from conftest import MINIATURE_DISALIGN, REPO_ROOT, load_config


def _alignment(num_aligned=2, in_features=3, **kwargs):
    layer = DistributionAlignment(num_aligned, in_features, **kwargs)
    with torch.no_grad():
        if layer.alpha is not None:
            layer.alpha.copy_(torch.tensor([2.0, 0.5])[:num_aligned])
        if layer.beta is not None:
            layer.beta.copy_(torch.tensor([1.0, -3.0])[:num_aligned])
        if layer.confidence is not None:
            layer.confidence.weight.copy_(torch.tensor([[1.0, 0.0, -1.0]]))
            layer.confidence.bias.fill_(0.5)
    return layer


LOGITS = torch.tensor([[1.0, 2.0, 4.0], [-1.0, 0.5, 0.0]])  # 2 foreground classes + background
FEATURES = torch.tensor([[1.0, 2.0, 0.5], [0.0, 1.0, 2.0]])


def test_alignment_with_confidence():
    out = _alignment()(LOGITS, FEATURES)
    # sigma = sigmoid(w.x + b): row 0: 1 - 0.5 + 0.5 = 1.0; row 1: 0 - 2 + 0.5 = -1.5
    s0, s1 = 1 / (1 + math.exp(-1.0)), 1 / (1 + math.exp(1.5))
    expected = torch.tensor(
        [
            [s0 * (2 * 1.0 + 1) + (1 - s0) * 1.0, s0 * (0.5 * 2.0 - 3) + (1 - s0) * 2.0, 4.0],
            [s1 * (2 * -1.0 + 1) + (1 - s1) * -1.0, s1 * (0.5 * 0.5 - 3) + (1 - s1) * 0.5, 0.0],
        ]
    )
    torch.testing.assert_close(out, expected)


def test_input_confidence_is_the_sigma_of_each_input():
    layer = _alignment()
    s0, s1 = 1 / (1 + math.exp(-1.0)), 1 / (1 + math.exp(1.5))  # as above
    torch.testing.assert_close(layer.input_confidence(FEATURES), torch.tensor([[s0], [s1]]))
    # per pixel: (N, D, H, W) features give (N, 1, H, W), each pixel's own sigma
    pixels = FEATURES.t().reshape(1, 3, 1, 2)
    torch.testing.assert_close(
        layer.input_confidence(pixels), torch.tensor([s0, s1]).reshape(1, 1, 1, 2)
    )
    # without a confidence layer, sigma = 1
    assert torch.equal(_alignment(confidence=False).input_confidence(FEATURES), torch.ones(2, 1))


def test_alignment_without_confidence_is_the_calibration():
    out = _alignment(confidence=False)(LOGITS, FEATURES)
    expected = torch.tensor([[3.0, -2.0, 4.0], [-1.0, -2.75, 0.0]])
    torch.testing.assert_close(out, expected)


def test_magnitude_only_and_margin_only():
    magnitude_only = _alignment(margin=False, confidence=False)
    assert magnitude_only.beta is None
    torch.testing.assert_close(
        magnitude_only(LOGITS, FEATURES), torch.tensor([[2.0, 1.0, 4.0], [-2.0, 0.25, 0.0]])
    )
    margin_only = _alignment(magnitude=False, confidence=False)
    assert margin_only.alpha is None
    torch.testing.assert_close(
        margin_only(LOGITS, FEATURES), torch.tensor([[2.0, -1.0, 4.0], [0.0, -2.5, 0.0]])
    )


def test_alignment_at_init_is_identity_and_leaves_background():
    torch.manual_seed(0)
    layer = DistributionAlignment(5, 8)
    logits, features = torch.randn(4, 6), torch.randn(4, 8)
    assert torch.equal(layer(logits, features), logits)
    with torch.no_grad():
        layer.beta.fill_(10.0)
    out = layer(logits, features)
    assert torch.equal(out[:, 5], logits[:, 5])  # background column untouched
    assert (out[:, :5] > logits[:, :5]).all()
    # confidence initialised as N(0, 0.01^2) weights and zero bias
    assert layer.confidence.bias.item() == 0.0
    assert 0.0 < layer.confidence.weight.std().item() < 0.05


def test_alignment_gradients_reach_only_its_parameters():
    # a frozen base classifier under the alignment, as in the alignment stage
    classifier = torch.nn.Linear(3, 3)
    classifier.requires_grad_(False)
    layer = _alignment()
    features = FEATURES.clone()
    logits = classifier(features).requires_grad_(True)
    layer(logits, features).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in classifier.parameters())
    assert features.grad is None
    # d z^_j / d z_j = sigma * alpha_j + 1 - sigma; the background logit passes with gradient 1
    with torch.no_grad():
        sigma = torch.sigmoid(layer.confidence(features))
    expected = torch.cat([sigma * layer.alpha.detach() + 1 - sigma, torch.ones(2, 1)], dim=1)
    torch.testing.assert_close(logits.grad, expected)


def test_cosine_classifier():
    head = CosineClassifier(2, 3, scale=20.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]]))
    x = torch.tensor([[3.0, 4.0]])
    expected = 20.0 * torch.tensor([[0.6, 0.8, -7.0 / (5 * math.sqrt(2))]])
    torch.testing.assert_close(head(x), expected)
    assert head.scale.requires_grad and head.scale.item() == 20.0
    # scale-invariant in the input, as a cosine must be
    torch.testing.assert_close(head(10 * x), expected)


@pytest.mark.parametrize("confidence", [True, False])
def test_alignment_on_cosine_logits_matches_formula(confidence):
    torch.manual_seed(1)
    head = CosineClassifier(4, 3)
    layer = DistributionAlignment(2, 4, confidence=confidence)
    with torch.no_grad():
        layer.alpha.copy_(torch.tensor([1.5, 0.8]))
        layer.beta.copy_(torch.tensor([0.2, -0.1]))
    x = torch.randn(5, 4)
    z = 20 * F.normalize(x, dim=1) @ F.normalize(head.weight, dim=1).t()
    s = z[:, :2] * layer.alpha + layer.beta
    sigma = torch.sigmoid(layer.confidence(x)) if confidence else torch.ones(5, 1)
    expected = torch.cat([sigma * s + (1 - sigma) * z[:, :2], z[:, 2:]], dim=1)
    torch.testing.assert_close(layer(head(x), x), expected)


# ---- the layers as the configs build them, and the parts the formulas above leave out ----


def _box_predictor(*opts, channels=6):
    """The box predictor of the miniature stage-2 config with ``opts``, reading (R, channels)."""
    cfg = load_config(MINIATURE_DISALIGN, "MODEL.WEIGHTS", "", *opts)
    return DisAlignFastRCNNOutputLayers(cfg, ShapeSpec(channels=channels))


def test_every_alignment_config_value_reaches_the_layer():
    k = load_config(MINIATURE_DISALIGN).MODEL.ROI_HEADS.NUM_CLASSES
    alignment = _box_predictor(
        *("MODEL.DISALIGN.ALPHA_INIT", 1.5, "MODEL.DISALIGN.BETA_INIT", 0.25),
        *("MODEL.DISALIGN.CONFIDENCE_WEIGHT_INIT", 0.5),
    ).alignment
    assert alignment.num_aligned == k
    assert alignment.alpha.tolist() == [1.5] * k and alignment.beta.tolist() == [0.25] * k
    assert type(alignment.confidence) is torch.nn.Linear
    assert alignment.confidence.weight.tolist() == [[0.5] * 6]
    parts = {"MAGNITUDE": "alpha", "MARGIN": "beta", "CONFIDENCE": "confidence"}
    for key, attribute in parts.items():
        alignment = _box_predictor(f"MODEL.DISALIGN.{key}", False).alignment
        assert [a for a in parts.values() if getattr(alignment, a) is None] == [attribute]
    normalized = _box_predictor(
        "MODEL.DISALIGN.CONFIDENCE_NORM", "BN", "MODEL.DISALIGN.CONFIDENCE_WEIGHT_INIT", 0.5
    ).alignment.confidence
    assert isinstance(normalized.norm, torch.nn.BatchNorm2d) and normalized.norm.num_features == 1
    assert normalized.weight.shape == (1, 6, 1, 1) and (normalized.weight == 0.5).all()
    assert _box_predictor("MODEL.DISALIGN.CALIBRATION", False).alignment is None


def test_classifier_heads_from_the_config():
    cfg = load_config(os.path.join(REPO_ROOT, "configs/Miniature-LT/resnet18_disalign.yaml"))
    cfg.merge_from_list(["MODEL.WEIGHTS", "", "MODEL.DISALIGN.ALIGNMENT_STAGE", False])
    k = cfg.MODEL.IMAGE_CLASSIFIER.NUM_CLASSES
    torch.manual_seed(0)
    # dot: detectron2's box classifier initialisation, weights ~ N(0, 0.01^2), zero bias
    head = DisAlignImageClassifier(cfg).cls_score
    assert type(head) is torch.nn.Linear
    assert (head.in_features, head.out_features) == (512, k)  # ResNet-18's res5 channels
    assert torch.equal(head.bias, torch.zeros(k))
    assert head.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert abs(head.weight.mean().item()) < 0.001
    cfg.merge_from_list(["MODEL.DISALIGN.CLS_HEAD", "cosine", "MODEL.DISALIGN.COSINE_SCALE", 7.0])
    head = DisAlignImageClassifier(cfg).cls_score
    assert type(head) is CosineClassifier and head.weight.shape == (k, 512)
    assert head.scale.item() == 7.0
    # the box predictor's cosine head: K + 1 outputs, the configured scale
    head = _box_predictor(
        "MODEL.DISALIGN.CLS_HEAD", "cosine", "MODEL.DISALIGN.COSINE_SCALE", 7.0
    ).cls_score
    assert type(head) is CosineClassifier and head.scale.item() == 7.0


def test_cosine_classifier_weight_initialisation():
    # the direction of a Gaussian weight does not depend on its std, but its norm sets the step
    # size of SGD on the direction (the gradient of w / |w| is proportional to 1 / |w|)
    torch.manual_seed(0)
    head = CosineClassifier(1000, 4)
    assert head.weight.std().item() == pytest.approx(0.01, rel=0.05)


def test_normalized_confidence_follows_relu_of_the_normalised_projection():
    """sigma(x) = sigmoid(ReLU(BN(w . x))), by hand for w = 0.5, BN(weight 1, bias 0, eps 1e-5)."""
    layer = DistributionAlignment(2, 3, alpha_init=2.0, beta_init=1.0, confidence_norm="BN")
    assert layer.confidence.conv.bias is None and layer.confidence.weight.shape == (1, 3, 1, 1)
    with torch.no_grad():
        layer.confidence.weight.fill_(0.5)
    y = [0.5 * sum(row) for row in FEATURES.tolist()]  # w . x: 1.75, 1.5

    def expected(c):
        rows = []
        for z, ci in zip(LOGITS.tolist(), c):
            sigma = 1 / (1 + math.exp(-max(ci, 0.0)))
            rows.append([zj + sigma * (2 * zj + 1 - zj) for zj in z[:2]] + [z[2]])
        return torch.tensor(rows)

    # evaluation: the running statistics at their initial values, mean 0 and variance 1
    layer.eval()
    torch.testing.assert_close(
        layer(LOGITS, FEATURES), expected([yi / math.sqrt(1 + 1e-5) for yi in y])
    )
    # training: the batch statistics (mean 1.625, biased variance 0.015625)
    layer.train()
    mean = sum(y) / 2
    var = sum((yi - mean) ** 2 for yi in y) / 2
    torch.testing.assert_close(
        layer(LOGITS, FEATURES), expected([(yi - mean) / math.sqrt(var + 1e-5) for yi in y])
    )
    # its weight initialised as the official head's ConvModule (kaiming normal, fan_out = 1,
    # ReLU gain): std sqrt(2)
    torch.manual_seed(0)
    weight = DistributionAlignment(2, 2000, confidence_norm="BN").confidence.weight
    assert weight.std().item() == pytest.approx(math.sqrt(2), rel=0.05)


def test_layers_describe_themselves():
    assert "in_features=3, num_outputs=4" in repr(CosineClassifier(3, 4))
    assert "num_aligned=2, magnitude=True, margin=False, confidence=True" in repr(
        DistributionAlignment(2, 3, margin=False)
    )
    assert "magnitude=False, margin=True, confidence=False" in repr(
        DistributionAlignment(2, 3, magnitude=False, confidence=False)
    )
