# -*- coding: utf-8 -*-
"""lvis-api's accumulation (precision and recall) and summary."""

from typing import Dict

import numpy as np

from .matching import Detections
from .params import (
    AREA_RANGES,
    FREQUENCY_GROUPS,
    IOU_THRESHOLDS,
    MATCH_THRESHOLDS,
    MAX_ARRAY_SIZE,
    POOLS,
    RECALL_THRESHOLDS,
    outside,
)
from .reading import GroundTruth


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


def accumulate(dt: Detections, gt: GroundTruth, dets, matched, matched_ignored):
    """
    lvis-api's ``accumulate``: per category, area range and IoU threshold, the detections of all
    images in decreasing score order (ties: by image, then in their pair's order); cumulated true
    and false positives; precision interpolated (the maximum at any higher recall) at the 101
    recall thresholds. Per area range, only for its S categories with ground truth (not ignored
    in the range; lvis-api gives -1 for the others) and over the detections that count at some
    threshold (of those categories; matched, or not ignored when unmatched), laid end to end
    category after category: all of them and as many IoU thresholds as memory allows at once.

    Args:
        dets, matched, matched_ignored: the output of :func:`match`.
    Returns:
        list of A tuples (categories, precision, recall), one per area range:
            categories (ndarray[S] int64): the category indices with ground truth, increasing.
            precision (ndarray[T, R, S] float64): lvis-api's precision array's entries of those
                categories (0 at recalls never reached).
            recall (ndarray[T, S] float64): the recall of all their detections.
    """
    num_categories = len(gt.category_ids)
    num_areas = len(AREA_RANGES)

    # the detections in accumulation order, without those of categories without ground truth
    with_gt = np.bincount(gt.category, minlength=num_categories) > 0
    by_score = np.argsort(-dt.score, kind="stable")
    by_score = by_score[with_gt[dt.category[by_score]]]
    order = by_score[np.argsort(dt.category[by_score], kind="stable")]  # [N]
    category = dt.category[order]
    slot = np.full(len(dt.keys), -1)
    slot[dets] = np.arange(len(dets))
    order_slot = slot[order]  # [N]: the match slot of each, -1 for none

    gt_ignored = gt.ignore[None, :] | outside(gt.area)  # [A, G]
    unmatched_ignored = outside(dt.area[order]) | dt.not_exhaustive[None, order]  # [A, N]
    areas = []
    for a in range(num_areas):
        num_gt = np.bincount(gt.category[~gt_ignored[a]], minlength=num_categories)
        categories = np.flatnonzero(num_gt > 0)  # [S]
        # the detections that count at some threshold: matched, or not ignored when unmatched
        counts = (order_slot >= 0) | ~unmatched_ignored[a]
        counting = np.flatnonzero((num_gt[category] > 0) & counts)  # [N_a]
        seg_start = np.append(np.searchsorted(category[counting], categories), len(counting))
        recall, precision = _laid_out_precision_recall(
            matched[a],
            matched_ignored[a],
            order_slot[counting],
            ~unmatched_ignored[a, counting],
            seg_start,
            num_gt[categories],
        )
        areas.append((categories, precision, recall))
    return areas


def _laid_out_precision_recall(
    matched, matched_ignored, slots, counted_if_unmatched, seg_start, num_gt
):
    """
    Recall and interpolated precision of S segments of detections laid end to end (a category,
    or a pool of categories), each in accumulation order, at every IoU threshold: as many
    thresholds at a time as memory allows.

    Args:
        matched, matched_ignored (ndarray[T, M] bool): :func:`match`'s output, for one area range.
        slots (ndarray[N] int64): each laid-out detection's match slot (-1 for none).
        counted_if_unmatched (ndarray[N] bool): unmatched, it counts as a false positive.
        seg_start (ndarray[S + 1] int64): where each segment starts; then N.
        num_gt (ndarray[S] int64): each segment's ground truth not ignored (> 0).
    Returns:
        recall (ndarray[T, S]), precision (ndarray[T, R, S]).
    """
    num_thresholds, num_segments = len(MATCH_THRESHOLDS), len(num_gt)
    has_slot = np.flatnonzero(slots >= 0)
    kept_slot = slots[has_slot]
    precision = np.zeros((num_thresholds, len(RECALL_THRESHOLDS), num_segments))
    recall = np.zeros((num_thresholds, num_segments))
    at_once = int(np.clip(MAX_ARRAY_SIZE // max(len(slots), 1), 1, num_thresholds))
    for first in range(0, num_thresholds, at_once):
        t = slice(first, first + at_once)
        is_matched = np.zeros((len(range(num_thresholds)[t]), len(slots)), dtype=bool)
        is_matched[:, has_slot] = matched[t][:, kept_slot]
        true_positive = is_matched.copy()
        true_positive[:, has_slot] &= ~matched_ignored[t][:, kept_slot]
        counted = true_positive | (~is_matched & counted_if_unmatched)
        recall[t], precision[t] = _precision_recall(true_positive, counted, seg_start, num_gt)
    return recall, precision


def accumulate_pooled(dt: Detections, gt: GroundTruth, dets, matched, matched_ignored):
    """
    Pooled AP's accumulation (Dave et al. 2021, ``LVISPooledEval``), area range "all": the
    (image, category) pairs of all the categories of a pool (all, r, c, f), matched per category
    as usual, accumulated as if they were one category: their detections in decreasing score
    order, ties by image, then category, then in their pair's order; the pool's ground truth not
    ignored counted together.

    Args:
        dets, matched, matched_ignored: the output of :func:`match`.
    Returns:
        ndarray[T, R, len(POOLS)] float64: the precision array, -1 for a pool without ground
            truth.
    """
    a = list(AREA_RANGES).index("all")
    num_categories = len(gt.category_ids)
    slot = np.full(len(dt.keys), -1)
    slot[dets] = np.arange(len(dets))
    by_score = np.argsort(-dt.score, kind="stable")  # dt is in (image, category) order
    gt_counted = ~(gt.ignore | outside(gt.area)[a])
    counted_if_unmatched = ~(outside(dt.area)[a] | dt.not_exhaustive)
    members = [np.ones(num_categories, dtype=bool)]
    for group in gt.frequency_groups:
        members.append(np.zeros(num_categories, dtype=bool))
        members[-1][group] = True
    num_gt = np.array([np.count_nonzero(m[gt.category] & gt_counted) for m in members])
    valid = np.flatnonzero(num_gt > 0)
    orders = [by_score[members[p][dt.category[by_score]]] for p in valid.tolist()]
    order = np.concatenate(orders) if orders else np.zeros(0, dtype=np.int64)
    seg_start = np.cumsum([0] + [len(o) for o in orders])
    precision = np.full((len(MATCH_THRESHOLDS), len(RECALL_THRESHOLDS), len(POOLS)), -1.0)
    _, precision[:, :, valid] = _laid_out_precision_recall(
        matched[a],
        matched_ignored[a],
        slot[order],
        counted_if_unmatched[order],
        seg_start,
        num_gt[valid],
    )
    return precision


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


def summarize(areas, gt: GroundTruth, max_dets: int) -> Dict[str, float]:
    """
    lvis-api's ``summarize``: means of the valid (> -1) entries of its precision and recall
    arrays, -1 if there is none; those of :func:`accumulate`'s categories, in the same order.
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


def summarize_pooled(precision: np.ndarray) -> Dict[str, float]:
    """Pooled AP per pool from :func:`accumulate_pooled`'s precision: {"AP-pooled-<pool>": AP}."""
    metrics = {}
    for p, pool in enumerate(POOLS):
        values = precision[:, :, p]
        valid = values[values > -1]
        metrics[f"AP-pooled-{pool}"] = float(np.mean(valid)) if valid.size else -1.0
    return metrics


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
