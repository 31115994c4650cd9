#!/usr/bin/env python
"""
DisAlign beside the decoupled long-tail baselines, all from the same stage-1 model.

    python tools/compare_methods.py --task classification            # one stage-1 seed
    python tools/compare_methods.py --task classification --seeds 3  # mean and std over 3 seeds

For each seed:
1. stage 1: the demo's model (output/demo-cls/stage1, the SEED of its config; other seeds: those
   of ``run_demo.py --seeds``, output/demo-cls/spread/seed<S>-threads<T>/stage1) when its
   config.yaml equals what the stage-1 config gives now, else trained by train_net.py under
   OUTPUT_DIR/seed<S>/stage1; every run with --threads torch threads (default: the demos' 2);
2. the trained stage-2 methods, each a train_net.py run of its config from that model: DisAlign,
   cRT (classifier re-trained alone, class-balanced sampling), LWS (one scale per class,
   class-balanced sampling);
3. the post-hoc methods on the frozen stage-1 model, no training: tau-normalisation and post-hoc
   logit adjustment, tau chosen on the config's held-out MODEL.DECOUPLED.TUNE_DATASET (never the
   reported split), and NCM. The trunk's features of the train, held-out and test images are
   computed once and shared by the three; the logits come from the model's own
   ``classify_features`` with the config's post-hoc classifier.

Prints top-1 / Many / Medium / Few per method (with --seeds N > 1: mean +- std over the seeds),
writes OUTPUT_DIR/results.json, one entry per method (per-seed values, tuned tau included), and
draws the four numbers of every method into OUTPUT_DIR/groups.png.
Trailing KEY VALUE pairs are passed to every train_net.py run (e.g. SOLVER.MAX_ITER 10 for a
quick check); stage 1 is then trained under OUTPUT_DIR, never taken from the demo.

    python tools/compare_methods.py --tune configs/ImageNet-LT/R_50_90e_tau_norm.yaml

chooses tau of any post-hoc config on its MODEL.DECOUPLED.TUNE_DATASET (its MODEL.WEIGHTS, KEY
VALUE overrides after it) and prints it, to evaluate with train_net.py --eval-only
MODEL.DECOUPLED.TAU <tau>.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
from tabulate import tabulate

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))

from run_demo import DEMO_THREADS  # noqa: E402
from run_demo import flatten  # noqa: E402
from run_demo import run_stage  # noqa: E402
from run_demo import TASKS as DEMO_TASKS  # noqa: E402

METRICS = ("top1", "many", "medium", "few")
COLUMNS = ("top-1", "Many", "Medium", "Few")

TASKS = {
    "classification": {
        "demo": DEMO_TASKS["classification"],
        "stage1": "configs/Miniature-LT/resnet18_baseline.yaml",
        "trained": {
            "DisAlign": "configs/Miniature-LT/resnet18_disalign.yaml",
            "cRT": "configs/Miniature-LT/resnet18_crt.yaml",
            "LWS": "configs/Miniature-LT/resnet18_lws.yaml",
        },
        "post_hoc": {
            "tau-norm": "configs/Miniature-LT/resnet18_tau_norm.yaml",
            "Logit adj.": "configs/Miniature-LT/resnet18_logit_adjustment.yaml",
            "NCM": "configs/Miniature-LT/resnet18_ncm.yaml",
        },
        "output": "output/compare-classification",
        "title": "Miniature long-tailed classification test, ResNet-18 (top-1 accuracy, %)",
    }
}


def load_config(config_file: str, opts: Sequence[str] = ()):
    from detectron2.config import get_cfg

    from disalign import add_disalign_config

    cfg = get_cfg()
    add_disalign_config(cfg)
    cfg.merge_from_file(os.path.join(REPO_ROOT, config_file))
    cfg.merge_from_list(list(opts))
    return cfg


def changed_keys(dumped_config: str, expected) -> List[str]:
    """
    The config keys whose value in a run's dumped ``config.yaml`` differs from ``expected`` (a
    CfgNode), OUTPUT_DIR aside; every key when the file is missing.
    """
    if not os.path.isfile(os.path.join(REPO_ROOT, dumped_config)):
        return ["config (no config.yaml)"]
    # through JSON: YAML gives lists where the defaults hold tuples
    used, expected = (
        flatten(json.loads(json.dumps(cfg)), separator=".")
        for cfg in (load_config(dumped_config), expected)
    )
    keys = sorted((set(used) | set(expected)) - {"OUTPUT_DIR"})
    return [k for k in keys if used.get(k) != expected.get(k)]


def run_train_net(name: str, config: str, output_dir: str, opts: Sequence[str], threads: int):
    """One train_net.py run with ``threads`` torch threads; returns its eval_results.json."""
    return run_stage(name, config, output_dir, list(opts), threads)[0]


def stage1_model(
    task: Dict, seed: int, output_dir: str, opts: Sequence[str], threads: int
) -> Tuple[str, Dict]:
    """
    The stage-1 model of ``seed`` (trained if missing) and its evaluation: without ``opts``, the
    demo's own (its config's SEED: OUTPUT/stage1; another seed: OUTPUT/spread/seed<S>-threads<T>/
    stage1, as ``run_demo.py --seeds`` trains them) if trained with the current config, else
    OUTPUT_DIR/seed<seed>/stage1.
    """
    demo_output = task["demo"]["output"]
    own = os.path.join(output_dir, f"seed{seed}", "stage1")
    spread = os.path.join(demo_output, "spread", f"seed{seed}-threads{threads}", "stage1")
    if opts:
        candidates = [own]
    elif seed == load_config(task["stage1"]).SEED and threads == DEMO_THREADS:
        candidates = [os.path.join(demo_output, "stage1"), spread]
    else:
        candidates = [own, spread]
    expected = load_config(task["stage1"], ["SEED", str(seed), *opts])
    for directory in candidates:
        weights = os.path.join(directory, "model_final.pth")
        results_file = os.path.join(REPO_ROOT, directory, "eval_results.json")
        if not (os.path.isfile(os.path.join(REPO_ROOT, weights)) and os.path.isfile(results_file)):
            continue
        changed = changed_keys(os.path.join(directory, "config.yaml"), expected)
        if changed:
            print(f"\n=== Stage 1 (seed {seed}): not reusing {weights}, trained with another "
                  f"{', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''}", flush=True)
            continue
        print(f"\n=== Stage 1 (seed {seed}): reusing {weights}", flush=True)
        with open(results_file) as f:
            return weights, json.load(f)
    directory = own
    weights = os.path.join(directory, "model_final.pth")
    opts = ["--num-gpus", "1", "SEED", str(seed), *opts]
    return weights, run_train_net(
        f"Stage 1 (seed {seed})", task["stage1"], directory, opts, threads
    )


def extract_features(cfg, model, dataset_name: str, batch_size: int = 256):
    """
    The model's pooled trunk features of a registered dataset's images, read as the test set is.

    Returns:
        Tensor (N, D) and Tensor (N,) of labels.
    """
    import torch
    from detectron2.data import DatasetCatalog
    from torch.utils.data import DataLoader

    from disalign.data import ClassificationDatasetMapper

    mapper = ClassificationDatasetMapper(cfg, False)
    records = DatasetCatalog.get(dataset_name)
    loader = DataLoader(records, batch_size=batch_size, collate_fn=lambda b: [mapper(r) for r in b])
    features, labels = [], []
    model.eval()
    with torch.no_grad():
        for batch in loader:
            features.append(model.features(model.preprocess(batch)))
            labels.extend(x["label"] for x in batch)
    return torch.cat(features), torch.as_tensor(labels)


def accuracies(model, features, labels, train_counts) -> Dict[str, float]:
    """top-1 / Many / Medium / Few of ``model.classify_features`` on features (N, D)."""
    import torch

    from disalign.evaluation.classification import group_accuracies

    with torch.no_grad():
        predictions = model.classify_features(features).argmax(dim=1)
    return group_accuracies(labels.tolist(), predictions.tolist(), train_counts)


def choose_tau(
    cfg, model, held_out: Callable[[str], Tuple], train_counts
) -> Tuple[float, Dict[str, float]]:
    """
    tau of the model's post-hoc classifier with the largest top-1 on MODEL.DECOUPLED.TUNE_DATASET
    (balanced held-out split; the first of MODEL.DECOUPLED.TAU_GRID on ties). Reads nothing but
    that split, through ``held_out(name)`` -> (features (N, D), labels (N,)).

    Returns:
        the chosen tau, and the held-out top-1 of each tau of the grid.
    """
    d = cfg.MODEL.DECOUPLED
    if not d.TUNE_DATASET:
        raise ValueError(
            "MODEL.DECOUPLED.TUNE_DATASET is empty: no held-out split to choose tau on"
        )
    if d.TUNE_DATASET in cfg.DATASETS.TEST or d.TUNE_DATASET in cfg.DATASETS.TRAIN:
        raise ValueError(
            f"MODEL.DECOUPLED.TUNE_DATASET '{d.TUNE_DATASET}' is a reported or training split "
            f"(DATASETS.TEST {tuple(cfg.DATASETS.TEST)}, DATASETS.TRAIN "
            f"{tuple(cfg.DATASETS.TRAIN)}); tau must be chosen on a held-out split"
        )
    features, labels = held_out(d.TUNE_DATASET)
    scores = {}
    for tau in d.TAU_GRID:
        model.post_hoc.tau = float(tau)
        scores[float(tau)] = accuracies(model, features, labels, train_counts)["top1"]
    best = max(scores, key=lambda tau: (scores[tau], -list(scores).index(tau)))
    model.post_hoc.tau = best
    return best, scores


def post_hoc_results(
    config: str, weights: str, seed: int, features_of: Callable[[str], Tuple]
) -> Dict[str, float]:
    """
    One post-hoc method of ``config`` on the stage-1 ``weights``: tau chosen on the held-out
    split first (tau methods), then evaluated on DATASETS.TEST. ``features_of(name)`` gives a
    dataset's (features, labels) of the frozen stage-1 trunk.
    """
    import torch
    from detectron2.modeling import build_model

    from disalign.engine.checkpoint import SafeDetectionCheckpointer
    from disalign.modeling.decoupled import class_mean_features
    from disalign.modeling.grw import training_class_counts

    cfg = load_config(config, ["MODEL.WEIGHTS", weights, "SEED", str(seed)])
    model = build_model(cfg)
    SafeDetectionCheckpointer(model).load(os.path.join(REPO_ROOT, weights))
    model.eval()
    train_names = tuple(cfg.DATASETS.TRAIN)
    train_counts = training_class_counts(
        train_names, cfg.MODEL.IMAGE_CLASSIFIER.NUM_CLASSES, "images"
    )
    result = {}
    if model.post_hoc.method == "ncm":
        features, labels = zip(*(features_of(name) for name in train_names))
        total = class_mean_features(
            torch.cat(features), torch.cat(labels), cfg.MODEL.IMAGE_CLASSIFIER.NUM_CLASSES
        )
        model.post_hoc.set_class_means(total["sums"], total["counts"])
    else:
        tau, scores = choose_tau(cfg, model, features_of, train_counts)
        result.update(tau=tau, held_out_top1=scores)
    (test_name,) = cfg.DATASETS.TEST
    result.update(accuracies(model, *features_of(test_name), train_counts))
    return result


def tune(config: str, opts: Sequence[str]) -> float:
    """Choose and print tau of the post-hoc ``config`` on its held-out split."""
    import torch
    from detectron2.modeling import build_model

    from disalign.engine.checkpoint import SafeDetectionCheckpointer
    from disalign.modeling.grw import training_class_counts

    cfg = load_config(config, opts)
    model = build_model(cfg)
    SafeDetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    if model.post_hoc is None or model.post_hoc.method == "ncm":
        raise ValueError(f"{config}: MODEL.DECOUPLED.POST_HOC has no tau to choose")
    counts = training_class_counts(
        tuple(cfg.DATASETS.TRAIN), cfg.MODEL.IMAGE_CLASSIFIER.NUM_CLASSES, "images"
    )
    with torch.no_grad():
        tau, scores = choose_tau(cfg, model, lambda n: extract_features(cfg, model, n), counts)
    for value, top1 in scores.items():
        print(f"tau {value:g}: top-1 {top1:.2f} on {cfg.MODEL.DECOUPLED.TUNE_DATASET}")
    print(f"chosen: MODEL.DECOUPLED.TAU {tau:g}")
    return tau


def compare(
    task: Dict, seed: int, output_dir: str, opts: Sequence[str], threads: int
) -> Dict[str, Dict]:
    """Every method's results for one stage-1 seed; ``opts`` go to every train_net.py run."""
    import torch
    from detectron2.modeling import build_model

    from disalign.engine.checkpoint import SafeDetectionCheckpointer

    weights, stage1 = stage1_model(task, seed, output_dir, opts, threads)
    results = {"Joint (stage 1)": dict(stage1["classification"])}
    for method, config in task["trained"].items():
        directory = os.path.join(output_dir, f"seed{seed}", method.lower())
        run_opts = ["--num-gpus", "1", "MODEL.WEIGHTS", weights, "SEED", str(seed), *opts]
        run = run_train_net(method, config, directory, run_opts, threads)
        results[method] = dict(run["classification"])

    print(f"\n=== Post-hoc methods (seed {seed}) on {weights}", flush=True)
    start = time.perf_counter()
    cfg = load_config(task["stage1"], ["MODEL.WEIGHTS", weights])
    trunk = build_model(cfg)
    SafeDetectionCheckpointer(trunk).load(os.path.join(REPO_ROOT, weights))
    torch.set_grad_enabled(False)
    cache = {}

    def features_of(name):
        if name not in cache:
            cache[name] = extract_features(cfg, trunk, name)
        return cache[name]

    for method, config in task["post_hoc"].items():
        results[method] = post_hoc_results(config, weights, seed, features_of)
    torch.set_grad_enabled(True)
    print(f"post-hoc methods: {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    return results


def summarize(per_seed: List[Dict[str, Dict]], seeds: Sequence[int]) -> Dict[str, Dict]:
    """One entry per method: mean and std of each metric over the seeds, and per-seed values."""
    summary = {}
    for method in per_seed[0]:
        runs = [results[method] for results in per_seed]
        entry = {"seeds": list(seeds)}
        for metric in METRICS:
            values = np.array([run[metric] for run in runs], dtype=float)
            entry[metric] = float(values.mean())
            entry[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            entry[f"{metric}_per_seed"] = values.tolist()
        if "tau" in runs[0]:
            entry["tau_per_seed"] = [run["tau"] for run in runs]
            entry["held_out_top1_per_seed"] = [run["held_out_top1"] for run in runs]
        summary[method] = entry
    return summary


def plot_groups(summary: Dict[str, Dict], title: str, path: str):
    """
    One group of bars per metric (top-1 and each frequency group), one bar per method: the mean
    over the seeds, with the standard deviation as an error bar. Written to ``path`` (PNG);
    returns the figure's axes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    methods = list(summary)
    width = 0.8 / len(methods)
    fig = Figure(figsize=(9, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, method in enumerate(methods):
        entry = summary[method]
        positions = np.arange(len(METRICS)) + (i - (len(methods) - 1) / 2) * width
        means = [entry[m] for m in METRICS]
        stds = [entry[f"{m}_std"] for m in METRICS]
        ax.bar(positions, means, width, yerr=stds, capsize=2, label=method)
    ax.set_xticks(np.arange(len(METRICS)))
    ax.set_xticklabels(COLUMNS)
    ax.set_ylabel("accuracy (%)")
    seeds = summary[methods[0]]["seeds"]
    ax.set_title(f"{title}\nmean and std over stage-1 seeds {seeds}", fontsize=9)
    ax.legend(fontsize=7, ncol=len(methods), loc="lower center", bbox_to_anchor=(0.5, -0.3))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return ax


def format_table(summary: Dict[str, Dict], num_seeds: int) -> str:
    rows = []
    for method, entry in summary.items():
        if num_seeds > 1:
            cells = [f"{entry[m]:.1f} +- {entry[m + '_std']:.1f}" for m in METRICS]
        else:
            cells = [f"{entry[m]:.1f}" for m in METRICS]
        taus = entry.get("tau_per_seed")
        rows.append([method, *cells, ", ".join(f"{t:g}" for t in taus) if taus else ""])
    return tabulate(rows, headers=["", *COLUMNS, "tau (held-out)"], disable_numparse=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="classification")
    parser.add_argument("--seeds", type=int, default=1, help="stage-1 seeds: 1, 2, ..., N")
    parser.add_argument(
        "--threads",
        type=int,
        default=DEMO_THREADS,
        help=f"torch threads of each run (default {DEMO_THREADS}, as the demos)",
    )
    parser.add_argument("--output-dir", help="default: output/compare-classification")
    parser.add_argument("--tune", metavar="CONFIG", help="only choose tau of a post-hoc config")
    parser.add_argument("opts", nargs="*", help="KEY VALUE pairs for every train_net.py run")
    args = parser.parse_args()
    if args.tune:
        try:
            tune(args.tune, args.opts)
        except ValueError as e:
            sys.exit(f"error: {e}")
        return
    if args.seeds < 1 or args.threads < 1:
        parser.error("--seeds and --threads must be at least 1")
    task = TASKS[args.task]
    output_dir = args.output_dir or task["output"]
    seeds = list(range(1, args.seeds + 1))

    start = time.perf_counter()
    try:
        import torch

        torch.set_num_threads(args.threads)  # the post-hoc methods, in this process
        per_seed = [compare(task, seed, output_dir, args.opts, args.threads) for seed in seeds]
    except subprocess.CalledProcessError as e:
        sys.exit(f"error: a run failed with exit status {e.returncode}; see its output above")
    summary = summarize(per_seed, seeds)
    os.makedirs(os.path.join(REPO_ROOT, output_dir), exist_ok=True)
    results_file = os.path.join(output_dir, "results.json")
    with open(os.path.join(REPO_ROOT, results_file), "w") as f:
        json.dump(summary, f, indent=2)
    plot_file = os.path.join(output_dir, "groups.png")
    plot_groups(summary, task["title"], os.path.join(REPO_ROOT, plot_file))
    minutes = (time.perf_counter() - start) / 60
    cpu_minutes = sum(
        usage.ru_utime + usage.ru_stime
        for usage in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    ) / 60
    over = f"mean +- std over stage-1 seeds {seeds}" if len(seeds) > 1 else f"stage-1 seed {seeds}"
    print(f"\n{task['title']}, {over}:\n")
    print(format_table(summary, len(seeds)))
    print(
        f"\ntotal {minutes:.1f} min ({cpu_minutes:.1f} CPU min, all processes); written to "
        f"{results_file} and {plot_file}"
    )


if __name__ == "__main__":
    main()
