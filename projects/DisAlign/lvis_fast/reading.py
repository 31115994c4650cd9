# -*- coding: utf-8 -*-
"""The ground truth and the results, read into flat arrays."""

import itertools
import json
import operator
import re
from typing import List, Sequence

import numpy as np
import orjson
import pycocotools.mask as mask_utils

from .params import FREQUENCY_GROUPS


class GroundTruth:
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
                    rles[j] = to_rle(segmentation, height, width)
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


def to_rle(segmentation, height: int, width: int) -> dict:
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


def flat_floats(rows, count: int) -> np.ndarray:
    """
    The numbers of rows (an iterable of sequences) one after the other: ndarray[count] float64
    (np.array of a list of lists is 2x slower); a ValueError if there are not count of them, a
    TypeError or ValueError for a value that is not a number.
    """
    return np.fromiter(itertools.chain.from_iterable(rows), dtype=np.float64, count=count)


def isin_sorted(values: np.ndarray, sorted_unique: np.ndarray) -> np.ndarray:
    """values[i] in sorted_unique, for int64 arrays: ndarray[len(values)] bool."""
    if len(sorted_unique) == 0:
        return np.zeros(len(values), dtype=bool)
    index = np.searchsorted(sorted_unique, values).clip(max=len(sorted_unique) - 1)
    return sorted_unique[index] == values


class Results:
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

    def __init__(self, gt: GroundTruth, iou_type: str, mask_areas: bool):
        self._gt, self._iou_type, self._mask_areas = gt, iou_type, mask_areas
        self._verified = np.union1d(gt.keys, gt.negative_keys)
        self._parts = []
        self.masks = []
        self.count = 0

    def add(self, results: List[dict]):
        """Append a part of the results (a list of result dicts; not modified)."""
        gt, offset, n = self._gt, self.count, len(results)
        try:  # one pass for the three numbers
            numbers = flat_floats(map(_ID_SCORE, results), 3 * n).reshape(n, 3)
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
                boxes = flat_floats(box_lists, 4 * n).reshape(n, 4)
                has_box = np.ones(n, dtype=bool)
            except (KeyError, TypeError, ValueError):
                has_box = np.array(["bbox" in r for r in results], dtype=bool).reshape(n)
                for i in np.flatnonzero(has_box).tolist():
                    try:
                        boxes[i] = np.array(results[i]["bbox"], dtype=np.float64).reshape(4)
                    except (TypeError, ValueError):
                        boxes[i] = np.nan
        needed = isin_sorted(image * len(gt.category_ids) + category, self._verified) & has_mask
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


def read_results(results, gt: GroundTruth, iou_type: str, mask_areas: bool) -> Results:
    """The results (a list of dicts, or a JSON file of one) as :class:`Results`."""
    columns = Results(gt, iou_type, mask_areas)
    if isinstance(results, str):
        try:
            for part in _result_chunks(results):
                columns.add(part)
            return columns.finish()
        except (json.JSONDecodeError, _NotAResultsList):
            # not the layout json.dump writes, or NaN / Infinity: the whole file at once, as
            # Python's json reads it
            columns = Results(gt, iou_type, mask_areas)
            results = load_json(results)
    if not isinstance(results, list):
        raise ValueError(f"results must be a list of dicts, not a {type(results).__name__}")
    for start in range(0, len(results), _LIST_CHUNK):
        columns.add(results[start : start + _LIST_CHUNK])
    return columns.finish()


def load_json(path: str):
    with open(path, "r") as f:
        return json.load(f)
