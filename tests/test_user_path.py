"""
The path of a user with real checkpoints: detectron2 model-zoo ``.pkl`` files and
``detectron2://`` URLs whose class count differs from the config's are refused in one line,
fitting ones load.
"""

import glob
import os
import pickle

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from disalign.checkpoint import (
    CheckpointMismatchError,
    SafeDetectionCheckpointer,
    download_cache_path,
)

from conftest import MINIATURE_DISALIGN, REPO_ROOT, load_config, one_line_error, train_net

ALIGNMENT = "roi_heads.box_predictor.alignment."


def _model(num_classes=36, *opts):
    cfg = load_config(MINIATURE_DISALIGN, "MODEL.WEIGHTS", "")
    cfg.merge_from_list(["MODEL.ROI_HEADS.NUM_CLASSES", num_classes, *opts])
    torch.manual_seed(num_classes)
    return build_model(cfg)


def _zoo_pickle(path, model, *, matching_heuristics):
    """A detectron2 model-zoo file: NumPy arrays under "model", as detectron2 publishes them."""
    weights = {
        k: v.numpy().copy() for k, v in model.state_dict().items() if not k.startswith(ALIGNMENT)
    }
    data = {"model": weights, "__author__": "Detectron2 Model Zoo"}
    if matching_heuristics:
        data["matching_heuristics"] = True
    path.write_bytes(pickle.dumps(data))
    return weights


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("matching_heuristics", [False, True])
def test_zoo_pickle_of_another_class_count_is_refused(tmp_path, matching_heuristics):
    path = tmp_path / "model_final.pkl"
    _zoo_pickle(path, _model(20), matching_heuristics=matching_heuristics)
    model = _model(36)
    before = _state(model)
    with pytest.raises(CheckpointMismatchError) as e:
        SafeDetectionCheckpointer(model).load(str(path))
    message = str(e.value)
    assert "\n" not in message
    # 20 classes + background against 36 + background, 256-d box features
    assert "'roi_heads.box_predictor.cls_score.weight' has shape (21, 256)" in message
    assert "model's 'roi_heads.box_predictor.cls_score.weight' (37, 256)" in message
    # cls_score and bbox_pred (weight, bias each) and the mask predictor (weight, bias)
    assert "6 class-dependent parameter(s) differ" in message
    after = model.state_dict()  # nothing was loaded
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_only_a_mask_head_of_another_shape_is_refused(tmp_path):
    path = tmp_path / "class_agnostic_masks.pkl"
    _zoo_pickle(
        path, _model(36, "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", True), matching_heuristics=False
    )
    with pytest.raises(
        CheckpointMismatchError,
        match=r"'roi_heads.mask_head.predictor.weight' "
        r"has shape \(1, 128, 1, 1\).*\(36, 128, 1, 1\).*2 class-dependent",
    ):
        SafeDetectionCheckpointer(_model(36)).load(str(path))


def test_detectron_caffe2_pickle_of_another_class_count_is_refused(tmp_path):
    # Detectron (Caffe2) names, background first: 81 COCO outputs, as detectron2 converts them
    path = tmp_path / "detectron.pkl"
    blobs = {
        "cls_score_w": np.zeros((81, 256), np.float32),
        "cls_score_b": np.zeros(81, np.float32),
    }
    path.write_bytes(pickle.dumps({"blobs": blobs}))
    with pytest.raises(CheckpointMismatchError, match=r"'cls_score.weight' has shape \(81, 256\)"):
        SafeDetectionCheckpointer(_model(36)).load(str(path))


@pytest.mark.parametrize("matching_heuristics", [False, True])
def test_zoo_pickle_of_the_same_classes_loads(tmp_path, matching_heuristics):
    path = tmp_path / "model_final.pkl"
    weights = _zoo_pickle(path, _model(36), matching_heuristics=matching_heuristics)
    model = _model(36)
    model.roi_heads.box_predictor.alignment.beta.data.fill_(0.25)  # not in the file: kept
    SafeDetectionCheckpointer(model).load(str(path))
    state = model.state_dict()
    for key, value in weights.items():
        assert torch.equal(state[key], torch.from_numpy(value)), key
    torch.testing.assert_close(state[ALIGNMENT + "beta"], torch.full((36,), 0.25))


def _cache_url(tmp_path, monkeypatch, name, model):
    """A detectron2:// URL whose file lies in detectron2's download cache (no internet here)."""
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    url = f"detectron2://Tests/{tmp_path.name}/{name}"
    cached = download_cache_path(url)
    assert cached == str(tmp_path / "cache" / "detectron2" / "Tests" / tmp_path.name / name)
    (tmp_path / "cache" / "detectron2" / "Tests" / tmp_path.name).mkdir(parents=True)
    weights = _zoo_pickle(type(tmp_path)(cached), model, matching_heuristics=False)
    return url, weights


def test_detectron2_url_of_another_class_count_is_refused(tmp_path, monkeypatch):
    url, _ = _cache_url(tmp_path, monkeypatch, "model_final_20.pkl", _model(20))
    with pytest.raises(
        CheckpointMismatchError, match=r"checkpoint 'detectron2://Tests/.*has shape \(21, 256\)"
    ):
        SafeDetectionCheckpointer(_model(36)).load(url)
    # and through train_net.py: one line, before any training
    result = train_net(
        "--config-file",
        MINIATURE_DISALIGN,
        "MODEL.WEIGHTS",
        url,
        "OUTPUT_DIR",
        tmp_path / "out",
        env={"FVCORE_CACHE": str(tmp_path / "cache")},
    )
    one_line_error(result, f"MODEL.WEIGHTS: checkpoint '{url}' does not fit the model's classes")


def test_detectron2_url_of_the_same_classes_loads(tmp_path, monkeypatch):
    url, weights = _cache_url(tmp_path, monkeypatch, "model_final_36.pkl", _model(36))
    model = _model(36)
    SafeDetectionCheckpointer(model).load(url)
    state = model.state_dict()
    assert all(torch.equal(state[k], torch.from_numpy(v)) for k, v in weights.items())


def test_detectron2_url_that_cannot_be_downloaded(tmp_path):
    url = f"detectron2://Tests/{tmp_path.name}/missing.pkl"
    result = train_net(
        "--config-file",
        MINIATURE_DISALIGN,
        "MODEL.WEIGHTS",
        url,
        "OUTPUT_DIR",
        tmp_path / "out",
        env={"FVCORE_CACHE": str(tmp_path / "cache"), "https_proxy": "http://127.0.0.1:9"},
    )
    cached = tmp_path / "cache" / "detectron2" / "Tests" / tmp_path.name / "missing.pkl"
    one_line_error(result, f"cannot download '{url}'")
    assert f"copy the file to {cached}" in result.stderr.strip().splitlines()[-1]


def test_every_shipped_config_has_a_fixed_seed():
    configs = [
        p
        for p in glob.glob(os.path.join(REPO_ROOT, "configs", "**", "*.yaml"), recursive=True)
        if os.path.basename(p) != "model_zoo.yaml"  # the model-zoo table, not a config
    ]
    assert len(configs) >= 200
    unseeded = [os.path.relpath(p, REPO_ROOT) for p in configs if not load_config(p).SEED >= 0]
    assert unseeded == []
