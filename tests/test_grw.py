import math

import pytest
import torch

from disalign import GRWCrossEntropy, count_class_samples, grw_class_weights, training_class_counts


def test_grw_weights_against_hand_computation():
    counts = [100, 10, 1]
    w = grw_class_weights(counts, rho=0.5)
    # r = [100, 10, 1] / 111; r^-0.5 proportional to [0.1, 1/sqrt(10), 1]; normalised to sum 3
    raw = [1 / math.sqrt(100), 1 / math.sqrt(10), 1.0]
    expected = [3 * v / sum(raw) for v in raw]
    torch.testing.assert_close(w, torch.tensor(expected))
    assert w.dtype == torch.float32
    assert w.sum().item() == pytest.approx(3.0)


def test_grw_rho_zero_is_uniform_and_rho_orders_classes():
    torch.testing.assert_close(grw_class_weights([5, 50, 500], 0.0), torch.ones(3))
    w = grw_class_weights([5, 50, 500], 0.8)
    assert w[0] > w[1] > w[2]


def test_grw_zero_count_class_gets_the_weight_of_a_class_seen_once():
    w = grw_class_weights([0, 1, 8], rho=1.0)
    # counts are raised to at least 1: [1, 1, 8] -> r^-1 proportional to [1, 1, 1/8]
    raw = [1.0, 1.0, 0.125]
    torch.testing.assert_close(w, torch.tensor([3 * v / sum(raw) for v in raw]))
    assert torch.isfinite(w).all()
    assert torch.isfinite(grw_class_weights([0, 0, 0], rho=0.8)).all()


@pytest.mark.parametrize("counts", [[], [[1, 2]], [1, -1], [1, float("nan")]])
def test_grw_rejects_bad_counts(counts):
    with pytest.raises(ValueError):
        grw_class_weights(counts, 0.8)


DICTS = [
    {"annotations": [{"category_id": 0}, {"category_id": 0}, {"category_id": 2}]},
    {"annotations": [{"category_id": 0}]},
    {"annotations": []},
]


def test_count_class_samples_by_images_and_instances():
    assert count_class_samples(DICTS, 4, "images") == [2, 0, 1, 0]
    assert count_class_samples(DICTS, 4, "instances") == [3, 0, 1, 0]
    with pytest.raises(ValueError, match="count_by"):
        count_class_samples(DICTS, 4, "pixels")
    with pytest.raises(ValueError, match="configured number of classes"):
        count_class_samples(DICTS, 2, "images")
    labelled = [{"label": 1}, {"label": 1}, {"label": 0}]  # image classification records
    assert count_class_samples(labelled, 3, "images") == [1, 2, 0]


def test_training_class_counts_from_the_registered_miniature_lvis():
    import json

    from detectron2.data import DatasetCatalog, MetadataCatalog

    counts = training_class_counts(("miniature_lvis_train",), 36, "images")
    with open(MetadataCatalog.get("miniature_lvis_train").json_file) as f:
        categories = json.load(f)["categories"]
    assert counts == [c["image_count"] for c in sorted(categories, key=lambda c: c["id"])]
    assert min(counts) >= 1 and max(counts) > 100
    assert len(DatasetCatalog.get("miniature_lvis_train")) < sum(counts)  # several per image


def test_grw_cross_entropy_weights_targets_and_ignores_the_ignore_label():
    loss = GRWCrossEntropy(1.0, [1, 3], num_classes=2, num_unweighted=1)
    torch.testing.assert_close(loss.class_weights(), torch.tensor([1.5, 0.5, 1.0]))
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [5.0, 5.0, 5.0]])
    targets = torch.tensor([0, 1, 2, 255])
    nll = -torch.log_softmax(logits, dim=1)[torch.arange(3), targets[:3]]
    expected = (1.5 * nll[0] + 0.5 * nll[1] + 1.0 * nll[2]) / 3.0
    torch.testing.assert_close(loss(logits, targets, ignore_index=255), expected)
    # per-pixel logits (N, C, H, W) as in segmentation
    pixels = logits[:3].t().reshape(1, 3, 1, 3)
    torch.testing.assert_close(loss(pixels, targets[:3].reshape(1, 1, 3)), expected)
    # divided by the targets' summed weights (1.5 + 1.5 + 0.5 = 3.5), not their number (3)
    targets = torch.tensor([0, 0, 1])
    nll = -torch.log_softmax(logits[:3], dim=1)[torch.arange(3), targets]
    expected = (1.5 * nll[0] + 1.5 * nll[1] + 0.5 * nll[2]) / 3.5
    torch.testing.assert_close(loss(logits[:3], targets), expected)
    empty = loss(logits, torch.full((4,), 255), ignore_index=255)
    assert empty.item() == 0.0 and empty.requires_grad is False
