#!/usr/bin/env python
"""
LVIS evaluation speed: lvis-api's LVISEval vs disalign.evaluation.fast_lvis on a synthetic
LVIS-like workload.

    python tools/benchmark_lvis_eval.py --images 500 --detections 300 --categories 1230 \
        --iou-type both --seed 0

The workload imitates LVIS val and a detector's output: LVIS-like image sizes and r/c/f category
frequencies; about ten polygon-annotated objects of a few positive categories per image, a few
negative and not-exhaustive categories; a fixed number of scored detections per image, partly
near the objects, partly on wrong or unverified categories: boxes for bbox, compressed-RLE masks
(string counts, as detectron2 writes them; without boxes, as detectron2's evaluator hands them to
lvis-api) for segm. Ground truth and results are written to a temporary folder as JSON files; both
evaluators read the same files and are timed over the same stages: loading the results file,
per-image evaluation, accumulation and summary (loading the ground truth is not timed). Their
metrics must agree within 1e-6 (else the exit status is 1). --profile prints where the fast path
spends its time (cProfile).
"""

import argparse
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time

import numpy as np
import pycocotools.mask as mask_utils
from lvis import LVIS, LVISEval, LVISResults
from tabulate import tabulate

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "projects", "DisAlign"))

from disalign.evaluation.fast_lvis import evaluate_lvis  # noqa: E402

FREQUENCY_SHARES = {"r": 0.27, "c": 0.38, "f": 0.35}  # LVIS v1: 337 / 461 / 405 categories
TOLERANCE = 1e-6


def _polygons(rng, boxes, num_vertices):
    """
    Star-shaped polygons inside boxes.

    Args:
        boxes (ndarray[N, 4]): XYWH.
    Returns:
        ndarray[N, 2 * num_vertices]: x0, y0, x1, y1, ... of each polygon.
    """
    angles = np.sort(rng.uniform(0.0, 2.0 * np.pi, (len(boxes), num_vertices)), axis=1)
    radii = rng.uniform(0.6, 1.0, (len(boxes), num_vertices))
    x, y, w, h = (boxes[:, i : i + 1] for i in range(4))
    xs = x + w / 2.0 * (1.0 + radii * np.cos(angles))
    ys = y + h / 2.0 * (1.0 + radii * np.sin(angles))
    return np.round(np.stack([xs, ys], axis=2).reshape(len(boxes), -1), 2)


def _random_boxes(rng, n, width, height):
    """
    Boxes of log-uniform size, so that small, medium and large objects all occur.

    Returns:
        ndarray[n, 4]: XYWH.
    """
    side = np.exp(rng.uniform(np.log(6.0), np.log(0.9 * min(width, height)), n))
    aspect = np.exp(rng.uniform(-0.7, 0.7, n))
    w = np.minimum(side * aspect, width - 1.0)
    h = np.minimum(side / aspect, height - 1.0)
    return np.stack([rng.uniform(0, width - w), rng.uniform(0, height - h), w, h], axis=1)


def _jitter(rng, boxes, width, height):
    """Boxes (ndarray[N, 4], XYWH) with their corners moved by up to ~30% of their size."""
    scale = rng.uniform(0.02, 0.3, (len(boxes), 1))
    x, y, w, h = boxes.T
    size = np.stack([w, h, w, h], axis=1)
    corners = (
        np.stack([x, y, x + w, y + h], axis=1) + rng.normal(0, 1, (len(boxes), 4)) * scale * size
    )
    x1 = np.clip(corners[:, 0], 0, width - 2)
    y1 = np.clip(corners[:, 1], 0, height - 2)
    x2 = np.clip(corners[:, 2], x1 + 1, width)
    y2 = np.clip(corners[:, 3], y1 + 1, height)
    return np.stack([x1, y1, x2 - x1, y2 - y1], axis=1)


def make_workload(num_images, detections_per_image, num_categories, seed, with_masks):
    """
    Returns:
        gt (dict): an LVIS-format ground truth (images, annotations, categories).
        bbox_results (list[dict]): {"image_id", "category_id", "bbox", "score"} detections.
        segm_results (list[dict] or None): the same detections with an RLE "segmentation" (string
            counts, as detectron2 writes it) instead of the box; None unless with_masks.
    """
    rng = np.random.default_rng(seed)
    frequency = rng.choice(
        list(FREQUENCY_SHARES), size=num_categories, p=list(FREQUENCY_SHARES.values())
    )
    categories = [
        {"id": k + 1, "name": f"category_{k + 1}", "frequency": str(f)}
        for k, f in enumerate(frequency)
    ]
    # frequent categories are annotated in more images
    popularity = np.array([{"r": 1.0, "c": 8.0, "f": 60.0}[f] for f in frequency])
    popularity /= popularity.sum()

    images, annotations, bbox_results, segm_results = [], [], [], []
    for image_id in range(1, num_images + 1):
        width, height = int(rng.choice([480, 500, 640])), int(rng.choice([375, 427, 480, 640]))
        num_positive = 1 + rng.poisson(2.5)
        positive = rng.choice(num_categories, size=num_positive, replace=False, p=popularity) + 1
        others = np.setdiff1d(np.arange(1, num_categories + 1), positive)
        negative = rng.choice(others, size=min(len(others), rng.integers(1, 12)), replace=False)
        not_exhaustive = positive[rng.random(num_positive) < 0.15]
        images.append(
            {
                "id": image_id,
                "width": width,
                "height": height,
                "coco_url": f"http://images.example/val/{image_id:012d}.jpg",
                "neg_category_ids": sorted(int(c) for c in negative),
                "not_exhaustive_category_ids": sorted(int(c) for c in not_exhaustive),
            }
        )

        # objects: a few instances of each positive category, polygon-annotated
        object_categories = np.repeat(positive, 1 + rng.poisson(1.8, num_positive))
        polygons = _polygons(
            rng, _random_boxes(rng, len(object_categories), width, height), 16
        ).tolist()
        rles = mask_utils.frPyObjects(polygons, height, width)
        areas, boxes = mask_utils.area(rles), mask_utils.toBbox(rles)
        for category_id, polygon, area, box in zip(object_categories, polygons, areas, boxes):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(category_id),
                    "segmentation": [polygon],
                    "bbox": [round(float(v), 2) for v in box],
                    "area": float(area),
                }
            )

        # 45% of the detections near objects (a fifth of them with a wrong category), 10% on
        # negative categories, the rest anywhere with any category (most of them are not
        # evaluated: their category is neither verified present nor absent)
        n = detections_per_image
        kind = rng.choice(3, size=n, p=[0.45, 0.10, 0.45])
        target = rng.integers(len(object_categories), size=n)
        near = kind == 0
        det_boxes = _random_boxes(rng, n, width, height)
        det_boxes[near] = _jitter(rng, boxes[target[near]], width, height)
        det_categories = rng.integers(1, num_categories + 1, size=n)
        correct = near & (rng.random(n) < 0.8)
        det_categories[correct] = object_categories[target[correct]]
        det_categories[kind == 1] = rng.choice(negative, size=np.count_nonzero(kind == 1))
        scores = np.where(near, rng.beta(2.0, 2.0, n), rng.beta(1.0, 5.0, n))
        # detectron2 writes float32 scores and boxes
        scores = scores.astype(np.float32).astype(np.float64).tolist()
        det_boxes = det_boxes.astype(np.float32).astype(np.float64)
        det_rles = [None] * n
        if with_masks:
            det_polygons = _polygons(rng, det_boxes, 16).tolist()
            det_rles = mask_utils.frPyObjects(det_polygons, height, width)
        for category_id, box, score, rle in zip(
            det_categories.tolist(), det_boxes.tolist(), scores, det_rles
        ):
            bbox_results.append(
                {"image_id": image_id, "category_id": category_id, "bbox": box, "score": score}
            )
            if with_masks:
                rle["counts"] = rle["counts"].decode("utf-8")
                segm_results.append(
                    {
                        "image_id": image_id,
                        "category_id": category_id,
                        "segmentation": rle,
                        "score": score,
                    }
                )
    gt = {"images": images, "annotations": annotations, "categories": categories}
    return gt, bbox_results, segm_results if with_masks else None


def time_lvis_api(gt_path, results_path, iou_type, max_dets):
    """
    lvis-api: load the results, evaluate, accumulate, summarize.

    Returns:
        (wall-clock seconds, CPU seconds of this process), metrics
    """
    lvis_gt = LVIS(gt_path)
    start, cpu_start = time.perf_counter(), time.process_time()
    lvis_results = LVISResults(lvis_gt, results_path, max_dets=max_dets)
    lvis_eval = LVISEval(lvis_gt, lvis_results, iou_type)
    lvis_eval.params.max_dets = max_dets
    lvis_eval.evaluate()
    lvis_eval.accumulate()
    lvis_eval.summarize()
    seconds = (time.perf_counter() - start, time.process_time() - cpu_start)
    return seconds, {k: float(v) for k, v in lvis_eval.get_results().items()}


def time_fast(gt_path, results_path, iou_type, max_dets, profile=False):
    """The fast path, the same stages. Returns (wall-clock, CPU seconds), metrics."""
    lvis_gt = LVIS(gt_path)
    profiler = cProfile.Profile() if profile else None
    start, cpu_start = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    metrics = evaluate_lvis(lvis_gt, results_path, iou_type, max_dets=max_dets)
    seconds = (time.perf_counter() - start, time.process_time() - cpu_start)
    if profiler:
        profiler.disable()
        print(f"\n{iou_type}: the fast path's functions by own time")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    return seconds, metrics


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--detections", type=int, default=300, help="detections per image")
    parser.add_argument("--categories", type=int, default=1230)
    parser.add_argument("--iou-type", choices=["bbox", "segm", "both"], default="both")
    parser.add_argument("--max-dets", type=int, default=300, help="max detections per image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the best is reported")
    parser.add_argument("--profile", action="store_true", help="profile the fast path (cProfile)")
    args = parser.parse_args()

    iou_types = ["bbox", "segm"] if args.iou_type == "both" else [args.iou_type]
    start = time.perf_counter()
    gt, bbox_results, segm_results = make_workload(
        args.images, args.detections, args.categories, args.seed, "segm" in iou_types
    )
    print(
        f"workload: {len(gt['images'])} images, {len(gt['categories'])} categories, "
        f"{len(gt['annotations'])} objects, {len(bbox_results)} detections "
        f"(made in {time.perf_counter() - start:.1f} s)"
    )
    rows, failures = [], []
    with tempfile.TemporaryDirectory() as folder:
        gt_path = os.path.join(folder, "gt.json")
        with open(gt_path, "w") as f:
            json.dump(gt, f)
        for iou_type in iou_types:
            results_path = os.path.join(folder, f"results_{iou_type}.json")
            with open(results_path, "w") as f:
                json.dump(bbox_results if iou_type == "bbox" else segm_results, f)
            runs = [
                (
                    time_lvis_api(gt_path, results_path, iou_type, args.max_dets),
                    time_fast(gt_path, results_path, iou_type, args.max_dets, args.profile),
                )
                for _ in range(args.repeat)
            ]
            api_wall, api_cpu = (min(api[0][i] for api, _ in runs) for i in (0, 1))
            fast_wall, fast_cpu = (min(fast[0][i] for _, fast in runs) for i in (0, 1))
            api_metrics, fast_metrics = runs[0][0][1], runs[0][1][1]
            worst = max(abs(api_metrics[k] - fast_metrics.get(k, np.inf)) for k in api_metrics)
            if set(api_metrics) != set(fast_metrics) or worst > TOLERANCE:
                failures.append(f"{iou_type}: metrics differ (largest difference {worst:.3g})")
            rows.append(
                [
                    iou_type,
                    f"{api_wall:.2f}",
                    f"{fast_wall:.2f}",
                    f"{api_wall / fast_wall:.1f}x",
                    f"{api_cpu:.2f}",
                    f"{fast_cpu:.2f}",
                    f"{api_cpu / fast_cpu:.1f}x",
                    f"{worst:.1e}",
                    f"{100 * fast_metrics['AP']:.2f}",
                ]
            )
    print(
        tabulate(
            rows,
            headers=[
                "iou type",
                "lvis-api (s)",
                "fast (s)",
                "speed-up",
                "lvis-api CPU (s)",
                "fast CPU (s)",
                "CPU speed-up",
                "max |diff|",
                "AP",
            ],
            tablefmt="pipe",
        )
    )
    if failures:
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
