# -*- coding: utf-8 -*-
"""
The detections that are evaluated, their candidate ground truth, and lvis-api's greedy
matching.
"""

import itertools
from typing import Optional

import numpy as np
import pycocotools.mask as mask_utils

from .masks import DecodedMasks
from .params import AREA_RANGES, MATCH_THRESHOLDS, MAX_ARRAY_SIZE, outside
from .reading import GroundTruth, Results, isin_sorted, to_rle

MASK_PART = 1 << 13  # detection masks decoded with their runs at a time


class Detections:
    """
    The detections that lvis-api evaluates (kept by the per-category and per-image caps and the
    federated filter, with an area in (0, inf)), as flat arrays of D detections sorted by
    (image, category) pair, then by decreasing score, ties in the order of the results.

    Attributes:
        keys (ndarray[D] int64): the (image, category) pair, image * K + category.
        image, category (ndarray[D] int64): image and category indices.
        score (ndarray[D] float64).
        area (ndarray[D] float64): box area for box results, mask area for mask results.
        not_exhaustive (ndarray[D] bool): the category is in the image's
            not_exhaustive_category_ids (unmatched, the detection is ignored).
        boxes (ndarray[D, 4] float64, XYWH): for bbox (None for segm).
        rles (list of D compressed RLE dicts), masks (DecodedMasks of them, without their
            runs): for segm (None for bbox).
        box_areas (bool): whether areas (and so the area ranges) are the results' box areas
            (lvis-api's rule: its first result has a "bbox"), else their mask areas.
    """

    def __init__(
        self,
        results: Results,
        gt: GroundTruth,
        iou_type: str,
        max_dets: int,
        dets_per_category: Optional[int] = None,
    ):
        """
        Args:
            results: all results, in their order.
            max_dets: the detections kept per image (its top-scored), -1 for all.
            dets_per_category: the detections kept per category over all images (its
                top-scored), before the per-image cap; None for all.
        """
        num_categories = len(gt.category_ids)
        image, category, score = results.image, results.category, results.score
        alive = np.flatnonzero(top_per_group(category, score, dets_per_category))
        kept = np.zeros(results.count, dtype=bool)
        kept[alive[top_per_group(image[alive], score[alive], max_dets)]] = True

        # lvis-api reads boxes (and box areas) if its first kept result has a "bbox", else masks;
        # its first kept result is the first result left by the per-category selection, or the
        # top-scored of that result's image when that image's results were capped (and re-sorted)
        box_results = True
        if len(alive):
            first = int(alive[0])
            same_image = alive[image[alive] == image[first]]
            if 0 <= max_dets < len(same_image):
                first = int(same_image[np.argsort(-score[same_image], kind="stable")[0]])
            box_results = bool(results.has_box[first])
            if not box_results and not results.has_mask[first]:
                raise ValueError(f"detection {first} has neither a 'bbox' nor a 'segmentation'")
        self.box_areas = box_results

        # the federated filter: a category counts in an image if verified present or absent
        keys = image * num_categories + category
        verified = np.union1d(gt.keys, gt.negative_keys)
        selected = np.flatnonzero(kept & isin_sorted(keys, verified))
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
        self.not_exhaustive = isin_sorted(self.keys, gt.not_exhaustive_keys)
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
                :class:`Results`.
            order (ndarray[N] int64): their indices in the results.
            image (ndarray[N] int64): their image indices.
            boxes (ndarray[N, 4] or None): their boxes, for box results (whose mask, without a
                "segmentation", is the box as a polygon, as in lvis-api).
        Returns:
            list: N compressed RLEs (dicts).
            DecodedMasks: their areas and sizes.
        """
        rles, decoded = masks, None
        if boxes is None:  # compressed RLEs, what detectron2 writes and lvis-api reads
            try:
                decoded = DecodedMasks(masks, keep_runs=False)
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
                    rles.append(to_rle(segmentation, gt.heights[image[j]], gt.widths[image[j]]))
                    DecodedMasks(rles[-1:], keep_runs=False)
                except (KeyError, TypeError, ValueError, IndexError, AttributeError):
                    raise ValueError(f"detection {i} has a malformed 'segmentation'") from None
            decoded = DecodedMasks(rles, keep_runs=False)
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


def top_per_group(group: np.ndarray, score: np.ndarray, k: Optional[int]) -> np.ndarray:
    """
    Whether each entry is among the k top-scored of its group (ties: the earlier entry first).

    Args:
        group (ndarray[N] int64, non-negative), score (ndarray[N] float64).
        k: None or a negative number for no limit.
    Returns:
        ndarray[N] bool.
    """
    if k is None or k < 0 or len(group) == 0 or np.bincount(group).max() <= k:
        return np.ones(len(group), dtype=bool)
    by_score = np.argsort(-score, kind="stable")
    by_group = by_score[np.argsort(group[by_score], kind="stable")]
    group_start = np.searchsorted(group[by_group], group[by_group], side="left")
    top = np.zeros(len(group), dtype=bool)
    top[by_group] = np.arange(len(group)) - group_start < k
    return top


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


def candidate_pairs(dt: Detections, gt: GroundTruth, iou_type: str):
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
    lowest = MATCH_THRESHOLDS[0]
    if iou_type == "bbox":  # all pairs, in parts of about MAX_ARRAY_SIZE / 8 pairs
        part_size = MAX_ARRAY_SIZE // 8
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
    gt_masks = DecodedMasks(gt.rles(needed))
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
    for first in range(0, len(dets), MASK_PART):
        part = dets[first : first + MASK_PART]
        begin = np.searchsorted(pair_dt, part[0], side="left")
        end = np.searchsorted(pair_dt, part[-1], side="right")
        masks = DecodedMasks([dt.rles[d] for d in part.tolist()])
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


def match(dt: Detections, gt: GroundTruth, pair_dt, pair_gt, pair_iou):
    """
    lvis-api's greedy matching (``evaluate_img``), for every (image, category) pair, area range
    and IoU threshold at once: in decreasing score order, each detection takes the free ground
    truth of its pair with the highest IoU >= the threshold, preferring ground truth that is not
    ignored in the area range, ties going to the later one in file order.

    Args:
        pair_dt, pair_gt, pair_iou: the candidate pairs of :func:`candidate_pairs`.
    Returns:
        dets (ndarray[M] int64): the detections that have candidate pairs.
        matched (ndarray[A, T, M] bool): whether they are matched.
        matched_ignored (ndarray[A, T, M] bool): whether to ground truth ignored in the area range.
    """
    num_areas, num_thresholds = len(AREA_RANGES), len(MATCH_THRESHOLDS)
    gt_ignored = gt.ignore[None, :] | outside(gt.area)  # [A, G]
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
    thresholds = MATCH_THRESHOLDS[None, :, None]
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
