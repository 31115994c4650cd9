#!/usr/bin/env python
"""
DisAlign beside the decoupled long-tail baselines, all from the same stage-1 model.

    python tools/compare_methods.py --task classification            # one stage-1 seed
    python tools/compare_methods.py --task classification --seeds 3  # mean and std over 3 seeds
    python tools/compare_methods.py --task detection                 # miniature LVIS
    python tools/compare_methods.py --task segmentation              # miniature scene parsing

For each seed:
1. stage 1: the demo's model (output/demo-cls/stage1, output/demo/stage1, output/demo-seg/stage1,
   the SEED of its config; other seeds: those of ``run_demo.py --seeds``, <demo>/spread/
   seed<S>-threads<T>/stage1) when its config.yaml equals what the stage-1 config gives now, else
   trained by train_net.py under OUTPUT_DIR/seed<S>/stage1; every run with --threads torch
   threads (default: the demos' 2);
2. the trained stage-2 methods, each a train_net.py run of its config from that model: DisAlign,
   cRT (classifier re-trained alone, class-balanced sampling), LWS (one scale per class,
   class-balanced sampling). Segmentation has DisAlign only: cRT and LWS are not applied to it
   (the project has no segmentation configs of them);
3. the post-hoc methods on the frozen stage-1 model, no training: tau-normalisation and post-hoc
   logit adjustment, tau chosen on the config's held-out MODEL.DECOUPLED.TUNE_DATASET by the
   task's first metric (top-1, bbox AP, mIoU; the first of MODEL.DECOUPLED.TAU_GRID on ties),
   never on the reported split, then evaluated on DATASETS.TEST; and NCM (classification).
   Classification: the trunk's features of the train, held-out and test images are computed once
   and shared by the three, the logits come from the model's own ``classify_features``.
   Detection and segmentation: each config's model is built once in this process and evaluated by
   detectron2's ``inference_on_dataset`` with the config's own evaluator, once per tau of the
   grid on the held-out split (miniature_lvis_heldout, miniature_seg_heldout) and once on the
   test split (its files under OUTPUT_DIR/seed<S>/post-hoc/<config name>). While tau is tuned,
   what it does not change is computed in the first pass only (a detector's proposals and box
   features; the DeepLabV3+ decoder's features): see ``reuse_in_tuning``. A detector's masks
   are off in every post-hoc evaluation (its table is box AP): see ``inference_context``.

Prints the task's metrics per method (classification top-1 / Many / Medium / Few; detection bbox
AP / APr / APc / APf / Fixed AP / Pooled AP; segmentation mIoU / head / body / tail mIoU) and the
chosen tau (with --seeds N > 1: mean +- std over the seeds, the tau of each seed), writes
OUTPUT_DIR/results.json, one entry per method (per-seed values, tuned tau and held-out scores
included), and draws the metrics of every method into OUTPUT_DIR/groups.png.
Trailing KEY VALUE pairs are passed to every train_net.py run and post-hoc config (e.g.
SOLVER.MAX_ITER 10 for a quick check); stage 1 is then trained under OUTPUT_DIR, never taken
from the demo.

    python tools/compare_methods.py --tune configs/ImageNet-LT/R_50_90e_tau_norm.yaml
    python tools/compare_methods.py --tune configs/Miniature-LVIS/mask_rcnn_R_18_FPN_tau_norm.yaml

chooses tau of any post-hoc config (classifier, detector or segmentor) on its
MODEL.DECOUPLED.TUNE_DATASET (its MODEL.WEIGHTS, KEY VALUE overrides after it), by inference on
that split, and prints it, to evaluate with train_net.py --eval-only MODEL.DECOUPLED.TAU <tau>.
"""

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from types import SimpleNamespace
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
from tabulate import tabulate

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))

from run_demo import DEMO_THREADS  # noqa: E402
from run_demo import flatten  # noqa: E402
from run_demo import run_stage  # noqa: E402
from run_demo import TASKS as DEMO_TASKS  # noqa: E402


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


def check_tune_dataset(cfg) -> str:
    """
    MODEL.DECOUPLED.TUNE_DATASET, refused in one line when it is empty or one of DATASETS.TEST or
    DATASETS.TRAIN (tau must be chosen on a held-out split).
    """
    d, test, train = cfg.MODEL.DECOUPLED, tuple(cfg.DATASETS.TEST), tuple(cfg.DATASETS.TRAIN)
    if not d.TUNE_DATASET:
        raise ValueError(
            "MODEL.DECOUPLED.TUNE_DATASET is empty: no held-out split to choose tau on"
        )
    if d.TUNE_DATASET in test or d.TUNE_DATASET in train:
        raise ValueError(
            f"MODEL.DECOUPLED.TUNE_DATASET '{d.TUNE_DATASET}' is a reported or training split "
            f"(DATASETS.TEST {test}, DATASETS.TRAIN {train}); tau must be chosen on a held-out "
            f"split"
        )
    return d.TUNE_DATASET


def choose_tau(
    cfg, post_hoc: Sequence, evaluate: Callable[[str], float]
) -> Tuple[float, Dict[float, float]]:
    """
    tau of the model's post-hoc classifiers with the best metric on MODEL.DECOUPLED.TUNE_DATASET
    (the first of MODEL.DECOUPLED.TAU_GRID on ties). Evaluates nothing but that split.

    Args:
        post_hoc: the model's PostHocClassifier modules (several in a cascade); each tau of the
            grid is set on all of them, and the chosen one is left set.
        evaluate: dataset name -> the metric of the model, as its post-hoc classifiers are set.

    Returns:
        the chosen tau, and the held-out metric of each tau of the grid.
    """
    name = check_tune_dataset(cfg)
    if not post_hoc:
        raise ValueError("the model has no post-hoc classifier (MODEL.DECOUPLED.POST_HOC)")

    def set_tau(tau):
        for module in post_hoc:
            module.tau = tau

    scores = {}
    for tau in cfg.MODEL.DECOUPLED.TAU_GRID:
        set_tau(float(tau))
        scores[float(tau)] = float(evaluate(name))
    best = max(scores, key=lambda tau: (scores[tau], -list(scores).index(tau)))
    set_tau(best)
    return best, scores


def post_hoc_modules(model) -> List:
    """The PostHocClassifier modules of ``model`` with a tau (not NCM); refused if none."""
    from disalign.modeling.decoupled import PostHocClassifier

    modules = [m for m in model.modules() if isinstance(m, PostHocClassifier)]
    if not modules or any(m.method == "ncm" for m in modules):
        raise ValueError("MODEL.DECOUPLED.POST_HOC has no tau to choose")
    return modules


def post_hoc_results(
    config: str,
    weights: str,
    seed: int,
    features_of: Callable[[str], Tuple],
    opts: Sequence[str] = (),
) -> Dict[str, float]:
    """
    One post-hoc classification method of ``config`` on the stage-1 ``weights``: tau chosen on
    the held-out split first (tau methods), then evaluated on DATASETS.TEST. ``features_of(name)``
    gives a dataset's (features, labels) of the frozen stage-1 trunk; ``opts``: KEY VALUE pairs
    for the config.
    """
    import torch
    from detectron2.modeling import build_model

    from disalign.engine.checkpoint import SafeDetectionCheckpointer
    from disalign.modeling.decoupled import class_mean_features
    from disalign.modeling.grw import training_class_counts

    cfg = load_config(config, ["MODEL.WEIGHTS", weights, "SEED", str(seed), *opts])
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
        tau, scores = choose_tau(
            cfg,
            [model.post_hoc],
            lambda name: accuracies(model, *features_of(name), train_counts)["top1"],
        )
        result.update(tau=tau, held_out_top1=scores)
    (test_name,) = cfg.DATASETS.TEST
    result.update(accuracies(model, *features_of(test_name), train_counts))
    return result


def build_checked_config(config: str, opts: Sequence[str]):
    """The config of ``train_net.py --eval-only --config-file config opts``, checked as there."""
    from disalign.engine import build_config

    args = SimpleNamespace(config_file=config, opts=list(opts), eval_only=True, num_gpus=1)
    return build_config(args)


def _attribute(model, path: str):
    """The object at ``path`` under ``model`` ("a.b.forward"), and the last name."""
    parent, _, name = path.rpartition(".")
    for part in parent.split(".") if parent else ():
        model = getattr(model, part)
    return model, name


@contextlib.contextmanager
def replayed_outputs(model, kept: Sequence[str], skipped: Sequence[str]):
    """
    Repeated inference of ``model`` on the same images (its inputs' file names), computing what
    does not change between the passes once: in the first pass over an image, the outputs of the
    callables ``kept`` (paths under the model, e.g. "roi_heads.box_head.forward") are kept, and in
    later passes given again; the callables ``skipped``, whose outputs are read by nothing but
    kept ones, are not called then (a dict output is given as its keys, to None). Restored on
    exit.
    """
    store, current = {}, {}

    def forward_of_model(batched_inputs, *args, **kwargs):
        current["images"] = tuple(x["file_name"] for x in batched_inputs)
        outputs = original[model, "forward"](batched_inputs, *args, **kwargs)
        store.setdefault(current["images"], {})["done"] = True
        return outputs

    def replay(path, keep):
        def call(*args, **kwargs):
            images = store.setdefault(current["images"], {})
            if images.get("done"):
                return images[path]
            output = original[_attribute(model, path)](*args, **kwargs)
            images[path] = output
            if not keep:  # kept for later passes: a dict's keys only
                images[path] = dict.fromkeys(output) if isinstance(output, dict) else None
            return output

        return call

    patches = {(model, "forward"): forward_of_model}
    patches.update({_attribute(model, p): replay(p, True) for p in kept})
    patches.update({_attribute(model, p): replay(p, False) for p in skipped})
    original = {(obj, name): getattr(obj, name) for obj, name in patches}
    try:
        for (obj, name), call in patches.items():
            setattr(obj, name, call)
        yield
    finally:
        for obj, name in patches:
            delattr(obj, name)  # the class's own again


@contextlib.contextmanager
def boxes_only(model):
    """
    Detection: the mask head off (the post-hoc methods' tuning and table use box AP only; the
    mask head's work on every kept detection, up to TEST.FIXED_AP.DETS_PER_IMAGE per image, is
    most of an evaluation's time). Restored on exit.
    """
    heads = model.roi_heads
    mask_on = heads.mask_on
    try:
        heads.mask_on = False
        yield
    finally:
        heads.mask_on = mask_on


@contextlib.contextmanager
def reused_box_features(model):
    """
    Detection (Mask R-CNN), while tau is tuned (masks off, :func:`boxes_only`): the proposals and
    the box head's ROI features (R, D) of each image are computed in the first pass only
    (:func:`replayed_outputs`; the backbone and the box pooler skipped later). Memory: R x D
    floats per image. A cascade (several box heads) is left as it is.
    """
    from torch import nn

    if isinstance(model.roi_heads.box_head, nn.ModuleList):
        yield
        return
    kept = ["proposal_generator.forward", "roi_heads.box_head.forward"]
    skipped = ["backbone.forward", "roi_heads.box_pooler.forward"]
    with replayed_outputs(model, kept, skipped):
        yield


@contextlib.contextmanager
def reused_pixel_features(model):
    """
    Segmentation (DeepLabV3+ heads): while tau is tuned, the decoder's features (N, D, h, w) of
    each image, the input of the classifier, are computed in the first pass only
    (:func:`replayed_outputs`; the backbone skipped later). Memory: D x h x w floats per image. A
    head without a ``layers`` decoder (FCN) is left as it is.
    """
    if not hasattr(model.sem_seg_head, "layers"):
        yield
        return
    with replayed_outputs(model, ["sem_seg_head.layers"], ["backbone.forward"]):
        yield


def evaluation_on(cfg, model, select: Callable[[Dict], Dict]) -> Callable[..., Dict]:
    """
    ``evaluate(name, output_folder=None)``: the selected results of detectron2's
    ``inference_on_dataset`` of ``model`` on the registered dataset ``name``, with the evaluator
    train_net.py gives it (:func:`disalign.evaluation.build_evaluator`; its files, if any, in
    ``output_folder``).
    """
    from detectron2.evaluation import inference_on_dataset

    from disalign.data import build_test_loader
    from disalign.evaluation import build_evaluator

    def evaluate(name: str, output_folder: str = None) -> Dict:
        evaluator = build_evaluator(cfg, name, output_folder)
        return select(inference_on_dataset(model, build_test_loader(cfg, name), evaluator))

    return evaluate


def load_post_hoc_model(cfg):
    """The model of a post-hoc ``cfg`` with its MODEL.WEIGHTS, in eval mode, and its post-hoc
    classifiers."""
    from detectron2.modeling import build_model

    from disalign.engine.checkpoint import SafeDetectionCheckpointer

    model = build_model(cfg)
    modules = post_hoc_modules(model)
    SafeDetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    model.eval()
    return model, modules


def tune_in_process(task: Dict, cfg, model, post_hoc: Sequence) -> Tuple[float, Dict]:
    """
    :func:`choose_tau` of ``model`` (its PostHocClassifier modules ``post_hoc``) by the task's
    first metric of inference on the held-out split, inside the task's ``reuse_in_tuning``
    context (what tau does not change, computed once), if it has one.
    """
    evaluate = evaluation_on(cfg, model, task["select"])
    headline = next(iter(task["metrics"]))
    with as_reported(task, model), _context(task, "reuse_in_tuning", model):
        return choose_tau(cfg, post_hoc, lambda name: evaluate(name)[headline])


def _context(task: Dict, key: str, model):
    return task.get(key, lambda model: contextlib.nullcontext())(model)


def as_reported(task: Dict, model):
    """The task's ``inference_context`` for ``model``, in which every post-hoc evaluation runs
    (detection: :func:`boxes_only`), if it has one."""
    return _context(task, "inference_context", model)


def inference_post_hoc_results(
    task: Dict, config: str, weights: str, seed: int, output_folder: str, opts: Sequence[str] = ()
) -> Dict:
    """
    One post-hoc method of ``config`` on the stage-1 ``weights``, by inference in this process:
    tau chosen on its held-out split by the task's first metric, then the selected results on
    DATASETS.TEST (the evaluator's files in ``output_folder``). ``opts``: KEY VALUE pairs for
    the config.
    """
    opts = ["MODEL.WEIGHTS", os.path.join(REPO_ROOT, weights), "SEED", str(seed), *opts]
    cfg = build_checked_config(os.path.join(REPO_ROOT, config), opts)
    model, modules = load_post_hoc_model(cfg)
    tau, scores = tune_in_process(task, cfg, model, modules)
    (test_name,) = cfg.DATASETS.TEST
    evaluate = evaluation_on(cfg, model, task["select"])
    with as_reported(task, model):
        result = dict(evaluate(test_name, os.path.join(REPO_ROOT, output_folder)))
    result.update({"tau": tau, f"held_out_{next(iter(task['metrics']))}": scores})
    return result


def task_of(cfg) -> Dict:
    """The task whose datasets' evaluator type DATASETS.TEST has."""
    from disalign.data import dataset_kind

    kind = dataset_kind(cfg.DATASETS.TEST)
    for task in TASKS.values():
        if task["evaluator_type"] == kind:
            return task
    raise ValueError(f"no task evaluates DATASETS.TEST {tuple(cfg.DATASETS.TEST)} ({kind})")


def tune(config: str, opts: Sequence[str]) -> float:
    """Choose and print tau of the post-hoc ``config`` on its held-out split."""
    import torch

    cfg = build_checked_config(config, opts)
    task = task_of(cfg)
    check_tune_dataset(cfg)
    model, modules = load_post_hoc_model(cfg)
    with torch.no_grad():
        tau, scores = tune_in_process(task, cfg, model, modules)
    name = next(iter(task["metrics"].values()))
    for value, score in scores.items():
        print(f"tau {value:g}: {name} {score:.2f} on {cfg.MODEL.DECOUPLED.TUNE_DATASET}")
    print(f"chosen: MODEL.DECOUPLED.TAU {tau:g}")
    return tau


def shared_feature_evaluation(
    task: Dict, weights: str, seed: int, output_dir: str, opts: Sequence[str] = ()
) -> Callable[[str], Dict]:
    """
    Image classification's post-hoc methods: the frozen stage-1 trunk's features of the train,
    held-out and test images computed once and shared; each method's logits come from the model's
    own ``classify_features`` with its config's post-hoc classifier (:func:`post_hoc_results`).

    Returns:
        a function: post-hoc config -> its results (the task's metrics, tau and held-out scores).
    """
    from detectron2.modeling import build_model

    from disalign.engine.checkpoint import SafeDetectionCheckpointer

    cfg = load_config(task["stage1"], ["MODEL.WEIGHTS", weights, *opts])
    trunk = build_model(cfg)
    SafeDetectionCheckpointer(trunk).load(os.path.join(REPO_ROOT, weights))
    cache = {}

    def features_of(name):
        if name not in cache:
            cache[name] = extract_features(cfg, trunk, name)
        return cache[name]

    return lambda config: post_hoc_results(config, weights, seed, features_of, opts)


def inference_evaluation(
    task: Dict, weights: str, seed: int, output_dir: str, opts: Sequence[str] = ()
) -> Callable[[str], Dict]:
    """
    Detection's and segmentation's post-hoc methods: each config's model built once in this
    process and evaluated by inference (:func:`inference_post_hoc_results`; the test evaluation's
    files under ``output_dir``/<config name>).

    Returns:
        a function: post-hoc config -> its results (the task's metrics, tau and held-out scores).
    """
    return lambda config: inference_post_hoc_results(
        task, config, weights, seed, os.path.join(output_dir, os.path.basename(config)[:-5]), opts
    )


def compare(
    task: Dict, seed: int, output_dir: str, opts: Sequence[str], threads: int
) -> Dict[str, Dict]:
    """Every method's results for one stage-1 seed; ``opts`` go to every train_net.py run."""
    import torch

    weights, stage1 = stage1_model(task, seed, output_dir, opts, threads)
    results = {"Joint (stage 1)": task["select"](stage1)}
    for method, config in task["trained"].items():
        directory = os.path.join(output_dir, f"seed{seed}", method.lower())
        run_opts = ["--num-gpus", "1", "MODEL.WEIGHTS", weights, "SEED", str(seed), *opts]
        run = run_train_net(method, config, directory, run_opts, threads)
        results[method] = task["select"](run)

    print(f"\n=== Post-hoc methods (seed {seed}) on {weights}", flush=True)
    start = time.perf_counter()
    torch.set_grad_enabled(False)
    try:
        folder = os.path.join(output_dir, f"seed{seed}", "post-hoc")
        evaluate = task["post_hoc_evaluation"](task, weights, seed, folder, opts)
        for method, config in task["post_hoc"].items():
            results[method] = evaluate(config)
            if "tau" in results[method]:
                print(f"{method}: tau {results[method]['tau']:g}", flush=True)
    finally:
        torch.set_grad_enabled(True)
    print(f"post-hoc methods: {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    return results


def summarize(
    per_seed: List[Dict[str, Dict]], seeds: Sequence[int], metrics: Sequence[str]
) -> Dict[str, Dict]:
    """
    One entry per method: mean and std of each of ``metrics`` over the seeds (a metric the
    evaluation left undefined, None, counts as NaN), per-seed values, and the post-hoc methods'
    tau and held-out scores of each seed.
    """
    summary = {}
    for method in per_seed[0]:
        runs = [results[method] for results in per_seed]
        entry = {"seeds": list(seeds)}
        for metric in metrics:
            values = np.array(
                [np.nan if run[metric] is None else run[metric] for run in runs], dtype=float
            )
            entry[metric] = float(values.mean())
            entry[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            entry[f"{metric}_per_seed"] = values.tolist()
        for key in runs[0]:
            if key == "tau" or key.startswith("held_out_"):
                entry[f"{key}_per_seed"] = [run[key] for run in runs]
        summary[method] = entry
    return summary


def plot_groups(summary: Dict[str, Dict], task: Dict, path: str):
    """
    One group of bars per metric of ``task`` (e.g. top-1 and each frequency group), one bar per
    method: the mean over the seeds, with the standard deviation as an error bar. Written to
    ``path`` (PNG); returns the figure's axes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = list(task["metrics"])
    methods = list(summary)
    width = 0.8 / len(methods)
    fig = Figure(figsize=(max(9, 1.5 * len(metrics)), 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, method in enumerate(methods):
        entry = summary[method]
        positions = np.arange(len(metrics)) + (i - (len(methods) - 1) / 2) * width
        means = [entry[m] for m in metrics]
        stds = [entry[f"{m}_std"] for m in metrics]
        ax.bar(positions, means, width, yerr=stds, capsize=2, label=method)
    ax.set_xticks(np.arange(len(metrics)))
    ax.set_xticklabels(list(task["metrics"].values()))
    ax.set_ylabel(task["unit"])
    seeds = summary[methods[0]]["seeds"]
    ax.set_title(f"{task['title']}\nmean and std over stage-1 seeds {seeds}", fontsize=9)
    ax.legend(fontsize=7, ncol=len(methods), loc="lower center", bbox_to_anchor=(0.5, -0.3))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return ax


def format_table(summary: Dict[str, Dict], task: Dict, num_seeds: int) -> str:
    """One row per method: the task's metrics (mean +- std over several seeds), the tau of each
    seed."""
    rows = []
    for method, entry in summary.items():
        if num_seeds > 1:
            cells = [f"{entry[m]:.1f} +- {entry[m + '_std']:.1f}" for m in task["metrics"]]
        else:
            cells = [f"{entry[m]:.1f}" for m in task["metrics"]]
        taus = entry.get("tau_per_seed")
        rows.append([method, *cells, ", ".join(f"{t:g}" for t in taus) if taus else ""])
    headers = ["", *task["metrics"].values(), "tau (held-out)"]
    return tabulate(rows, headers=headers, disable_numparse=True)


def _select_lvis(results: Dict) -> Dict:
    """The bbox metrics of an LVIS evaluation (Fixed AP and Pooled AP with TEST.FIXED_AP)."""
    return dict(results["bbox"])


# Each task: its demo (where its stage-1 model is), the stage-1, trained and post-hoc configs,
# the evaluator type of its datasets, the table's metrics {key: column} (the first is the one tau
# is chosen by) and their unit, ``select`` (an evaluation's results -> {metric: value}),
# ``post_hoc_evaluation`` (task, stage-1 weights, seed, output dir, KEY VALUE pairs -> (config ->
# results)) and, optionally, ``inference_context`` (model -> the context of every post-hoc
# evaluation, e.g. detection's mask head off) and ``reuse_in_tuning`` (model -> a context in which
# repeated inference on the same images computes what tau does not change once).
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
        "evaluator_type": "classification",
        "metrics": {"top1": "top-1", "many": "Many", "medium": "Medium", "few": "Few"},
        "unit": "accuracy (%)",
        "select": DEMO_TASKS["classification"]["select"],
        "post_hoc_evaluation": shared_feature_evaluation,
    },
    "detection": {
        "demo": DEMO_TASKS["detection"],
        "stage1": "configs/Miniature-LVIS/mask_rcnn_R_18_FPN_baseline.yaml",
        "trained": {
            "DisAlign": "configs/Miniature-LVIS/mask_rcnn_R_18_FPN_disalign.yaml",
            "cRT": "configs/Miniature-LVIS/mask_rcnn_R_18_FPN_crt.yaml",
            "LWS": "configs/Miniature-LVIS/mask_rcnn_R_18_FPN_lws.yaml",
        },
        "post_hoc": {
            "tau-norm": "configs/Miniature-LVIS/mask_rcnn_R_18_FPN_tau_norm.yaml",
            "Logit adj.": "configs/Miniature-LVIS/mask_rcnn_R_18_FPN_logit_adjustment.yaml",
        },
        "output": "output/compare-detection",
        "title": "Miniature LVIS val, Mask R-CNN R-18-FPN (bbox AP as lvis-api reports it, 0-100)",
        "evaluator_type": "lvis",
        "metrics": {
            "AP": "AP",
            "APr": "APr",
            "APc": "APc",
            "APf": "APf",
            "AP-fixed": "Fixed AP",
            "AP-pooled-all": "Pooled AP",
        },
        "unit": "bbox AP",
        "select": _select_lvis,
        "post_hoc_evaluation": inference_evaluation,
        "inference_context": boxes_only,
        "reuse_in_tuning": reused_box_features,
    },
    "segmentation": {  # cRT and LWS not applied (see the module's docstring)
        "demo": DEMO_TASKS["segmentation"],
        "stage1": "configs/Miniature-Seg/deeplabv3plus_R_18_baseline.yaml",
        "trained": {"DisAlign": "configs/Miniature-Seg/deeplabv3plus_R_18_disalign.yaml"},
        "post_hoc": {
            "tau-norm": "configs/Miniature-Seg/deeplabv3plus_R_18_tau_norm.yaml",
            "Logit adj.": "configs/Miniature-Seg/deeplabv3plus_R_18_logit_adjustment.yaml",
        },
        "output": "output/compare-segmentation",
        "title": "Miniature segmentation val, DeepLabV3+ R-18 (mIoU, %)",
        "evaluator_type": "sem_seg",
        "metrics": {
            "mIoU": "mIoU",
            "mIoU_head": "head mIoU",
            "mIoU_body": "body mIoU",
            "mIoU_tail": "tail mIoU",
        },
        "unit": "mIoU (%)",
        "select": DEMO_TASKS["segmentation"]["select"],
        "post_hoc_evaluation": inference_evaluation,
        "reuse_in_tuning": reused_pixel_features,
    },
}


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
    parser.add_argument("--output-dir", help="default: output/compare-<task>")
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
    except ValueError as e:  # a post-hoc config refused (its TUNE_DATASET, its keys)
        sys.exit(f"error: {e}")
    summary = summarize(per_seed, seeds, list(task["metrics"]))
    os.makedirs(os.path.join(REPO_ROOT, output_dir), exist_ok=True)
    results_file = os.path.join(output_dir, "results.json")
    with open(os.path.join(REPO_ROOT, results_file), "w") as f:
        json.dump(summary, f, indent=2)
    plot_file = os.path.join(output_dir, "groups.png")
    plot_groups(summary, task, os.path.join(REPO_ROOT, plot_file))
    minutes = (time.perf_counter() - start) / 60
    cpu_minutes = sum(
        usage.ru_utime + usage.ru_stime
        for usage in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    ) / 60
    over = f"mean +- std over stage-1 seeds {seeds}" if len(seeds) > 1 else f"stage-1 seed {seeds}"
    print(f"\n{task['title']}, {over}:\n")
    print(format_table(summary, task, len(seeds)))
    print(
        f"\ntotal {minutes:.1f} min ({cpu_minutes:.1f} CPU min, all processes); written to "
        f"{results_file} and {plot_file}"
    )


if __name__ == "__main__":
    main()
