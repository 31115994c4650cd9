# -*- coding: utf-8 -*-
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator, LVISEvaluator

from ..grw import training_class_counts
from .classification import ClassificationEvaluator

__all__ = ["build_evaluator"]


def build_evaluator(cfg, dataset_name: str, output_folder: str):
    """The evaluator of a registered dataset, by its ``evaluator_type`` metadata."""
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    if evaluator_type == "lvis":
        return LVISEvaluator(
            dataset_name, output_dir=output_folder, max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE
        )
    if evaluator_type == "coco":
        return COCOEvaluator(dataset_name, output_dir=output_folder)
    if evaluator_type == "classification":
        counts = training_class_counts(
            tuple(cfg.DATASETS.TRAIN), cfg.MODEL.IMAGE_CLASSIFIER.NUM_CLASSES, "images"
        )
        return ClassificationEvaluator(dataset_name, counts, output_dir=output_folder)
    raise NotImplementedError(f"no evaluator for dataset '{dataset_name}' ({evaluator_type})")
