"""
Invariants of the method, through the shipped configs:

* a stage-2 model freshly built from a stage-1 checkpoint gives exactly stage 1's outputs before
  any training (detection, cascade, classification, segmentation; every initialisation that
  should be the identity);
* a detector aligns the K foreground logits and leaves the background logit untouched
  (``MODEL.DISALIGN.FOREGROUND_ONLY``), or aligns all K + 1 when told to;
* ``MODEL.DISALIGN.GRW.COUNT_BY`` reaches the loss: "images" and "instances" give the weights
  computed by hand from the training json, on data with several instances of a class per image.
"""

import json
import os

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.lvis import load_lvis_json
from detectron2.modeling import build_model
from detectron2.structures import Instances

from disalign.engine.checkpoint import SafeDetectionCheckpointer

from conftest import (
    MINIATURE_BASELINE,
    MINIATURE_DISALIGN,
    REPO_ROOT,
    hand_grw_weights,
    json_class_counts,
    load_config,
)

CLASSIFIER = (
    "configs/Miniature-LT/resnet18_baseline.yaml",
    "configs/Miniature-LT/resnet18_disalign.yaml",
)
SEGMENTOR = (
    "configs/Miniature-Seg/deeplabv3plus_R_18_baseline.yaml",
    "configs/Miniature-Seg/deeplabv3plus_R_18_disalign.yaml",
)
DETECTOR = (MINIATURE_BASELINE, MINIATURE_DISALIGN)
CASCADE = [
    *("MODEL.ROI_HEADS.NAME", "DisAlignCascadeROIHeads"),
    *("MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", True),
]
# every detection output is kept, so that the comparison covers many boxes and classes
# every detection scored, the per-image cap the standard one (9; not Fixed AP's larger one)
KEEP_ALL = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0, "TEST.FIXED_AP.ENABLED", False]


def _assert_same_outputs(a, b):
    """Exact equality of model outputs: tensors, Instances, and lists / dicts of them."""
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, Instances):
        assert a.get_fields().keys() == b.get_fields().keys()
        for k in a.get_fields():
            _assert_same_outputs(a.get(k), b.get(k))
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same_outputs(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same_outputs(x, y)
    elif hasattr(a, "tensor"):  # Boxes
        _assert_same_outputs(a.tensor, b.tensor)
    else:
        assert a == b


def _stage2_outputs_equal_stage1(tmp_path, configs, opts, inputs):
    """Build stage 1 (random init), save it, build stage 2 from that file; both outputs."""
    stage1_config, stage2_config = (os.path.join(REPO_ROOT, c) for c in configs)
    torch.manual_seed(0)
    stage1 = build_model(load_config(stage1_config, "MODEL.WEIGHTS", "", *opts))
    SafeDetectionCheckpointer(stage1, save_dir=str(tmp_path)).save("model_final")
    weights = str(tmp_path / "model_final.pth")
    torch.manual_seed(1)  # the alignment's own random init must not matter
    stage2 = build_model(load_config(stage2_config, "MODEL.WEIGHTS", weights, *opts))
    SafeDetectionCheckpointer(stage2).resume_or_load(weights, resume=False)
    assert stage2.alignment_stage and not stage1.alignment_stage
    outputs = []
    for model in (stage1, stage2):
        model.eval()
        with torch.no_grad():
            outputs.append(model(inputs))
    _assert_same_outputs(*outputs)
    return outputs[0]


# the options under which a fresh alignment is the identity (alpha 1, beta 0, any confidence)
IDENTITY_OPTIONS = {
    "paper": [],
    "no-confidence": ["MODEL.DISALIGN.CONFIDENCE", False],
    "magnitude-only": ["MODEL.DISALIGN.MARGIN", False],
    "margin-only": ["MODEL.DISALIGN.MAGNITUDE", False],
    "background-aligned-too": ["MODEL.DISALIGN.FOREGROUND_ONLY", False],
    "cosine": ["MODEL.DISALIGN.CLS_HEAD", "cosine"],
}


def _image(seed, size=128):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("option", sorted(IDENTITY_OPTIONS))
def test_fresh_stage2_detector_reproduces_stage1(tmp_path, option):
    inputs = [{"image": _image(0), "height": 128, "width": 128}]
    outputs = _stage2_outputs_equal_stage1(
        tmp_path, DETECTOR, KEEP_ALL + IDENTITY_OPTIONS[option], inputs
    )
    instances = outputs[0]["instances"]
    assert len(instances) == 9 and instances.has("pred_masks")  # not an empty comparison


@pytest.mark.parametrize("option", ["paper", "cosine"])
def test_fresh_stage2_cascade_reproduces_stage1(tmp_path, option):
    inputs = [{"image": _image(1), "height": 128, "width": 128}]
    outputs = _stage2_outputs_equal_stage1(
        tmp_path, DETECTOR, KEEP_ALL + CASCADE + IDENTITY_OPTIONS[option], inputs
    )
    assert len(outputs[0]["instances"]) == 9


@pytest.mark.parametrize("option", ["paper", "no-confidence", "cosine"])
def test_fresh_stage2_classifier_reproduces_stage1(tmp_path, option):
    inputs = [{"image": _image(s, 32), "label": 0} for s in range(4)]
    # the paper's initialisation (the miniature's config starts from the official alpha 2)
    paper_init = ["MODEL.DISALIGN.ALPHA_INIT", 1.0, "MODEL.DISALIGN.CONFIDENCE_WEIGHT_INIT", None]
    opts = paper_init + IDENTITY_OPTIONS[option]
    outputs = _stage2_outputs_equal_stage1(tmp_path, CLASSIFIER, opts, inputs)
    assert len(outputs) == 4 and outputs[0]["logits"].std() > 0


@pytest.mark.parametrize("option", ["paper", "no-confidence"])
def test_fresh_stage2_segmentor_reproduces_stage1(tmp_path, option):
    inputs = [{"image": _image(2), "height": 128, "width": 128}]
    outputs = _stage2_outputs_equal_stage1(tmp_path, SEGMENTOR, IDENTITY_OPTIONS[option], inputs)
    assert outputs[0]["sem_seg"].shape[1:] == (128, 128)


@pytest.mark.parametrize("foreground_only", [True, False])
def test_detector_alignment_covers_the_foreground_logits_only(foreground_only):
    cfg = load_config(
        MINIATURE_DISALIGN, "MODEL.WEIGHTS", "", "MODEL.DISALIGN.FOREGROUND_ONLY", foreground_only
    )
    predictor = build_model(cfg).roi_heads.box_predictor
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    alignment = predictor.alignment
    assert alignment.num_aligned == (num_classes if foreground_only else num_classes + 1)
    torch.manual_seed(0)
    with torch.no_grad():  # a trained-looking alignment: every logit it covers moves
        alignment.alpha.uniform_(1.5, 2.0)
        alignment.beta.uniform_(1.0, 2.0)
    x = torch.randn(7, predictor.cls_score.in_features)
    with torch.no_grad():
        z = predictor.cls_score(x)
        scores, _ = predictor(x)
    assert scores.shape == (7, num_classes + 1)
    assert (scores[:, :num_classes] != z[:, :num_classes]).all()
    if foreground_only:
        assert torch.equal(scores[:, num_classes], z[:, num_classes])
    else:
        assert (scores[:, num_classes] != z[:, num_classes]).all()


@pytest.fixture(scope="module")
def crowded_lvis(tmp_path_factory):
    """
    The miniature LVIS training json with a second instance of the category of every third
    annotation in the same image, registered as a training set: instance counts then differ
    from image counts.
    """
    name = "miniature_lvis_train_crowded"
    source = MetadataCatalog.get("miniature_lvis_train")
    DatasetCatalog.get("miniature_lvis_train")  # generates the miniature if needed
    with open(source.json_file) as f:
        data = json.load(f)
    extra = [dict(a, id=10**6 + i) for i, a in enumerate(data["annotations"][::3])]
    data["annotations"] += extra
    path = tmp_path_factory.mktemp("crowded") / "train.json"
    path.write_text(json.dumps(data))
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: load_lvis_json(str(path), source.image_root))
    MetadataCatalog.get(name).set(
        thing_classes=source.thing_classes, json_file=str(path), image_root=source.image_root,
        evaluator_type="lvis",
    )  # fmt: skip
    yield name, str(path)
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


@pytest.mark.parametrize("count_by", ["images", "instances"])
def test_count_by_reaches_the_grw_loss(crowded_lvis, count_by):
    name, json_file = crowded_lvis
    counts = json_class_counts(json_file, count_by)
    assert counts != json_class_counts(json_file, "instances" if count_by == "images" else "images")
    cfg = load_config(
        MINIATURE_DISALIGN,
        *("MODEL.WEIGHTS", "", "DATASETS.TRAIN", (name,)),
        *("MODEL.DISALIGN.GRW.COUNT_BY", count_by, "MODEL.DISALIGN.GRW.RHO", 0.8),
    )
    weights = build_model(cfg).roi_heads.box_predictor.grw.class_weights()
    expected = hand_grw_weights(counts, 0.8) + [1.0]  # background weight 1
    assert weights.tolist() == pytest.approx(expected, rel=1e-6)
