# -*- coding: utf-8 -*-
from .build import build_evaluator
from .classification import ClassificationEvaluator, group_accuracies, shot_group
from .lvis import LVIS_EVAL_BACKENDS, LongTailLVISEvaluator, evaluate_predictions_on_lvis
from .sem_seg import LongTailSemSegEvaluator, group_segmentation_metrics, pixel_ratio_group


def __getattr__(name):
    # fast_lvis is also a program (python -m disalign.evaluation.fast_lvis): imported with the
    # package, runpy would warn that it runs a module already imported. Its names load on first use.
    if name in ("evaluate_lvis", "lvis_metric_names"):
        from . import fast_lvis

        return getattr(fast_lvis, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
