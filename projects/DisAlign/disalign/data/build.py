# -*- coding: utf-8 -*-
"""
Data loaders for every task, chosen by the datasets' ``evaluator_type`` metadata: detectron2's own
loaders and DatasetMapper, with the classification mapper for classification datasets and the
usual semantic segmentation augmentations (scale jitter, crop, flip) for "sem_seg" datasets.
"""

from typing import Sequence

from detectron2.data import DatasetMapper, MetadataCatalog, build_detection_test_loader
from detectron2.data import transforms as T

from .classification import ClassificationDatasetMapper
from .resumable import build_resumable_train_loader

__all__ = ["build_test_loader", "build_train_loader", "dataset_kind"]


def dataset_kind(dataset_names: Sequence[str]) -> str:
    """The common ``evaluator_type`` of registered datasets ("lvis", "classification", ...)."""
    kinds = {MetadataCatalog.get(name).get("evaluator_type", None) for name in dataset_names}
    if len(kinds) != 1:
        raise ValueError(
            f"datasets {tuple(dataset_names)} mix evaluator types {sorted(map(str, kinds))}"
        )
    return kinds.pop()


def sem_seg_train_augmentations(cfg):
    """Resize the shorter side to a random INPUT.MIN_SIZE_TRAIN, crop INPUT.CROP.SIZE (retrying
    while one class covers more than INPUT.CROP.SINGLE_CATEGORY_MAX_AREA of it), flip."""
    augmentations = [
        T.ResizeShortestEdge(
            cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
        )
    ]
    if cfg.INPUT.CROP.ENABLED:
        augmentations.append(
            T.RandomCrop_CategoryAreaConstraint(
                cfg.INPUT.CROP.TYPE,
                cfg.INPUT.CROP.SIZE,
                cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
                cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            )
        )
    augmentations.append(T.RandomFlip())
    return augmentations


def build_train_loader(cfg, start_iter: int = 0):
    """
    The training loader of ``cfg.DATASETS.TRAIN``, resumable exactly at iteration ``start_iter``
    (see :mod:`disalign.data.resumable`).
    """
    kind = dataset_kind(cfg.DATASETS.TRAIN)
    if kind == "classification":
        mapper = ClassificationDatasetMapper(cfg, True)
    elif kind == "sem_seg":
        mapper = DatasetMapper(cfg, is_train=True, augmentations=sem_seg_train_augmentations(cfg))
    else:
        mapper = DatasetMapper(cfg, is_train=True)
    return build_resumable_train_loader(cfg, mapper, start_iter)


def build_test_loader(cfg, dataset_name: str):
    """The test loader of one registered dataset."""
    if dataset_kind([dataset_name]) == "classification":
        return build_detection_test_loader(
            cfg, dataset_name, mapper=ClassificationDatasetMapper(cfg, False)
        )
    return build_detection_test_loader(cfg, dataset_name)
