#!/usr/bin/env python
"""
LVIS evaluation speed and memory: lvis-api's LVISEval vs lvis_fast on a
synthetic LVIS-like workload, side by side.

    python tools/benchmark_lvis_eval.py --images 500 --detections 300 --categories 1230 \
        --iou-type both --repeat 3
    python tools/benchmark_lvis_eval.py --lvis-v1-val --api-fraction 0.05

The workload imitates LVIS val and a detector's output: LVIS-like image sizes and r/c/f category
frequencies; about ten polygon-annotated objects of a few positive categories per image, a few
negative and not-exhaustive categories; a fixed number of scored detections per image, partly
near the objects, partly on wrong or unverified categories: boxes for bbox, compressed-RLE masks
(string counts, as detectron2 writes them; without boxes, as detectron2's evaluator hands them to
lvis-api) for segm. Ground truth and results are written to a temporary folder as JSON files
(image after image, so that the workload is never in memory whole), and each evaluation runs in a
fresh process that reads them: time over the same stages (reading the results file, per-image
evaluation, accumulation and summary; not reading the ground truth), CPU time, and peak memory
(the process's peak resident size minus its size after the imports, so the ground truth counts).
Their metrics must agree within 1e-6 (else the exit status is 1). --stages prints where the fast
path spends its time.

--lvis-v1-val is LVIS v1 val's scale: 19,809 images, 1,203 categories (337 rare, 461 common,
405 frequent), 300 detections per image. --fixed-ap is Fixed AP's protocol (Dave et al. 2021): no
per-image limit, each category's --dets-per-category (10,000) top-scored detections; with
--lvis-v1-val, 607 detections per image, 12.03 million in all (10,000 x 1,203).
With --lvis-v1-val, lvis-api is run on the first --api-fraction of the images (the same images and
detections) and its time and memory extrapolated linearly; the fast path is run on both, its
metrics compared with lvis-api's on the fraction.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import pycocotools.mask as mask_utils
from tabulate import tabulate

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "projects", "DisAlign"))

FREQUENCY_SHARES = {"r": 0.27, "c": 0.38, "f": 0.35}  # LVIS v1: 337 / 461 / 405 categories
LVIS_V1_VAL = {"images": 19809, "categories": 1203, "frequency_counts": (337, 461, 405)}
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


def write_workload(
    folder, num_images, detections_per_image, num_categories, seed, iou_types, frequency_counts=None
):
    """
    Write gt.json and results_{bbox,segm}.json into folder, image after image. Image i's objects
    and detections depend only on (seed, i) and the categories, so a workload of fewer images is
    the first images of a larger one.

    Args:
        frequency_counts (tuple or None): rare / common / frequent category counts; None: drawn
            with FREQUENCY_SHARES.
    Returns:
        dict: paths ("gt", "bbox", "segm"), and counts (images, objects, detections).
    """
    rng = np.random.default_rng(seed)
    if frequency_counts is None:
        frequency = rng.choice(
            list(FREQUENCY_SHARES), size=num_categories, p=list(FREQUENCY_SHARES.values())
        )
    else:
        frequency = rng.permutation(np.repeat(["r", "c", "f"], frequency_counts))
    categories = [
        {"id": k + 1, "name": f"category_{k + 1}", "frequency": str(f)}
        for k, f in enumerate(frequency)
    ]
    # frequent categories are annotated in more images
    popularity = np.array([{"r": 1.0, "c": 8.0, "f": 60.0}[f] for f in frequency])
    popularity /= popularity.sum()

    paths = {"gt": os.path.join(folder, "gt.json")}
    files = {}
    for iou_type in iou_types:
        paths[iou_type] = os.path.join(folder, f"results_{iou_type}.json")
        files[iou_type] = open(paths[iou_type], "w")
        files[iou_type].write("[")
    images, annotations, num_detections = [], [], 0
    for image_id in range(1, num_images + 1):
        rng = np.random.default_rng([seed, image_id])
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
        separator = ", " if num_detections else ""
        num_detections += n
        if "bbox" in files:
            rows = [
                {"image_id": image_id, "category_id": c, "bbox": box, "score": score}
                for c, box, score in zip(det_categories.tolist(), det_boxes.tolist(), scores)
            ]
            files["bbox"].write(separator + json.dumps(rows)[1:-1])
        if "segm" in files:
            det_rles = mask_utils.frPyObjects(_polygons(rng, det_boxes, 16).tolist(), height, width)
            rows = []
            for c, score, rle in zip(det_categories.tolist(), scores, det_rles):
                rle["counts"] = rle["counts"].decode("utf-8")
                rows.append(
                    {"image_id": image_id, "category_id": c, "segmentation": rle, "score": score}
                )
            files["segm"].write(separator + json.dumps(rows)[1:-1])
    for f in files.values():
        f.write("]")
        f.close()
    with open(paths["gt"], "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    counts = {"images": num_images, "objects": len(annotations), "detections": num_detections}
    return paths, counts


def _rss_mib():
    """This process's resident size now (MiB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(tool, gt_path, results_path, iou_type, max_dets, dets_per_category=None):
    """
    One evaluation in this (fresh) process.

    Returns:
        dict: wall and CPU seconds, peak memory above the size after the imports (MiB), metrics.
    """
    from lvis import LVIS, LVISEval, LVISResults

    from lvis_fast import evaluate_lvis

    base = _rss_mib()
    lvis_gt = LVIS(gt_path)
    start, cpu_start = time.perf_counter(), time.process_time()
    if tool == "lvis-api":
        results = results_path
        if dets_per_category is not None:  # the authors' script: per category, a stable sort
            with open(results_path) as f:
                results, by_category = json.load(f), {}
            for result in results:
                by_category.setdefault(result["category_id"], []).append(result)
            results = []
            for rows in by_category.values():
                results += sorted(rows, key=lambda r: r["score"], reverse=True)[:dets_per_category]
        lvis_results = LVISResults(lvis_gt, results, max_dets=max_dets)
        lvis_eval = LVISEval(lvis_gt, lvis_results, iou_type)
        lvis_eval.params.max_dets = max_dets
        lvis_eval.evaluate()
        lvis_eval.accumulate()
        lvis_eval.summarize()
        metrics = {k: float(v) for k, v in lvis_eval.get_results().items()}
    else:
        metrics = evaluate_lvis(
            lvis_gt, results_path, iou_type, max_dets=max_dets, dets_per_category=dets_per_category
        )
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"wall": wall, "cpu": cpu, "peak_mib": peak - base, "metrics": metrics}


def run_measure(tool, gt_path, results_path, iou_type, max_dets, dets_per_category=None):
    """:func:`measure` in a fresh process (so that peak memory is its own)."""
    command = [sys.executable, "-W", "ignore", os.path.abspath(__file__), "--measure", tool]
    command += ["--gt", gt_path, "--dt", results_path, "--iou-type", iou_type]
    command += ["--max-dets", str(max_dets)]
    if dets_per_category is not None:
        command += ["--dets-per-category", str(dets_per_category)]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"{tool} {iou_type} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def stage_times(gt_path, results_path, iou_type, max_dets, dets_per_category=None):
    """
    Where the fast path spends its time: seconds per stage (one run in this process), then the
    seconds spent inside the compiled functions it calls (orjson's parsing, pycocotools' polygon
    rasterization, and lvis_fast's mask decoding and pair IoUs, ``DecodedMasks`` around its
    compiled RLE kernel), which are part of the stages.
    """
    import orjson
    from lvis import LVIS

    from lvis_fast.accumulation import accumulate, summarize
    from lvis_fast.evaluation import garbage_collection_paused
    from lvis_fast.masks import DecodedMasks
    from lvis_fast.matching import Detections, candidate_pairs, match
    from lvis_fast.reading import GroundTruth, read_results

    lvis_gt = LVIS(gt_path)
    times, start = {}, time.perf_counter()
    inside = {}

    def timed(module, name):  # module.name (or a class's), with its time added to inside[...]
        function = getattr(module, name)
        owner = f"{module.__module__}.{module.__qualname__}" if isinstance(module, type) else None
        label = f"inside {owner or module.__name__}.{name}"

        def wrapper(*args, **kwargs):
            begin = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                inside[label] = inside.get(label, 0.0) + time.perf_counter() - begin

        setattr(module, name, wrapper)
        return function

    originals = [(orjson, "loads", timed(orjson, "loads"))]
    for module, name in [(mask_utils, "frPyObjects"), (mask_utils, "merge")] + [
        (DecodedMasks, "__init__"),
        (DecodedMasks, "pair_iou"),
    ]:
        originals.append((module, name, timed(module, name)))

    def lap(name):
        nonlocal start
        times[name] = time.perf_counter() - start
        start = time.perf_counter()

    try:
        with garbage_collection_paused():
            gt = GroundTruth(lvis_gt.dataset, iou_type)
            lap("ground truth arrays (not timed above)")
            results = read_results(results_path, gt, iou_type, False)
            lap("reading the results (JSON to arrays)")
            dt = Detections(results, gt, iou_type, max_dets, dets_per_category)
            lap("detection arrays (cap, federated filter, mask areas)")
            pairs = candidate_pairs(dt, gt, iou_type)
            lap("IoUs of candidate pairs (segm: polygons rasterized, masks decoded)")
            matches = match(dt, gt, *pairs)
            lap("matching")
            summarize(accumulate(dt, gt, *matches), gt, max_dets)
            lap("accumulation and summary")
    finally:
        for module, name, function in originals:
            setattr(module, name, function)
    return {**times, **{label: inside[label] for label in sorted(inside)}}


def _compare(api, fast):
    """The largest metric difference (inf if the names differ)."""
    if set(api) != set(fast):
        return float("inf")
    return max(abs(api[k] - fast[k]) for k in api)


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--detections", type=int, default=300, help="detections per image")
    parser.add_argument("--categories", type=int, default=1230)
    parser.add_argument("--iou-type", choices=["bbox", "segm", "both"], default="both")
    parser.add_argument("--max-dets", type=int, default=300, help="max detections per image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the best is reported")
    parser.add_argument(
        "--lvis-v1-val",
        action="store_true",
        help="LVIS v1 val's scale: 19,809 images, 1,203 categories (337 r / 461 c / 405 f)",
    )
    parser.add_argument(
        "--api-fraction",
        type=float,
        default=None,
        help="run lvis-api on this first fraction of the images, extrapolate linearly "
        "(default: 1, with --lvis-v1-val 0.05)",
    )
    parser.add_argument(
        "--fixed-ap",
        action="store_true",
        help="Fixed AP's protocol: --max-dets -1 and --dets-per-category (with --lvis-v1-val, "
        "607 detections per image: 10,000 per category in all)",
    )
    parser.add_argument(
        "--dets-per-category", type=int, default=None, help="top-scored detections per category"
    )
    parser.add_argument("--stages", action="store_true", help="time the fast path's stages")
    parser.add_argument(
        "--keep", help="write the workload into this folder and keep it (or reuse it from there)"
    )
    parser.add_argument("--measure", choices=["lvis-api", "fast"], help=argparse.SUPPRESS)
    parser.add_argument("--gt", help=argparse.SUPPRESS)
    parser.add_argument("--dt", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure:  # one evaluation, in the process that run_measure started
        result = measure(
            args.measure, args.gt, args.dt, args.iou_type, args.max_dets, args.dets_per_category
        )
        print(json.dumps(result))
        return

    frequency_counts = None
    if args.lvis_v1_val:
        args.images, args.categories = LVIS_V1_VAL["images"], LVIS_V1_VAL["categories"]
        frequency_counts = LVIS_V1_VAL["frequency_counts"]
    if args.fixed_ap:
        args.max_dets = -1
        args.dets_per_category = args.dets_per_category or 10000
        if args.lvis_v1_val:  # 10,000 x 1,203 detections over the images
            args.detections = int(round(args.dets_per_category * args.categories / args.images))
    fraction = args.api_fraction or (0.05 if args.lvis_v1_val else 1.0)
    api_images = max(1, int(round(fraction * args.images)))
    scale = args.images / api_images
    iou_types = ["bbox", "segm"] if args.iou_type == "both" else [args.iou_type]

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or scratch
        os.makedirs(folder, exist_ok=True)
        start = time.perf_counter()
        workload = [args.detections, args.categories, args.seed, iou_types, frequency_counts]
        settings = {"images": args.images, "api_images": api_images, "workload": workload}
        settings = json.loads(json.dumps(settings))
        record = os.path.join(folder, "workload.json")
        if args.keep and os.path.exists(record):  # --keep: the same workload is not written again
            with open(record) as f:
                kept = json.load(f)
            if kept["settings"] != settings:
                sys.exit(f"error: {folder} holds another workload; use another --keep folder")
            full, counts, part = kept["full"], kept["counts"], kept["part"]
        else:
            full, counts = write_workload(folder, args.images, *workload)
            part = full
            if api_images < args.images:
                part_folder = os.path.join(folder, "part")
                os.makedirs(part_folder, exist_ok=True)
                part, _ = write_workload(part_folder, api_images, *workload)
            with open(record, "w") as f:
                json.dump({"settings": settings, "full": full, "counts": counts, "part": part}, f)
        print(
            f"workload: {counts['images']} images, {args.categories} categories, "
            f"{counts['objects']} objects, {counts['detections']} detections (written in "
            f"{time.perf_counter() - start:.0f} s); lvis-api on {api_images} images"
            + (f", extrapolated x{scale:.2f}" if scale != 1 else "")
        )
        rows, failures = [], []
        for iou_type in iou_types:
            if args.stages:
                print(f"\n{iou_type}: the fast path's stages (s), {counts['images']} images")
                times = stage_times(
                    full["gt"], full[iou_type], iou_type, args.max_dets, args.dets_per_category
                )
                print(tabulate(times.items(), headers=["stage", "s"], floatfmt=".2f"))
            api_runs, fast_runs, fast_part_runs = [], [], []
            for _ in range(args.repeat):  # alternating, so that both see the same load
                limits = (args.max_dets, args.dets_per_category)
                api_runs.append(
                    run_measure("lvis-api", part["gt"], part[iou_type], iou_type, *limits)
                )
                fast_runs.append(run_measure("fast", full["gt"], full[iou_type], iou_type, *limits))
                if part != full:
                    fast_part_runs.append(
                        run_measure("fast", part["gt"], part[iou_type], iou_type, *limits)
                    )
            same_images = fast_part_runs or fast_runs
            worst = _compare(api_runs[0]["metrics"], same_images[0]["metrics"])
            if worst > TOLERANCE:
                failures.append(f"{iou_type}: metrics differ (largest difference {worst:.3g})")

            def best(runs, key):
                return min(run[key] for run in runs)

            api = {key: best(api_runs, key) * scale for key in ("wall", "cpu", "peak_mib")}
            fast = {key: best(fast_runs, key) for key in ("wall", "cpu", "peak_mib")}
            rows.append(
                [
                    iou_type,
                    counts["images"],
                    f"{api['wall']:.1f}",
                    f"{fast['wall']:.2f}",
                    f"{api['wall'] / fast['wall']:.1f}x",
                    f"{api['cpu']:.1f}",
                    f"{fast['cpu']:.2f}",
                    f"{api['cpu'] / fast['cpu']:.1f}x",
                    f"{api['peak_mib']:.0f}",
                    f"{fast['peak_mib']:.0f}",
                    f"{fast['peak_mib'] / api['peak_mib']:.2f}",
                    f"{1e6 * fast['wall'] / counts['detections']:.2f}",
                    f"{worst:.1e}",
                    f"{100 * same_images[0]['metrics']['AP']:.2f}",
                ]
            )
    print(
        tabulate(
            rows,
            headers=[
                "iou type",
                "images",
                "lvis-api (s)",
                "fast (s)",
                "speed-up",
                "lvis-api CPU (s)",
                "fast CPU (s)",
                "CPU speed-up",
                "lvis-api peak (MiB)",
                "fast peak (MiB)",
                "memory ratio",
                "fast us / detection",
                "max |diff|",
                "AP",
            ],
            tablefmt="pipe",
        )
    )
    if scale != 1:
        print(f"lvis-api's numbers: measured on {api_images} images, multiplied by {scale:.2f}")
    print(f"best of {args.repeat} run(s) each, every evaluation in a fresh process")
    if failures:
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
