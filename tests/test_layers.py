import math

import pytest
import torch
from torch.nn import functional as F

from disalign import CosineClassifier, DistributionAlignment


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
