# -*- coding: utf-8 -*-
"""
LVIS box and mask AP, metric for metric equal to lvis-api's ``LVISEval``, several times faster.

    python -m disalign.evaluation.fast_lvis --gt lvis_v1_val.json --dt results.json --iou-type bbox

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
import gc
import itertools
import json
import operator
import re
import sys
from typing import Dict, List, Sequence, Union

import numpy as np
import orjson
import pycocotools.mask as mask_utils

from . import _rle

__all__ = ["IOU_TYPES", "category_ap", "evaluate_lvis", "lvis_metric_names"]

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
# a detection matches ground truth with IoU >= min(threshold, 1 - 1e-10), as in lvis-api
_MATCH_THRESHOLDS = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)
# the accumulation's arrays hold at most this many entries (IoU thresholds x detections)
_MAX_ARRAY_SIZE = 2 * 10**7


def lvis_metric_names(max_dets: int = 300) -> List[str]:
    """The metric names of lvis-api's ``LVISEval.results``, in its order."""
    names = ["AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"]
    return names + [f"AR{area}@{max_dets}" for area in ("", "s", "m", "l")]


class _GroundTruth:
    """
    The ground truth that lvis-api evaluates, as flat arrays: G annotations (by image, then in file
    order), I images and K categories (both sorted by id).

    Attributes:
        image_ids (ndarray[I] float64), category_ids (ndarray[K] float64): the sorted ids.
        frequency_groups (list[list[int]]): for "r", "c", "f", the indices of its categories.
        heights, widths (ndarray[I] int64): the image sizes.
        negative_keys, not_exhaustive_keys (ndarray int64, sorted, unique): the (image, category)
            pairs (as image * K + category) of each image's neg_category_ids and
            not_exhaustive_category_ids.
        annotations (list[dict]): the G annotations.
        image, category (ndarray[G] int64): their image and category indices.
        keys (ndarray[G] int64): their (image, category) pair, image * K + category.
        area (ndarray[G] float64): their "area" (which decides the area ranges).
        ignore (ndarray[G] bool): their own "ignore" flag.
        boxes (ndarray[G, 4] float64, XYWH): their boxes, for bbox (None for segm).
    """

    def __init__(self, dataset: dict, iou_type: str):
        images = {image["id"]: image for image in dataset["images"]}
        categories = {category["id"]: category for category in dataset["categories"]}
        image_ids, category_ids = sorted(images), sorted(categories)
        self.image_ids = np.array(image_ids, dtype=np.float64).reshape(len(image_ids))
        self.category_ids = np.array(category_ids, dtype=np.float64).reshape(len(category_ids))
        image_index = {image_id: i for i, image_id in enumerate(image_ids)}
        category_index = {category_id: k for k, category_id in enumerate(category_ids)}
        num_categories = len(category_ids)

        self.frequency_groups = [[] for _ in FREQUENCY_GROUPS]
        for k, category_id in enumerate(category_ids):
            frequency = categories[category_id].get("frequency")
            if frequency not in FREQUENCY_GROUPS:
                raise ValueError(
                    f"category {category_id} has frequency {frequency!r}, not one of "
                    f"{', '.join(FREQUENCY_GROUPS)}"
                )
            self.frequency_groups[FREQUENCY_GROUPS.index(frequency)].append(k)

        sorted_images = [images[image_id] for image_id in image_ids]
        self.heights = np.array([image["height"] for image in sorted_images], dtype=np.int64)
        self.widths = np.array([image["width"] for image in sorted_images], dtype=np.int64)
        self.negative_keys, self.not_exhaustive_keys = (
            np.unique(
                np.array(
                    [
                        i * num_categories + category_index[c]
                        for i, image in enumerate(sorted_images)
                        for c in image.get(field, ())
                        if c in category_index
                    ],
                    dtype=np.int64,
                )
            )
            for field in ("neg_category_ids", "not_exhaustive_category_ids")
        )

        annotations = [
            ann
            for ann in dataset["annotations"]
            if ann["image_id"] in image_index
            and ann["category_id"] in category_index
            and 0 < ann["area"] < float("inf")
        ]
        image = np.array([image_index[ann["image_id"]] for ann in annotations], dtype=np.int64)
        by_image = np.argsort(image, kind="stable")
        self.annotations = [annotations[g] for g in by_image.tolist()]
        self.image = image[by_image]
        self.category = np.array(
            [category_index[ann["category_id"]] for ann in self.annotations], dtype=np.int64
        )
        self.keys = self.image * num_categories + self.category
        self.area = np.array([ann["area"] for ann in self.annotations], dtype=np.float64)
        self.ignore = np.array([bool(ann.get("ignore", 0)) for ann in self.annotations], dtype=bool)
        self.boxes = None
        if iou_type == "bbox":
            boxes = [ann["bbox"] for ann in self.annotations]
            self.boxes = np.array(boxes, dtype=np.float64).reshape(len(boxes), 4)

    def rles(self, indices: np.ndarray) -> List[dict]:
        """
        The masks of annotations as compressed RLEs (what lvis-api's ``ann_to_rle`` gives).

        Args:
            indices (ndarray[M] int64): annotation indices, sorted.
        Returns:
            list[dict]: M compressed RLEs.
        """
        rles = [None] * len(indices)
        images = self.image[indices]
        bounds = np.append(np.flatnonzero(np.diff(images, prepend=-1)), len(indices))
        for first, stop in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            height, width = int(self.heights[images[first]]), int(self.widths[images[first]])
            polygons, owner = [], []  # an image's polygons, in one pycocotools call
            for j in range(first, stop):
                segmentation = self.annotations[indices[j]]["segmentation"]
                if isinstance(segmentation, list) and all(len(p) > 4 for p in segmentation):
                    polygons += segmentation
                    owner += [j] * len(segmentation)
                else:
                    rles[j] = _to_rle(segmentation, height, width)
            if polygons:
                parts = mask_utils.frPyObjects(polygons, height, width)
                ends = np.append(np.flatnonzero(np.diff(owner)), len(owner) - 1).tolist()
                begin = 0
                for end in ends:  # the polygons of an annotation merged into one mask
                    rles[owner[end]] = (
                        parts[begin] if end == begin else mask_utils.merge(parts[begin : end + 1])
                    )
                    begin = end + 1
        return rles


def _to_rle(segmentation, height: int, width: int) -> dict:
    """A polygon list, an uncompressed RLE or a compressed RLE as a compressed RLE."""
    if isinstance(segmentation, list):  # polygons, merged into one mask
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, int(height), int(width)))
    if isinstance(segmentation["counts"], list):  # uncompressed RLE
        return mask_utils.frPyObjects(segmentation, int(height), int(width))
    return segmentation


def _number_column(results: Sequence[dict], key: str, offset: int = 0) -> np.ndarray:
    """
    results[i][key] of each result: ndarray[N] float64 (a ValueError names the first bad one, as
    detection offset + i).
    """
    try:
        return np.fromiter([r[key] for r in results], dtype=np.float64, count=len(results))
    except (KeyError, TypeError, ValueError):
        pass
    for i, r in enumerate(results, offset):
        if not isinstance(r, dict):
            raise ValueError(f"detection {i} is a {type(r).__name__}, not a dict")
        if key not in r:
            raise ValueError(f"detection {i} has no '{key}'")
        try:
            float(r[key])
        except (TypeError, ValueError):
            raise ValueError(f"detection {i} has {key} {r[key]!r}, not a number") from None
    raise ValueError(f"malformed '{key}' values")


def _lookup(sorted_ids: np.ndarray, ids: np.ndarray, results, key, what, offset) -> np.ndarray:
    """The index of each id in sorted_ids: ndarray[N] int64; a ValueError for an unknown id."""
    index = np.searchsorted(sorted_ids, ids).clip(max=max(len(sorted_ids) - 1, 0))
    known = sorted_ids[index] == ids if len(sorted_ids) else np.zeros(len(ids), dtype=bool)
    if not known.all():
        i = int(np.flatnonzero(~known)[0])
        raise ValueError(
            f"detection {offset + i} has {key} {results[i][key]!r}, which is not one of the ground "
            f"truth's {what}"
        )
    return index.astype(np.int64)


_ID_SCORE = operator.itemgetter("image_id", "category_id", "score")
_BBOX = operator.itemgetter("bbox")


def _flat_floats(rows, count: int) -> np.ndarray:
    """
    The numbers of rows (an iterable of sequences) one after the other: ndarray[count] float64
    (np.array of a list of lists is 2x slower); a ValueError if there are not count of them, a
    TypeError or ValueError for a value that is not a number.
    """
    return np.fromiter(itertools.chain.from_iterable(rows), dtype=np.float64, count=count)


class _Results:
    """
    The results as columns, N of them in their order, filled a part at a time so that the result
    dicts of a file never exist all at once. Ids are checked and replaced by indices as they come.

    Attributes:
        image, category (ndarray[N] int64): the image and category index of each result.
        score (ndarray[N] float64).
        has_box, has_mask (ndarray[N] bool): whether it has a "bbox" / a "segmentation".
        boxes (ndarray[N, 4] float64, XYWH): its "bbox" (NaN where it has none, or a malformed one:
            ``bad_box``).
        masks (list): N entries, the "segmentation" of the results that are needed (of a verified
            (image, category) pair; for segm, or without a "bbox"), None for the others: the
            results' own objects (for compressed RLEs, the dicts pycocotools takes).
    """

    def __init__(self, gt: _GroundTruth, iou_type: str, mask_areas: bool):
        self._gt, self._iou_type, self._mask_areas = gt, iou_type, mask_areas
        self._verified = np.union1d(gt.keys, gt.negative_keys)
        self._parts = []
        self.masks = []
        self.count = 0

    def add(self, results: List[dict]):
        """Append a part of the results (a list of result dicts; not modified)."""
        gt, offset, n = self._gt, self.count, len(results)
        try:  # one pass for the three numbers
            numbers = _flat_floats(map(_ID_SCORE, results), 3 * n).reshape(n, 3)
            image_ids, category_ids, score = numbers.T
        except (KeyError, TypeError, ValueError):  # for the error message
            image_ids, category_ids, score = (
                _number_column(results, key, offset) for key in ("image_id", "category_id", "score")
            )
        image = _lookup(gt.image_ids, image_ids, results, "image_id", "images", offset)
        category = _lookup(
            gt.category_ids, category_ids, results, "category_id", "categories", offset
        )
        finite = np.isfinite(score)
        if not finite.all():
            i = int(np.flatnonzero(~finite)[0])
            raise ValueError(
                f"detection {offset + i} has score {results[i]['score']!r}, not a finite number"
            )
        has_mask = np.array(["segmentation" in r for r in results], dtype=bool).reshape(n)
        boxes = np.full((n, 4), np.nan)
        if self._mask_areas:  # the boxes left out (detectron2's evaluator drops them for segm)
            has_box = np.zeros(n, dtype=bool)
        else:
            try:  # all with a box of 4 numbers
                box_lists = list(map(_BBOX, results))
                if set(map(type, box_lists)) - {list} or set(map(len, box_lists)) - {4}:
                    raise ValueError("not all boxes are lists of 4")
                boxes = _flat_floats(box_lists, 4 * n).reshape(n, 4)
                has_box = np.ones(n, dtype=bool)
            except (KeyError, TypeError, ValueError):
                has_box = np.array(["bbox" in r for r in results], dtype=bool).reshape(n)
                for i in np.flatnonzero(has_box).tolist():
                    try:
                        boxes[i] = np.array(results[i]["bbox"], dtype=np.float64).reshape(4)
                    except (TypeError, ValueError):
                        boxes[i] = np.nan
        needed = _isin_sorted(image * len(gt.category_ids) + category, self._verified) & has_mask
        if self._iou_type == "bbox":
            needed &= ~has_box
        masks = [None] * n
        for i in np.flatnonzero(needed).tolist():
            masks[i] = results[i]["segmentation"]
        self.masks += masks
        self._parts.append((image, category, score.copy(), has_box, has_mask, boxes))
        self.count += n

    def finish(self):
        """Join the parts into the columns."""
        columns = [np.concatenate(c) for c in zip(*self._parts)] if self._parts else None
        if columns is None:
            columns = [np.zeros(0, np.int64)] * 2 + [np.zeros(0)] + [np.zeros(0, bool)] * 2
            columns += [np.zeros((0, 4))]
        self.image, self.category, self.score, self.has_box, self.has_mask, self.boxes = columns
        self.bad_box = self.has_box & np.isnan(self.boxes).any(axis=1)
        self._parts = None
        return self


# json.dump's separator between the result objects, and any other spacing around the comma
_OBJECT_SEPARATOR, _OBJECT_GAP = b"}, {", re.compile(rb"\}\s*,\s*\{")
_CHUNK_BYTES = 1 << 22  # bytes read at a time
_LIST_CHUNK = 1 << 16  # results of a list converted at a time
_MASK_PART = 1 << 13  # detection masks decoded with their runs at a time


class _NotAResultsList(Exception):
    pass


def _result_chunks(path: str):
    """
    The result dicts of a JSON file holding a list of them, a few ten thousand at a time (lists
    of dicts), so that they never exist all at once; parsed by orjson from the file's bytes (3x
    faster than Python's json, most of it in converting numbers; the same values). The text is
    cut after an object's "}" that a comma and a "{" follow (bytes that no multi-byte UTF-8
    character contains): a cut that is not between two results (in a string, or in a nested list)
    leaves an unbalanced or unterminated text, which orjson rejects (orjson.JSONDecodeError, a
    json.JSONDecodeError), as it rejects a file that is not JSON, or what only Python's json reads
    (NaN, Infinity); a file that is not a list raises _NotAResultsList.
    """
    with open(path, "rb") as f:
        carry, started = b"", False
        while True:
            chunk = f.read(_CHUNK_BYTES)
            text = carry + chunk
            if not started:
                text = text.lstrip()
                if chunk and not text:
                    continue
                if not text.startswith(b"["):
                    raise _NotAResultsList
                text, started = text[1:], True
            if not chunk:  # the rest, with the list's closing bracket
                yield orjson.loads(b"[" + text)
                return
            cut = text.rfind(_OBJECT_SEPARATOR)
            if cut < 0:
                gaps = list(_OBJECT_GAP.finditer(text))
                cut = gaps[-1].start() if gaps else -1
            if cut < 0:
                carry = text
                continue
            yield orjson.loads(b"[" + text[: cut + 1] + b"]")
            carry = text[text.index(b",", cut) + 1 :]


def _read_results(results, gt: _GroundTruth, iou_type: str, mask_areas: bool) -> _Results:
    """The results (a list of dicts, or a JSON file of one) as :class:`_Results`."""
    columns = _Results(gt, iou_type, mask_areas)
    if isinstance(results, str):
        try:
            for part in _result_chunks(results):
                columns.add(part)
            return columns.finish()
        except (json.JSONDecodeError, _NotAResultsList):
            # not the layout json.dump writes, or NaN / Infinity: the whole file at once, as
            # Python's json reads it
            columns = _Results(gt, iou_type, mask_areas)
            results = _load_json(results)
    if not isinstance(results, list):
        raise ValueError(f"results must be a list of dicts, not a {type(results).__name__}")
    for start in range(0, len(results), _LIST_CHUNK):
        columns.add(results[start : start + _LIST_CHUNK])
    return columns.finish()



def _bbox_iou(dt_boxes: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """
    IoU of paired boxes, with pycocotools' formula and rounding (so that a detection on the
    threshold matches as in lvis-api).

    Args:
        dt_boxes, gt_boxes (ndarray[P, 4] float64): XYWH boxes, P pairs.
    Returns:
        ndarray[P] float64.
    """
    dx, dy, dw, dh = dt_boxes.T
    gx, gy, gw, gh = gt_boxes.T
    w = np.minimum(dw + dx, gw + gx) - np.maximum(dx, gx)
    h = np.minimum(dh + dy, gh + gy) - np.maximum(dy, gy)
    overlap = (w > 0) & (h > 0)
    intersection = w * h
    union = dw * dh + gw * gh - intersection
    iou = np.zeros(len(dt_boxes))
    np.divide(intersection, union, out=iou, where=overlap)
    return iou


_COUNTS, _SIZE = operator.itemgetter("counts"), operator.itemgetter("size")


class _DecodedMasks:
    """
    Compressed RLE masks decoded by the compiled ``_rle`` module, in one call for all of them
    (pycocotools decodes the strings again for each of its calls: areas, then IoUs): their areas,
    and their runs for :meth:`pair_iou`.

    Attributes:
        area (ndarray[N] float64): the mask areas (pycocotools' ``area``).
        size (ndarray[N, 2] int64): their "size" (height, width).
        info (ndarray[N, 6] int64): per mask, for ``_rle.pair_iou``: area, first and last
            foreground pixel, where its runs start and end in runs, the pixels its runs cover.
        runs (ndarray uint32): the run lengths, one mask after the other (none without
            keep_runs).
    """

    def __init__(self, rles: Sequence[dict], keep_runs: bool = True):
        """
        Args:
            rles: N compressed RLE dicts ({"size": [h, w], "counts": str or bytes}).
            keep_runs: keep the runs (else only the areas are wanted).
        Raises:
            KeyError, TypeError, ValueError: for a mask that is not a compressed RLE.
        """
        n = len(rles)
        sizes = list(map(_SIZE, rles))
        if set(map(len, sizes)) - {2}:
            raise ValueError("a mask's size is not [height, width]")
        self.size = _flat_floats(sizes, 2 * n).astype(np.int64).reshape(n, 2)
        self.info = np.empty((n, 6), dtype=np.int64)
        runs = _rle.decode(list(map(_COUNTS, rles)), self.info, keep_runs)
        self.runs = np.frombuffer(runs, dtype=np.uint32)
        self.area = self.info[:, 0].astype(np.float64)

    def malformed(self) -> np.ndarray:
        """The masks whose runs do not cover height x width pixels: ndarray[M] int64 rows."""
        return np.flatnonzero(self.info[:, 5] != self.size[:, 0] * self.size[:, 1])

    def take(self, rows: np.ndarray) -> "_DecodedMasks":
        """The masks of rows (an index or bool array); their runs are shared."""
        picked = object.__new__(_DecodedMasks)
        picked.size, picked.info, picked.area = self.size[rows], self.info[rows], self.area[rows]
        picked.runs = self.runs
        return picked

    def pair_iou(self, other: "_DecodedMasks", pair_a: np.ndarray, pair_b: np.ndarray):
        """
        The IoU of masks self[pair_a[p]] and other[pair_b[p]] (all pairs of the same size, the
        intersecting ones' runs kept), as pycocotools' ``iou`` gives it: ndarray[P] float64.
        """
        iou = np.empty(len(pair_a))
        _rle.pair_iou(self.runs, self.info, other.runs, other.info, pair_a, pair_b, iou)
        return iou


class _Detections:
    """
    The detections that lvis-api evaluates (kept by the per-image cap and the federated filter,
    with an area in (0, inf)), as flat arrays of D detections sorted by (image, category) pair,
    then by decreasing score, ties in the order of the results.

    Attributes:
        keys (ndarray[D] int64): the (image, category) pair, image * K + category.
        image, category (ndarray[D] int64): image and category indices.
        score (ndarray[D] float64).
        area (ndarray[D] float64): box area for box results, mask area for mask results.
        not_exhaustive (ndarray[D] bool): the category is in the image's
            not_exhaustive_category_ids (unmatched, the detection is ignored).
        boxes (ndarray[D, 4] float64, XYWH): for bbox (None for segm).
        rles (list of D compressed RLE dicts), masks (_DecodedMasks of them, without their
            runs): for segm (None for bbox).
    """

    def __init__(self, results: _Results, gt: _GroundTruth, iou_type: str, max_dets: int):
        num_results = results.count
        num_categories = len(gt.category_ids)
        image, category, score = results.image, results.category, results.score

        # the top max_dets of each image by score, ties in the order of the results
        by_score = np.argsort(-score, kind="stable")
        by_image = by_score[np.argsort(image[by_score], kind="stable")]
        image_start = np.searchsorted(image[by_image], image[by_image], side="left")
        rank = np.empty(num_results, dtype=np.int64)
        rank[by_image] = np.arange(num_results) - image_start
        kept = rank < max_dets
        del by_score, image_start, rank

        # lvis-api reads boxes (and box areas) if its first kept result has a "bbox", else masks;
        # its first kept result is the first result, or the top-scored result of the first
        # result's image when that image's results were capped (and so re-sorted)
        box_results = True
        if num_results:
            first = 0
            if np.count_nonzero(image == image[0]) > max_dets:
                first = int(by_image[np.searchsorted(image[by_image], image[0])])
            box_results = bool(results.has_box[first])
            if not box_results and not results.has_mask[first]:
                raise ValueError(f"detection {first} has neither a 'bbox' nor a 'segmentation'")
        del by_image

        # the federated filter: a category counts in an image if verified present or absent
        keys = image * num_categories + category
        verified = np.union1d(gt.keys, gt.negative_keys)
        selected = np.flatnonzero(kept & _isin_sorted(keys, verified))
        order = selected[np.argsort(-score[selected], kind="stable")]
        order = order[np.argsort(keys[order], kind="stable")]

        boxes, masks = None, None
        if box_results:
            bad = results.bad_box[order] | ~results.has_box[order]
            if bad.any():
                i = int(order[np.flatnonzero(bad)[0]])
                raise ValueError(f"detection {i} has no 'bbox' of 4 numbers")
            boxes = results.boxes[order]
            area = boxes[:, 2] * boxes[:, 3]
        if iou_type == "segm" or not box_results:
            segmentations = [results.masks[i] for i in order.tolist()]
            rles, masks = self._masks(segmentations, order, image[order], gt, boxes)
        if not box_results:
            area = masks.area
            if iou_type == "bbox":
                boxes = self._boxes_of_masks(rles, results.boxes[order], results.has_box[order])
        evaluated = (area > 0) & (area < np.inf)

        order = order[evaluated]
        self.keys = keys[order]
        self.image = image[order]
        self.category = category[order]
        self.score = score[order]
        self.area = area[evaluated]
        self.not_exhaustive = _isin_sorted(self.keys, gt.not_exhaustive_keys)
        self.boxes = boxes[evaluated] if iou_type == "bbox" else None
        self.rles, self.masks = None, None
        if iou_type == "segm":
            self.rles = list(itertools.compress(rles, evaluated.tolist()))
            self.masks = masks.take(evaluated)

    @staticmethod
    def _masks(masks, order, image, gt, boxes):
        """
        The mask of each picked result, decoded.

        Args:
            masks (list): the mask of each picked result (None if it has none), as in
                :class:`_Results`.
            order (ndarray[N] int64): their indices in the results.
            image (ndarray[N] int64): their image indices.
            boxes (ndarray[N, 4] or None): their boxes, for box results (whose mask, without a
                "segmentation", is the box as a polygon, as in lvis-api).
        Returns:
            list: N compressed RLEs (dicts).
            _DecodedMasks: their areas and sizes.
        """
        rles, decoded = masks, None
        if boxes is None:  # compressed RLEs, what detectron2 writes and lvis-api reads
            try:
                decoded = _DecodedMasks(masks, keep_runs=False)
            except (KeyError, TypeError, ValueError, IndexError, AttributeError):
                pass  # polygons or uncompressed RLEs among them, or a malformed one
        if decoded is None:
            rles = []
            for j, (segmentation, i) in enumerate(zip(masks, order.tolist())):
                if segmentation is None and boxes is not None:
                    x1, y1, w, h = boxes[j].tolist()
                    x2, y2 = x1 + w, y1 + h
                    segmentation = [[x1, y1, x1, y2, x2, y2, x2, y1]]
                if segmentation is None:
                    raise ValueError(f"detection {i} has no 'segmentation'")
                try:
                    rles.append(_to_rle(segmentation, gt.heights[image[j]], gt.widths[image[j]]))
                    _DecodedMasks(rles[-1:], keep_runs=False)
                except (KeyError, TypeError, ValueError, IndexError, AttributeError):
                    raise ValueError(f"detection {i} has a malformed 'segmentation'") from None
            decoded = _DecodedMasks(rles, keep_runs=False)
        malformed = decoded.malformed()
        if len(malformed):  # (pycocotools' IoU would not end)
            j = int(malformed[0])
            raise ValueError(
                f"detection {order[j]} has a malformed 'segmentation': its runs cover "
                f"{decoded.info[j, 5]} pixels, not {' x '.join(map(str, decoded.size[j]))}"
            )
        return rles, decoded

    @staticmethod
    def _boxes_of_masks(rles: list, boxes: np.ndarray, has_box: np.ndarray) -> np.ndarray:
        """Mask results' boxes: their "bbox" where they have one, else their mask's: [N, 4]."""
        mask_boxes = mask_utils.toBbox(rles) if rles else np.zeros((0, 4))
        mask_boxes = np.array(mask_boxes, dtype=np.float64).reshape(len(rles), 4)
        return np.where(has_box[:, None], boxes, mask_boxes)


def _isin_sorted(values: np.ndarray, sorted_unique: np.ndarray) -> np.ndarray:
    """values[i] in sorted_unique, for int64 arrays: ndarray[len(values)] bool."""
    if len(sorted_unique) == 0:
        return np.zeros(len(values), dtype=bool)
    index = np.searchsorted(sorted_unique, values).clip(max=len(sorted_unique) - 1)
    return sorted_unique[index] == values


def _candidate_pairs(dt: _Detections, gt: _GroundTruth, iou_type: str):
    """
    The (detection, ground truth) pairs of the same image and category whose IoU reaches the
    lowest IoU threshold (0.5): the only pairs that can match.

    Returns:
        pair_dt, pair_gt (ndarray[P] int64): detection and ground truth indices, grouped by
            detection in dt's order, the ground truth of a detection in file order.
        pair_iou (ndarray[P] float64): their IoU, as pycocotools computes it for lvis-api.
    """
    gt_order = np.argsort(gt.keys, kind="stable")  # by (image, category), then file order
    gt_keys = gt.keys[gt_order]
    start = np.searchsorted(gt_keys, dt.keys, side="left")
    count = np.searchsorted(gt_keys, dt.keys, side="right") - start
    with_gt = np.flatnonzero(count)
    lowest = _MATCH_THRESHOLDS[0]
    if iou_type == "bbox":  # all pairs, in parts of about _MAX_ARRAY_SIZE / 8 pairs
        part_size = _MAX_ARRAY_SIZE // 8
        pair_end = np.cumsum(count[with_gt])
        total = int(pair_end[-1]) if len(pair_end) else 0
        parts = np.split(with_gt, np.searchsorted(pair_end, np.arange(part_size, total, part_size)))
        candidates = []
        for dets in parts:
            pair_dt, pair_gt = _expand_pairs(dets, start, count, gt_order)
            pair_iou = _bbox_iou(dt.boxes[pair_dt], gt.boxes[pair_gt])
            candidate = pair_iou >= lowest
            candidates.append((pair_dt[candidate], pair_gt[candidate], pair_iou[candidate]))
        return tuple(np.concatenate(column) for column in zip(*candidates))

    # masks: the pairs whose IoU can reach 0.5 (IoU <= min(area) / max(area)) and whose masks
    # have the same size (pycocotools' IoU is -1 for the others)
    pair_dt, pair_gt = _expand_pairs(with_gt, start, count, gt_order)
    needed = np.unique(pair_gt)
    gt_masks = _DecodedMasks(gt.rles(needed))
    gt_row = np.zeros(len(gt.keys), dtype=np.int64)  # annotation -> row of gt_masks
    gt_row[needed] = np.arange(len(needed))
    pair_row = gt_row[pair_gt]
    dt_area, gt_area = dt.masks.area[pair_dt], gt_masks.area[pair_row]
    comparable = 2 * np.minimum(dt_area, gt_area) >= np.maximum(dt_area, gt_area)
    comparable &= (dt.masks.size[pair_dt] == gt_masks.size[pair_row]).all(axis=1)
    pair_dt, pair_gt, pair_row = pair_dt[comparable], pair_gt[comparable], pair_row[comparable]
    # the detections' masks decoded again with their runs, a part at a time (the pairs are grouped
    # by detection, in increasing order)
    pair_iou = np.zeros(len(pair_dt))
    dets = np.unique(pair_dt)
    for first in range(0, len(dets), _MASK_PART):
        part = dets[first : first + _MASK_PART]
        begin = np.searchsorted(pair_dt, part[0], side="left")
        end = np.searchsorted(pair_dt, part[-1], side="right")
        masks = _DecodedMasks([dt.rles[d] for d in part.tolist()])
        local = np.searchsorted(part, pair_dt[begin:end])
        pair_iou[begin:end] = masks.pair_iou(gt_masks, local, pair_row[begin:end])
    candidate = pair_iou >= lowest
    return pair_dt[candidate], pair_gt[candidate], pair_iou[candidate]


def _expand_pairs(dets, start, count, gt_order):
    """
    The (detection, ground truth) pairs of the same (image, category) pair.

    Args:
        dets (ndarray[M] int64): detections (in increasing order).
        start, count (ndarray[D] int64): where each detection's ground truth starts in gt_order,
            and how many there are.
    Returns:
        pair_dt, pair_gt (ndarray[P] int64): grouped by detection, ground truth in gt_order.
    """
    pair_count = count[dets]
    pair_dt = np.repeat(dets, pair_count)
    first_pair = np.repeat(np.cumsum(pair_count) - pair_count, pair_count)
    pair_gt = gt_order[start[pair_dt] + np.arange(len(pair_dt)) - first_pair]
    return pair_dt, pair_gt


def _outside(area: np.ndarray) -> np.ndarray:
    """area outside each area range: ndarray[A, len(area)] bool."""
    bounds = np.array(list(AREA_RANGES.values()), dtype=np.float64)
    return (area[None, :] < bounds[:, :1]) | (area[None, :] > bounds[:, 1:])


def _match(dt: _Detections, gt: _GroundTruth, pair_dt, pair_gt, pair_iou):
    """
    lvis-api's greedy matching (``evaluate_img``), for every (image, category) pair, area range
    and IoU threshold at once: in decreasing score order, each detection takes the free ground
    truth of its pair with the highest IoU >= the threshold, preferring ground truth that is not
    ignored in the area range, ties going to the later one in file order.

    Args:
        pair_dt, pair_gt, pair_iou: the candidate pairs of :func:`_candidate_pairs`.
    Returns:
        dets (ndarray[M] int64): the detections that have candidate pairs.
        matched (ndarray[A, T, M] bool): whether they are matched.
        matched_ignored (ndarray[A, T, M] bool): whether to ground truth ignored in the area range.
    """
    num_areas, num_thresholds = len(AREA_RANGES), len(_MATCH_THRESHOLDS)
    gt_ignored = gt.ignore[None, :] | _outside(gt.area)  # [A, G]
    dets, pair_slot = np.unique(pair_dt, return_inverse=True)
    matched = np.zeros((num_areas, num_thresholds, len(dets)), dtype=bool)
    matched_ignored = np.zeros_like(matched)
    taken = np.zeros((num_areas, num_thresholds, len(gt.keys)), dtype=bool)
    if len(dets) == 0:
        return dets, matched, matched_ignored

    # a detection's rank in its (image, category) pair: pairs of the same rank never compete
    rank = np.arange(len(dt.keys)) - np.searchsorted(dt.keys, dt.keys, side="left")
    pair_rank = rank[pair_dt]
    by_rank = np.argsort(pair_rank, kind="stable")  # keeps the grouping by detection
    rank_bounds = np.searchsorted(pair_rank[by_rank], np.arange(pair_rank.max() + 2))
    thresholds = _MATCH_THRESHOLDS[None, :, None]
    for begin, end in zip(rank_bounds[:-1].tolist(), rank_bounds[1:].tolist()):
        if begin == end:
            continue
        p = by_rank[begin:end]
        p_gt, p_iou, p_slot = pair_gt[p], pair_iou[p], pair_slot[p]
        det_start = np.flatnonzero(np.diff(p_slot, prepend=-1))
        det_of_pair = np.cumsum(np.diff(p_slot, prepend=-1) != 0) - 1
        free = ~taken[:, :, p_gt] & (p_iou >= thresholds)  # [A, T, P]
        # 2: not ignored, 1: ignored in the area range, 0: not a candidate
        preference = np.where(free, 2 - gt_ignored[:, None, p_gt], 0)
        best = np.maximum.reduceat(preference, det_start, axis=2)
        free &= preference == best[:, :, det_of_pair]
        best_iou = np.maximum.reduceat(np.where(free, p_iou, -1.0), det_start, axis=2)
        free &= p_iou == best_iou[:, :, det_of_pair]
        last = np.where(free, np.arange(len(p)), -1)
        chosen = np.maximum.reduceat(last, det_start, axis=2)  # [A, T, detections of rank]
        a, t, d = np.nonzero(chosen >= 0)
        g = p_gt[chosen[a, t, d]]
        taken[a, t, g] = True
        slot = p_slot[det_start[d]]
        matched[a, t, slot] = True
        matched_ignored[a, t, slot] = gt_ignored[a, g]
    return dets, matched, matched_ignored


def _recall_cutoffs(num_gt: np.ndarray) -> np.ndarray:
    """
    For n ground truth, the number of true positives m whose recall m / n (rounded as lvis-api
    computes it) is below each recall threshold.

    Args:
        num_gt (ndarray[S] int64): n > 0 of S categories.
    Returns:
        ndarray[S, R] int64.
    """
    cutoffs = np.zeros((len(num_gt), len(RECALL_THRESHOLDS)), dtype=np.int64)
    for n in np.unique(num_gt).tolist():
        recall = np.arange(n + 1, dtype=np.float64) / n
        cutoffs[num_gt == n] = np.searchsorted(recall, RECALL_THRESHOLDS, side="left")
    return cutoffs


def _accumulate(dt: _Detections, gt: _GroundTruth, dets, matched, matched_ignored):
    """
    lvis-api's ``accumulate``: per category, area range and IoU threshold, the detections of all
    images in decreasing score order (ties: by image, then in their pair's order); cumulated true
    and false positives; precision interpolated (the maximum at any higher recall) at the 101
    recall thresholds. Per area range, only for its S categories with ground truth (not ignored
    in the range; lvis-api gives -1 for the others) and over the detections that count at some
    threshold (of those categories; matched, or not ignored when unmatched), laid end to end
    category after category: all of them and as many IoU thresholds as memory allows at once.

    Args:
        dets, matched, matched_ignored: the output of :func:`_match`.
    Returns:
        list of A tuples (categories, precision, recall), one per area range:
            categories (ndarray[S] int64): the category indices with ground truth, increasing.
            precision (ndarray[T, R, S] float64): lvis-api's precision array's entries of those
                categories (0 at recalls never reached).
            recall (ndarray[T, S] float64): the recall of all their detections.
    """
    num_categories = len(gt.category_ids)
    num_areas, num_thresholds = len(AREA_RANGES), len(_MATCH_THRESHOLDS)

    # the detections in accumulation order, without those of categories without ground truth
    with_gt = np.bincount(gt.category, minlength=num_categories) > 0
    by_score = np.argsort(-dt.score, kind="stable")
    by_score = by_score[with_gt[dt.category[by_score]]]
    order = by_score[np.argsort(dt.category[by_score], kind="stable")]  # [N]
    category = dt.category[order]
    slot = np.full(len(dt.keys), -1)
    slot[dets] = np.arange(len(dets))
    order_slot = slot[order]  # [N]: the match slot of each, -1 for none

    gt_ignored = gt.ignore[None, :] | _outside(gt.area)  # [A, G]
    unmatched_ignored = _outside(dt.area[order]) | dt.not_exhaustive[None, order]  # [A, N]
    areas = []
    for a in range(num_areas):
        num_gt = np.bincount(gt.category[~gt_ignored[a]], minlength=num_categories)
        categories = np.flatnonzero(num_gt > 0)  # [S]
        # the detections that count at some threshold: matched, or not ignored when unmatched
        counts = (order_slot >= 0) | ~unmatched_ignored[a]
        counting = np.flatnonzero((num_gt[category] > 0) & counts)  # [N_a]
        seg_start = np.append(np.searchsorted(category[counting], categories), len(counting))
        kept_slot = order_slot[counting]
        has_slot = np.flatnonzero(kept_slot >= 0)
        kept_slot = kept_slot[has_slot]
        counted_if_unmatched = ~unmatched_ignored[a, counting]  # [N_a]
        precision = np.zeros((num_thresholds, len(RECALL_THRESHOLDS), len(categories)))
        recall = np.zeros((num_thresholds, len(categories)))
        at_once = int(np.clip(_MAX_ARRAY_SIZE // max(len(counting), 1), 1, num_thresholds))
        for first in range(0, num_thresholds, at_once):
            t = slice(first, first + at_once)
            is_matched = np.zeros((len(range(num_thresholds)[t]), len(counting)), dtype=bool)
            is_matched[:, has_slot] = matched[a, t][:, kept_slot]
            true_positive = is_matched.copy()
            true_positive[:, has_slot] &= ~matched_ignored[a, t][:, kept_slot]
            counted = true_positive | (~is_matched & counted_if_unmatched)
            recall[t], precision[t] = _precision_recall(
                true_positive, counted, seg_start, num_gt[categories]
            )
        areas.append((categories, precision, recall))
    return areas


def _precision_recall(true_positive, counted, seg_start, num_gt):
    """
    Recall and interpolated precision of S categories ("segments" of the detections in
    accumulation order) at T' IoU thresholds, from their true positives alone: the precision of
    a false positive is below that of the true positive before it (or 0), so the interpolated
    precision at the c-th true positive is the maximum precision of the c-th and later ones.

    Args:
        true_positive (ndarray[T', N] bool): the detections counted as true positives.
        counted (ndarray[T', N] bool): as true or false positives (not ignored).
        seg_start (ndarray[S + 1] int64): where each category's detections start; then N.
        num_gt (ndarray[S] int64): each category's ground truth (> 0).
    Returns:
        recall (ndarray[T', S]), precision (ndarray[T', R, S]).
    """
    num_rows, num_segments = len(true_positive), len(num_gt)
    counted_sum = np.cumsum(counted, axis=1, dtype=np.int32)  # [T', N]
    zero = np.zeros((num_rows, 1), dtype=np.int32)
    counted_before = np.concatenate([zero, counted_sum], axis=1)[:, seg_start[:-1]]  # [T', S]

    # the true positives, row after row, category after category; their (row, category) cell
    row, position = np.nonzero(true_positive)  # [P]
    cell = row * num_segments + np.searchsorted(seg_start, position, side="right") - 1
    tp_count = np.bincount(cell, minlength=num_rows * num_segments)  # [T' * S]
    cell_start = np.cumsum(tp_count) - tp_count  # where each cell's true positives start
    tp = (np.arange(len(cell)) - cell_start[cell] + 1).astype(np.float64)  # counts up to each
    fp = (counted_sum[row, position] - counted_before.reshape(-1)[cell]).astype(np.float64) - tp
    pr = tp / (fp + tp + np.spacing(1))  # [P], lvis-api's expression
    recall = tp_count.reshape(num_rows, num_segments) / num_gt

    # for each recall threshold, its cutoff c (true positives whose recall is below it): the
    # interpolated precision is the maximum over the true positives from the c-th (the first for
    # c = 0) to the cell's end, 0 if the cell has fewer than c (or none); as the maxima of the
    # blocks between consecutive positions, for the L cells with true positives
    live = np.flatnonzero(tp_count)  # [L]
    cell_start = cell_start[live, None]  # [L, 1]
    cell_end = cell_start + tp_count[live, None]
    cutoffs = _recall_cutoffs(num_gt)[live % num_segments]  # [L, R]
    position = np.minimum(cell_start + np.maximum(cutoffs, 1) - 1, cell_end)  # [L, R]
    starts = np.concatenate([position, cell_end], axis=1)
    flat_pr = np.append(pr, -np.inf)  # so that a start at the end is an index
    block = np.maximum.reduceat(flat_pr, starts.reshape(-1)).reshape(starts.shape)
    block = np.where(starts[:, 1:] > starts[:, :-1], block[:, :-1], -np.inf)
    interpolated = np.maximum.accumulate(block[:, ::-1], axis=1)[:, ::-1]
    precision = np.zeros((num_rows * num_segments, len(RECALL_THRESHOLDS)))
    precision[live] = np.where(position < cell_end, interpolated, 0.0)
    precision = precision.reshape(num_rows, num_segments, len(RECALL_THRESHOLDS))
    return recall, precision.transpose(0, 2, 1)


def _summarize(areas, gt: _GroundTruth, max_dets: int) -> Dict[str, float]:
    """
    lvis-api's ``summarize``: means of the valid (> -1) entries of its precision and recall
    arrays, -1 if there is none; those of :func:`_accumulate`'s categories, in the same order.
    """

    def mean(values: np.ndarray) -> float:
        return float(np.mean(values.reshape(-1))) if values.size else -1.0

    area_index = {name: a for a, name in enumerate(AREA_RANGES)}
    at_iou = {iou: np.flatnonzero(iou == IOU_THRESHOLDS) for iou in (0.5, 0.75)}
    categories, precision, _ = areas[area_index["all"]]
    metrics = {
        "AP": mean(precision),
        "AP50": mean(precision[at_iou[0.5]]),
        "AP75": mean(precision[at_iou[0.75]]),
    }
    for name, area_name in (("APs", "small"), ("APm", "medium"), ("APl", "large")):
        metrics[name] = mean(areas[area_index[area_name]][1])
    for name, group in zip(FREQUENCY_GROUPS, gt.frequency_groups):
        metrics[f"AP{name}"] = mean(precision[:, :, np.isin(categories, group)])
    for name, suffix in (("all", ""), ("small", "s"), ("medium", "m"), ("large", "l")):
        metrics[f"AR{suffix}@{max_dets}"] = mean(areas[area_index[name]][2])
    return metrics


@contextlib.contextmanager
def _garbage_collection_paused():
    """
    Pauses Python's cyclic garbage collector: the evaluation makes and drops many small
    containers, and each collection would walk the whole heap, results included, again.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _load_json(path: str):
    with open(path, "r") as f:
        return json.load(f)


def evaluate_lvis(
    lvis_gt: Union[str, dict, "lvis.LVIS"],  # noqa: F821
    results: Union[str, List[dict]],
    iou_type: str,
    max_dets: int = 300,
    mask_areas: bool = False,
    per_category: bool = False,
):
    """
    LVIS AP and AR of detection or instance segmentation results: the metrics of lvis-api's
    ``LVISEval(lvis_gt, LVISResults(lvis_gt, results, max_dets), iou_type).run()``.

    Args:
        lvis_gt: the ground truth: an ``lvis.LVIS``, an LVIS-format dict or a JSON file path.
            Not modified.
        results: a list of LVIS / COCO result dicts {"image_id", "category_id", "score", "bbox"
            (XYWH) and / or "segmentation" (compressed RLE)}, or a JSON file of such a list. Not
            modified, not copied: a file is read a part at a time into arrays.
        iou_type: "bbox" or "segm".
        max_dets: the detections evaluated per image (its top-scored ones).
        mask_areas: leave the results' "bbox" out, as if they had none, so that mask areas decide
            the area ranges of mask AP (what detectron2's LVISEvaluator gets by dropping them).
        per_category: also return the AP of each category.

    Returns:
        dict: metric name -> value (0-1 scale, -1 where undefined), lvis-api's names: AP, AP50,
        AP75, APs, APm, APl, APr, APc, APf, AR@{max_dets}, ARs@{max_dets}, ARm@{max_dets},
        ARl@{max_dets}.
        With per_category, a pair: that dict, and {category id: AP} (0-1 scale, -1 for a category
        without ground truth), see :func:`category_ap`.

    Raises:
        ValueError: for an unknown iou_type, a bad max_dets, or results that do not fit the ground
            truth: an unknown image or category id, a score that is not a finite number, a
            missing or malformed field. The message is one line and names the detection (its
            index in the results) and the problem.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {', '.join(IOU_TYPES)}, not {iou_type!r}")
    if isinstance(max_dets, bool) or not isinstance(max_dets, (int, np.integer)) or max_dets < 1:
        raise ValueError(f"max_dets must be a positive integer, not {max_dets!r}")
    max_dets = int(max_dets)
    with _garbage_collection_paused():
        if isinstance(lvis_gt, str):
            dataset = _load_json(lvis_gt)
        elif isinstance(lvis_gt, dict):
            dataset = lvis_gt
        else:  # lvis.LVIS
            dataset = lvis_gt.dataset
        gt = _GroundTruth(dataset, iou_type)
        del dataset
        dt = _Detections(_read_results(results, gt, iou_type, mask_areas), gt, iou_type, max_dets)
        pairs = _candidate_pairs(dt, gt, iou_type)
        areas = _accumulate(dt, gt, *_match(dt, gt, *pairs))
        del dt, pairs
        metrics = _summarize(areas, gt, max_dets)
        if not per_category:
            return metrics
        # category_ap's mean, over the entries of the categories with ground truth (area "all")
        categories, precision, _ = areas[list(AREA_RANGES).index("all")]
        ap = np.full(len(gt.category_ids), -1.0)
        ap[categories] = precision.mean(axis=(0, 1))
        return metrics, dict(zip(gt.category_ids.astype(np.int64).tolist(), ap.tolist()))


def category_ap(precision: np.ndarray) -> np.ndarray:
    """
    The AP of each category from lvis-api's precision array (``LVISEval.eval["precision"]``;
    :func:`evaluate_lvis` computes the same from its own arrays): the mean of its valid (> -1)
    entries over the IoU and recall thresholds, area range "all"; -1 where there is none (no
    ground truth).

    Args:
        precision (ndarray[T, R, K, A]).
    Returns:
        ndarray[K] float64.
    """
    values = precision[:, :, :, 0]
    valid = values > -1
    count = valid.sum(axis=(0, 1))
    total = np.where(valid, values, 0.0).sum(axis=(0, 1))
    return np.where(count > 0, total / np.maximum(count, 1), -1.0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="LVIS AP / AR of a results file, as lvis-api computes them; printed as one "
        "JSON object (lvis-api's metric names, 0-1 scale)."
    )
    parser.add_argument("--gt", required=True, help="LVIS-format ground truth JSON file")
    parser.add_argument("--dt", required=True, help="results JSON file: a list of detections")
    parser.add_argument("--iou-type", choices=IOU_TYPES, default="bbox")
    parser.add_argument("--max-dets", type=int, default=300, help="detections per image")
    args = parser.parse_args(argv)
    try:
        metrics = evaluate_lvis(args.gt, args.dt, args.iou_type, max_dets=args.max_dets)
    except (OSError, ValueError) as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 1
    except (KeyError, TypeError) as e:  # a ground truth without a required field
        print(
            f"error: malformed ground truth or results ({type(e).__name__}: {e})", file=sys.stderr
        )
        return 1
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
