# -*- coding: utf-8 -*-
"""lvis-api's evaluation parameters, and the names of the metrics."""

from typing import List

import numpy as np

IOU_TYPES = ("bbox", "segm")
# lvis-api's numbers (linspace, not arange, so that 0.5 and 0.75 compare equal)
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
AREA_RANGES = {  # object area ranges (pixels), bounds included
    "all": [0**2, 1e5**2],
    "small": [0**2, 32**2],
    "medium": [32**2, 96**2],
    "large": [96**2, 1e5**2],
}
FREQUENCY_GROUPS = ("r", "c", "f")  # rare, common, frequent: the categories' "frequency" field
POOLS = ("all",) + FREQUENCY_GROUPS  # the category pools of Pooled AP
# LVIS' frequency groups by a category's training images: rare 1-10, common 11-100, frequent more
RARE_MAX_IMAGES, COMMON_MAX_IMAGES = 10, 100
# a detection matches ground truth with IoU >= min(threshold, 1 - 1e-10), as in lvis-api
MATCH_THRESHOLDS = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)
# the accumulation's arrays hold at most this many entries (IoU thresholds x detections)
MAX_ARRAY_SIZE = 2 * 10**7


def lvis_metric_names(max_dets: int = 300) -> List[str]:
    """The metric names of lvis-api's ``LVISEval.results``, in its order."""
    names = ["AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"]
    return names + [f"AR{area}@{max_dets}" for area in ("", "s", "m", "l")]


def lvis_frequency(image_count: int) -> str:
    """LVIS' frequency group ("r", "c" or "f") of a category of ``image_count`` training images."""
    if image_count <= RARE_MAX_IMAGES:
        return "r"
    return "c" if image_count <= COMMON_MAX_IMAGES else "f"


def pooled_metric_names() -> List[str]:
    """The names of the Pooled AP metrics, one per pool."""
    return [f"AP-pooled-{pool}" for pool in POOLS]


def outside(area: np.ndarray) -> np.ndarray:
    """area outside each area range: ndarray[A, len(area)] bool."""
    bounds = np.array(list(AREA_RANGES.values()), dtype=np.float64)
    return (area[None, :] < bounds[:, :1]) | (area[None, :] > bounds[:, 1:])
