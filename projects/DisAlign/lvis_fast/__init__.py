# -*- coding: utf-8 -*-
"""
LVIS box and mask AP, metric for metric equal to lvis-api's ``LVISEval``, several times faster.

    python -m lvis_fast --gt lvis_v1_val.json --dt results.json --iou-type bbox

or, for an lvis-api user, ``from lvis_fast import LVISEval`` in place of
``from lvis import LVISEval``. It imports numpy, orjson, pycocotools and its own compiled
kernel, not torch or detectron2.

lvis-api evaluates every (image, category) pair of the dataset in Python: on LVIS val some 24
million pairs (20k images x 1203 categories), almost all of them empty, each visited by the IoU
step and, once per area range, by the matching step. faster-coco-eval moves matching and
accumulation into C++, but it still walks that grid, computes IoUs one pair at a time from Python,
and converts every annotation dict to C++ on each call, which then costs more than the matching
itself. Here the whole evaluation is array operations over what can matter:

1. Results become flat arrays, one entry per detection (image and category index, score, box),
   a part at a time: a results file is parsed a few MB of text at a time, and a list in memory
   is read, never copied, so that the result dicts of a file never exist all at once. Only the
   masks of detections whose category is verified in their image are kept. lvis-api's cap of
   ``max_dets`` detections per image (the top-scored, ties in the order of the results) and
   LVIS's federated filter (a detection counts only if its category is verified present or
   absent in its image) are array operations, so that only the detections that are evaluated
   are read further (their masks decoded, for instance).
2. Candidate pairs: a detection can only match ground truth of its own (image, category) pair
   with IoU >= 0.5. Boxes: the IoUs of all such pairs of the dataset in one vectorised expression
   that rounds exactly like pycocotools' (lvis-api's); masks: the IoU of each pair whose mask
   areas are within a factor 2 (IoU <= min(area) / max(area), so the others cannot reach 0.5),
   not of every detection x ground truth combination as a pycocotools call computes them; the
   ground truth polygons of an image are rasterized in one pycocotools call.
3. Matching: lvis-api's greedy matching (in decreasing score order, each detection takes the free
   ground truth with the highest IoU, ground truth not ignored in the area range first) has to go
   detection after detection within an (image, category) pair, but pairs are independent: step r
   matches the r-th detection of every pair, for the 4 area ranges x 10 IoU thresholds at once.
4. Accumulation: per category, area range and threshold, the detections of all images in score
   order, cumulated true / false positives, and the interpolated precision at the 101 recall
   thresholds, for all categories and thresholds of an area range at once (categories laid end to
   end; a few thresholds at a time if memory requires). Only the categories with ground truth in
   the area range (the others are -1 in lvis-api's arrays) and the detections that are not
   ignored at every threshold take part, and the interpolated precision is read off the true
   positives alone (a false positive's precision is below that of the true positive before it).
   Counts are integers and every division is the one lvis-api does, so precision and recall are
   the same floating-point numbers.
5. The summary averages the valid entries (> -1) of the precision and recall arrays as lvis-api
   does, taken in the same order from the arrays of step 4: AP over IoU 0.50:0.95, at 0.50 and
   0.75, per area range and frequency group r/c/f, and AR at ``max_dets``.

Mask areas and IoUs come from a small compiled module (``_rle.c``) with pycocotools' formulas and
integer arithmetic, so they are the same numbers: pycocotools decodes a mask's string again for
each call (areas, then IoUs), ``_rle`` decodes a detection's once for its area and once more, only
if it is paired, for its IoUs. Python's cyclic garbage collector is paused meanwhile: reading the
results makes many containers, and each collection would walk them all again. What remains of the
time is mostly reading the results JSON (orjson, then the values into arrays), decoding the masks
and rasterizing the ground truth polygons (segm).
The AP of each category (``per_category=True``) is the mean of the precision over IoU and recall
thresholds, as :func:`category_ap` computes it from lvis-api's precision array.

lvis-api's semantics are kept in detail: ground truth and detections with an area outside (0, inf)
are left out; a ground truth's own ``ignore`` flag is honoured and ``iscrowd`` is not; unmatched
detections of a category in the image's ``not_exhaustive_category_ids`` are ignored; ties in score
keep the order of the results; a frequency group without categories, or an area range without
ground truth, gives -1; when the first kept result has a "bbox", detection areas are box areas,
also for mask AP (detectron2's evaluator drops the boxes before mask AP for that reason).
Annotation ids are taken to be unique and positive, as in LVIS files. Unlike lvis-api, results
with an unknown category id are an error rather than silently dropped, and an empty results list
gives AP 0 where lvis-api fails.
"""

import argparse
import contextlib

from .accumulation import category_ap
from .evaluation import LVISEval, check_limits, evaluate_lvis
from .matching import top_per_group
from .params import (
    COMMON_MAX_IMAGES,
    IOU_TYPES,
    POOLS,
    RARE_MAX_IMAGES,
    lvis_frequency,
    lvis_metric_names,
    pooled_metric_names,
)

__all__ = [
    "COMMON_MAX_IMAGES",
    "IOU_TYPES",
    "RARE_MAX_IMAGES",
    "lvis_frequency",
    "LVISEval",
    "POOLS",
    "category_ap",
    "check_limits",
    "evaluate_lvis",
    "lvis_metric_names",
    "pooled_metric_names",
    "top_per_group",
]
