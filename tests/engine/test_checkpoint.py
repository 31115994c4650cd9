"""
The path of a user with real checkpoints: detectron2 model-zoo ``.pkl`` files and
``detectron2://`` URLs whose class count differs from the config's are refused in one line,
fitting ones load.
"""

import os
import pickle

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from disalign.engine.checkpoint import (
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
    """
    A detectron2 model-zoo file: NumPy arrays under "model", as detectron2 publishes them. Its
    values are the model's plus 1, so that they differ from those of any model built by
    ``_model`` with the same arguments (the same seed): loading it is seen in every value.
    """
    weights = {
        k: (v + 1).numpy() for k, v in model.state_dict().items() if not k.startswith(ALIGNMENT)
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
    before = _state(model)
    SafeDetectionCheckpointer(model).load(str(path))
    _assert_loaded(model, before, weights)
    torch.testing.assert_close(model.state_dict()[ALIGNMENT + "beta"], torch.full((36,), 0.25))


def _assert_loaded(model, before, weights):
    """Every key of the file holds the file's value, no longer the model's initial one."""
    state = model.state_dict()
    assert set(weights) <= set(state)
    for key, value in weights.items():
        assert torch.equal(state[key], torch.from_numpy(value)), key
        assert not torch.equal(state[key], before[key]), key


MINIATURE_CLASSIFIER = os.path.join(REPO_ROOT, "configs/Miniature-LT/resnet18_{}.yaml")


def _classifier(num_classes, stage):
    """The miniature image classifier (DisAlignImageClassifier), "baseline" or "disalign"."""
    cfg = load_config(MINIATURE_CLASSIFIER.format(stage), "MODEL.WEIGHTS", "")
    cfg.merge_from_list(["MODEL.IMAGE_CLASSIFIER.NUM_CLASSES", num_classes])
    torch.manual_seed(num_classes)
    return build_model(cfg)


@pytest.mark.parametrize("matching_heuristics", [False, True])
def test_classifier_pickle_of_another_class_count_is_refused(tmp_path, matching_heuristics):
    path = tmp_path / "classifier.pkl"
    writer = _classifier(20, "baseline")
    weights = _zoo_pickle(path, writer, matching_heuristics=matching_heuristics)
    assert weights["cls_score.weight"].shape == (20, 512)
    model = _classifier(36, "disalign")
    before = _state(model)
    # everything but the classifier would fit (and the file's values differ from the model's)
    fitting = [k for k in weights if not k.startswith("cls_score.")]
    assert fitting and all(weights[k].shape == before[k].shape for k in fitting)
    assert all(not np.array_equal(weights[k], before[k].numpy()) for k in fitting)
    with pytest.raises(CheckpointMismatchError) as e:
        SafeDetectionCheckpointer(model).load(str(path))
    message = str(e.value)
    assert "\n" not in message
    assert "its 'cls_score.weight' has shape (20, 512)" in message
    assert "model's 'cls_score.weight' (36, 512)" in message
    assert "2 class-dependent parameter(s) differ" in message
    after = model.state_dict()  # nothing was loaded
    assert after.keys() == before.keys()
    assert [k for k, v in before.items() if not torch.equal(after[k], v)] == []


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
    before = _state(model)
    SafeDetectionCheckpointer(model).load(url)
    _assert_loaded(model, before, weights)


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


# --- GPUs ---------------------------------------------------------------------------------------


# --- COCO-format datasets without detectron2's compiled ops -----------------------------------


# --- stage 2 from detectron2's LVIS v0.5 model-zoo checkpoints --------------------------------

# detectron2's model-zoo architecture (its configs/Base-RCNN-FPN.yaml and
# LVISv0.5-InstanceSegmentation/mask_rcnn_*_FPN_1x.yaml), built by detectron2's own classes
# fmt: off
D2_ZOO_MASK_RCNN = [
    "MODEL.META_ARCHITECTURE", "GeneralizedRCNN", "MODEL.MASK_ON", True,
    "MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone",
    "MODEL.RESNETS.OUT_FEATURES", ["res2", "res3", "res4", "res5"],
    "MODEL.FPN.IN_FEATURES", ["res2", "res3", "res4", "res5"],
    "MODEL.ANCHOR_GENERATOR.SIZES", [[32], [64], [128], [256], [512]],
    "MODEL.RPN.IN_FEATURES", ["p2", "p3", "p4", "p5", "p6"],
    "MODEL.ROI_HEADS.NAME", "StandardROIHeads", "MODEL.ROI_HEADS.NUM_CLASSES", 1230,
    "MODEL.ROI_HEADS.IN_FEATURES", ["p2", "p3", "p4", "p5"],
    "MODEL.ROI_BOX_HEAD.NAME", "FastRCNNConvFCHead", "MODEL.ROI_BOX_HEAD.NUM_FC", 2,
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", 7,
    "MODEL.ROI_MASK_HEAD.NAME", "MaskRCNNConvUpsampleHead", "MODEL.ROI_MASK_HEAD.NUM_CONV", 4,
    "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION", 14,
]
D2_ZOO_BACKBONES = {
    "R_50": ["MODEL.RESNETS.DEPTH", 50],
    "R_101": ["MODEL.RESNETS.DEPTH", 101],
    "X_101_32x8d": ["MODEL.RESNETS.DEPTH", 101, "MODEL.RESNETS.STRIDE_IN_1X1", False,
                    "MODEL.RESNETS.NUM_GROUPS", 32, "MODEL.RESNETS.WIDTH_PER_GROUP", 8],
}
D2_ZOO_URLS = {  # detectron2's model_zoo/model_zoo.py
    arch: f"LVISv0.5-InstanceSegmentation/mask_rcnn_{arch}_FPN_1x/{model_id}"
    for arch, model_id in (
        ("R_50", "144219072/model_final_571f7c.pkl"),
        ("R_101", "144219035/model_final_824ab5.pkl"),
        ("X_101_32x8d", "144219108/model_final_5e3439.pkl"),
    )
}
# fmt: on


def _from_zoo_config(arch):
    path = os.path.join(
        REPO_ROOT, f"configs/LVIS-v0.5/mask_rcnn_{arch}_FPN_1x_disalign_from_zoo.yaml"
    )
    return load_config(path, "MODEL.DEVICE", "cpu")


@pytest.mark.parametrize("arch", sorted(D2_ZOO_BACKBONES))
def test_from_zoo_configs_fit_detectron2s_lvis_models(arch):
    cfg = _from_zoo_config(arch)
    assert cfg.MODEL.WEIGHTS == "detectron2://" + D2_ZOO_URLS[arch]
    assert cfg.MODEL.DISALIGN.ALIGNMENT_STAGE and cfg.MODEL.DISALIGN.GRW.ENABLED
    zoo = get_cfg()
    zoo.merge_from_list(D2_ZOO_MASK_RCNN + D2_ZOO_BACKBONES[arch] + ["MODEL.DEVICE", "cpu"])
    assert (cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD, cfg.INPUT.FORMAT) == (
        zoo.MODEL.PIXEL_MEAN,
        [57.375, 57.120, 58.395] if arch.startswith("X") else zoo.MODEL.PIXEL_STD,
        zoo.INPUT.FORMAT,
    )
    ours = {k: tuple(v.shape) for k, v in build_model(cfg).state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in build_model(zoo).state_dict().items()}
    # every parameter of detectron2's model has its name and shape in ours; ours adds only
    # DisAlign's alignment
    assert {k: ours.get(k) for k in theirs} == theirs
    assert set(ours) - set(theirs) == {
        ALIGNMENT + k for k in ("alpha", "beta", "confidence.weight", "confidence.bias")
    }


def test_from_zoo_config_loads_its_detectron2_url(tmp_path, monkeypatch):
    """The R-50 config's URL, resolved by detectron2 to its download cache, loads completely."""
    cfg = _from_zoo_config("R_50")
    zoo = get_cfg()
    zoo.merge_from_list(D2_ZOO_MASK_RCNN + D2_ZOO_BACKBONES["R_50"] + ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    zoo_model = build_model(zoo)
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path))
    cached = tmp_path / "detectron2" / D2_ZOO_URLS["R_50"]
    assert download_cache_path(cfg.MODEL.WEIGHTS) == str(cached)
    cached.parent.mkdir(parents=True)
    weights = {k: v.numpy() for k, v in zoo_model.state_dict().items()}
    cached.write_bytes(pickle.dumps({"model": weights, "__author__": "Detectron2 Model Zoo"}))
    del zoo_model
    model = build_model(cfg)
    SafeDetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    state = model.state_dict()
    assert all(torch.equal(state[k], torch.from_numpy(v)) for k, v in weights.items())
    torch.testing.assert_close(state[ALIGNMENT + "alpha"], torch.ones(1230))  # initial alpha
