"""
Every shipped config builds a model; the cascade ROI heads carry the DisAlign predictor too.
"""

import glob
import os

import pytest
import torch
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data.build import trivial_batch_collator
from detectron2.data.datasets.lvis import get_lvis_instances_meta
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from disalign import DisAlignFastRCNNOutputLayers, alignment_parameter_names

from conftest import MINIATURE_DISALIGN, REPO_ROOT, load_config

CONFIGS = sorted(
    os.path.relpath(p, REPO_ROOT)
    for p in glob.glob(os.path.join(REPO_ROOT, "configs", "**", "*.yaml"), recursive=True)
    if not os.path.basename(p).startswith("Base-")
)


def test_configs_are_found():
    assert len(CONFIGS) >= 4


@pytest.mark.parametrize("config", CONFIGS)
def test_config_builds_a_model(config):
    cfg = load_config(os.path.join(REPO_ROOT, config), "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu")
    model = build_model(cfg)
    predictors = [m for m in model.modules() if isinstance(m, DisAlignFastRCNNOutputLayers)]
    assert predictors and all(p.num_classes == cfg.MODEL.ROI_HEADS.NUM_CLASSES for p in predictors)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if cfg.MODEL.DISALIGN.ALIGNMENT_STAGE:
        assert trainable == set(alignment_parameter_names(model)) != set()
    else:  # stage 1: the heads train (the backbone up to MODEL.BACKBONE.FREEZE_AT)
        assert alignment_parameter_names(model) == []
        heads = {n for n, _ in model.named_parameters() if not n.startswith("backbone.")}
        assert heads <= trainable
    for dataset in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        assert dataset in DatasetCatalog.list()
        assert len(_thing_classes(dataset)) == cfg.MODEL.ROI_HEADS.NUM_CLASSES


def _thing_classes(dataset):
    # detectron2 sets the builtin LVIS classes when the dataset is loaded; read them directly
    if dataset.startswith("lvis_"):
        return get_lvis_instances_meta(dataset)["thing_classes"]
    return MetadataCatalog.get(dataset).thing_classes


def test_cascade_heads_align_every_stage():
    torch.manual_seed(0)
    cfg = load_config(
        MINIATURE_DISALIGN,
        *("MODEL.WEIGHTS", "", "MODEL.ROI_HEADS.NAME", "DisAlignCascadeROIHeads"),
        *("MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", True),
    )
    model = build_model(cfg)
    predictors = model.roi_heads.box_predictor
    assert len(predictors) == 3
    assert all(isinstance(p, DisAlignFastRCNNOutputLayers) and p.alignment for p in predictors)
    # each stage keeps its own box regression weights
    weights = [p.box2box_transform.weights for p in predictors]
    assert weights == [tuple(w) for w in cfg.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(alignment_parameter_names(model)) and len(trainable) == 12

    mapper = DatasetMapper(cfg, is_train=True)
    batch = trivial_batch_collator(
        [mapper(d) for d in DatasetCatalog.get("miniature_lvis_val")[:2]]
    )
    model.train()
    with EventStorage():
        losses = model(batch)
    assert set(losses) == {f"loss_cls_stage{i}" for i in range(3)}
    sum(losses.values()).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n in trainable)
    model.eval()
    with torch.no_grad():
        outputs = model(batch)
    assert len(outputs) == 2 and all(len(o["instances"]) <= 9 for o in outputs)
