# -*- coding: utf-8 -*-
import importlib.machinery

from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator

from ..data.class_counts import training_class_counts
from .classification import ClassificationEvaluator
from .lvis import LongTailLVISEvaluator
from .sem_seg import LongTailSemSegEvaluator, pixel_ratio_group

__all__ = ["build_evaluator", "has_compiled_ops"]


def has_compiled_ops() -> bool:
    """
    Whether detectron2's compiled extension ``detectron2._C`` is installed, rather than missing
    or the pure-Python stand-in of ``make install`` (tools/detectron2_C_standin.py).
    """
    try:
        from detectron2 import _C
    except ImportError:
        return False
    return isinstance(getattr(_C, "__loader__", None), importlib.machinery.ExtensionFileLoader)


def build_evaluator(cfg, dataset_name: str, output_folder: str):
    """The evaluator of a registered dataset, by its ``evaluator_type`` metadata."""
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    if evaluator_type == "lvis":
        fixed_ap = cfg.TEST.FIXED_AP
        return LongTailLVISEvaluator(
            dataset_name,
            output_dir=output_folder,
            # a guarantee, also when the model keeps more per image (TEST.FIXED_AP.DETS_PER_IMAGE)
            max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
            backend=cfg.TEST.LVIS_EVAL_BACKEND,
            fixed_ap_dets_per_category=fixed_ap.DETS_PER_CATEGORY if fixed_ap.ENABLED else None,
        )
    if evaluator_type == "coco":
        # detectron2's fast COCO AP is a compiled op: without the ops, pycocotools' own COCOeval
        return COCOEvaluator(
            dataset_name, output_dir=output_folder, use_fast_impl=has_compiled_ops()
        )
    if evaluator_type == "classification":
        counts = training_class_counts(
            tuple(cfg.DATASETS.TRAIN), cfg.MODEL.IMAGE_CLASSIFIER.NUM_CLASSES, "images"
        )
        return ClassificationEvaluator(dataset_name, counts, output_dir=output_folder)
    if evaluator_type == "sem_seg":
        num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        groups = MetadataCatalog.get(dataset_name).get("class_groups", None)
        if groups is None:  # from the training set's pixel ratios
            counts = training_class_counts(tuple(cfg.DATASETS.TRAIN), num_classes, "pixels")
            groups = [pixel_ratio_group(n / max(sum(counts), 1)) for n in counts]
        return LongTailSemSegEvaluator(dataset_name, groups, output_dir=output_folder)
    raise NotImplementedError(f"no evaluator for dataset '{dataset_name}' ({evaluator_type})")
