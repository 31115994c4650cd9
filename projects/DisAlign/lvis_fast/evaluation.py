# -*- coding: utf-8 -*-
"""
LVIS AP of a results list or file: :func:`evaluate_lvis`, and :class:`LVISEval`, lvis-api's class
of the same name with the same arguments and results.
"""

import contextlib
import gc
from collections import OrderedDict
from typing import Dict, List, Optional, Union

import numpy as np

from .accumulation import accumulate, accumulate_pooled, summarize, summarize_pooled
from .matching import Detections, candidate_pairs, match
from .params import AREA_RANGES, IOU_THRESHOLDS, IOU_TYPES, RECALL_THRESHOLDS
from .reading import GroundTruth, load_json, read_results


@contextlib.contextmanager
def garbage_collection_paused():
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


def evaluate_lvis(
    lvis_gt: Union[str, dict, "lvis.LVIS"],  # noqa: F821
    results: Union[str, List[dict]],
    iou_type: str,
    max_dets: int = 300,
    mask_areas: bool = False,
    per_category: bool = False,
    dets_per_category: Optional[int] = None,
    pooled: bool = False,
):
    """
    LVIS AP and AR of detection or instance segmentation results: the metrics of lvis-api's
    ``LVISEval(lvis_gt, LVISResults(lvis_gt, results, max_dets), iou_type).run()``; with
    ``dets_per_category`` and ``max_dets=-1``, Fixed AP, and with ``pooled``, Pooled AP (Dave et
    al., *Evaluating Large-Vocabulary Object Detectors: The Devil is in the Details*, 2021).

    Args:
        lvis_gt: the ground truth: an ``lvis.LVIS``, an LVIS-format dict or a JSON file path.
            Not modified.
        results: a list of LVIS / COCO result dicts {"image_id", "category_id", "score", "bbox"
            (XYWH) and / or "segmentation" (compressed RLE)}, or a JSON file of such a list. Not
            modified, not copied: a file is read a part at a time into arrays.
        iou_type: "bbox" or "segm".
        max_dets: the detections evaluated per image (its top-scored ones, ties in the order of
            the results); -1: all of them (lvis-api's ``max_dets=-1``).
        mask_areas: leave the results' "bbox" out, as if they had none, so that mask areas decide
            the area ranges of mask AP (what detectron2's LVISEvaluator gets by dropping them).
        per_category: also return the AP of each category.
        dets_per_category: keep only the top-scored ``dets_per_category`` results of each
            category over all images (ties in the order of the results) before the per-image
            step; None: all (Fixed AP: 10,000, with ``max_dets=-1``).
        pooled: also return Pooled AP, area range "all": "AP-pooled-all", "AP-pooled-r",
            "AP-pooled-c", "AP-pooled-f" (the authors' ``LVISPooledEval``).

    Returns:
        dict: metric name -> value (0-1 scale, -1 where undefined), lvis-api's names: AP, AP50,
        AP75, APs, APm, APl, APr, APc, APf, AR@{max_dets}, ARs@{max_dets}, ARm@{max_dets},
        ARl@{max_dets}; then the pooled ones.
        With per_category, a pair: that dict, and {category id: AP} (0-1 scale, -1 for a category
        without ground truth), see :func:`category_ap`.

    Raises:
        ValueError: for an unknown iou_type, a bad max_dets or dets_per_category, or results
            that do not fit the ground truth: an unknown image or category id, a score that is
            not a finite number, a missing or malformed field. The message is one line and names
            the detection (its index in the results) and the problem.
    """
    evaluation = _Evaluation(
        lvis_gt, results, iou_type, max_dets, mask_areas, dets_per_category, pooled
    )
    if not per_category:
        return evaluation.metrics
    return evaluation.metrics, evaluation.category_ap()


def check_limits(max_dets, dets_per_category):
    """A ValueError for a per-image or per-category limit that is not one (one line)."""

    def is_integer(value):
        return not isinstance(value, bool) and isinstance(value, (int, np.integer))

    if not is_integer(max_dets) or not (max_dets >= 1 or max_dets == -1):
        raise ValueError(f"max_dets must be a positive integer or -1 (no limit), not {max_dets!r}")
    if dets_per_category is not None and (
        not is_integer(dets_per_category) or dets_per_category < 1
    ):
        raise ValueError(
            f"dets_per_category must be a positive integer (or None, no limit), not "
            f"{dets_per_category!r}"
        )


class _Evaluation:
    """
    One evaluation, run on construction.

    Attributes:
        gt (GroundTruth).
        areas: :func:`accumulate`'s output, one (categories, precision, recall) per area range.
        pooled_precision (ndarray[T, R, 4] or None): :func:`accumulate_pooled`'s output.
        metrics (dict): lvis-api's metrics, then the pooled ones.
        box_areas (bool): whether the area ranges were decided by box areas (else mask areas).
    """

    def __init__(self, lvis_gt, results, iou_type, max_dets, mask_areas, dets_per_category, pooled):
        if iou_type not in IOU_TYPES:
            raise ValueError(f"iou_type must be one of {', '.join(IOU_TYPES)}, not {iou_type!r}")
        check_limits(max_dets, dets_per_category)
        max_dets = int(max_dets)
        with garbage_collection_paused():
            if isinstance(lvis_gt, str):
                dataset = load_json(lvis_gt)
            elif isinstance(lvis_gt, dict):
                dataset = lvis_gt
            else:  # lvis.LVIS
                dataset = lvis_gt.dataset
            self.gt = gt = GroundTruth(dataset, iou_type)
            del dataset
            columns = read_results(results, gt, iou_type, mask_areas)
            dt = Detections(columns, gt, iou_type, max_dets, dets_per_category)
            del columns
            self.box_areas = dt.box_areas
            pairs = candidate_pairs(dt, gt, iou_type)
            matches = match(dt, gt, *pairs)
            del pairs
            self.areas = accumulate(dt, gt, *matches)
            self.metrics = summarize(self.areas, gt, max_dets)
            self.pooled_precision = None
            if pooled:
                self.pooled_precision = accumulate_pooled(dt, gt, *matches)
                self.metrics.update(summarize_pooled(self.pooled_precision))

    def category_ap(self) -> Dict[int, float]:
        """{category id: AP}: category_ap's mean over the categories with ground truth."""
        categories, precision, _ = self.areas[list(AREA_RANGES).index("all")]
        ap = np.full(len(self.gt.category_ids), -1.0)
        ap[categories] = precision.mean(axis=(0, 1))
        return dict(zip(self.gt.category_ids.astype(np.int64).tolist(), ap.tolist()))

    def arrays(self):
        """lvis-api's ``eval["precision"]`` (ndarray[T, R, K, A]) and ``eval["recall"]``
        (ndarray[T, K, A]), -1 for the categories without ground truth in an area range."""
        num_categories = len(self.gt.category_ids)
        shape = (len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), num_categories, len(AREA_RANGES))
        precision, recall = np.full(shape, -1.0), np.full(shape[:1] + shape[2:], -1.0)
        for a, (categories, area_precision, area_recall) in enumerate(self.areas):
            precision[:, :, categories, a] = area_precision
            recall[:, categories, a] = area_recall
        return precision, recall


class Params:
    """lvis-api's ``Params``: only ``max_dets`` may be changed (before :meth:`LVISEval.run`)."""

    def __init__(self, iou_type: str, img_ids: List[int], cat_ids: List[int]):
        self.iou_type = iou_type
        self.img_ids, self.cat_ids = img_ids, cat_ids
        self.iou_thrs, self.rec_thrs = IOU_THRESHOLDS.copy(), RECALL_THRESHOLDS.copy()
        self.max_dets = 300
        self.area_rng = [list(bounds) for bounds in AREA_RANGES.values()]
        self.area_rng_lbl = list(AREA_RANGES)
        self.use_cats = 1


class LVISEval:
    """
    lvis-api's ``LVISEval`` (the same constructor arguments, ``run``, ``evaluate`` /
    ``accumulate`` / ``summarize``, ``get_results``, ``print_results``, and the ``results``,
    ``eval["precision"]`` / ``eval["recall"]`` and ``params`` it fills), computed by
    :func:`evaluate_lvis`: a drop-in replacement::

        from lvis_fast import LVISEval      # instead of: from lvis import LVISEval

    ``params.max_dets`` applies when :meth:`run` runs (lvis-api applies 300 per image when it
    reads a results file or list, and its ``params.max_dets`` only names the AR metrics); the
    other parameters are lvis-api's defaults and cannot be changed.
    """

    def __init__(self, lvis_gt, lvis_dt, iou_type: str = "segm"):
        """
        Args:
            lvis_gt: the ground truth: an ``lvis.LVIS``, an LVIS-format dict or a JSON file.
            lvis_dt: the results: a list of result dicts, a JSON file of one, or an
                ``lvis.LVISResults`` (whose "area" fields then decide the area ranges, as in
                lvis-api).
            iou_type: "bbox" or "segm".
        """
        if iou_type not in IOU_TYPES:
            raise ValueError(f"iou_type: {iou_type} is not supported.")
        self.lvis_gt, self.lvis_dt = lvis_gt, lvis_dt
        dataset = lvis_gt if isinstance(lvis_gt, dict) else getattr(lvis_gt, "dataset", None)
        if dataset is None:  # a file: read once, here
            self.lvis_gt = dataset = load_json(lvis_gt)
        self._mask_areas = False
        if not isinstance(lvis_dt, (str, list)):  # lvis.LVISResults
            annotations = lvis_dt.dataset["annotations"]
            self.lvis_dt = annotations
            self._mask_areas = _areas_are_mask_areas(annotations)
        self.params = Params(
            iou_type,
            sorted(image["id"] for image in dataset["images"]),
            sorted(category["id"] for category in dataset["categories"]),
        )
        self.results = OrderedDict()
        self.eval = {}
        self._evaluation = None

    def evaluate(self):
        """Match the results to the ground truth (and accumulate: one step here)."""
        self._evaluation = _Evaluation(
            self.lvis_gt,
            self.lvis_dt,
            self.params.iou_type,
            self.params.max_dets,
            self._mask_areas,
            None,
            False,
        )

    def accumulate(self):
        """Fill ``eval["precision"]`` [T, R, K, A] and ``eval["recall"]`` [T, K, A]."""
        if self._evaluation is None:
            self.evaluate()
        precision, recall = self._evaluation.arrays()
        self.eval = {"params": self.params, "precision": precision, "recall": recall}

    def summarize(self):
        """Fill ``results`` with lvis-api's metrics."""
        if self._evaluation is None:
            self.evaluate()
        self.results = OrderedDict(self._evaluation.metrics)

    def run(self):
        self.evaluate()
        self.accumulate()
        self.summarize()

    def get_results(self) -> "OrderedDict[str, float]":
        return self.results

    def print_results(self):
        """The results, one line each, as lvis-api prints them."""
        template = " {:<18} {} @[ IoU={:<9} | area={:>6s} | maxDets={:>3d} catIds={:>3s}] = {:0.3f}"
        all_ious = f"{IOU_THRESHOLDS[0]:0.2f}:{IOU_THRESHOLDS[-1]:0.2f}"
        for key, value in self.results.items():
            kind = ("Average Precision", "(AP)") if "AP" in key else ("Average Recall", "(AR)")
            third = key[2] if len(key) > 2 else ""
            iou = f"{float(key[2:]) / 100:0.2f}" if third.isdigit() else all_ious
            group = third if third in ("r", "c", "f") else "all"
            area = third if third in ("s", "m", "l") else "all"
            print(template.format(*kind, iou, area, self.params.max_dets, group, value))


def _areas_are_mask_areas(annotations: List[dict]) -> bool:
    """
    Whether an ``LVISResults``' "area" fields are mask areas rather than box areas (lvis-api
    sets one or the other, by its first result); where they agree, either gives the same AP.
    """
    if not annotations:
        return False
    try:
        boxes = np.array([a["bbox"] for a in annotations], dtype=np.float64).reshape(-1, 4)
        areas = np.array([a["area"] for a in annotations], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        return "bbox" not in annotations[0]
    return not np.array_equal(areas, boxes[:, 2] * boxes[:, 3])
