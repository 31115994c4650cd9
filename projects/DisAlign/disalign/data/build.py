# -*- coding: utf-8 -*-
"""
Data loaders for every task, chosen by the datasets' ``evaluator_type`` metadata: detectron2's own
loaders, with the classification mapper for classification datasets.
"""

from typing import Sequence

from detectron2.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)

from .classification import ClassificationDatasetMapper

__all__ = ["build_test_loader", "build_train_loader", "dataset_kind"]


def dataset_kind(dataset_names: Sequence[str]) -> str:
    """The common ``evaluator_type`` of registered datasets ("lvis", "classification", ...)."""
    kinds = {MetadataCatalog.get(name).get("evaluator_type", None) for name in dataset_names}
    if len(kinds) != 1:
        raise ValueError(
            f"datasets {tuple(dataset_names)} mix evaluator types {sorted(map(str, kinds))}"
        )
    return kinds.pop()


def build_train_loader(cfg):
    """The training loader of ``cfg.DATASETS.TRAIN``."""
    if dataset_kind(cfg.DATASETS.TRAIN) == "classification":
        return build_detection_train_loader(cfg, mapper=ClassificationDatasetMapper(cfg, True))
    return build_detection_train_loader(cfg)


def build_test_loader(cfg, dataset_name: str):
    """The test loader of one registered dataset."""
    if dataset_kind([dataset_name]) == "classification":
        return build_detection_test_loader(
            cfg, dataset_name, mapper=ClassificationDatasetMapper(cfg, False)
        )
    return build_detection_test_loader(cfg, dataset_name)
