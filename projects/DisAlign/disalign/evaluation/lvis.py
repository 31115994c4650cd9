# -*- coding: utf-8 -*-
"""
detectron2's LVISEvaluator with the AP computed by :mod:`lvis_fast` (the same numbers, in the same
format, in a fraction of the time and memory) or by lvis-api, also writing the AP of every
category to ``<output_dir>/per_category_ap.json``; optionally also Fixed AP and Pooled AP (Dave et
al. 2021) from each category's top-scored detections over the whole dataset.
"""

import copy
import heapq
import itertools
import json
import logging
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from detectron2.evaluation import LVISEvaluator
from detectron2.evaluation.lvis_evaluation import instances_to_coco_json
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import create_small_table

from lvis_fast import check_limits, evaluate_lvis, pooled_metric_names, top_per_group

from ..config import LVIS_EVAL_BACKENDS
from ..engine.file_io import write_atomically

__all__ = [
    "LongTailLVISEvaluator",
    "evaluate_predictions_on_lvis",
    "LVIS_EVAL_BACKENDS",
    "PER_CATEGORY_AP_FILE",
]

# cfg.TEST.LVIS_EVAL_BACKEND values: this module's evaluator, or lvis-api (detectron2's own way)
# what detectron2's LVISEvaluator reports for each task
LVIS_METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"]
# what the evaluator adds with Fixed AP on: Fixed AP's (suffixed) and Pooled AP's metrics
FIXED_AP_METRICS = ["AP", "APr", "APc", "APf"]
FIXED_SUFFIX = "-fixed"
# written to the evaluator's output_dir after evaluation, one entry per category
PER_CATEGORY_AP_FILE = "per_category_ap.json"
_WRITE_CHUNK = 10000  # results written to lvis_instances_results.json at a time

logger = logging.getLogger(__name__)


def evaluate_predictions_on_lvis(
    lvis_gt,
    lvis_results: List[dict],
    iou_type: str,
    max_dets_per_image: Optional[int] = None,
    backend: str = "fast",
    dets_per_category: Optional[int] = None,
    pooled: bool = False,
) -> Tuple[Dict[str, float], Dict[int, float]]:
    """
    detectron2's ``_evaluate_predictions_on_lvis``, computed by :func:`lvis_fast.evaluate_lvis`
    ("fast") or by lvis-api ("lvis-api"), with the AP of each category as well.

    Args:
        lvis_gt (lvis.LVIS): the ground truth.
        lvis_results (list[dict]): results in the LVIS format (1-based category ids). Not
            modified, and not copied by the "fast" backend (mask AP leaves the boxes out without
            a copy, so that mask areas decide the small / medium / large ranges, as detectron2).
        iou_type (str): "bbox" or "segm".
        max_dets_per_image (int or None): detections evaluated per image (-1: all); None: LVIS's
            300.
        backend (str): one of LVIS_EVAL_BACKENDS.
        dets_per_category (int or None): keep only each category's top-scored detections over
            the dataset first (Fixed AP, with max_dets_per_image -1).
        pooled (bool): also Pooled AP ("AP-pooled-all", "-r", "-c", "-f"; always computed by
            :mod:`lvis_fast`, lvis-api has none).

    Returns:
        dict: AP, AP50, AP75, APs, APm, APl, APr, APc, APf (and the pooled ones), on a 0-100 scale
            (NaN for each without results, as detectron2).
        dict: category id -> AP (0-100 scale; -1 for a category without ground truth); empty
            without results.
    """
    names = LVIS_METRICS + (pooled_metric_names() if pooled else [])
    if len(lvis_results) == 0:
        logger.warning("No predictions from the model!")
        return {metric: float("nan") for metric in names}, {}
    max_dets = 300 if max_dets_per_image is None else max_dets_per_image
    limits = f"max detections per image = {max_dets}"
    if dets_per_category is not None:
        limits += f", per category = {dets_per_category}"
    logger.info(f"Evaluating with {limits}")
    if backend not in LVIS_EVAL_BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(LVIS_EVAL_BACKENDS)}, not {backend!r}")
    options = dict(max_dets=max_dets, mask_areas=iou_type == "segm", per_category=True)
    options["dets_per_category"] = dets_per_category
    if backend == "fast":
        metrics, ap = evaluate_lvis(lvis_gt, lvis_results, iou_type, pooled=pooled, **options)
    else:
        metrics, ap = _evaluate_with_lvis_api(
            lvis_gt, lvis_results, iou_type, max_dets, dets_per_category
        )
        if pooled:
            options["per_category"] = False
            metrics.update(evaluate_lvis(lvis_gt, lvis_results, iou_type, pooled=True, **options))
    results = {metric: float(metrics[metric] * 100) for metric in names}
    what = iou_type if dets_per_category is None else f"{iou_type} ({limits})"
    logger.info(f"Evaluation results for {what}: \n" + create_small_table(results))
    return results, {c: (v * 100 if v > -1 else -1.0) for c, v in ap.items()}


def _evaluate_with_lvis_api(lvis_gt, lvis_results, iou_type, max_dets, dets_per_category):
    """
    lvis-api as detectron2's ``_evaluate_predictions_on_lvis`` runs it (for mask AP, on a copy of
    the results without boxes); with dets_per_category, on each category's top-scored results
    (ties: the earlier first), in their order.

    Returns:
        dict: lvis-api's metrics (0-1 scale); dict: category id -> AP (0-1, -1 without ground
            truth) from its precision array.
    """
    from lvis import LVISEval, LVISResults

    from lvis_fast import category_ap

    if iou_type == "segm":
        lvis_results = [{k: v for k, v in r.items() if k != "bbox"} for r in lvis_results]
    else:
        lvis_results = copy.deepcopy(lvis_results)  # LVISResults adds fields
    if dets_per_category is not None:  # the same selection as lvis_fast's, in the results' order
        scores = np.array([r["score"] for r in lvis_results], dtype=np.float64)
        categories = np.array([r["category_id"] for r in lvis_results], dtype=np.int64)
        kept = np.flatnonzero(top_per_group(categories, scores, dets_per_category))
        lvis_results = [lvis_results[i] for i in kept.tolist()]
    lvis_eval = LVISEval(lvis_gt, LVISResults(lvis_gt, lvis_results, max_dets=max_dets), iou_type)
    lvis_eval.params.max_dets = max_dets
    lvis_eval.run()
    lvis_eval.print_results()
    ap = category_ap(lvis_eval.eval["precision"])
    return lvis_eval.get_results(), dict(zip(lvis_eval.params.cat_ids, ap.tolist()))


def write_per_category_ap(
    path: str, dataset_name: str, lvis_gt, ap_by_task: Dict[str, Dict[int, float]]
):
    """
    Write the per-category AP file (atomically: a temporary name, then renamed).

    Args:
        path (str): the file to write.
        dataset_name (str): the evaluated dataset's registered name.
        lvis_gt (lvis.LVIS): its ground truth.
        ap_by_task (dict): task ("bbox", "segm") -> {category id: AP on a 0-100 scale, -1 for a
            category without ground truth}. A task without an entry for a category (no results
            were evaluated) gives 0 if the category has ground truth.

    The file: {"dataset", "tasks" (sorted), "categories": [{"id", "name", "frequency",
    "train_image_count" (the category's "image_count", null if absent), "gt_instances" (its
    annotations in the evaluated set), "AP": {task: AP or null without ground truth}}] in ascending
    id order}.
    """
    dataset = lvis_gt.dataset
    instances = np.bincount(
        np.array([a["category_id"] for a in dataset["annotations"]], dtype=np.int64),
        minlength=max((c["id"] for c in dataset["categories"]), default=0) + 1,
    )
    categories = []
    for category in sorted(dataset["categories"], key=lambda c: c["id"]):
        category_id = category["id"]
        ap = {}
        for task in sorted(ap_by_task):
            value = ap_by_task[task].get(category_id, 0.0 if instances[category_id] else -1.0)
            ap[task] = None if value == -1 else float(value)
        categories.append(
            {
                "id": category_id,
                "name": category.get("name"),
                "frequency": category.get("frequency"),
                "train_image_count": category.get("image_count"),
                "gt_instances": int(instances[category_id]),
                "AP": ap,
            }
        )
    content = {"dataset": dataset_name, "tasks": sorted(ap_by_task), "categories": categories}
    write_atomically(path, lambda f: json.dump(content, f))


class LongTailLVISEvaluator(LVISEvaluator):
    """
    detectron2's :class:`LVISEvaluator` (the same arguments, results and output files), with AP
    computed by ``backend``, and the AP of each category written to
    ``<output_dir>/per_category_ap.json``. Proposal recall (detectron2's own code) is unchanged.

    With ``fixed_ap_dets_per_category`` K, it also reports Fixed AP (each category's K top-scored
    detections over the dataset, no per-image limit: "AP-fixed", "APr-fixed", "APc-fixed",
    "APf-fixed") and Pooled AP on the same detections ("AP-pooled-all", "-r", "-c", "-f"),
    besides the standard AP of the ``max_dets_per_image`` top-scored detections of each image.
    The model then has to keep more detections per image than that (TEST.FIXED_AP.DETS_PER_IMAGE):
    this evaluator keeps, of each image's, the standard ones and those that enter their
    category's running top K (a score above its K-th best so far), so that its memory stays
    bounded; with several processes, each keeps its own top K and the evaluation takes the top K
    of their union, which is the top K of all.
    """

    def __init__(
        self,
        dataset_name: str,
        tasks=None,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        *,
        max_dets_per_image: Optional[int] = None,
        backend: str = "fast",
        fixed_ap_dets_per_category: Optional[int] = None,
    ):
        """
        Args:
            dataset_name, tasks, distributed, output_dir, max_dets_per_image: as detectron2's.
            backend (str): one of LVIS_EVAL_BACKENDS: "fast" (:mod:`lvis_fast`) or "lvis-api".
            fixed_ap_dets_per_category (int or None): K for Fixed AP and Pooled AP; None: off.
        """
        if backend not in LVIS_EVAL_BACKENDS:
            raise ValueError(
                f"backend must be one of {', '.join(LVIS_EVAL_BACKENDS)}, not {backend!r}"
            )
        # the standard AP's per-image budget (detectron2's None: LVIS's 300)
        self._standard_dets = 300 if max_dets_per_image is None else max_dets_per_image
        check_limits(self._standard_dets, fixed_ap_dets_per_category)
        super().__init__(
            dataset_name, tasks, distributed, output_dir, max_dets_per_image=max_dets_per_image
        )
        self._backend = backend
        self._dets_per_category = fixed_ap_dets_per_category

    def reset(self):
        super().reset()
        self._category_top_scores = {}  # category -> min-heap of its K best scores so far

    def process(self, inputs, outputs):
        """
        As detectron2's; with Fixed AP on, of each image's instances only its standard ones
        (the first max_dets_per_image: the model's are sorted by decreasing score) and those
        that enter their category's running top K are kept.
        """
        if self._dets_per_category is None:
            return super().process(inputs, outputs)
        for input, output in zip(inputs, outputs):
            prediction = {"image_id": input["image_id"]}
            if "instances" in output:
                instances = output["instances"].to(self._cpu_device)
                keep = torch.from_numpy(self._fixed_ap_candidates(instances))
                prediction["instances"] = instances_to_coco_json(instances[keep], input["image_id"])
            if "proposals" in output:
                prediction["proposals"] = output["proposals"].to(self._cpu_device)
            self._predictions.append(prediction)

    def _fixed_ap_candidates(self, instances) -> np.ndarray:
        """The indices of an image's instances to keep, in their order: ndarray[M] int64."""
        scores = instances.scores.numpy().astype(np.float64)
        classes = instances.pred_classes.numpy()
        standard = self._standard_dets
        keep = np.arange(len(scores)) < (standard if standard >= 0 else len(scores))
        k = self._dets_per_category
        for i, (category, score) in enumerate(zip(classes.tolist(), scores.tolist())):
            top = self._category_top_scores.setdefault(category, [])
            if len(top) < k:
                heapq.heappush(top, score)
            elif score > top[0]:  # (ties: the earlier detection stays)
                heapq.heapreplace(top, score)
            else:
                continue
            keep[i] = True
        return np.flatnonzero(keep)

    def _eval_predictions(self, predictions: List[dict]):
        """
        Fill self._results with the metrics of each task ("bbox", "segm"), and write the AP of
        each category.

        Args:
            predictions (list[dict]): what :meth:`process` collected, one dict per image.
        """
        self._logger.info("Preparing results in the LVIS format ...")
        lvis_results = list(itertools.chain(*[x["instances"] for x in predictions]))
        tasks = self._tasks or self._tasks_from_predictions(lvis_results)

        # back to the dataset's category ids: through the dataset's mapping if it has one (a
        # COCO-category dataset), else LVIS's (contiguous 0-based -> 1-based)
        if hasattr(self._metadata, "thing_dataset_id_to_contiguous_id"):
            to_contiguous = self._metadata.thing_dataset_id_to_contiguous_id
            dataset_id = {contiguous: k for k, contiguous in to_contiguous.items()}
            for result in lvis_results:
                result["category_id"] = dataset_id[result["category_id"]]
        else:
            for result in lvis_results:
                result["category_id"] += 1

        if self._output_dir:
            file_path = os.path.join(self._output_dir, "lvis_instances_results.json")
            self._logger.info(f"Saving results to {file_path}")
            with PathManager.open(file_path, "w") as f:
                # what json.dumps(lvis_results) gives, written a part at a time (json.dump would
                # be slower, one string of all would double the memory)
                f.write("[")
                for start in range(0, len(lvis_results), _WRITE_CHUNK):
                    f.write(", " if start else "")
                    f.write(json.dumps(lvis_results[start : start + _WRITE_CHUNK])[1:-1])
                f.write("]")
                f.flush()

        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return

        self._logger.info("Evaluating predictions ...")
        ap_by_task = {}
        for task in sorted(tasks):
            self._results[task], ap_by_task[task] = evaluate_predictions_on_lvis(
                self._lvis_api,
                lvis_results,
                task,
                max_dets_per_image=self._max_dets_per_image,
                backend=self._backend,
            )
            if self._dets_per_category is None:
                continue
            fixed, ap_by_task[task + FIXED_SUFFIX] = evaluate_predictions_on_lvis(
                self._lvis_api,
                lvis_results,
                task,
                max_dets_per_image=-1,
                backend=self._backend,
                dets_per_category=self._dets_per_category,
                pooled=True,
            )
            for name in FIXED_AP_METRICS:
                self._results[task][name + FIXED_SUFFIX] = fixed[name]
            for name in pooled_metric_names():
                self._results[task][name] = fixed[name]
        if self._output_dir:
            file_path = os.path.join(self._output_dir, PER_CATEGORY_AP_FILE)
            self._logger.info(f"Saving the AP of each category to {file_path}")
            write_per_category_ap(file_path, self._metadata.name, self._lvis_api, ap_by_task)
