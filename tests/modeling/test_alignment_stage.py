"""
Stage 2 freezes everything but alpha, beta and the confidence layer: after real training
iterations, every other parameter and buffer is bit-identical.
"""

import pytest
import torch
from detectron2.data import build_detection_train_loader
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer

from disalign import alignment_parameter_names, freeze_for_alignment_stage, frozen_submodules

from conftest import MINIATURE_BASELINE, RecordingTrainer, load_config

ALIGNMENT = {
    "roi_heads.box_predictor.alignment.alpha",
    "roi_heads.box_predictor.alignment.beta",
    "roi_heads.box_predictor.alignment.confidence.weight",
    "roi_heads.box_predictor.alignment.confidence.bias",
}
CLASSIFIER = {"roi_heads.box_predictor.cls_score.weight", "roi_heads.box_predictor.cls_score.bias"}


@pytest.mark.parametrize(
    "opts, expected",
    [
        ([], ALIGNMENT),  # DisAlign
        (
            ["MODEL.DISALIGN.MARGIN", False, "MODEL.DISALIGN.CONFIDENCE", False],
            {"roi_heads.box_predictor.alignment.alpha"},
        ),  # magnitude only, input-agnostic
        (
            [
                "MODEL.DISALIGN.CALIBRATION",
                False,
                "MODEL.DISALIGN.ALIGNMENT_STAGE_TRAINABLE",
                "classifier",
            ],
            CLASSIFIER,
        ),  # no calibration
    ],
)
def test_stage2_trains_only_its_parameters_and_moves_no_buffer(miniature_cfg, opts, expected):
    torch.manual_seed(0)
    cfg = miniature_cfg
    cfg.merge_from_list(opts)
    cfg.SOLVER.BASE_LR = 0.5  # large, so that the trained parameters move visibly
    model = build_model(cfg)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == expected
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert any("running_mean" in k for k in before)  # BatchNorm buffers are there to check

    trainer = RecordingTrainer(
        model, build_detection_train_loader(cfg), build_optimizer(cfg, model)
    )
    assert sum(len(g["params"]) for g in trainer.optimizer.param_groups) == len(expected)
    trainer.train(0, 3)

    # the frozen parts ran in eval mode, the path to the trained parameters in train mode
    assert model.training and model.roi_heads.training and model.roi_heads.box_predictor.training
    assert not model.backbone.training and not model.proposal_generator.training
    assert not model.roi_heads.box_head.training and not model.roi_heads.mask_head.training
    # only the classification loss, the one that trains something
    assert trainer.loss_names == [["loss_cls"]] * 3

    after = model.state_dict()
    assert set(after) == set(before)
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed == expected, sorted(changed ^ expected)


def test_stage1_model_is_plain_and_fully_trainable():
    cfg = load_config(MINIATURE_BASELINE, "MODEL.WEIGHTS", "")
    model = build_model(cfg)
    assert alignment_parameter_names(model) == []
    assert all(p.requires_grad for p in model.parameters())
    model.train()
    assert all(m.training for m in model.modules())
    with pytest.raises(ValueError, match="no alignment parameters"):
        freeze_for_alignment_stage(model)


def test_frozen_submodules_are_the_largest_frozen_subtrees(miniature_cfg):
    model = build_model(miniature_cfg)
    frozen = {id(m) for m in frozen_submodules(model)}
    named = dict(model.named_modules())
    for name in (
        "backbone",
        "proposal_generator",
        "roi_heads.box_head",
        "roi_heads.mask_head",
        "roi_heads.box_predictor.cls_score",
        "roi_heads.box_predictor.bbox_pred",
    ):
        assert id(named[name]) in frozen, name
    for name in ("roi_heads", "roi_heads.box_predictor", "roi_heads.box_predictor.alignment"):
        assert id(named[name]) not in frozen, name
