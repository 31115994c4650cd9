#!/usr/bin/env python
"""
The main job (`make demo`): DisAlign's two stages on the embedded miniature LVIS dataset.

1. stage 1: train the baseline Mask R-CNN (R-18-FPN from scratch) and evaluate it;
2. stage 2: from its model_final.pth, train only DisAlign's alignment (alpha, beta, confidence)
   with GRW, and evaluate;
3. print Baseline vs DisAlign (AP, AP50, APr, APc, APf for bbox and segm) and write the table to
   OUTPUT_DIR/results.json.

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
CONFIGS = os.path.join("configs", "Miniature-LVIS")
STAGE1_CONFIG = os.path.join(CONFIGS, "mask_rcnn_R_18_FPN_baseline.yaml")
STAGE2_CONFIG = os.path.join(CONFIGS, "mask_rcnn_R_18_FPN_disalign.yaml")
METRICS = ("AP", "AP50", "APr", "APc", "APf")
TASKS = ("bbox", "segm")


def run_stage(name, config, output_dir, opts):
    command = [sys.executable, "train_net.py", "--config-file", config, *opts]
    command += ["OUTPUT_DIR", output_dir]
    print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO_ROOT, check=True)
    minutes = (time.perf_counter() - start) / 60
    with open(os.path.join(REPO_ROOT, output_dir, "eval_results.json")) as f:
        results = json.load(f)
    return {task: {k: results[task][k] for k in METRICS} for task in TASKS}, minutes


def format_table(results):
    rows = []
    for label, key in (("Baseline", "baseline"), ("DisAlign", "disalign")):
        rows.append([label] + [results[key][t][m] for t in TASKS for m in METRICS])
    rows.append(["delta"] + [b - a for a, b in zip(rows[0][1:], rows[1][1:])])
    headers = [""] + [f"{t} {m}" for t in TASKS for m in METRICS]
    return tabulate(rows, headers=headers, floatfmt=".1f")


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--output-dir", default=os.path.join("output", "demo"))
    parser.add_argument("--num-gpus", type=int, default=1, help="passed to train_net.py")
    args = parser.parse_args()

    stage1_dir = os.path.join(args.output_dir, "stage1")
    stage2_dir = os.path.join(args.output_dir, "stage2")
    launch = ["--num-gpus", str(args.num_gpus)]
    start = time.perf_counter()
    try:
        baseline, stage1_minutes = run_stage(
            "Stage 1 (baseline)", STAGE1_CONFIG, stage1_dir, launch
        )
        stage2_opts = launch + ["MODEL.WEIGHTS", os.path.join(stage1_dir, "model_final.pth")]
        disalign, stage2_minutes = run_stage(
            "Stage 2 (DisAlign)", STAGE2_CONFIG, stage2_dir, stage2_opts
        )
    except subprocess.CalledProcessError as e:
        sys.exit(f"error: a stage failed with exit status {e.returncode}; see its output above")

    results = {"baseline": baseline, "disalign": disalign}
    with open(os.path.join(REPO_ROOT, args.output_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    total_minutes = (time.perf_counter() - start) / 60
    print("\nMiniature LVIS val, Mask R-CNN R-18-FPN (AP as lvis-api reports it, 0-100):\n")
    print(format_table(results))
    print(
        f"\nstage 1 {stage1_minutes:.1f} min, stage 2 {stage2_minutes:.1f} min, "
        f"total {total_minutes:.1f} min; table written to "
        f"{os.path.join(args.output_dir, 'results.json')}"
    )


if __name__ == "__main__":
    main()
