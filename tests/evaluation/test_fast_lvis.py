"""
disalign.evaluation.fast_lvis against lvis-api itself (LVISResults + LVISEval): random LVIS-like
cases and hand-made ones, every metric equal within 1e-6; its command line and its errors; the
detectron2 evaluator built on it against detectron2's own LVISEvaluator.
"""

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import LVISEvaluator
from detectron2.structures import Boxes, Instances
from lvis import LVIS, LVISEval, LVISResults

import disalign
import lvis_fast.accumulation
import lvis_fast.matching
import lvis_fast.reading
from disalign.evaluation import LongTailLVISEvaluator, build_evaluator
from disalign.evaluation.fast_lvis import evaluate_lvis, lvis_metric_names, main
from lvis_fast import _rle
from lvis_fast.masks import DecodedMasks

TOLERANCE = 1e-6
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def lvis_api_metrics(gt_path, results, iou_type, max_dets=300):
    """lvis-api's metrics: LVISResults (with its max_dets cap), LVISEval.run()."""
    lvis_gt = LVIS(gt_path)
    lvis_results = LVISResults(lvis_gt, copy.deepcopy(results), max_dets=max_dets)
    lvis_eval = LVISEval(lvis_gt, lvis_results, iou_type)
    lvis_eval.params.max_dets = max_dets  # only names the AR metrics
    lvis_eval.run()
    return {name: float(value) for name, value in lvis_eval.get_results().items()}


def write_json(path, content):
    path.write_text(json.dumps(content))
    return str(path)


def assert_same_as_lvis_api(tmp_path, gt, results, iou_type, max_dets=300):
    gt_path = write_json(tmp_path / "gt.json", gt)
    expected = lvis_api_metrics(gt_path, results, iou_type, max_dets)
    untouched = copy.deepcopy(results)
    actual = evaluate_lvis(LVIS(gt_path), results, iou_type, max_dets=max_dets)
    assert results == untouched
    assert list(actual) == list(expected) == lvis_metric_names(max_dets)
    for name in expected:
        assert abs(actual[name] - expected[name]) <= TOLERANCE, (name, actual, expected)
    return actual


# ---------------------------------------------------------------------------------------------
# random cases


def _star_polygon(rng, box):
    """A polygon (flat x, y list) inside box (XYWH)."""
    x, y, w, h = box
    n = int(rng.integers(3, 9))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(0.5, 1.0, n)
    xs = x + w / 2 * (1 + radii * np.cos(angles))
    ys = y + h / 2 * (1 + radii * np.sin(angles))
    return np.round(np.stack([xs, ys], axis=1).reshape(-1), 1).tolist()


def _random_box(rng, width, height, integer):
    side = rng.choice([rng.uniform(2, 30), rng.uniform(33, 95), rng.uniform(97, 190)])
    w = min(side * np.exp(rng.uniform(-0.4, 0.4)), width - 1)
    h = min(side * side / max(w, 1), height - 1)
    box = [rng.uniform(0, width - w), rng.uniform(0, height - h), w, h]
    return [float(round(v)) if integer else float(v) for v in box]


def _jitter(rng, box, width, height):
    x, y, w, h = box
    scale = rng.choice([0.0, 0.05, 0.2, 0.5])
    x1, y1 = x + rng.normal(0, scale * w + 1e-9), y + rng.normal(0, scale * h + 1e-9)
    x2, y2 = x + w + rng.normal(0, scale * w + 1e-9), y + h + rng.normal(0, scale * h + 1e-9)
    x1, y1 = float(np.clip(x1, 0, width - 2)), float(np.clip(y1, 0, height - 2))
    return [x1, y1, float(np.clip(x2, x1 + 1, width)) - x1, float(np.clip(y2, y1 + 1, height)) - y1]


def random_case(seed):
    """
    An LVIS-like ground truth (5-30 images, 3-20 categories, polygons) and detections on it.

    Returns:
        gt (dict), bbox_results (list[dict]), segm_results (list[dict]), max_dets (int).
    """
    rng = np.random.default_rng(seed)
    num_images, num_categories = int(rng.integers(5, 31)), int(rng.integers(3, 21))
    frequency = rng.choice(["r", "c", "f"], num_categories)
    if rng.random() < 0.3:  # a frequency group without categories
        frequency[frequency == rng.choice(["r", "c", "f"])] = rng.choice(["r", "c", "f"])
    category_ids = np.sort(rng.choice(np.arange(1, 5 * num_categories), num_categories, False))
    categories = [
        {"id": int(c), "name": f"c{c}", "frequency": str(f)}
        for c, f in zip(category_ids, frequency)
    ]
    images, annotations, bbox_results, segm_results = [], [], [], []
    for i in range(num_images):
        image_id = int(10 * i + rng.integers(1, 10))
        width, height = (int(v) for v in rng.integers(40, 200, 2))
        integer = rng.random() < 0.5  # integer boxes: IoUs exactly at the thresholds occur
        present = rng.choice(category_ids, int(rng.integers(0, 4)))
        objects = []
        for category_id in rng.choice(present, int(rng.integers(0, 7))) if len(present) else []:
            box = _random_box(rng, width, height, integer)
            polygon = _star_polygon(rng, box) if rng.random() < 0.7 else None
            if polygon is None:  # a rectangle
                x, y, w, h = box
                polygon = [x, y, x + w, y, x + w, y + h, x, y + h]
            area = float(mask_utils.area(mask_utils.frPyObjects([polygon], height, width))[0])
            annotation = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": int(category_id),
                "bbox": box,
                "area": area if rng.random() > 0.03 else 0.0,  # area 0: not evaluated
                "segmentation": [polygon],
            }
            if rng.random() < 0.05:
                annotation["ignore"] = 1
            annotations.append(annotation)
            objects.append((int(category_id), box, polygon))
        present = sorted({c for c, _, _ in objects})
        absent = [int(c) for c in category_ids if c not in present]
        negative = rng.choice(absent, min(len(absent), int(rng.integers(0, 4))), False)
        not_exhaustive = [c for c in present if rng.random() < 0.3]
        if absent and rng.random() < 0.2:  # listed, though without ground truth in the image
            not_exhaustive.append(int(rng.choice(absent)))
        images.append(
            {
                "id": image_id,
                "width": width,
                "height": height,
                "neg_category_ids": sorted(int(c) for c in negative),
                "not_exhaustive_category_ids": sorted(not_exhaustive),
            }
        )
        for _ in range(int(rng.integers(0, 25))):
            if objects and rng.random() < 0.6:  # near an object: its polygon, moved with the box
                category_id, box, polygon = objects[int(rng.integers(len(objects)))]
                x, y, w, h = box
                box = _jitter(rng, box, width, height)
                xs = box[0] + (np.array(polygon[0::2]) - x) * box[2] / max(w, 1e-6)
                ys = box[1] + (np.array(polygon[1::2]) - y) * box[3] / max(h, 1e-6)
                polygon = np.stack([xs, ys], axis=1).reshape(-1).tolist()
                if rng.random() < 0.2:
                    category_id = int(rng.choice(category_ids))
            else:
                category_id = int(rng.choice(category_ids))
                box = _random_box(rng, width, height, integer)
                polygon = _star_polygon(rng, box)
            if rng.random() < 0.02:
                box[2] = 0.0  # an empty box: area 0, not evaluated
                polygon = [box[0], box[1], box[0] + 1, box[1], box[0] + 1, box[1] + 1]
            score = float(rng.random())
            if rng.random() < 0.3:
                score = round(score, 1)  # ties
            rle = mask_utils.frPyObjects([polygon], height, width)[0]
            rle["counts"] = rle["counts"].decode("utf-8")
            detection = {"image_id": image_id, "category_id": category_id, "score": score}
            bbox_results.append(dict(detection, bbox=box))
            segm_results.append(dict(detection, segmentation=rle))
    if not bbox_results:  # lvis-api fails without results
        detection = {"image_id": images[0]["id"], "category_id": int(category_ids[0]), "score": 1}
        bbox_results.append(dict(detection, bbox=[0.0, 0.0, 10.0, 10.0]))
        rle = mask_utils.frPyObjects([[0, 0, 10, 0, 10, 10, 0, 10]], 40, 40)[0]
        segm_results.append(dict(detection, segmentation=rle))
    if rng.random() < 0.3:  # mask results with boxes: lvis-api takes the box areas then
        segm_results = [dict(s, bbox=b["bbox"]) for s, b in zip(segm_results, bbox_results)]
    gt = {"images": images, "annotations": annotations, "categories": categories}
    return gt, bbox_results, segm_results, int(rng.choice([300, 300, 10, 3]))


@pytest.mark.parametrize("seed", range(32))
def test_random_cases_match_lvis_api(seed, tmp_path):
    gt, bbox_results, segm_results, max_dets = random_case(seed)
    assert_same_as_lvis_api(tmp_path, gt, bbox_results, "bbox", max_dets)
    assert_same_as_lvis_api(tmp_path, gt, segm_results, "segm", max_dets)


def lvis_api_category_ap(gt_path, results, iou_type, max_dets=300):
    """lvis-api's precision array, averaged per category (area "all"); -1 without ground truth."""
    lvis_gt = LVIS(gt_path)
    lvis_eval = LVISEval(
        lvis_gt, LVISResults(lvis_gt, copy.deepcopy(results), max_dets=max_dets), iou_type
    )
    lvis_eval.run()
    precision = lvis_eval.eval["precision"]  # [T, R, K, A]
    ap = {}
    for k, category_id in enumerate(lvis_eval.params.cat_ids):
        values = precision[:, :, k, 0]
        values = values[values > -1]
        ap[category_id] = float(np.mean(values)) if values.size else -1.0
    return ap


@pytest.mark.parametrize("seed", range(0, 32, 3))
def test_per_category_ap_matches_lvis_api_precision(seed, tmp_path):
    gt, bbox_results, segm_results, max_dets = random_case(seed)
    gt_path = write_json(tmp_path / "gt.json", gt)
    for iou_type, results in (("bbox", bbox_results), ("segm", segm_results)):
        expected = lvis_api_category_ap(gt_path, results, iou_type, max_dets)
        metrics, actual = evaluate_lvis(gt_path, results, iou_type, max_dets, per_category=True)
        assert metrics == evaluate_lvis(gt_path, results, iou_type, max_dets)
        assert list(actual) == sorted(c["id"] for c in gt["categories"]) == list(expected)
        for category_id, value in expected.items():
            assert abs(actual[category_id] - value) <= TOLERANCE, (iou_type, category_id)
        assert -1 in actual.values() or all(
            any(a["category_id"] == c for a in gt["annotations"]) for c in actual
        )


@pytest.mark.parametrize("seed", [2, 5, 11])
@pytest.mark.parametrize("layout", ["dumps", "indented", "compact"])
def test_results_files_read_in_parts_match_lvis_api(seed, layout, tmp_path, monkeypatch):
    """A results file is read a few hundred characters at a time here (cuts between objects)."""
    monkeypatch.setattr(lvis_fast.reading, "_CHUNK_BYTES", 300)
    gt, bbox_results, segm_results, max_dets = random_case(seed)
    gt_path = write_json(tmp_path / "gt.json", gt)
    options = {"dumps": {}, "indented": {"indent": 2}, "compact": {"separators": (",", ":")}}
    for iou_type, results in (("bbox", bbox_results), ("segm", segm_results)):
        path = tmp_path / f"{iou_type}.json"
        path.write_text(json.dumps(results, **options[layout]))
        expected = lvis_api_metrics(gt_path, results, iou_type, max_dets)
        actual = evaluate_lvis(gt_path, str(path), iou_type, max_dets)
        assert actual == evaluate_lvis(gt_path, results, iou_type, max_dets)
        for name in expected:
            assert abs(actual[name] - expected[name]) <= TOLERANCE, (name, iou_type)


def test_results_files_of_other_layouts_are_read_whole(tmp_path, monkeypatch):
    """A string holding the object separator, an empty list; not a list: a one-line error."""
    monkeypatch.setattr(lvis_fast.reading, "_CHUNK_BYTES", 50)
    gt, bbox_results, _ = federated_case()
    gt_path = write_json(tmp_path / "gt.json", gt)
    tricky = [dict(r, note="}, {" * 20) for r in bbox_results]
    path = write_json(tmp_path / "tricky.json", tricky)
    assert evaluate_lvis(gt_path, path, "bbox") == evaluate_lvis(gt_path, bbox_results, "bbox")
    empty = evaluate_lvis(gt_path, write_json(tmp_path / "empty.json", []), "bbox")
    assert empty == evaluate_lvis(gt_path, [], "bbox")
    with pytest.raises(ValueError, match="^results must be a list of dicts, not a dict$"):
        evaluate_lvis(gt_path, write_json(tmp_path / "dict.json", {"a": 1}), "bbox")
    (tmp_path / "broken.json").write_text(json.dumps(bbox_results)[:-30])
    with pytest.raises(ValueError):  # json's own error (a ValueError)
        evaluate_lvis(gt_path, str(tmp_path / "broken.json"), "bbox")


# ---------------------------------------------------------------------------------------------
# hand-made cases

CATEGORIES = [  # no "r" category: APr is -1; category 4 has no ground truth anywhere
    {"id": 1, "name": "one", "frequency": "f"},
    {"id": 2, "name": "two", "frequency": "c"},
    {"id": 3, "name": "three", "frequency": "c"},
    {"id": 4, "name": "four", "frequency": "f"},
]


def _gt_object(ann_id, image_id, category_id, box, **extra):
    x, y, w, h = box
    polygon = [x, y, x + w, y, x + w, y + h, x, y + h]
    return dict(
        id=ann_id,
        image_id=image_id,
        category_id=category_id,
        bbox=box,
        area=float(w * h),
        segmentation=[polygon],
        **extra,
    )


def _image(image_id, neg=(), not_exhaustive=(), size=200):
    return {
        "id": image_id,
        "width": size,
        "height": size,
        "neg_category_ids": list(neg),
        "not_exhaustive_category_ids": list(not_exhaustive),
    }


def _detections(image_id, rows, size=200):
    """rows: (category_id, XYWH box, score) -> bbox results and segm results (box masks)."""
    bbox_results, segm_results = [], []
    for category_id, (x, y, w, h), score in rows:
        detection = {"image_id": image_id, "category_id": category_id, "score": score}
        bbox_results.append(dict(detection, bbox=[x, y, w, h]))
        rle = mask_utils.frPyObjects([[x, y, x + w, y, x + w, y + h, x, y + h]], size, size)[0]
        segm_results.append(dict(detection, segmentation=dict(rle, counts=rle["counts"].decode())))
    return bbox_results, segm_results


def _results(rows):
    """bbox and segm results of {image id: [(category, box, score), ...]}."""
    bbox_results, segm_results = [], []
    for image_id, image_rows in rows.items():
        b, s = _detections(image_id, image_rows)
        bbox_results += b
        segm_results += s
    return bbox_results, segm_results


def federated_case():
    """
    Image 1: objects of categories 1 (small, medium, large) and 2; category 3 negative, 4 negative.
    Image 2: category 2 present but not exhaustively annotated, category 3 present, an ignored
    object; category 1 absent and unverified. Image 3: only negatives (1, 2).
    """
    images = [_image(1, neg=[3, 4]), _image(2, not_exhaustive=[2]), _image(3, neg=[1, 2])]
    annotations = [
        _gt_object(1, 1, 1, [10, 10, 20, 20]),  # small
        _gt_object(2, 1, 1, [40, 40, 50, 50]),  # medium
        _gt_object(3, 1, 1, [0, 100, 110, 99]),  # large
        _gt_object(4, 1, 2, [150, 10, 30, 30]),
        _gt_object(5, 2, 2, [10, 10, 40, 40]),
        _gt_object(6, 2, 3, [0, 0, 20, 20]),
        _gt_object(7, 2, 3, [100, 100, 60, 60], ignore=1),
    ]
    rows = {
        1: [
            (1, [10, 10, 20, 20], 0.9),  # exact
            (1, [40, 40, 50, 25], 0.8),  # IoU exactly 0.5 with the medium object
            (1, [0, 100, 110, 74.25], 0.8),  # IoU exactly 0.75 with the large one (same score)
            (1, [10, 10, 20, 20], 0.7),  # duplicate: a false positive
            (2, [150, 10, 30, 30], 0.6),
            (3, [60, 60, 20, 20], 0.95),  # negative category: a false positive
            (4, [60, 60, 20, 20], 0.5),  # category without ground truth: not counted
        ],
        2: [
            (2, [10, 10, 40, 40], 0.5),  # matched in a not-exhaustive category: counts
            (2, [100, 0, 40, 40], 0.99),  # unmatched there: ignored
            (1, [0, 0, 50, 50], 0.99),  # category neither present nor negative: ignored
            (3, [0, 0, 20, 20], 0.3),
            (3, [100, 100, 60, 60], 0.8),  # on an ignored object: ignored
            (3, [100, 100, 30, 30], 0.4),  # a false positive
        ],
        3: [(1, [5, 5, 50, 50], 0.85), (2, [5, 5, 50, 50], 0.1)],
    }
    bbox_results, segm_results = _results(rows)
    gt = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    return gt, bbox_results, segm_results


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_federated_rules_match_lvis_api(iou_type, tmp_path):
    gt, bbox_results, segm_results = federated_case()
    results = bbox_results if iou_type == "bbox" else segm_results
    metrics = assert_same_as_lvis_api(tmp_path, gt, results, iou_type)
    assert metrics["APr"] == -1  # no rare category
    for name in ("APs", "APm", "APl"):
        assert metrics[name] > 0


def test_ties_and_the_detection_cap_match_lvis_api(tmp_path):
    """Equal scores across and within images, at the cut of the cap; 310 detections an image."""
    images = [_image(1, neg=[2]), _image(2, neg=[2]), _image(3)]
    annotations = [
        _gt_object(1, 1, 1, [10, 10, 20, 20]),
        _gt_object(2, 2, 1, [10, 10, 20, 20]),
        _gt_object(3, 2, 1, [50, 50, 20, 20]),
        _gt_object(4, 3, 3, [10, 10, 20, 20]),
    ]
    rows = {
        1: [(2, [0, 0, 5, 5], 0.5), (1, [10, 10, 20, 20], 0.5), (1, [11, 10, 20, 20], 0.5)],
        2: [(1, [50, 50, 20, 20], 0.5), (2, [0, 0, 5, 5], 0.5), (1, [10, 10, 20, 21], 0.5)],
        3: [(3, [10, 10, 20, 20], 0.2)]
        + [(3, [float(k % 150), 30.0, 20.0, 20.0], 0.4) for k in range(150)]
        + [(1, [0.0, float(k % 150), 20.0, 20.0], 0.3) for k in range(160)],
    }
    bbox_results, segm_results = _results(rows)
    gt = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    for max_dets in (300, 2, 1):
        assert_same_as_lvis_api(tmp_path, gt, bbox_results, "bbox", max_dets)
        assert_same_as_lvis_api(tmp_path, gt, segm_results, "segm", max_dets)


@pytest.mark.parametrize("capped", [False, True])
def test_area_source_follows_the_first_kept_result(capped, tmp_path):
    """
    lvis-api takes box areas if its first kept result has a "bbox", else mask areas. Its first
    kept result is the first result, unless that image's results were capped: then it is the
    image's top-scored one. A small-mask, medium-box false positive before the true positive of a
    small object halves its small-object AP, unless box areas count (it is then ignored there).
    """
    images = [_image(1, neg=[2])]
    annotations = [_gt_object(1, 1, 1, [0, 0, 20, 20])]
    (exact,), (exact_mask,) = _detections(1, [(1, [0, 0, 20, 20], 0.9)])
    (_,), (small_mask,) = _detections(1, [(1, [100, 100, 20, 20], 0.95)])
    results = [
        dict(small_mask, category_id=2, score=0.1),  # mask only; dropped by a cap of 2
        dict(small_mask, bbox=[100, 100, 50, 50]),
        dict(exact_mask, bbox=exact["bbox"]),
    ]
    gt = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    metrics = assert_same_as_lvis_api(tmp_path, gt, results, "segm", max_dets=2 if capped else 3)
    assert metrics["APs"] == pytest.approx(1.0 if capped else 0.5)


def area_bounds_case():
    """
    Ground truth and detections whose areas lie exactly on the area ranges' bounds, which are
    included: 32**2 (small and medium), 96**2 (medium and large), 1e5**2 (all and large); and 0
    (never evaluated, as lvis-api leaves out areas outside (0, inf)). Each bound changes a metric
    if it were excluded: an object on it would be ignored there, and a detection on it unmatched
    would no longer be a false positive.
    Returns: gt (dict), bbox_results, segm_results (box masks, with their box: box areas).
    """
    images = [_image(1, neg=[3]), _image(2, neg=[2])]
    huge = 1e5  # a 1e5 x 1e5 object: area 1e10, the upper bound (its mask is the whole image)
    annotations = [
        _gt_object(1, 1, 1, [10, 10, 32, 32]),  # area 32**2
        _gt_object(2, 1, 1, [50, 50, 96, 96]),  # area 96**2
        _gt_object(3, 1, 2, [0, 0, huge, huge]),  # area 1e10
        _gt_object(4, 2, 1, [20, 20, 32, 32]),  # area 32**2, missed
        _gt_object(5, 2, 1, [0, 0, 0, 40]),  # area 0: not evaluated
    ]
    rows = {
        1: [
            (1, [10, 10, 32, 32], 0.9),
            (1, [100, 0, 32, 32], 0.95),  # area 32**2, unmatched: small and medium FP
            (1, [50, 50, 96, 96], 0.7),
            (1, [0, 100, 96, 96], 0.8),  # area 96**2, unmatched: medium and large FP
            (2, [0, 0, huge, huge], 0.6),
            (3, [0, 0, huge, huge], 0.65),  # area 1e10 on a negative category: FP in all, large
        ],
        2: [(1, [100, 100, 32, 32], 0.85), (1, [0, 0, 0, 40], 0.99)],  # FP; area 0: left out
    }
    bbox_results, segm_results = _results(rows)
    segm_results = [dict(s, bbox=b["bbox"]) for s, b in zip(segm_results, bbox_results)]
    gt = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    return gt, bbox_results, segm_results


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_areas_on_the_range_bounds_match_lvis_api(iou_type, tmp_path):
    gt, bbox_results, segm_results = area_bounds_case()
    areas = sorted({r["bbox"][2] * r["bbox"][3] for r in bbox_results})
    assert areas == [0.0, 32.0**2, 96.0**2, 1e10]
    results = bbox_results if iou_type == "bbox" else segm_results
    metrics = assert_same_as_lvis_api(tmp_path, gt, results, iou_type)
    # by hand (category 1, small: objects 1 and 4 (32**2), the FP of 0.95 first, then the match
    # of 0.9 and the FP of 0.85: precision 1/2 up to recall 1/2, 0 beyond)
    assert metrics["APs"] == pytest.approx(0.5 * 51 / 101)
    # large: category 1 (object 2, preceded by the 96**2 FP: 1/2), category 2 (the 1e10 object,
    # found first: 1); category 3 has no ground truth
    assert metrics["APl"] == pytest.approx((0.5 + 1.0) / 2)


def test_evaluation_in_parts_gives_the_same_numbers(monkeypatch):
    """Large evaluations compute box IoUs in parts and accumulate a few thresholds at a time."""
    gt, bbox_results, _, max_dets = random_case(7)
    whole = evaluate_lvis(gt, bbox_results, "bbox", max_dets)
    # 5 pairs at a time, 1 threshold at a time
    monkeypatch.setattr(lvis_fast.matching, "MAX_ARRAY_SIZE", 40)
    monkeypatch.setattr(lvis_fast.accumulation, "MAX_ARRAY_SIZE", 40)
    assert evaluate_lvis(gt, bbox_results, "bbox", max_dets) == whole


def test_empty_results_give_zero_ap(tmp_path):
    gt, _, _ = federated_case()
    metrics = evaluate_lvis(gt, [], "bbox")
    assert metrics["AP"] == 0 and metrics["AR@300"] == 0 and metrics["APr"] == -1


# ---------------------------------------------------------------------------------------------
# the compiled RLE kernel (_rle) against pycocotools


def _random_masks(rng, count, height, width):
    """count binary masks [height, width, count] (Fortran order, as pycocotools encodes them):
    empty, full, one pixel, stripes from a column on, boxes with noise."""
    masks = np.zeros((height, width, count), dtype=np.uint8, order="F")
    for k in range(count):
        kind = k % 6
        if kind == 1:
            masks[..., k] = 1
        elif kind == 2:
            masks[rng.integers(height), rng.integers(width), k] = 1
        elif kind == 3:
            masks[:, rng.integers(width) :, k] = rng.random((height, 1)) < 0.5
        elif kind > 3:
            y, x = rng.integers(height), rng.integers(width)
            masks[y : y + rng.integers(1, height + 1), x : x + rng.integers(1, width + 1), k] = 1
            masks[..., k] ^= rng.random((height, width)) < 0.05
    return masks


def _runs_of(mask):
    """A mask's column-major run lengths, background first, counted here with numpy."""
    flat = mask.flatten(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    return np.concatenate([[0], np.diff(bounds)]) if flat[0] else np.diff(bounds)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rle_kernel_decodes_areas_and_runs(seed):
    rng = np.random.default_rng(seed)
    height, width = (int(v) for v in rng.integers(1, 90, size=2))
    masks = _random_masks(rng, 30, height, width)
    rles = mask_utils.encode(masks)  # bytes counts; detectron2's results hold strings
    for given in (rles, [dict(rle, counts=rle["counts"].decode()) for rle in rles]):
        decoded = DecodedMasks(given)
        assert decoded.area.tolist() == mask_utils.area(rles).astype(float).tolist()
        assert decoded.size.tolist() == [[height, width]] * len(rles)
        for k in range(len(rles)):
            start, end, pixels = decoded.info[k, 3:]
            assert decoded.runs[start:end].tolist() == _runs_of(masks[..., k]).tolist()
            assert pixels == height * width
            pixels = np.flatnonzero(masks[..., k].flatten(order="F"))
            first_last = [pixels[0], pixels[-1]] if len(pixels) else [-1, -2]
            assert decoded.info[k, 1:3].tolist() == first_last
    areas_only = DecodedMasks(rles, keep_runs=False)
    assert len(areas_only.runs) == 0 and areas_only.area.tolist() == decoded.area.tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rle_kernel_pair_ious_are_pycocotools_ious_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    height, width = (int(v) for v in rng.integers(1, 60, size=2))
    a = mask_utils.encode(_random_masks(rng, 18, height, width))
    b = mask_utils.encode(_random_masks(rng, 12, height, width)) + a[4:6]  # and equal masks
    expected = mask_utils.iou(a, b, [0] * len(b))  # [len(a), len(b)]
    pair_a, pair_b = (v.ravel() for v in np.meshgrid(range(len(a)), range(len(b))))
    decoded_a, decoded_b = DecodedMasks(a), DecodedMasks(b)
    iou = decoded_a.pair_iou(decoded_b, pair_a, pair_b)
    assert iou.tolist() == expected[pair_a, pair_b].tolist()
    assert 0 < (iou == 0).sum() < len(iou) and (iou == 1).sum() >= 2
    touching = np.zeros((3, 3, 2), dtype=np.uint8, order="F")  # one pixel in common
    touching[..., 0].T.flat[:5], touching[..., 1].T.flat[4:] = 1, 1
    decoded = DecodedMasks(mask_utils.encode(touching))
    assert decoded.pair_iou(decoded, np.array([0, 1]), np.array([1, 0])).tolist() == [1 / 9] * 2
    picked = decoded_a.take(np.array([5, 4, 17]))  # rows picked, their runs shared
    iou = picked.pair_iou(decoded_b, np.array([0, 1, 2, 2]), np.array([13, 12, 0, 3]))
    assert iou.tolist() == expected[[5, 4, 17, 17], [13, 12, 0, 3]].tolist()


def test_rle_kernel_areas_of_any_string_are_pycocotools_areas():
    """Strings of every digit value (runs of 1 to 6 digits, negative differences, run lengths
    that wrap around 2**32): the same areas as pycocotools'."""
    rng = np.random.default_rng(0)
    rles = []
    for _ in range(300):
        text = ""
        for _ in range(rng.integers(0, 30)):
            digits = rng.integers(1, 7)  # the last one without the "more" bit (0x20)
            text += "".join(chr(48 + 32 + rng.integers(32)) for _ in range(digits - 1))
            text += chr(48 + rng.integers(32))
        rles.append({"size": [7, 9], "counts": text})
    decoded = DecodedMasks(rles)
    assert decoded.area.tolist() == mask_utils.area(rles).astype(float).tolist()
    assert decoded.area.max() > 2**31  # the wrap-around was exercised


def test_rle_kernel_rejects_what_it_cannot_read():
    full = {"size": [2, 2], "counts": "04"}  # runs 0, 4
    with pytest.raises(TypeError, match=r"^counts\[1\] is a list, not a string or bytes$"):
        DecodedMasks([full, {"size": [2, 2], "counts": [0, 4]}])
    with pytest.raises(ValueError, match=r"^a mask's size is not \[height, width\]$"):
        DecodedMasks([full, {"size": [2], "counts": "04"}])
    with pytest.raises(ValueError, match="^info holds 96 bytes, not 48$"):
        _rle.decode(["04"], np.empty((2, 6), dtype=np.int64), True)
    masks, areas_only = DecodedMasks([full]), DecodedMasks([full], False)
    assert masks.pair_iou(masks, np.array([0]), np.array([0])).tolist() == [1.0]
    with pytest.raises(IndexError, match=r"^pair 1: mask \(0, 1\) out of range$"):
        masks.pair_iou(masks, np.array([0, 0]), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"^pair 0: masks \(0, 0\) without their runs$"):
        masks.pair_iou(areas_only, np.array([0]), np.array([0]))
    # runs that cover 2 of the 4 pixels: the walk ends with the shorter mask
    short = DecodedMasks([{"size": [2, 2], "counts": "02"}])
    assert short.malformed().tolist() == [0] and masks.malformed().tolist() == []
    assert masks.pair_iou(short, np.array([0]), np.array([0])).tolist() == [1.0]


def test_mask_results_whose_runs_do_not_cover_their_size_are_an_error():
    gt, _, segm_results = federated_case()
    short = mask_utils.encode(np.zeros((39999, 1, 1), dtype=np.uint8, order="F"))[0]["counts"]
    segm_results[2]["segmentation"]["counts"] = short.decode()  # one background run, a pixel short
    with pytest.raises(ValueError) as error:
        evaluate_lvis(gt, segm_results, "segm")
    message = "detection 2 has a malformed 'segmentation': its runs cover 39999 pixels, not "
    assert str(error.value) == message + "200 x 200"


def test_masks_of_another_size_than_their_image_never_match_as_in_lvis_api(tmp_path):
    """pycocotools gives an IoU of -1 to masks of different sizes."""
    gt, bbox_results, segm_results = federated_case()
    for box, result in zip(bbox_results[:3], segm_results[:3]):  # true positives, on a taller image
        x, y, w, h = box["bbox"]
        rle = mask_utils.frPyObjects([[x, y, x + w, y, x + w, y + h, x, y + h]], 201, 200)[0]
        result["segmentation"] = dict(rle, counts=rle["counts"].decode())
    metrics = assert_same_as_lvis_api(tmp_path, gt, segm_results, "segm")
    assert metrics["AP"] < evaluate_lvis(gt, federated_case()[2], "segm")["AP"]


# ---------------------------------------------------------------------------------------------
# errors and the command line


@pytest.mark.parametrize(
    "change, message",
    [
        ({"category_id": 999}, "detection 1 has category_id 999, which is not one of the ground"),
        ({"image_id": 77}, "detection 1 has image_id 77, which is not one of the ground"),
        ({"score": float("nan")}, "detection 1 has score nan, not a finite number"),
        ({"score": float("inf")}, "detection 1 has score inf, not a finite number"),
    ],
)
def test_bad_results_raise_one_line_errors(change, message):
    gt, bbox_results, _ = federated_case()
    bbox_results[1].update(change)
    with pytest.raises(ValueError) as error:
        evaluate_lvis(gt, bbox_results, "bbox")
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_command_line_prints_the_metrics_and_reports_errors(tmp_path, capsys):
    gt, bbox_results, segm_results = federated_case()
    gt_path = write_json(tmp_path / "gt.json", gt)
    dt_path = write_json(tmp_path / "results.json", segm_results)
    command = [sys.executable, "-W", "ignore::FutureWarning", "-m", "disalign.evaluation.fast_lvis"]
    command += ["--gt", gt_path, "--dt", dt_path, "--iou-type", "segm", "--max-dets", "5"]
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO_ROOT, "projects", "DisAlign"))
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stderr == "area ranges from mask areas\n"  # the results have no "bbox"
    assert json.loads(run.stdout) == evaluate_lvis(gt_path, dt_path, "segm", max_dets=5)

    segm_results[0]["category_id"] = 12
    write_json(tmp_path / "results.json", segm_results)
    assert main(["--gt", gt_path, "--dt", dt_path, "--iou-type", "segm"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    message = "detection 0 has category_id 12, which is not one of the ground truth's categories"
    assert err == f"error: {message}\n"


# ---------------------------------------------------------------------------------------------
# the detectron2 evaluator


@pytest.fixture(scope="module")
def random_lvis_dataset(tmp_path_factory):
    """A registered LVIS-like dataset (categories 1..K, as LVIS) and its random detections."""
    gt, bbox_results, segm_results, _ = random_case(1000)
    remap = {c["id"]: k + 1 for k, c in enumerate(gt["categories"])}
    for c in gt["categories"]:
        c["id"] = remap[c["id"]]
    for ann in gt["annotations"]:
        ann["category_id"] = remap[ann["category_id"]]
    for image in gt["images"]:
        for field in ("neg_category_ids", "not_exhaustive_category_ids"):
            image[field] = [remap[c] for c in image[field]]
    for b, s in zip(bbox_results, segm_results):
        b["category_id"] = s["category_id"] = remap[b["category_id"]]
    json_file = write_json(tmp_path_factory.mktemp("fast_lvis") / "gt.json", gt)
    name = "fast_lvis_random_val"
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(
        json_file=json_file,
        evaluator_type="lvis",
        thing_classes=[c["name"] for c in gt["categories"]],
    )
    yield name, gt, bbox_results, segm_results
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _model_outputs(gt, bbox_results, segm_results):
    """detectron2 model inputs / outputs (boxes, scores, classes, masks) for the detections."""
    sizes = {image["id"]: (image["height"], image["width"]) for image in gt["images"]}
    inputs, outputs = [], []
    for image_id, (height, width) in sizes.items():
        rows = [(b, s) for b, s in zip(bbox_results, segm_results) if b["image_id"] == image_id]
        instances = Instances((height, width))
        boxes = [[x, y, x + w, y + h] for (x, y, w, h) in (b["bbox"] for b, _ in rows)]
        instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        instances.scores = torch.tensor([b["score"] for b, _ in rows], dtype=torch.float32)
        instances.pred_classes = torch.tensor([b["category_id"] - 1 for b, _ in rows])
        masks = [mask_utils.decode(s["segmentation"]) for _, s in rows]
        instances.pred_masks = torch.tensor(
            np.array(masks, dtype=bool).reshape(len(rows), height, width)
        )
        inputs.append({"image_id": image_id, "height": height, "width": width})
        outputs.append({"instances": instances})
    return inputs, outputs


@pytest.mark.parametrize("max_dets_per_image", [None, 4])
def test_detectron2_evaluator_reports_what_lvis_evaluator_does(
    random_lvis_dataset, max_dets_per_image, tmp_path
):
    name, gt, bbox_results, segm_results = random_lvis_dataset
    inputs, outputs = _model_outputs(gt, bbox_results, segm_results)
    results, files = {}, {}
    for backend in ("detectron2", "fast", "lvis-api"):
        output_dir = tmp_path / backend
        options = dict(output_dir=str(output_dir), max_dets_per_image=max_dets_per_image)
        if backend == "detectron2":
            evaluator = LVISEvaluator(name, **options)
        else:
            evaluator = LongTailLVISEvaluator(name, backend=backend, **options)
        evaluator.reset()
        for image_input, image_output in zip(inputs, outputs):
            evaluator.process([image_input], [image_output])
        results[backend] = evaluator.evaluate()
        files[backend] = (output_dir / "lvis_instances_results.json").read_text()
    expected = results["detectron2"]
    assert files["fast"] == files["detectron2"] == files["lvis-api"]
    for actual in (results["fast"], results["lvis-api"]):
        assert list(actual) == list(expected) == ["bbox", "segm"]
        for task in expected:
            assert list(actual[task]) == list(expected[task])
            for metric, value in expected[task].items():
                assert abs(actual[task][metric] - value) <= TOLERANCE, (task, metric)

    # per_category_ap.json: the same from both backends, and lvis-api's precision array's
    fast, api = (
        json.loads((tmp_path / backend / "per_category_ap.json").read_text())
        for backend in ("fast", "lvis-api")
    )
    assert fast["dataset"] == api["dataset"] == name
    assert fast["tasks"] == api["tasks"] == ["bbox", "segm"]
    assert [c["id"] for c in fast["categories"]] == [c["id"] for c in gt["categories"]]
    json_file = MetadataCatalog.get(name).json_file
    for task, results_list in (("bbox", bbox_results), ("segm", segm_results)):
        results_list = [{k: v for k, v in r.items() if k != "bbox"} for r in results_list]
        if task == "bbox":
            results_list = [dict(r, bbox=b["bbox"]) for r, b in zip(results_list, bbox_results)]
        reference = lvis_api_category_ap(json_file, results_list, task, max_dets_per_image or 300)
        for f, a, category in zip(fast["categories"], api["categories"], gt["categories"]):
            count = sum(ann["category_id"] == category["id"] for ann in gt["annotations"])
            assert f["gt_instances"] == a["gt_instances"] == count
            assert f["frequency"] == a["frequency"] == category["frequency"]
            assert f["name"] == a["name"] == category["name"]
            value = reference[category["id"]]
            if value == -1:
                assert f["AP"][task] is None and a["AP"][task] is None
            else:
                assert abs(f["AP"][task] - 100 * value) <= 100 * TOLERANCE
                assert abs(a["AP"][task] - 100 * value) <= 100 * TOLERANCE


def test_detectron2_evaluator_without_detections_reports_nan(random_lvis_dataset):
    name, gt, _, _ = random_lvis_dataset
    image = gt["images"][0]
    empty = Instances((image["height"], image["width"]))
    empty.pred_boxes = Boxes(torch.zeros(0, 4))
    empty.scores = torch.zeros(0)
    empty.pred_classes = torch.zeros(0, dtype=torch.long)
    evaluator = LongTailLVISEvaluator(name)
    evaluator.reset()
    evaluator.process([{"image_id": image["id"]}], [{"instances": empty}])
    results = evaluator.evaluate()
    assert list(results) == ["bbox"]
    assert all(np.isnan(v) for v in results["bbox"].values())


def test_build_evaluator_picks_the_backend(random_lvis_dataset, tmp_path):
    name = random_lvis_dataset[0]
    cfg = get_cfg()
    disalign.add_disalign_config(cfg)
    assert cfg.TEST.LVIS_EVAL_BACKEND == "fast"
    evaluator = build_evaluator(cfg, name, str(tmp_path))
    assert type(evaluator) is LongTailLVISEvaluator and evaluator._backend == "fast"
    cfg.TEST.LVIS_EVAL_BACKEND = "lvis-api"
    assert build_evaluator(cfg, name, str(tmp_path))._backend == "lvis-api"
    cfg.TEST.LVIS_EVAL_BACKEND = "lvis_api"  # refused with the config's other values
    cfg.OUTPUT_DIR = str(tmp_path)
    message = "LVIS_EVAL_BACKEND must be one of fast, lvis-api"
    with pytest.raises(disalign.InputError, match=message):
        disalign.check_inputs(cfg, training=False)


def test_boxes_overlapping_by_a_pixel_or_less_match_lvis_api(tmp_path):
    """
    Objects and detections of a pixel or less (overlaps of width or height <= 1), by hand: the
    exact detections have IoU 1, the shifted ones IoU 0.5 / 1.5 = 1/3 (a false positive at 0.5).
    """
    images = [_image(1, neg=[3])]
    annotations = [
        _gt_object(1, 1, 1, [10, 10, 1, 1]),
        _gt_object(2, 1, 1, [20, 20, 0.5, 0.8]),
        _gt_object(3, 1, 2, [30, 30, 4, 0.75]),
    ]
    rows = {
        1: [
            (1, [10.5, 10, 1, 1], 0.95),  # IoU 1/3 with object 1: a false positive
            (1, [10, 10, 1, 1], 0.9),
            (1, [20, 20, 0.5, 0.8], 0.8),
            (2, [30, 30, 4, 0.75], 0.7),
        ]
    }
    bbox_results, _ = _results(rows)
    gt = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    metrics = assert_same_as_lvis_api(tmp_path, gt, bbox_results, "bbox")
    # category 1: precision 1/2 at recall 1/2, 2/3 at recall 1: interpolated 2/3 everywhere;
    # category 2: 1
    assert metrics["AP50"] == pytest.approx((2 / 3 + 1.0) / 2)


def test_ground_truth_box_of_negative_height_overlaps_nothing_as_in_lvis_api(tmp_path):
    """
    pycocotools (so lvis-api) gives IoU 0 to boxes that do not overlap in width and height alike.
    A ground truth box of negative height (its "area" field positive, so it is evaluated) has a
    negative area: with a detection overlapping it in width only, intersection 4 * -10 and union
    20 - 100 + 40 are both -40, a ratio of 1 that must not make a match.
    """
    images = [_image(1, neg=[3])]
    degenerate = dict(_gt_object(2, 1, 1, [100, 100, 10, -10]), area=100.0)
    annotations = [_gt_object(1, 1, 1, [50, 50, 20, 20]), degenerate]
    rows = {1: [(1, [100, 100, 4, 5], 0.9), (1, [50, 50, 20, 20], 0.8)]}
    bbox_results, _ = _results(rows)
    gt = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    metrics = assert_same_as_lvis_api(tmp_path, gt, bbox_results, "bbox")
    # a false positive, then a true positive: precision 1/2 up to recall 1/2 (51 of the 101
    # recall thresholds), 0 above
    assert metrics["AP"] == pytest.approx(0.5 * 51 / 101)


@pytest.mark.parametrize("case", ["federated", "area_bounds", "random_0", "random_3"])
def test_metrics_are_lvis_api_numbers_bit_for_bit(case, tmp_path):
    """
    Counts are integers and every division is lvis-api's, so the precision and recall arrays and
    their means are the same floating-point numbers: equal, not only within a tolerance (the
    precision of a first true positive is 1 / (1 + eps), eps = np.spacing(1), as in lvis-api).
    """
    if case.startswith("random"):
        gt, bbox_results, segm_results, _ = random_case(int(case.split("_")[1]))
    else:
        make = {"federated": federated_case, "area_bounds": area_bounds_case}[case]
        gt, bbox_results, segm_results = make()
    gt_path = write_json(tmp_path / "gt.json", gt)
    for iou_type, results in (("bbox", bbox_results), ("segm", segm_results)):
        assert evaluate_lvis(gt_path, results, iou_type) == lvis_api_metrics(
            gt_path, results, iou_type
        )
