"""
The DisAlign box predictor against detectron2's FastRCNNOutputLayers and the paper's formulas,
in the shape of detectron2's tests/modeling/test_fast_rcnn.py.
"""

import re

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from torch import nn
from torch.nn import functional as F

from disalign import DisAlignFastRCNNOutputLayers, DistributionAlignment, GRWCrossEntropy

from conftest import hand_grw_weights

K, D = 5, 16


def _predictor(**kwargs):
    kwargs.setdefault("test_score_thresh", 0.01)
    return DisAlignFastRCNNOutputLayers(
        ShapeSpec(channels=D),
        box2box_transform=Box2BoxTransform((10, 10, 5, 5)),
        num_classes=K,
        **kwargs,
    )


def _proposals(gt_classes_per_image):
    proposals = []
    for gt_classes in gt_classes_per_image:
        n = len(gt_classes)
        inst = Instances((60, 60))
        xy = torch.rand(n, 2) * 30
        inst.proposal_boxes = Boxes(torch.cat([xy, xy + 10 + torch.rand(n, 2) * 10], dim=1))
        inst.gt_boxes = Boxes(inst.proposal_boxes.tensor + torch.randn(n, 4))
        inst.gt_classes = torch.tensor(gt_classes, dtype=torch.long)
        proposals.append(inst)
    return proposals


def test_at_init_disalign_equals_the_base_predictor():
    torch.manual_seed(0)
    ours = _predictor(alignment=DistributionAlignment(K, D))
    base = FastRCNNOutputLayers(
        ShapeSpec(channels=D),
        box2box_transform=Box2BoxTransform((10, 10, 5, 5)),
        num_classes=K,
        test_score_thresh=0.01,
    )
    base.load_state_dict({k: v for k, v in ours.state_dict().items() if "alignment" not in k})
    assert isinstance(ours.alignment, DistributionAlignment)

    x = torch.randn(12, D)
    proposals = _proposals([[0] * 7, [0] * 5])
    ours_out, base_out = ours(x), base(x)
    assert torch.equal(ours_out[0], base_out[0]) and torch.equal(ours_out[1], base_out[1])
    ours_inst, _ = ours.inference(ours_out, proposals)
    base_inst, _ = base.inference(base_out, proposals)
    for a, b in zip(ours_inst, base_inst):
        assert len(a) > 0
        assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor)
        assert torch.equal(a.scores, b.scores)
        assert torch.equal(a.pred_classes, b.pred_classes)


def test_aligned_scores_follow_the_formula_and_keep_background():
    torch.manual_seed(1)
    predictor = _predictor(alignment=DistributionAlignment(K, D))
    with torch.no_grad():
        predictor.alignment.alpha.copy_(torch.linspace(0.5, 2.0, K))
        predictor.alignment.beta.copy_(torch.linspace(-1.0, 1.0, K))
    x = torch.randn(6, D)
    z = predictor.cls_score(x)
    sigma = torch.sigmoid(predictor.alignment.confidence(x))
    s = predictor.alignment.alpha * z[:, :K] + predictor.alignment.beta
    scores, _ = predictor(x)
    torch.testing.assert_close(scores[:, :K], sigma * s + (1 - sigma) * z[:, :K])
    assert torch.equal(scores[:, K], z[:, K])


def test_cosine_head():
    torch.manual_seed(2)
    predictor = _predictor(cls_head="cosine", cosine_scale=20.0)
    x = torch.randn(4, D)
    scores, _ = predictor(x)
    w = predictor.cls_score.weight
    assert w.shape == (K + 1, D)
    torch.testing.assert_close(scores, 20.0 * F.normalize(x, dim=1) @ F.normalize(w, dim=1).t())
    assert scores.abs().max() <= 20.0 + 1e-4
    with pytest.raises(ValueError, match="CLS_HEAD"):
        _predictor(cls_head="mlp")


def test_grw_loss_against_hand_computation():
    torch.manual_seed(3)
    counts = [400, 100, 20, 5, 1]
    predictor = _predictor(
        alignment=DistributionAlignment(K, D), grw=GRWCrossEntropy(0.8, counts, K, 1)
    )
    x = torch.randn(6, D)
    gt = [[0, 3, 5], [4, 5, 1]]
    predictions = predictor(x)
    with EventStorage():
        losses = predictor.losses(predictions, _proposals(gt))
    weights = torch.tensor(hand_grw_weights(counts, 0.8) + [1.0])  # background weight 1
    labels = torch.tensor(sum(gt, []))
    per_roi = -F.log_softmax(predictions[0], dim=1)[torch.arange(6), labels]
    expected = (weights[labels] * per_roi).sum() / weights[labels].sum()
    torch.testing.assert_close(losses["loss_cls"], expected)
    assert not torch.allclose(expected, per_roi.mean())  # the weighting changes the loss
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    assert predictor.grw.class_weights()[K] == 1.0  # background


def test_grw_class_counts_are_computed_once_and_lazily():
    calls = []

    def counts():
        calls.append(1)
        return [3, 1, 1, 1, 0]

    predictor = _predictor(grw=GRWCrossEntropy(0.8, counts, K, 1))
    assert calls == []  # inference never needs the training set
    x = torch.randn(3, D)
    with EventStorage():
        for _ in range(2):
            loss = predictor.losses(predictor(x), _proposals([[0, 4, 5]]))["loss_cls"]
            assert torch.isfinite(loss)
    assert calls == [1]
    wrong = _predictor(grw=GRWCrossEntropy(0.8, [1, 2], K, 1))
    with EventStorage(), pytest.raises(ValueError, match="2 class counts for a classifier of 5"):
        wrong.losses(wrong(x), _proposals([[0, 1, 5]]))


def test_frozen_box_regressor_gives_no_box_loss_and_empty_batch_is_zero():
    predictor = _predictor(grw=GRWCrossEntropy(0.8, [1] * K, K, 1))
    for p in predictor.bbox_pred.parameters():
        p.requires_grad_(False)
    x = torch.randn(3, D)
    with EventStorage():
        assert set(predictor.losses(predictor(x), _proposals([[0, 1, 5]]))) == {"loss_cls"}
        empty = predictor.losses(predictor(torch.zeros(0, D)), [])
    assert empty["loss_cls"].item() == 0.0


def test_sigmoid_and_federated_losses_are_refused_where_detectron2_has_them():
    # current detectron2 adds these keys (and FastRCNNOutputLayers arguments); 0.6 has neither
    import inspect

    from detectron2.modeling import build_model

    from conftest import MINIATURE_BASELINE, load_config

    cfg = load_config(MINIATURE_BASELINE, "MODEL.WEIGHTS", "")
    keys = [k for k in ("USE_SIGMOID_CE", "USE_FED_LOSS") if k in cfg.MODEL.ROI_BOX_HEAD]
    accepts = "use_fed_loss" in inspect.signature(FastRCNNOutputLayers.__init__).parameters
    assert keys == (["USE_SIGMOID_CE", "USE_FED_LOSS"] if accepts else [])
    if keys:  # (detectron2 itself allows the federated loss only with sigmoid cross-entropy)
        bad = cfg.clone()
        bad.MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE = True
        with pytest.raises(ValueError, match="softmax cross-entropy"):
            build_model(bad)
    assert isinstance(build_model(cfg).roi_heads.box_predictor, DisAlignFastRCNNOutputLayers)


# ---- the parts of the predictor that the tests above leave out ----


def _cosine_predictor(input_shape, scale=7.0, **kwargs):
    return DisAlignFastRCNNOutputLayers(
        input_shape,
        box2box_transform=Box2BoxTransform((10, 10, 5, 5)),
        num_classes=K,
        cls_head="cosine",
        cosine_scale=scale,
        **kwargs,
    )


@pytest.mark.parametrize("shape", [(4, 4), (2, 2, 4)])
def test_region_features_with_spatial_dimensions_are_flattened(shape):
    """(R, C, W) or (R, C, H, W) features: the heads read the 16 flattened values of each."""
    torch.manual_seed(4)
    channels, *spatial = shape
    input_shape = ShapeSpec(
        channels=channels, height=spatial[0] if len(spatial) == 2 else None, width=spatial[-1]
    )
    predictor = _cosine_predictor(input_shape, alignment=DistributionAlignment(K, 16))
    assert predictor.cls_score.weight.shape == (K + 1, 16)
    with torch.no_grad():
        predictor.alignment.alpha.fill_(2.0)
    x = torch.randn(3, *shape)
    flat = x.reshape(3, 16)
    scores, deltas = predictor(x)
    z = 7.0 * F.normalize(flat, dim=1) @ F.normalize(predictor.cls_score.weight, dim=1).t()
    sigma = torch.sigmoid(flat @ predictor.alignment.confidence.weight.t())  # zero bias
    torch.testing.assert_close(scores[:, :K], sigma * 2.0 * z[:, :K] + (1 - sigma) * z[:, :K])
    torch.testing.assert_close(scores[:, K], z[:, K])
    bbox = predictor.bbox_pred
    torch.testing.assert_close(deltas, flat @ bbox.weight.t() + bbox.bias)


def test_cosine_head_input_size_from_the_shape_or_a_number_of_channels():
    # channels x height x width, a missing spatial size counting 1
    assert _cosine_predictor(ShapeSpec(channels=2, height=3)).cls_score.weight.shape == (K + 1, 6)
    assert _cosine_predictor(ShapeSpec(channels=2, width=5)).cls_score.weight.shape == (K + 1, 10)
    head = _cosine_predictor(ShapeSpec(channels=3, height=2, width=2), scale=3.0).cls_score
    assert head.weight.shape == (K + 1, 12) and head.scale.item() == 3.0
    # detectron2's predictor also accepts an int: the number of channels
    assert _cosine_predictor(16).cls_score.weight.shape == (K + 1, 16)


@pytest.mark.parametrize("num_classes, num_unweighted", [(K, 0), (K, 2), (K - 1, 1), (K + 1, 1)])
def test_grw_loss_of_other_classes_than_the_predictor_is_refused(num_classes, num_unweighted):
    grw = GRWCrossEntropy(0.8, [1] * num_classes, num_classes, num_unweighted)
    with pytest.raises(ValueError, match=r"^the GRW loss must cover 5 classes \+ background$"):
        _predictor(grw=grw)


def test_losses_without_grw_by_hand_and_as_detectron2_with_the_loss_weights():
    """
    Plain cross-entropy, the box loss of detectron2's predictor (proposals matched to a box, and
    unmatched background proposals without ``gt_boxes``), the loss weights (the configs set only
    the box loss': the classification loss then has weight 1) and the logged accuracy.
    """
    torch.manual_seed(5)
    weights = {"loss_box_reg": 3.0}
    ours = _predictor(loss_weight=weights)
    base = FastRCNNOutputLayers(
        ShapeSpec(channels=D),
        box2box_transform=Box2BoxTransform((10, 10, 5, 5)),
        num_classes=K,
        loss_weight=weights,
    )
    base.load_state_dict(ours.state_dict())
    proposals = _proposals([[0, 3, 5], [2, 5, 1, 4], [5, 5]])
    proposals[2].remove("gt_boxes")
    x = torch.randn(9, D)
    predictions = ours(x)
    with EventStorage() as storage:
        losses = ours.losses(predictions, proposals)
        accuracy = storage.latest()["fast_rcnn/cls_accuracy"][0]
    with EventStorage():
        expected = base.losses(base(x), proposals)
    labels = torch.tensor([0, 3, 5, 2, 5, 1, 4, 5, 5])
    scores = predictions[0].detach()
    nll = -F.log_softmax(scores, dim=1)[torch.arange(9), labels]
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    torch.testing.assert_close(losses["loss_cls"], nll.mean())
    assert losses["loss_box_reg"].item() > 0
    torch.testing.assert_close(losses["loss_box_reg"], expected["loss_box_reg"])
    # the box loss of the 5 foreground proposals, L1 (smooth_l1_beta 0), divided by the 9
    deltas = predictions[1].detach().view(9, K, 4)
    matched = torch.cat([p.proposal_boxes.tensor for p in proposals[:2]])
    gt_boxes = torch.cat([p.gt_boxes.tensor for p in proposals[:2]])
    l1 = 0.0
    for roi in (0, 1, 3, 5, 6):
        target = ours.box2box_transform.get_deltas(matched[roi : roi + 1], gt_boxes[roi : roi + 1])
        l1 += (deltas[roi, labels[roi]] - target[0]).abs().sum()
    torch.testing.assert_close(losses["loss_box_reg"], 3.0 * l1 / 9)
    assert accuracy == (scores.argmax(dim=1) == labels).sum().item() / 9


def test_empty_batch_with_a_trainable_box_regressor_gives_zero_losses():
    predictor = _predictor(grw=GRWCrossEntropy(0.8, [1] * K, K, 1))
    with EventStorage():
        empty = predictor.losses(predictor(torch.zeros(0, D)), [])
    assert set(empty) == {"loss_cls", "loss_box_reg"}
    assert empty["loss_cls"].item() == 0.0 and empty["loss_box_reg"].item() == 0.0


def test_empty_batch_targets_are_made_on_the_device_of_the_scores():
    """
    An empty batch's targets are made on the scores' device: here torch's "meta" device, which,
    like a GPU, refuses targets left on the CPU (the GRW "mean" reduction reads them).
    """
    grw = GRWCrossEntropy(0.8, [1] * K, K, 1, reduction="mean")
    predictor = _predictor(grw=grw).to("meta")
    for p in predictor.bbox_pred.parameters():
        p.requires_grad_(False)
    with EventStorage():
        losses = predictor.losses(predictor(torch.zeros(0, D, device="meta")), [])
    assert set(losses) == {"loss_cls"} and losses["loss_cls"].device.type == "meta"
    with pytest.raises(RuntimeError, match="device"):  # what targets on the CPU would give
        grw(torch.zeros(0, K + 1, device="meta"), torch.empty(0, dtype=torch.long))


@pytest.mark.parametrize("key", ["USE_SIGMOID_CE", "USE_FED_LOSS"])
def test_sigmoid_or_federated_loss_key_set_is_refused_with_the_fix(key):
    # the keys as later detectron2 versions have them (0.6 has neither: added here)
    from conftest import MINIATURE_DISALIGN, load_config

    cfg = load_config(MINIATURE_DISALIGN, "MODEL.WEIGHTS", "")
    cfg.MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE = False
    cfg.MODEL.ROI_BOX_HEAD.USE_FED_LOSS = False
    assert isinstance(DisAlignFastRCNNOutputLayers(cfg, ShapeSpec(channels=D)).cls_score, nn.Linear)
    cfg.MODEL.ROI_BOX_HEAD[key] = True
    message = (
        "DisAlign's box predictor uses softmax cross-entropy: set "
        "MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE and USE_FED_LOSS to False"
    )
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        DisAlignFastRCNNOutputLayers(cfg, ShapeSpec(channels=D))
