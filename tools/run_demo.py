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

Both stages are plain runs of train_net.py; their commands are printed before they start.
"""

import argparse
import json
import os
import subprocess
import sys
import time

from tabulate import tabulate

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def run_stage(name, config, output_dir, opts):
    command = [sys.executable, "train_net.py", "--config-file", config, *opts]
    command += ["OUTPUT_DIR", output_dir]
    print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO_ROOT, check=True)
    with open(os.path.join(REPO_ROOT, output_dir, "eval_results.json")) as f:
        results = json.load(f)
    return results, (time.perf_counter() - start) / 60


def draw_per_class_ap(stage1_dir, stage2_dir, output):
    """tools/plot_per_class_ap.py on the two stages' evaluations; raises CalledProcessError."""
    command = [sys.executable, os.path.join("tools", "plot_per_class_ap.py"), stage1_dir]
    command += [stage2_dir, "--labels", "Baseline", "DisAlign", "--output", output]
    print(f"\n=== Per-class AP: {' '.join(command[1:])}", flush=True)
    subprocess.run(command, cwd=REPO_ROOT, check=True)


def _flatten(results, prefix=""):
    flat = {}
    for key, value in results.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key} "))
        else:
            flat[prefix + key] = value
    return flat


def format_table(results, groups=None):
    """Baseline, DisAlign and their difference, for the metrics of ``groups`` (default: all)."""

    def chosen(run):
        return {k: v for k, v in run.items() if groups is None or k in groups}

    baseline = _flatten(chosen(results["baseline"]))
    disalign = _flatten(chosen(results["disalign"]))
    rows = [
        ["Baseline", *baseline.values()],
        ["DisAlign", *disalign.values()],
        ["delta", *(disalign[k] - baseline[k] for k in baseline)],
    ]
    return tabulate(rows, headers=["", *baseline], floatfmt=".1f")


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="detection")
    parser.add_argument(
        "--output-dir", help="default: output/demo, output/demo-cls, output/demo-seg"
    )
    parser.add_argument("--num-gpus", type=int, default=1, help="passed to train_net.py")
    args = parser.parse_args()
    task = TASKS[args.task]
    output_dir = args.output_dir or task["output"]

    stage1_dir = os.path.join(output_dir, "stage1")
    stage2_dir = os.path.join(output_dir, "stage2")
    launch = ["--num-gpus", str(args.num_gpus)]
    start = time.perf_counter()
    try:
        baseline, stage1_minutes = run_stage(
            "Stage 1 (baseline)", task["stage1"], stage1_dir, launch
        )
        stage2_opts = launch + ["MODEL.WEIGHTS", os.path.join(stage1_dir, "model_final.pth")]
        disalign, stage2_minutes = run_stage(
            "Stage 2 (DisAlign)", task["stage2"], stage2_dir, stage2_opts
        )
    except subprocess.CalledProcessError as e:
        sys.exit(f"error: a stage failed with exit status {e.returncode}; see its output above")

    results = {"baseline": task["select"](baseline), "disalign": task["select"](disalign)}
    with open(os.path.join(REPO_ROOT, output_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
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
                stage1_dir, stage2_dir, os.path.join(output_dir, task["per_class_plot"])
            )
        except subprocess.CalledProcessError as e:
            sys.exit(f"error: the per-class AP plot failed with exit status {e.returncode}")


if __name__ == "__main__":
    main()
