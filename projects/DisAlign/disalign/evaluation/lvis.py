# -*- coding: utf-8 -*-
"""
detectron2's LVISEvaluator with the AP computed by :mod:`disalign.evaluation.fast_lvis` (the same
numbers, in the same format, in a fraction of the time and memory) or by lvis-api, both also
writing the AP of every category to ``<output_dir>/per_category_ap.json``.
"""

import itertools
import json
import logging
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
from detectron2.evaluation import LVISEvaluator
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import create_small_table

from ..config import LVIS_EVAL_BACKENDS

__all__ = [
    "FastLVISEvaluator",
    "LVISApiEvaluator",
    "evaluate_predictions_on_lvis",
    "LVIS_EVAL_BACKENDS",
    "PER_CATEGORY_AP_FILE",
]

# cfg.TEST.LVIS_EVAL_BACKEND values: this module's evaluator, or lvis-api (detectron2's own way)
# what detectron2's LVISEvaluator reports for each task
LVIS_METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"]
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
) -> Tuple[Dict[str, float], Dict[int, float]]:
    """
    detectron2's ``_evaluate_predictions_on_lvis``, computed by
    :func:`disalign.evaluation.fast_lvis.evaluate_lvis` ("fast") or by lvis-api ("lvis-api"),
    with the AP of each category as well.

    Args:
        lvis_gt (lvis.LVIS): the ground truth.
        lvis_results (list[dict]): results in the LVIS format (1-based category ids). Not
            modified, and not copied by the "fast" backend (mask AP leaves the boxes out without
            a copy, so that mask areas decide the small / medium / large ranges, as detectron2).
        iou_type (str): "bbox" or "segm".
        max_dets_per_image (int or None): detections evaluated per image; None: LVIS's 300.
        backend (str): one of LVIS_EVAL_BACKENDS.

    Returns:
        dict: AP, AP50, AP75, APs, APm, APl, APr, APc, APf, on a 0-100 scale (NaN for each without
            results, as detectron2).
        dict: category id -> AP (0-100 scale; -1 for a category without ground truth); empty
            without results.
    """
    if len(lvis_results) == 0:
        logger.warning("No predictions from the model!")
        return {metric: float("nan") for metric in LVIS_METRICS}, {}
    max_dets = 300 if max_dets_per_image is None else max_dets_per_image
    logger.info(f"Evaluating with max detections per image = {max_dets}")
    if backend == "fast":
        from .fast_lvis import evaluate_lvis  # not at import: see this package's __init__

        metrics, ap = evaluate_lvis(
            lvis_gt,
            lvis_results,
            iou_type,
            max_dets=max_dets,
            mask_areas=iou_type == "segm",
            per_category=True,
        )
    elif backend == "lvis-api":
        metrics, ap = _evaluate_with_lvis_api(lvis_gt, lvis_results, iou_type, max_dets)
    else:
        raise ValueError(f"backend must be one of {', '.join(LVIS_EVAL_BACKENDS)}, not {backend!r}")
    results = {metric: float(metrics[metric] * 100) for metric in LVIS_METRICS}
    logger.info(f"Evaluation results for {iou_type}: \n" + create_small_table(results))
    return results, {c: (v * 100 if v > -1 else -1.0) for c, v in ap.items()}


def _evaluate_with_lvis_api(lvis_gt, lvis_results, iou_type, max_dets):
    """
    lvis-api as detectron2's ``_evaluate_predictions_on_lvis`` runs it (for mask AP, on a copy of
    the results without boxes).

    Returns:
        dict: lvis-api's metrics (0-1 scale); dict: category id -> AP (0-1, -1 without ground
            truth) from its precision array.
    """
    from lvis import LVISEval, LVISResults

    from .fast_lvis import category_ap

    if iou_type == "segm":
        lvis_results = [{k: v for k, v in r.items() if k != "bbox"} for r in lvis_results]
    lvis_eval = LVISEval(lvis_gt, LVISResults(lvis_gt, lvis_results, max_dets=max_dets), iou_type)
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
    temporary = f"{path}.tmp.{os.getpid()}"
    with open(temporary, "w") as f:
        json.dump(content, f)
    os.replace(temporary, path)


class _LVISEvaluatorWithCategories(LVISEvaluator):
    """
    detectron2's :class:`LVISEvaluator` (the same arguments, results and output files), with AP
    computed by ``backend`` (one of LVIS_EVAL_BACKENDS), and the AP of each category written to
    ``<output_dir>/per_category_ap.json``. Proposal recall (detectron2's own code) is unchanged.
    """

    backend = None

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
                backend=self.backend,
            )
        if self._output_dir:
            file_path = os.path.join(self._output_dir, PER_CATEGORY_AP_FILE)
            self._logger.info(f"Saving the AP of each category to {file_path}")
            write_per_category_ap(file_path, self._metadata.name, self._lvis_api, ap_by_task)


class FastLVISEvaluator(_LVISEvaluatorWithCategories):
    """
    detectron2's :class:`LVISEvaluator` with the box and mask AP computed by
    :func:`disalign.evaluation.fast_lvis.evaluate_lvis` instead of lvis-api: the same numbers,
    without a second copy of the results. Also writes ``per_category_ap.json``.
    """

    backend = "fast"


class LVISApiEvaluator(_LVISEvaluatorWithCategories):
    """
    detectron2's :class:`LVISEvaluator`, AP computed by lvis-api as detectron2 does; also writes
    ``per_category_ap.json``.
    """

    backend = "lvis-api"
