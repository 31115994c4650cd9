"""
Mask evaluation in parts: the fast LVIS evaluation decodes the detections' masks a part of
``lvis_fast.matching.MASK_PART`` detections at a time to compute their IoUs with the ground
truth. With parts of a few detections, the metrics and per-category APs are still lvis-api's.
"""

import pytest
from lvis import LVIS

import lvis_fast.matching
from disalign.evaluation.fast_lvis import evaluate_lvis
from lvis_fast.masks import DecodedMasks

from test_fast_lvis import (
    TOLERANCE,
    assert_same_as_lvis_api,
    lvis_api_category_ap,
    random_case,
    write_json,
)


@pytest.fixture
def decoded_parts(monkeypatch):
    """The number of detection masks of each call computing pair IoUs (one call per part)."""
    calls = []
    pair_iou = DecodedMasks.pair_iou

    def counting(self, other, pair_a, pair_b):
        calls.append(len(self.area))
        return pair_iou(self, other, pair_a, pair_b)

    monkeypatch.setattr(DecodedMasks, "pair_iou", counting)
    return calls


@pytest.mark.parametrize("part", [1, 3])
@pytest.mark.parametrize("seed", [0, 3, 5])
def test_masks_decoded_in_parts_match_lvis_api(seed, part, tmp_path, monkeypatch, decoded_parts):
    gt, _, segm_results, max_dets = random_case(seed)
    monkeypatch.setattr(lvis_fast.matching, "MASK_PART", part)
    assert_same_as_lvis_api(tmp_path, gt, segm_results, "segm", max_dets)
    # the pairs' IoUs were computed in many parts, of at most `part` detections each
    assert len(decoded_parts) > 3 and max(decoded_parts) == part
    gt_path = write_json(tmp_path / "gt.json", gt)
    expected = lvis_api_category_ap(gt_path, segm_results, "segm", max_dets)
    _, actual = evaluate_lvis(LVIS(gt_path), segm_results, "segm", max_dets, per_category=True)
    assert list(actual) == list(expected)
    differing = [c for c in expected if abs(actual[c] - expected[c]) > TOLERANCE]
    assert differing == [], [(c, actual[c], expected[c]) for c in differing]
    assert any(ap > 0 for ap in expected.values())  # some masks are matched
