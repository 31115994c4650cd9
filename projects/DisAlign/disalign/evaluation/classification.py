# -*- coding: utf-8 -*-
"""
Top-1 accuracy overall and for the Many / Medium / Few groups of long-tailed classification.
"""

import itertools
import json
import os
from collections import OrderedDict
from typing import Dict, Sequence

import detectron2.utils.comm as comm
import numpy as np
from detectron2.evaluation import DatasetEvaluator

__all__ = ["ClassificationEvaluator", "group_accuracies", "shot_group"]

# the groups of the long-tail literature, by training images per class
MANY_SHOT_ABOVE = 100  # Many: more than 100
FEW_SHOT_BELOW = 20  # Few: fewer than 20; Medium: 20 to 100


def shot_group(train_count: int) -> str:
    """ "many", "medium" or "few" for a class with ``train_count`` training images."""
    if train_count > MANY_SHOT_ABOVE:
        return "many"
    return "few" if train_count < FEW_SHOT_BELOW else "medium"


def group_accuracies(
    labels: Sequence[int], predictions: Sequence[int], train_class_counts: Sequence[int]
) -> Dict[str, float]:
    """
    Args:
        labels, predictions: the true and predicted class of each test image.
        train_class_counts: training images per class (K values).

    Returns:
        dict: "top1", the accuracy over all test images, and "many", "medium", "few", each the
        mean of the per-class accuracies of its classes (classes without test images left out;
        NaN for a group without classes), all in percent.
    """
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    results = {"top1": 100.0 * float(np.mean(labels == predictions)) if len(labels) else np.nan}
    per_group = {"many": [], "medium": [], "few": []}
    for c, count in enumerate(train_class_counts):
        of_class = labels == c
        if of_class.any():
            per_group[shot_group(count)].append(np.mean(predictions[of_class] == c))
    for group, accuracies in per_group.items():
        results[group] = 100.0 * float(np.mean(accuracies)) if accuracies else float("nan")
    return results


class ClassificationEvaluator(DatasetEvaluator):
    """
    Evaluate a classifier's outputs ({"probs": (K,)} per image) against the "label" of its inputs.
    """

    def __init__(
        self,
        dataset_name: str,
        train_class_counts: Sequence[int],
        distributed: bool = True,
        output_dir: str = None,
    ):
        """
        Args:
            dataset_name (str): the evaluated dataset (for the output file's name).
            train_class_counts: training images per class, which define the groups.
            distributed (bool): gather the results of all processes.
            output_dir (str): if given, the predictions are written there.
        """
        self._dataset_name = dataset_name
        self._train_class_counts = list(train_class_counts)
        self._distributed = distributed
        self._output_dir = output_dir
        self._predictions = []

    def reset(self):
        self._predictions = []

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            predicted = int(out["probs"].argmax())
            self._predictions.append((int(inp["image_id"]), int(inp["label"]), predicted))

    def evaluate(self):
        predictions = self._predictions
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            path = os.path.join(self._output_dir, "classification_predictions.json")
            with open(path, "w") as f:
                json.dump(
                    [{"image_id": i, "label": y, "prediction": p} for i, y, p in predictions], f
                )
        _, labels, predicted = zip(*predictions) if predictions else ((), (), ())
        return OrderedDict(
            {"classification": group_accuracies(labels, predicted, self._train_class_counts)}
        )
