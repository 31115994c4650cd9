# -*- coding: utf-8 -*-
"""
mIoU and mAcc of semantic segmentation overall (detectron2's SemSegEvaluator) and for the head /
body / tail classes, grouped by their pixel ratio in the training set.
"""

from typing import Dict, Sequence

import numpy as np
from detectron2.evaluation import SemSegEvaluator

__all__ = ["LongTailSemSegEvaluator", "group_segmentation_metrics", "pixel_ratio_group"]

HEAD_ABOVE = 0.01  # head: more than 1% of the training pixels
TAIL_BELOW = 0.001  # tail: less than 0.1%; body: in between
GROUPS = ("head", "body", "tail")


def pixel_ratio_group(ratio: float) -> str:
    """ "head", "body" or "tail" for a class covering ``ratio`` of the training pixels."""
    if ratio > HEAD_ABOVE:
        return "head"
    return "tail" if ratio < TAIL_BELOW else "body"


def group_segmentation_metrics(
    conf_matrix: np.ndarray, class_groups: Sequence[str]
) -> Dict[str, float]:
    """
    Args:
        conf_matrix: (K+1, K+1) pixel counts as detectron2's SemSegEvaluator keeps them: row =
            predicted class, column = true class, the last row / column for the ignore label.
        class_groups: "head", "body" or "tail" for each of the K classes.

    Returns:
        dict: "mIoU_<group>" and "mAcc_<group>" for each group, in percent: the mean over the
        group's classes that have pixels in the evaluated set (NaN if none) of IoU = TP / (TP + FP
        + FN) and of accuracy = TP / (TP + FN), FP counting pixels of other classes only.
    """
    matrix = np.asarray(conf_matrix, dtype=np.float64)[:-1, :-1]
    true_positive = np.diag(matrix)
    gt_pixels = matrix.sum(axis=0)
    predicted_pixels = matrix.sum(axis=1)
    present = gt_pixels > 0
    iou = np.divide(
        true_positive,
        gt_pixels + predicted_pixels - true_positive,
        where=present,
        out=np.zeros_like(true_positive),
    )
    accuracy = np.divide(true_positive, gt_pixels, where=present, out=np.zeros_like(true_positive))
    results = {}
    groups = np.asarray(class_groups)
    for group in GROUPS:
        selected = present & (groups == group)
        for name, values in (("mIoU", iou), ("mAcc", accuracy)):
            value = 100.0 * values[selected].mean() if selected.any() else float("nan")
            results[f"{name}_{group}"] = float(value)
    return results


class LongTailSemSegEvaluator(SemSegEvaluator):
    """
    detectron2's SemSegEvaluator (mIoU, fwIoU, mACC, pACC, per-class IoU and accuracy) plus
    ``mAcc`` and the head / body / tail means of :func:`group_segmentation_metrics`.
    """

    def __init__(self, dataset_name: str, class_groups: Sequence[str], **kwargs):
        """
        Args:
            dataset_name (str): the evaluated dataset.
            class_groups: "head", "body" or "tail" for each class.
            kwargs: as for detectron2's SemSegEvaluator (distributed, output_dir).
        """
        super().__init__(dataset_name, **kwargs)
        if len(class_groups) != self._num_classes:
            raise ValueError(f"{len(class_groups)} class groups for {self._num_classes} classes")
        self._class_groups = list(class_groups)

    def evaluate(self):
        results = super().evaluate()
        if not results:  # a process other than the main one
            return results
        metrics = results["sem_seg"]
        metrics["mAcc"] = metrics["mACC"]
        metrics.update(group_segmentation_metrics(self._conf_matrix, self._class_groups))
        return results
