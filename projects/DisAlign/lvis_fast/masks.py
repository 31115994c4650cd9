# -*- coding: utf-8 -*-
"""Compressed RLE masks: areas and pair IoUs, from the compiled ``_rle`` kernel."""

import operator
from typing import Sequence

import numpy as np

from . import _rle
from .reading import flat_floats

_COUNTS, _SIZE = operator.itemgetter("counts"), operator.itemgetter("size")


class DecodedMasks:
    """
    Compressed RLE masks decoded by the compiled ``_rle`` module, in one call for all of them
    (pycocotools decodes the strings again for each of its calls: areas, then IoUs): their areas,
    and their runs for :meth:`pair_iou`.

    Attributes:
        area (ndarray[N] float64): the mask areas (pycocotools' ``area``).
        size (ndarray[N, 2] int64): their "size" (height, width).
        info (ndarray[N, 6] int64): per mask, for ``_rle.pair_iou``: area, first and last
            foreground pixel, where its runs start and end in runs, the pixels its runs cover.
        runs (ndarray uint32): the run lengths, one mask after the other (none without
            keep_runs).
    """

    def __init__(self, rles: Sequence[dict], keep_runs: bool = True):
        """
        Args:
            rles: N compressed RLE dicts ({"size": [h, w], "counts": str or bytes}).
            keep_runs: keep the runs (else only the areas are wanted).
        Raises:
            KeyError, TypeError, ValueError: for a mask that is not a compressed RLE.
        """
        n = len(rles)
        sizes = list(map(_SIZE, rles))
        if set(map(len, sizes)) - {2}:
            raise ValueError("a mask's size is not [height, width]")
        self.size = flat_floats(sizes, 2 * n).astype(np.int64).reshape(n, 2)
        self.info = np.empty((n, 6), dtype=np.int64)
        runs = _rle.decode(list(map(_COUNTS, rles)), self.info, keep_runs)
        self.runs = np.frombuffer(runs, dtype=np.uint32)
        self.area = self.info[:, 0].astype(np.float64)

    def malformed(self) -> np.ndarray:
        """The masks whose runs do not cover height x width pixels: ndarray[M] int64 rows."""
        return np.flatnonzero(self.info[:, 5] != self.size[:, 0] * self.size[:, 1])

    def take(self, rows: np.ndarray) -> "DecodedMasks":
        """The masks of rows (an index or bool array); their runs are shared."""
        picked = object.__new__(DecodedMasks)
        picked.size, picked.info, picked.area = self.size[rows], self.info[rows], self.area[rows]
        picked.runs = self.runs
        return picked

    def pair_iou(self, other: "DecodedMasks", pair_a: np.ndarray, pair_b: np.ndarray):
        """
        The IoU of masks self[pair_a[p]] and other[pair_b[p]] (all pairs of the same size, the
        intersecting ones' runs kept), as pycocotools' ``iou`` gives it: ndarray[P] float64.
        """
        iou = np.empty(len(pair_a))
        _rle.pair_iou(self.runs, self.info, other.runs, other.info, pair_a, pair_b, iou)
        return iou
