# -*- coding: utf-8 -*-
"""
The fast LVIS evaluation, under the project's evaluation package: the package :mod:`lvis_fast`
(installed beside :mod:`disalign`, usable without torch or detectron2) is the implementation.

    python -m disalign.evaluation.fast_lvis --gt lvis_v1_val.json --dt results.json --iou-type bbox

takes the options of ``python -m lvis_fast``.
"""

import sys

from lvis_fast import (  # noqa: F401
    IOU_TYPES,
    POOLS,
    LVISEval,
    category_ap,
    evaluate_lvis,
    lvis_metric_names,
    pooled_metric_names,
)
from lvis_fast.__main__ import main

__all__ = [
    "IOU_TYPES",
    "POOLS",
    "LVISEval",
    "category_ap",
    "evaluate_lvis",
    "lvis_metric_names",
    "main",
    "pooled_metric_names",
]

if __name__ == "__main__":
    sys.exit(main())
