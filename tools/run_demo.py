#!/usr/bin/env python
"""
The demos: DisAlign's two stages on an embedded miniature dataset, baseline vs DisAlign.

    python tools/run_demo.py --task detection       # make demo:     miniature LVIS, Mask R-CNN
    python tools/run_demo.py --task classification  # make demo-cls: miniature long-tailed images
    python tools/run_demo.py --task segmentation    # make demo-seg: miniature scene parsing

1. stage 1: train the baseline and evaluate it;
2. stage 2: from its model_final.pth, train only DisAlign's alignment (alpha, beta, confidence)
   with GRW, and evaluate;
3. print Baseline vs DisAlign and write the table to OUTPUT_DIR/results.json;
4. detection: draw both runs' per-class AP against training frequency into
   OUTPUT_DIR/per_class_ap.png (tools/plot_per_class_ap.py).

Both stages are plain runs of train_net.py; their commands are printed before they start. They
run with a fixed number of torch threads (``--threads``, default 2, through ``OMP_NUM_THREADS``),
because the order of floating-point sums, and so the digits, depend on it.

The spread of the demo's numbers, over seeds and over thread counts:

    python tools/run_demo.py --task classification --seeds 3 --threads 1 2 4

runs both stages for SEED 1..3 with the first thread count, and for every thread count with
SEED 1, each into OUTPUT_DIR/spread/seed<S>-threads<T>/ (``--jobs N``: N runs at a time), then
prints the mean, standard deviation and range of every metric (baseline, DisAlign and the gain)
over the seeds, over the thread counts and over all runs, and writes them to
OUTPUT_DIR/spread.json.
"""

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time

import numpy as np
from tabulate import tabulate

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# torch threads of the demos' runs: the fastest count on 2 cores, and fixed, so that the digits do
# not depend on the machine's cores (see docs/experiments.md)
DEMO_THREADS = 2


_FIXED_AND_POOLED = ["AP-fixed", "APr-fixed", "APc-fixed", "APf-fixed"] + [
    f"AP-pooled-{pool}" for pool in ("all", "r", "c", "f")
]


def _lvis(results):
    selected = {
        t: {m: results[t][m] for m in ("AP", "AP50", "APr", "APc", "APf")} for t in ("bbox", "segm")
    }
    for t in ("bbox", "segm"):  # with TEST.FIXED_AP on
        if "AP-fixed" in results[t]:
            selected[f"{t} fixed"] = {m: results[t][m] for m in _FIXED_AND_POOLED}
    return selected


TASKS = {
    "detection": {
        "stage1": "configs/Miniature-LVIS/mask_rcnn_R_18_FPN_baseline.yaml",
        "stage2": "configs/Miniature-LVIS/mask_rcnn_R_18_FPN_disalign.yaml",
        "output": "output/demo",
        "title": "Miniature LVIS val, Mask R-CNN R-18-FPN (AP as lvis-api reports it, 0-100)",
        "select": _lvis,
        # the standard AP, then Fixed AP and Pooled AP (Dave et al. 2021) of each task
        "tables": [("bbox", "segm"), ("bbox fixed",), ("segm fixed",)],
        "per_class_plot": "per_class_ap.png",
    },
    "classification": {
        "stage1": "configs/Miniature-LT/resnet18_baseline.yaml",
        "stage2": "configs/Miniature-LT/resnet18_disalign.yaml",
        "output": "output/demo-cls",
        "title": "Miniature long-tailed classification test, ResNet-18 (top-1 accuracy, %)",
        "select": lambda results: dict(results["classification"]),
    },
    "segmentation": {
        "stage1": "configs/Miniature-Seg/deeplabv3plus_R_18_baseline.yaml",
        "stage2": "configs/Miniature-Seg/deeplabv3plus_R_18_disalign.yaml",
        "output": "output/demo-seg",
        "title": "Miniature segmentation val, DeepLabV3+ R-18 (mIoU and mAcc, %)",
        "select": lambda results: {
            f"{metric}{group}": results["sem_seg"][f"{metric}{group}"]
            for metric in ("mIoU", "mAcc")
            for group in ("", "_head", "_body", "_tail")
        },
    },
}


def run_stage(name, config, output_dir, opts, threads, log=None):
    """
    train_net.py with ``threads`` torch threads, its output to ``log`` (an open file; default:
    this process's); returns its eval_results.json and minutes.
    """
    command = [sys.executable, "train_net.py", "--config-file", config, *opts]
    command += ["OUTPUT_DIR", output_dir]
    print(f"\n=== {name}: OMP_NUM_THREADS={threads} {' '.join(command[1:])}", flush=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    stderr = subprocess.STDOUT if log else None
    subprocess.run(command, cwd=REPO_ROOT, check=True, env=env, stdout=log, stderr=stderr)
    with open(os.path.join(REPO_ROOT, output_dir, "eval_results.json")) as f:
        results = json.load(f)
    return results, (time.perf_counter() - start) / 60


def draw_per_class_ap(stage1_dir, stage2_dir, output):
    """tools/plot_per_class_ap.py on the two stages' evaluations; raises CalledProcessError."""
    command = [sys.executable, os.path.join("tools", "plot_per_class_ap.py"), stage1_dir]
    command += [stage2_dir, "--labels", "Baseline", "DisAlign", "--output", output]
    print(f"\n=== Per-class AP: {' '.join(command[1:])}", flush=True)
    subprocess.run(command, cwd=REPO_ROOT, check=True)


def flatten(results, prefix="", separator=" "):
    """A nested dict as one level: {"bbox": {"AP": 1}} -> {"bbox AP": 1} (keys joined by
    ``separator``)."""
    flat = {}
    for key, value in results.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}{separator}", separator))
        else:
            flat[prefix + key] = value
    return flat


def format_table(results, groups=None):
    """Baseline, DisAlign and their difference, for the metrics of ``groups`` (default: all)."""

    def chosen(run):
        return {k: v for k, v in run.items() if groups is None or k in groups}

    baseline = flatten(chosen(results["baseline"]))
    disalign = flatten(chosen(results["disalign"]))
    rows = [
        ["Baseline", *baseline.values()],
        ["DisAlign", *disalign.values()],
        ["delta", *(disalign[k] - baseline[k] for k in baseline)],
    ]
    return tabulate(rows, headers=["", *baseline], floatfmt=".1f")


def run_demo(task, output_dir, num_gpus, threads, seed=None, log=None):
    """
    Both stages into ``output_dir``/stage1 and stage2; returns the selected results of both
    ({"baseline": ..., "disalign": ...}) and the two stages' minutes. ``seed``: SEED of both
    stages (default: the configs' own); ``log``: see :func:`run_stage`. Raises
    CalledProcessError when a stage fails.
    """
    stage1_dir = os.path.join(output_dir, "stage1")
    stage2_dir = os.path.join(output_dir, "stage2")
    opts = ["--num-gpus", str(num_gpus)]
    if seed is not None:
        opts += ["SEED", str(seed)]
    baseline, stage1_minutes = run_stage(
        "Stage 1 (baseline)", task["stage1"], stage1_dir, opts, threads, log
    )
    stage2_opts = opts + ["MODEL.WEIGHTS", os.path.join(stage1_dir, "model_final.pth")]
    disalign, stage2_minutes = run_stage(
        "Stage 2 (DisAlign)", task["stage2"], stage2_dir, stage2_opts, threads, log
    )
    results = {"baseline": task["select"](baseline), "disalign": task["select"](disalign)}
    with open(os.path.join(REPO_ROOT, output_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    return results, stage1_minutes, stage2_minutes


def spread(runs):
    """
    ``runs``: {name: {"baseline": ..., "disalign": ...}}. Returns {metric: {"baseline" | "disalign"
    | "gain": {"mean", "std", "min", "max"}}} over the runs (std: the sample standard deviation,
    ddof 1; 0 for a single run).
    """
    flat = {
        name: {k: flatten(run[k]) for k in ("baseline", "disalign")} for name, run in runs.items()
    }
    metrics = next(iter(flat.values()))["baseline"]
    table = {}
    for metric in metrics:
        values = {
            "baseline": np.array([run["baseline"][metric] for run in flat.values()]),
            "disalign": np.array([run["disalign"][metric] for run in flat.values()]),
        }
        values["gain"] = values["disalign"] - values["baseline"]
        table[metric] = {
            kind: {
                "mean": float(v.mean()),
                "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                "min": float(v.min()),
                "max": float(v.max()),
            }
            for kind, v in values.items()
        }
    return table


def format_spread(table):
    rows = [
        [metric]
        + [
            "{mean:.1f} ± {std:.1f} [{min:.1f}, {max:.1f}]".format(**s[kind])
            for kind in ("baseline", "disalign", "gain")
        ]
        for metric, s in table.items()
    ]
    return tabulate(rows, headers=["", "Baseline", "DisAlign", "gain"])


def run_spread(task, output_dir, num_gpus, num_seeds, thread_counts, jobs=1):
    """
    Both stages for SEED 1..num_seeds (first thread count) and every thread count (SEED 1),
    ``jobs`` runs at a time (with several, each run's output goes to its run.log).
    """
    grid = [(seed, thread_counts[0]) for seed in range(1, num_seeds + 1)]
    grid += [(1, threads) for threads in thread_counts[1:]]

    def run(point):
        seed, threads = point
        name = f"seed{seed}-threads{threads}"
        folder = os.path.join(output_dir, "spread", name)
        if jobs == 1:
            return name, run_demo(task, folder, num_gpus, threads, seed)[0]
        os.makedirs(os.path.join(REPO_ROOT, folder), exist_ok=True)
        with open(os.path.join(REPO_ROOT, folder, "run.log"), "w") as log:
            return name, run_demo(task, folder, num_gpus, threads, seed, log)[0]

    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        runs = dict(pool.map(run, grid))
    over = {
        f"seeds 1-{num_seeds}, {thread_counts[0]} threads": [
            f"seed{seed}-threads{thread_counts[0]}" for seed in range(1, num_seeds + 1)
        ],
        f"threads {', '.join(map(str, thread_counts))}, seed 1": [
            f"seed1-threads{threads}" for threads in thread_counts
        ],
        "all runs": list(runs),
    }
    summary = {
        "runs": runs,
        "spread": {
            label: spread({name: runs[name] for name in names}) for label, names in over.items()
        },
    }
    os.makedirs(os.path.join(REPO_ROOT, output_dir), exist_ok=True)
    with open(os.path.join(REPO_ROOT, output_dir, "spread.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"\n{task['title']}: mean ± standard deviation [min, max]")
    for label, table in summary["spread"].items():
        print(f"\nover {label}:\n{format_spread(table)}")
    print(f"\nwritten to {os.path.join(output_dir, 'spread.json')}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="detection")
    parser.add_argument(
        "--output-dir", help="default: output/demo, output/demo-cls, output/demo-seg"
    )
    parser.add_argument("--num-gpus", type=int, default=1, help="passed to train_net.py")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[DEMO_THREADS],
        help=f"torch threads per process (default {DEMO_THREADS}); several: the spread over them",
    )
    parser.add_argument(
        "--seeds", type=int, default=1, help="N > 1: the spread over SEED 1..N (first --threads)"
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs of the spread at a time (default 1)"
    )
    args = parser.parse_args()
    if min(args.seeds, args.jobs, *args.threads) < 1:
        parser.error("--seeds, --threads and --jobs must be at least 1")
    task = TASKS[args.task]
    output_dir = args.output_dir or task["output"]
    if args.seeds > 1 or len(args.threads) > 1:
        try:
            run_spread(task, output_dir, args.num_gpus, args.seeds, args.threads, args.jobs)
        except subprocess.CalledProcessError as e:
            sys.exit(f"error: a stage failed with exit status {e.returncode}; see its output above")
        return

    start = time.perf_counter()
    try:
        results, stage1_minutes, stage2_minutes = run_demo(
            task, output_dir, args.num_gpus, args.threads[0]
        )
    except subprocess.CalledProcessError as e:
        sys.exit(f"error: a stage failed with exit status {e.returncode}; see its output above")
    total_minutes = (time.perf_counter() - start) / 60
    print(f"\n{task['title']}:")
    for groups in task.get("tables", [None]):
        if groups is None or all(group in results["baseline"] for group in groups):
            print()
            print(format_table(results, groups))
    print(
        f"\nstage 1 {stage1_minutes:.1f} min, stage 2 {stage2_minutes:.1f} min, "
        f"total {total_minutes:.1f} min; table written to "
        f"{os.path.join(output_dir, 'results.json')}"
    )
    if "per_class_plot" in task:
        try:
            draw_per_class_ap(
                os.path.join(output_dir, "stage1"),
                os.path.join(output_dir, "stage2"),
                os.path.join(output_dir, task["per_class_plot"]),
            )
        except subprocess.CalledProcessError as e:
            sys.exit(f"error: the per-class AP plot failed with exit status {e.returncode}")


if __name__ == "__main__":
    main()
