#!/usr/bin/env python
"""
Per-class AP against training frequency, one curve per run, as one PNG:

    python tools/plot_per_class_ap.py RUN_DIR [RUN_DIR ...] [--labels A B ...] [--output PNG] \
        [--bins N] [--dataset NAME]

A RUN_DIR is a train_net.py OUTPUT_DIR whose evaluation wrote
``inference/[<dataset>/]per_category_ap.json`` (the project's LVIS evaluator writes it: each
category's AP for boxes and masks, with its training image count). For each task (bbox, segm) a
panel shows every category's AP as a faint dot at its training image count (log scale) and, per
run, the mean AP of the categories in each of ``--bins`` bins of equal width in log10(count),
drawn at the geometric centre of the bin. All runs share the bins. The rare (1-10 training
images), common (11-100) and frequent (>100) bands that hold a category are shaded and named in
the legend. Categories without a training count, with none (count 0: nothing to place on a log
axis) or without ground truth in the evaluated set (AP null) are left out and counted in the
printed summary, where a band without a category (or without one with ground truth) reads n/a.

The PNG goes to --output, by default per_class_ap.png beside the first RUN_DIR (``make demo``:
output/demo/per_class_ap.png from output/demo/stage1 and output/demo/stage2).
"""

import argparse
import glob
import json
import math
import os
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "projects", "DisAlign"))
from lvis_fast import COMMON_MAX_IMAGES, RARE_MAX_IMAGES  # noqa: E402 (after the path)

RESULT_FILE = "per_category_ap.json"
# LVIS' frequency groups by training image count (lvis_fast's rule), as bands of the count axis
BANDS = (
    ("r", "rare", 0.5, RARE_MAX_IMAGES + 0.5),
    ("c", "common", RARE_MAX_IMAGES + 0.5, COMMON_MAX_IMAGES + 0.5),
    ("f", "frequent", COMMON_MAX_IMAGES + 0.5, math.inf),
)
BAND_COLORS = {"r": "#f4c7c3", "c": "#fce8b2", "f": "#b7e1cd"}
CURVE_COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"]
DEFAULT_BINS = 8


class PlotError(ValueError):
    """Bad input, reported in one line."""


@dataclass
class Run:
    """
    One run's per-category results. C: number of categories placed on the plot.

    Attributes:
        label (str): its name in the legend.
        path (str): the per_category_ap.json read.
        counts: (C,) training image counts (>= 1).
        ap: per task, (C,) AP on a 0-100 scale, NaN where the category has no ground truth.
        left_out (int): categories without a training image count >= 1.
    """

    label: str
    path: str
    counts: np.ndarray
    ap: Dict[str, np.ndarray]
    left_out: int


def find_result_file(run_dir: str, dataset: Optional[str] = None) -> str:
    """The per_category_ap.json of ``run_dir`` (of ``dataset`` if given)."""
    found = sorted(glob.glob(os.path.join(run_dir, "inference", "**", RESULT_FILE), recursive=True))
    if dataset is not None:
        found = [p for p in found if os.path.basename(os.path.dirname(p)) == dataset]
    if not found:
        what = f" of dataset '{dataset}'" if dataset else ""
        raise PlotError(
            f"'{run_dir}' has no inference/.../{RESULT_FILE}{what}: evaluate the run on an LVIS "
            f"dataset with train_net.py first"
        )
    if len(found) > 1:
        names = ", ".join(os.path.basename(os.path.dirname(p)) for p in found)
        raise PlotError(
            f"'{run_dir}' has results of several datasets ({names}): pick one with --dataset"
        )
    return found[0]


def load_run(path: str, label: str) -> Run:
    """Read one per_category_ap.json (see the module docstring for what is left out)."""
    try:
        with open(path) as f:
            data = json.load(f)
        categories = data["categories"]
        tasks = list(data["tasks"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PlotError(f"cannot read '{path}': {e}") from None
    kept = [c for c in categories if (c.get("train_image_count") or 0) >= 1]
    if not kept:
        raise PlotError(f"'{path}': no category has a training image count")
    ap = {
        task: np.array(
            [np.nan if c["AP"].get(task) is None else float(c["AP"][task]) for c in kept]
        )
        for task in tasks
    }
    counts = np.array([c["train_image_count"] for c in kept], dtype=np.float64)
    return Run(label, path, counts, ap, len(categories) - len(kept))


def bin_edges(runs: Sequence[Run], bins: int) -> np.ndarray:
    """(bins + 1,) edges of equal width in log10(count), spanning every run's counts."""
    low = min(r.counts.min() for r in runs)
    high = max(r.counts.max() for r in runs)
    if high == low:
        high = low * 1.0001
    return np.logspace(math.log10(low), math.log10(high), bins + 1)


def binned_ap(counts: np.ndarray, ap: np.ndarray, edges: np.ndarray):
    """
    Mean AP per bin of training counts.

    Args:
        counts: (C,) training counts; ap: (C,) AP, NaN where not measured.
        edges: (B + 1,) increasing bin edges; a count on an inner edge goes to the upper bin, the
            last bin includes its upper edge.

    Returns:
        centres (B,) the geometric centres of the bins, means (B,) the mean AP of each bin's
        measured categories (NaN for a bin without any), sizes (B,) how many that is.
    """
    index = np.clip(np.searchsorted(edges, counts, side="right") - 1, 0, len(edges) - 2)
    centres = np.sqrt(edges[:-1] * edges[1:])
    means = np.full(len(centres), np.nan)
    sizes = np.zeros(len(centres), dtype=np.int64)
    for b in range(len(centres)):
        values = ap[(index == b) & ~np.isnan(ap)]
        sizes[b] = len(values)
        if len(values):
            means[b] = values.mean()
    return centres, means, sizes


def band_sizes(run: Run) -> Dict[str, int]:
    """Number of categories of each band (r, c, f), by training count."""
    return {
        key: int(((run.counts > low) & (run.counts < high)).sum()) for key, _, low, high in BANDS
    }


def band_means(run: Run, task: str) -> Dict[str, float]:
    """Mean AP of the measured categories of each band (r, c, f), by training count."""
    result = {}
    for key, _, low, high in BANDS:
        values = run.ap[task][(run.counts > low) & (run.counts < high) & ~np.isnan(run.ap[task])]
        result[key] = float(values.mean()) if len(values) else float("nan")
    return result


def band_summary(run: Run, task: str) -> str:
    """The printed mean AP of each band, saying why where there is none."""
    means, sizes = band_means(run, task), band_sizes(run)
    parts = []
    for key, name, _, _ in BANDS:
        if not sizes[key]:
            value = "n/a (no category)"
        elif math.isnan(means[key]):
            value = "n/a (no category with ground truth)"
        else:
            value = f"{means[key]:.1f}"
        parts.append(f"{name} {value}")
    return ", ".join(parts)


def plot(runs: Sequence[Run], edges: np.ndarray, output: str, title: str = "") -> Figure:
    """Write one panel per task (the tasks all runs have) to ``output``; returns the figure."""
    tasks = [t for t in runs[0].ap if all(t in r.ap for r in runs)]
    fig = Figure(figsize=(6.4 * len(tasks), 4.8))
    FigureCanvasAgg(fig)
    low, high = edges[0] / 1.3, edges[-1] * 1.3
    # the bands that hold a category of some run: only these are shaded and in the legend
    bands = [b for b in BANDS if any(band_sizes(run)[b[0]] for run in runs)]
    for i, task in enumerate(tasks):
        ax = fig.add_subplot(1, len(tasks), i + 1)
        for key, _, band_low, band_high in bands:
            ax.axvspan(
                max(band_low, low), min(band_high, high), color=BAND_COLORS[key], alpha=0.6, lw=0
            )
        for j, run in enumerate(runs):
            color = CURVE_COLORS[j % len(CURVE_COLORS)]
            measured = ~np.isnan(run.ap[task])
            ax.scatter(run.counts[measured], run.ap[task][measured], s=9, color=color, alpha=0.3)
            centres, means, _ = binned_ap(run.counts, run.ap[task], edges)
            ok = ~np.isnan(means)
            mean = np.nanmean(run.ap[task])
            ax.plot(
                centres[ok],
                means[ok],
                "-o",
                color=color,
                lw=2,
                ms=4,
                label=f"{run.label} (mean {mean:.1f})",
            )
        ax.set_xscale("log")
        ax.set_xlim(low, high)
        ax.set_ylim(-2, 102)
        ax.set_xlabel("training images of the category (log scale)")
        ax.set_ylabel(f"{task} AP of the category")
        ax.set_title(f"{task}: per-category AP, mean per bin")
        handles, _ = ax.get_legend_handles_labels()
        handles += [Patch(color=BAND_COLORS[k], alpha=0.6, label=name) for k, name, _, _ in bands]
        ax.legend(handles=handles, fontsize=8, loc="upper left")
        ax.grid(True, which="major", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    return fig


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="train_net.py OUTPUT_DIRs")
    parser.add_argument("--labels", nargs="+", help="one per RUN_DIR (default: their names)")
    parser.add_argument("--output", help="the PNG (default: per_class_ap.png beside RUN_DIR 1)")
    parser.add_argument("--bins", type=int, default=DEFAULT_BINS, help="bins of log10(count)")
    parser.add_argument("--dataset", help="the dataset, where a run evaluated several")
    return parser.parse_args(argv)


def main(argv=None) -> List[Run]:
    """Parse ``argv``, write the PNG, print the band means, return the runs read."""
    args = parse_args(argv)
    labels = args.labels or [os.path.basename(os.path.normpath(d)) for d in args.run_dirs]
    if len(labels) != len(args.run_dirs):
        raise PlotError(f"{len(labels)} --labels for {len(args.run_dirs)} RUN_DIRs")
    if args.bins < 1:
        raise PlotError(f"--bins must be >= 1, got {args.bins}")
    runs = [
        load_run(find_result_file(d, args.dataset), label)
        for d, label in zip(args.run_dirs, labels)
    ]
    edges = bin_edges(runs, args.bins)
    output = args.output or os.path.join(
        os.path.dirname(os.path.abspath(args.run_dirs[0])), "per_class_ap.png"
    )
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    plot(runs, edges, output, title=" vs ".join(labels))
    for run in runs:
        for task in run.ap:
            print(
                f"{run.label} {task}: mean per-category AP {band_summary(run, task)} "
                f"({len(run.counts)} categories"
                f"{f', {run.left_out} without training images left out' if run.left_out else ''})"
            )
    print(f"wrote {output}")
    return runs


if __name__ == "__main__":
    try:
        main()
    except PlotError as e:
        sys.exit(f"error: {e}")
