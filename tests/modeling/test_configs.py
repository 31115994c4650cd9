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

from disalign import (
    DisAlignFastRCNNOutputLayers,
    DisAlignImageClassifier,
    DisAlignSemanticSegmentor,
    alignment_parameter_names,
)
from disalign.config import class_count_key

from conftest import MINIATURE_DISALIGN, REPO_ROOT, RecordingTrainer, load_config

CONFIGS = sorted(
    os.path.relpath(p, REPO_ROOT)
    for p in glob.glob(os.path.join(REPO_ROOT, "configs", "**", "*.yaml"), recursive=True)
    if not os.path.basename(p).startswith("Base-") and os.path.basename(p) != "model_zoo.yaml"
)


def test_configs_are_found():
    assert len(CONFIGS) >= 170


def test_every_config_fixes_its_seed():
    # exact resumption and repeatable runs need a fixed SEED (-1 draws a fresh one per run)
    unseeded = [c for c in CONFIGS if load_config(os.path.join(REPO_ROOT, c)).SEED < 0]
    assert unseeded == []


@pytest.mark.parametrize("config", CONFIGS)
def test_config_builds_a_model(config):
    # built on PyTorch's "meta" device: every module, shape and requires_grad as on the CPU,
    # without filling the weights (most of a CPU build's 1-8 s)
    cfg = load_config(os.path.join(REPO_ROOT, config), "MODEL.WEIGHTS", "", "MODEL.DEVICE", "meta")
    with torch.device("meta"):
        model = build_model(cfg)
    if isinstance(model, DisAlignImageClassifier):
        num_classes = cfg.MODEL.IMAGE_CLASSIFIER.NUM_CLASSES
        assert model.cls_score.weight.shape[0] == num_classes
    elif isinstance(model, DisAlignSemanticSegmentor):
        num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        assert model.sem_seg_head.cls_score.weight.shape[0] == num_classes
    else:
        num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
        predictors = [m for m in model.modules() if isinstance(m, DisAlignFastRCNNOutputLayers)]
        assert predictors and all(p.num_classes == num_classes for p in predictors)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if cfg.MODEL.DISALIGN.ALIGNMENT_STAGE:
        expected = set(alignment_parameter_names(model))
        if cfg.MODEL.DISALIGN.ALIGNMENT_STAGE_TRAINABLE == "classifier":
            expected |= {n for n, _ in model.named_parameters() if "cls_score." in n}
        assert trainable == expected != set()
    else:  # stage 1: the heads train (the backbone up to MODEL.BACKBONE.FREEZE_AT)
        assert alignment_parameter_names(model) == []
        heads = {n for n, _ in model.named_parameters() if not n.startswith("backbone.")}
        assert heads <= trainable
    for dataset in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        assert dataset in DatasetCatalog.list()
        assert _num_classes(dataset) == num_classes


def _num_classes(dataset):
    # detectron2 sets the builtin LVIS classes when the dataset is loaded; read them directly
    if dataset.startswith("lvis_"):
        return len(get_lvis_instances_meta(dataset)["thing_classes"])
    metadata = MetadataCatalog.get(dataset)
    if metadata.evaluator_type == "classification":
        return metadata.num_classes
    if metadata.evaluator_type == "sem_seg":
        return len(metadata.stuff_classes)
    return len(metadata.thing_classes)


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
    # the miniature keeps up to TEST.FIXED_AP.DETS_PER_IMAGE per image for Fixed AP
    limit = cfg.TEST.FIXED_AP.DETS_PER_IMAGE if cfg.TEST.FIXED_AP.ENABLED else 9
    assert len(outputs) == 2 and all(len(o["instances"]) <= limit for o in outputs)


MINIATURE_OVERRIDES = [
    *("MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.NUM_CLASSES", 36),
    *("DATASETS.TRAIN", ("miniature_lvis_train",), "DATASETS.TEST", ("miniature_lvis_val",)),
    *("INPUT.MIN_SIZE_TRAIN", (128,), "INPUT.MAX_SIZE_TRAIN", 128),
    *("SOLVER.IMS_PER_BATCH", 2, "DATALOADER.NUM_WORKERS", 0),
    *("MODEL.RPN.POST_NMS_TOPK_TRAIN", 100, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32),
    # no ImageNet weights here: FrozenBN's identity statistics would make a random R-50 diverge
    *("MODEL.RESNETS.NORM", "BN"),
]
SAMPLE = [  # a stage 1 and a stage 2 of each architecture, dot and cosine heads, both datasets
    "configs/LVIS-v0.5/mask_rcnn_R_50_FPN_1x_cosine.yaml",
    "configs/LVIS-v0.5/mask_rcnn_R_50_FPN_1x_disalign.yaml",
    "configs/LVIS-v1.0/cascade_mask_rcnn_R_50_FPN_1x_baseline.yaml",
    "configs/LVIS-v1.0/cascade_mask_rcnn_R_50_FPN_1x_disalign_cosine.yaml",
    "configs/LVIS-v0.5/ablations/mask_rcnn_R_50_FPN_1x_baseline_rfs.yaml",
]


@pytest.mark.parametrize("config", SAMPLE)
def test_sample_config_trains_on_the_miniature(config):
    from detectron2.data import build_detection_train_loader
    from detectron2.solver import build_optimizer

    torch.manual_seed(0)
    cfg = load_config(os.path.join(REPO_ROOT, config), *MINIATURE_OVERRIDES)
    model = build_model(cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = RecordingTrainer(
        model, build_detection_train_loader(cfg), build_optimizer(cfg, model)
    )
    trainer.train(0, 2)
    (losses,) = {tuple(names) for names in trainer.loss_names}
    losses = set(losses)
    cascade = cfg.MODEL.ROI_HEADS.NAME == "DisAlignCascadeROIHeads"
    cls_losses = {f"loss_cls_stage{i}" for i in range(3)} if cascade else {"loss_cls"}
    if cfg.MODEL.DISALIGN.ALIGNMENT_STAGE:
        assert losses == cls_losses
    else:
        assert cls_losses | {"loss_mask", "loss_rpn_cls", "loss_rpn_loc"} <= losses
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and moved <= {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(
    "config, key, num_classes",
    [
        ("LVIS-v1.0/mask_rcnn_R_50_FPN_1x_disalign.yaml", "MODEL.ROI_HEADS.NUM_CLASSES", 1203),
        ("LVIS-v0.5/mask_rcnn_R_50_FPN_1x_baseline.yaml", "MODEL.ROI_HEADS.NUM_CLASSES", 1230),
        ("Miniature-LT/resnet18_baseline.yaml", "MODEL.IMAGE_CLASSIFIER.NUM_CLASSES", 36),
        ("ImageNet-LT/R_50_90e_baseline.yaml", "MODEL.IMAGE_CLASSIFIER.NUM_CLASSES", 1000),
        ("Miniature-Seg/deeplabv3plus_R_18_baseline.yaml", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 20),
        ("ADE20K/fcn_R_101_512x512_160k_baseline.yaml", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 150),
    ],
)
def test_class_count_key_names_the_key_of_each_task(config, key, num_classes):
    cfg = load_config(os.path.join(REPO_ROOT, "configs", config))
    assert class_count_key(cfg) == (key, num_classes)
