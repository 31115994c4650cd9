# -*- coding: utf-8 -*-
"""
Inputs that would waste a whole run are refused by train_net.py in one line before anything is
written: a class count that differs from the datasets', and a stage-2 checkpoint that would leave
frozen parameters random.
"""

import pytest
import torch

from conftest import (
    FAST_DETECTION,
    MINIATURE_BASELINE,
    MINIATURE_DISALIGN,
    one_line_error,
    train_net,
)


def assert_nothing_written(output_dir):
    assert not output_dir.exists() or list(output_dir.iterdir()) == []


@pytest.mark.parametrize("eval_only", [False, True])
def test_class_count_larger_than_the_datasets_is_refused_before_training(
    eval_only, small_lvis_val, tmp_path
):
    env, _ = small_lvis_val
    output_dir = tmp_path / "out"
    arguments = ["--config-file", MINIATURE_BASELINE, *FAST_DETECTION]
    arguments += ["MODEL.ROI_HEADS.NUM_CLASSES", 40, "OUTPUT_DIR", output_dir]
    result = train_net(*(["--eval-only"] if eval_only else []), *arguments, env=env)
    one_line_error(result, "MODEL.ROI_HEADS.NUM_CLASSES=40, but dataset 'miniature_lvis_")
    assert "has 36 classes; set MODEL.ROI_HEADS.NUM_CLASSES 36" in result.stderr
    assert_nothing_written(output_dir)


def test_stage2_from_a_checkpoint_of_another_backbone_is_refused(miniature_stage1, tmp_path):
    """The stage-1 model is an R-18; this stage 2 builds an R-34, whose extra blocks it lacks."""
    stage1, _ = miniature_stage1
    output_dir = tmp_path / "stage2"
    result = train_net(
        "--config-file", MINIATURE_DISALIGN, *FAST_DETECTION, "MODEL.RESNETS.DEPTH", 34,
        "MODEL.WEIGHTS", stage1 / "model_final.pth", "OUTPUT_DIR", output_dir,
    )  # fmt: skip
    one_line_error(result, "has no entry for the frozen parameter 'backbone.bottom_up.res2.2.")
    assert "frozen parameter(s) not provided): the alignment stage would keep them random" in (
        result.stderr
    )
    assert_nothing_written(output_dir)


def test_stage2_from_a_checkpoint_of_another_width_is_refused(miniature_stage1, tmp_path):
    """A frozen trunk parameter of another shape (the FPN's width) is refused, naming it."""
    stage1, _ = miniature_stage1
    state = torch.load(stage1 / "model_final.pth", map_location="cpu", weights_only=True)
    key = next(k for k in state["model"] if k.startswith("backbone.fpn_lateral2."))
    state["model"][key] = torch.zeros((1,) + tuple(state["model"][key].shape[1:]))
    torch.save(state, tmp_path / "narrow.pth")
    output_dir = tmp_path / "stage2"
    result = train_net(
        "--config-file", MINIATURE_DISALIGN, *FAST_DETECTION,
        "MODEL.WEIGHTS", tmp_path / "narrow.pth", "OUTPUT_DIR", output_dir,
    )  # fmt: skip
    one_line_error(result, "has shape (1, ")
    assert f"for the frozen parameter '{key}' (1 frozen parameter(s) not provided)" in result.stderr
    assert_nothing_written(output_dir)


def test_box_predictor_of_another_input_width_names_the_width(miniature_stage1, tmp_path):
    """The same number of classes, features of another width: not blamed on NUM_CLASSES."""
    stage1, _ = miniature_stage1
    state = torch.load(stage1 / "model_final.pth", map_location="cpu", weights_only=True)
    key = "roi_heads.box_predictor.cls_score.weight"
    outputs, width = state["model"][key].shape
    state["model"][key] = torch.zeros(outputs, width * 2)
    torch.save(state, tmp_path / "wide.pth")
    result = train_net(
        "--config-file", MINIATURE_DISALIGN, *FAST_DETECTION,
        "MODEL.WEIGHTS", tmp_path / "wide.pth", "OUTPUT_DIR", tmp_path / "stage2",
    )  # fmt: skip
    one_line_error(result, f"its '{key}' has shape ({outputs}, {2 * width}), the model's '{key}'")
    assert "inputs of another width" in result.stderr
    assert "NUM_CLASSES" not in result.stderr.strip().splitlines()[-1]
