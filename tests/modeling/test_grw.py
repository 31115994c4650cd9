import math
import os

import pytest
import torch

from disalign import GRWCrossEntropy, grw_class_weights

from conftest import hand_grw_weights


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


def test_grw_loss_of_targets_whose_weights_sum_below_one():
    loss = GRWCrossEntropy(1.0, [1, 3], num_classes=2)  # weights 1.5, 0.5
    logits = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    targets = torch.tensor([1, -100])
    expected = -torch.log_softmax(logits[0], dim=0)[1]  # 0.5 * nll / 0.5
    torch.testing.assert_close(loss(logits, targets), expected)


def test_grw_loss_under_ddp_divides_by_the_mean_summed_weights_of_the_processes(monkeypatch):
    """
    With 2 processes, the summed target weights are all-reduced (here: the other process holds
    targets of summed weight 2.5) and divided by 2, since DDP averages the gradients.
    """
    reduced = []

    def all_reduce(tensor):
        assert not tensor.requires_grad
        reduced.append(tensor.item())
        tensor += 2.5

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    loss = GRWCrossEntropy(1.0, [1, 3], num_classes=2, num_unweighted=1)  # weights 1.5, 0.5, 1
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], requires_grad=True)
    targets = torch.tensor([0, 1])
    nll = -torch.log_softmax(logits.detach(), dim=1)[torch.arange(2), targets]
    value = loss(logits, targets)
    assert reduced == [2.0]  # this process' summed weights, 1.5 + 0.5
    torch.testing.assert_close(value, (1.5 * nll[0] + 0.5 * nll[1]) / ((2.0 + 2.5) / 2))
    assert value.requires_grad


def test_grw_weights_keep_float64_precision_for_large_counts():
    # pixel counts exceed float32's 2**24: computed in float32, 2**24 + 1 would equal 2**24 + 2
    # summed with the other class, and the weights would be 2 ** -23 and 2 (not 2 - 2 ** -23)
    counts = [2**24 + 1, 1]
    expected = torch.tensor(hand_grw_weights(counts, 1.0), dtype=torch.float32)
    assert grw_class_weights(counts, 1.0).tolist() == expected.tolist()
    assert expected[1].item() < 2.0


def test_grw_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"^class_counts must be a non-empty 1-d sequence, got"):
        grw_class_weights([], 0.8)
    with pytest.raises(ValueError, match=r"^class_counts must be finite and non-negative$"):
        grw_class_weights([1, -1], 0.8)


def test_grw_loss_mean_reduction_and_float64_logits():
    """reduction="mean": the weighted sum divided by the number of targets, ignored ones too."""
    loss = GRWCrossEntropy(1.0, [1, 3], num_classes=2, reduction="mean")  # weights 1.5, 0.5
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    targets = torch.tensor([0, 1, 255])
    nll = -torch.log_softmax(logits, dim=1)[torch.arange(2), targets[:2]]
    value = loss(logits, targets, ignore_index=255)
    assert value.dtype == torch.float64
    torch.testing.assert_close(value, (1.5 * nll[0] + 0.5 * nll[1]) / 3)
    # the default reduction: divided by the summed target weights, 1.5 + 0.5
    value = GRWCrossEntropy(1.0, [1, 3], num_classes=2)(logits, targets, ignore_index=255)
    torch.testing.assert_close(value, (1.5 * nll[0] + 0.5 * nll[1]) / 2.0)


def test_grw_loss_from_the_config():
    from detectron2.layers import ShapeSpec

    from disalign import DisAlignFastRCNNOutputLayers, DisAlignImageClassifier

    from conftest import MINIATURE_DISALIGN, REPO_ROOT, load_config

    cfg = load_config(MINIATURE_DISALIGN, "MODEL.WEIGHTS", "", "MODEL.DISALIGN.GRW.RHO", 0.7)
    cfg.MODEL.DISALIGN.GRW.REDUCTION = "mean"
    grw = DisAlignFastRCNNOutputLayers(cfg, ShapeSpec(channels=4)).grw
    k = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    assert (grw.rho, grw.num_classes, grw.num_unweighted, grw.reduction) == (0.7, k, 1, "mean")
    # classification: no background class
    cfg = load_config(os.path.join(REPO_ROOT, "configs/Miniature-LT/resnet18_disalign.yaml"))
    cfg.merge_from_list(["MODEL.WEIGHTS", "", "MODEL.DISALIGN.ALIGNMENT_STAGE", False])
    grw = DisAlignImageClassifier(cfg).grw
    assert (grw.num_classes, grw.num_unweighted, grw.reduction) == (
        cfg.MODEL.IMAGE_CLASSIFIER.NUM_CLASSES,
        0,
        "weighted_mean",
    )
    cfg.MODEL.DISALIGN.GRW.ENABLED = False
    assert DisAlignImageClassifier(cfg).grw is None


def test_grw_loss_mean_reduction_of_one_target():
    """One target element: the "mean" reduction divides its weighted loss by 1."""
    loss = GRWCrossEntropy(1.0, [1, 3], num_classes=2, reduction="mean")  # weights 1.5, 0.5
    logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax: 1/4, 3/4
    torch.testing.assert_close(loss(logits, torch.tensor([1])), torch.tensor(0.5 * math.log(4 / 3)))
    torch.testing.assert_close(loss(logits, torch.tensor([0])), torch.tensor(1.5 * math.log(4.0)))


def test_grw_class_weights_move_to_the_device_of_the_logits():
    """
    The weights, computed on the CPU, are moved to the logits' device: here torch's "meta" device,
    which, like a GPU, refuses a weight left on the CPU.
    """
    loss = GRWCrossEntropy(1.0, [1, 3], num_classes=2, reduction="mean")
    value = loss(torch.zeros(3, 2, device="meta"), torch.tensor([0, 1, 1], device="meta"))
    assert value.device.type == "meta" and value.shape == ()
    with pytest.raises(RuntimeError, match="device"):  # what a weight on the CPU would give
        torch.nn.functional.cross_entropy(
            torch.zeros(3, 2, device="meta"),
            torch.tensor([0, 1, 1], device="meta"),
            weight=loss.class_weights(),
        )
