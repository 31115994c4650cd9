# -*- coding: utf-8 -*-
"""
Generalized re-weighting (GRW) of the classification loss (the class counts it needs come from
:mod:`disalign.data.class_counts`).

With training counts n_j over K classes and frequencies r_j = n_j / sum_k n_k, class j gets the
weight w_j = r_j^(-rho), normalised so that sum_j w_j = K. rho = 0 gives w_j = 1 (plain
cross-entropy); larger rho favours the rare classes more.

A class with no training sample would get an infinite weight. Rule: counts below 1 are raised to 1
before the frequencies are computed, so such a class gets the (finite) weight of a class seen once.
It never occurs as a training target, so its weight acts only through the normalisation.
"""

import functools
import logging
from typing import Callable, Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch.nn import functional as F

from ..data.class_counts import training_class_counts

__all__ = ["GRWCrossEntropy", "grw_class_weights", "grw_loss_from_config"]

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


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
