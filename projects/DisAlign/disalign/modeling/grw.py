# -*- coding: utf-8 -*-
"""
Generalized re-weighting (GRW) of the classification loss, and the class counts it needs.

With training counts n_j over K classes and frequencies r_j = n_j / sum_k n_k, class j gets the
weight w_j = r_j^(-rho), normalised so that sum_j w_j = K. rho = 0 gives w_j = 1 (plain
cross-entropy); larger rho favours the rare classes more.

A class with no training sample would get an infinite weight. Rule: counts below 1 are raised to 1
before the frequencies are computed, so such a class gets the (finite) weight of a class seen once.
It never occurs as a training target, so its weight acts only through the normalisation.
"""

import functools
import hashlib
import json
import logging
import os
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.distributed as dist
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image
from torch.nn import functional as F

__all__ = [
    "GRWCrossEntropy",
    "grw_class_weights",
    "grw_loss_from_config",
    "count_class_pixels",
    "count_class_samples",
    "training_class_counts",
]

logger = logging.getLogger(__name__)

# how the weighted cross-entropy is averaged (MODEL.DISALIGN.GRW.REDUCTION)


def grw_class_weights(class_counts: Sequence[float], rho: float) -> torch.Tensor:
    """
    Args:
        class_counts: n_j, K non-negative training counts.
        rho (float): the re-weighting scale.

    Returns:
        Tensor: w, float32 of shape (K,), with sum K.
    """
    counts = torch.as_tensor(class_counts, dtype=torch.float64)
    if counts.dim() != 1 or counts.numel() == 0:
        raise ValueError(f"class_counts must be a non-empty 1-d sequence, got shape {counts.shape}")
    if not torch.isfinite(counts).all() or (counts < 0).any():
        raise ValueError("class_counts must be finite and non-negative")
    counts = counts.clamp(min=1.0)
    weights = (counts / counts.sum()).pow(-float(rho))
    weights = weights * (counts.numel() / weights.sum())
    return weights.float()


class GRWCrossEntropy:
    """
    Cross-entropy weighted by GRW: ``F.cross_entropy(weight=w)`` with the "mean" reduction, i.e.
    divided by the summed weights of the targets. The same loss serves detection (K foreground
    classes, then one unweighted background class), classification and segmentation.

    With ``reduction="mean"`` the weighted sum is divided by the number of target elements instead,
    ignored ones included (mmseg's class-weighted cross-entropy, the official ADE20K loss).

    The class weights are computed at the first call, so that a model built only for inference
    never reads its training set.
    """

    def __init__(
        self,
        rho: float,
        class_counts: Union[Sequence[float], Callable[[], Sequence[float]]],
        num_classes: int,
        num_unweighted: int = 0,
        reduction: str = "weighted_mean",
    ):
        """
        Args:
            rho (float): the re-weighting scale.
            class_counts: the K training counts n_j, or a function returning them.
            num_classes (int): K.
            num_unweighted (int): classes after the K (the detection background) with weight 1.
            reduction (str): "weighted_mean" (divide by the summed target weights) or "mean"
                (divide by the number of target elements, ignored ones included).
        """
        self.reduction = reduction
        self.rho = rho
        self.num_classes = num_classes
        self.num_unweighted = num_unweighted
        self._class_counts = class_counts
        self._weights = None

    def class_weights(self) -> torch.Tensor:
        """
        Returns:
            Tensor: shape (K + num_unweighted,): w_j for the K classes, then ones.
        """
        if self._weights is None:
            counts = self._class_counts() if callable(self._class_counts) else self._class_counts
            if len(counts) != self.num_classes:
                raise ValueError(
                    f"GRW got {len(counts)} class counts for a classifier of "
                    f"{self.num_classes} classes"
                )
            weights = grw_class_weights(counts, self.rho)
            self._weights = torch.cat([weights, weights.new_ones(self.num_unweighted)])
        return self._weights

    def __call__(
        self, logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100
    ) -> torch.Tensor:
        """
        Args:
            logits: shape (R, C) or (N, C, H, W), with C = K + num_unweighted.
            targets: shape (R,) or (N, H, W), class indices in [0, C) or ``ignore_index``.

        Returns:
            Tensor: scalar loss; 0 (connected to ``logits``) when no target counts.

        With several processes (DDP), the weighted sum is divided by the summed target weights of
        the whole batch (all-reduced), so that the averaged gradients equal those of one process
        holding the whole batch, whatever the classes in each process' part of it. The "mean"
        reduction needs no all-reduce when every process holds as many target elements.
        """
        weight = self.class_weights().to(device=logits.device, dtype=logits.dtype)
        losses = F.cross_entropy(
            logits, targets, weight=weight, ignore_index=ignore_index, reduction="none"
        )  # w_target * CE, 0 where ignored
        if self.reduction == "mean":
            return losses.sum() / max(targets.numel(), 1)
        valid = targets != ignore_index
        summed_weights = torch.where(valid, weight[torch.where(valid, targets, 0)], 0).sum()
        world_size = _world_size()
        if world_size > 1:  # normalise by the whole batch's summed weights, over all processes
            summed_weights = summed_weights.detach().clone()
            dist.all_reduce(summed_weights)
            summed_weights /= world_size  # DDP averages the gradients of the processes
        if summed_weights <= 0:
            return logits.sum() * 0.0
        return losses.sum() / summed_weights


def grw_loss_from_config(
    cfg, num_classes: int, num_unweighted: int = 0
) -> Optional[GRWCrossEntropy]:
    """
    The GRW loss that ``cfg.MODEL.DISALIGN.GRW`` asks for (None when disabled), with counts from
    ``cfg.DATASETS.TRAIN``.
    """
    grw = cfg.MODEL.DISALIGN.GRW
    if not grw.ENABLED:
        return None
    counts = functools.partial(
        _cached_training_class_counts, tuple(cfg.DATASETS.TRAIN), num_classes, grw.COUNT_BY
    )
    return GRWCrossEntropy(grw.RHO, counts, num_classes, num_unweighted, grw.REDUCTION)


@functools.lru_cache(maxsize=None)
def _cached_training_class_counts(dataset_names, num_classes, count_by):
    # the cascade's three predictors share one pass over the training set
    return tuple(training_class_counts(dataset_names, num_classes, count_by, grw=True))


def count_class_samples(
    dataset_dicts: Iterable[Dict], num_classes: int, count_by: str = "images"
) -> List[int]:
    """
    Count, per class, the images that contain it (``count_by="images"``) or its annotated
    instances (``count_by="instances"``) in detectron2 dataset dicts.

    Args:
        dataset_dicts: dicts in detectron2's standard format, where
            ``annotations[i]["category_id"]`` is the contiguous class index in [0, num_classes),
            or image classification dicts with a ``label`` in [0, num_classes).
        num_classes (int): K.
        count_by (str): "images" or "instances".

    Returns:
        list[int]: K counts.
    """
    if count_by not in ("images", "instances"):
        raise ValueError(f"count_by must be 'images' or 'instances', got '{count_by}'")
    counts = [0] * num_classes
    for record in dataset_dicts:
        if "label" in record:
            classes = [record["label"]]
        else:
            classes = [ann["category_id"] for ann in record.get("annotations", ())]
        if count_by == "images":
            classes = set(classes)
        for c in classes:
            if not 0 <= c < num_classes:
                raise ValueError(
                    f"class {c} of '{record.get('file_name')}' is outside [0, {num_classes}): the "
                    "configured number of classes does not match the dataset"
                )
            counts[c] += 1
    return counts


def count_class_pixels(
    dataset_dicts: Iterable[Dict], num_classes: int, ignore_label: int = 255
) -> List[int]:
    """
    Count, per class, the labelled pixels of semantic segmentation dicts (``sem_seg_file_name``
    images of class indices; ``ignore_label`` pixels are not counted).
    """
    counts = np.zeros(num_classes, dtype=np.int64)
    for record in dataset_dicts:
        labels = np.asarray(Image.open(record["sem_seg_file_name"]), dtype=np.int64)
        labels = labels[labels != ignore_label]
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"'{record['sem_seg_file_name']}' has label {labels.max()} outside [0, "
                f"{num_classes}) that is not the ignore label {ignore_label}"
            )
        counts += np.bincount(labels, minlength=num_classes)
    return counts.tolist()


def _cache_dir() -> str:
    return os.path.expanduser(os.getenv("DISALIGN_CACHE", "~/.cache/disalign"))


def _cached_pixel_counts(name: str, dataset_dicts, num_classes: int, ignore_label: int):
    """Pixel counts of a dataset, cached as JSON under $DISALIGN_CACHE (~/.cache/disalign),
    keyed by the label files' names, sizes and modification times."""
    fingerprint = hashlib.sha1(f"{num_classes}:{ignore_label}".encode())
    for record in dataset_dicts:
        stat = os.stat(record["sem_seg_file_name"])
        fingerprint.update(
            f"{record['sem_seg_file_name']}:{stat.st_size}:{stat.st_mtime_ns}\n".encode()
        )
    path = os.path.join(_cache_dir(), f"pixel_counts-{name}-{fingerprint.hexdigest()[:16]}.json")
    try:
        with open(path) as f:
            counts = json.load(f)
        if isinstance(counts, list) and len(counts) == num_classes:
            return counts
    except (OSError, ValueError):
        pass
    counts = count_class_pixels(dataset_dicts, num_classes, ignore_label)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(f"{path}.{os.getpid()}.tmp", "w") as f:
        json.dump(counts, f)
    os.replace(f"{path}.{os.getpid()}.tmp", path)
    return counts


def training_class_counts(
    dataset_names: Sequence[str], num_classes: int, count_by: str = "images", grw: bool = False
) -> List[int]:
    """
    Class counts over the registered training datasets (summed), for GRW and the evaluators'
    frequency groups.

    Args:
        dataset_names: names in detectron2's DatasetCatalog (cfg.DATASETS.TRAIN).
        num_classes (int): K.
        count_by (str): "images", "instances" or "pixels" (semantic segmentation; cached).
        grw (bool): the counts are for GRW's weights: warn about the classes without any (they
            get the weight of a class seen once).

    Returns:
        list[int]: K counts.
    """
    if not dataset_names:
        raise ValueError("GRW needs class counts, but cfg.DATASETS.TRAIN is empty")
    counts = [0] * num_classes
    for name in dataset_names:
        dicts = DatasetCatalog.get(name)
        if count_by == "pixels":
            ignore_label = MetadataCatalog.get(name).get("ignore_label", 255)
            found = _cached_pixel_counts(name, dicts, num_classes, ignore_label)
        else:
            found = count_class_samples(dicts, num_classes, count_by)
        for c, n in enumerate(found):
            counts[c] += n
    missing = [c for c, n in enumerate(counts) if n == 0]
    if grw and missing:
        names = MetadataCatalog.get(dataset_names[0]).get("thing_classes", None)
        shown = ", ".join(str(names[c] if names else c) for c in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        logger.warning(
            f"GRW: {len(missing)} of {num_classes} classes have no training {count_by} in "
            f"{tuple(dataset_names)} ({shown}{more}); they get the weight of a class seen once."
        )
    logger.info(
        f"GRW class counts by {count_by} over {tuple(dataset_names)}: "
        f"min {min(counts)}, max {max(counts)}, total {sum(counts)}"
    )
    return counts


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
