#!/usr/bin/env python
"""
What a DisAlign model learned in its alignment stage, as one PNG:

    python tools/plot_calibration.py --config-file CFG [--output PNG] \
        [--max-images N] [--dataset NAME] MODEL.WEIGHTS W [KEY VALUE ...]

The options may come before, between or after the KEY VALUE config overrides. The PNG goes to
OUTPUT_DIR/calibration.png unless --output names another file. The confidences come from the
first --max-images images of the dataset (default 300: with the LVIS configs' 1000 proposals per
image, 300,000 values; 0 runs over all of it, which for LVIS val's 5,000 images takes as long as
an inference pass).

* top: the magnitude alpha_j and the margin beta_j of every class j, the classes sorted by their
  training count (most frequent first; the counts GRW uses, MODEL.DISALIGN.GRW.COUNT_BY), with the
  rare / common / frequent bands shaded: the LVIS categories' own ``frequency`` where the training
  set has one, else LVIS' rule on the training counts (rare: 1-10, common: 11-100, frequent: >100);
* bottom: the histogram of the input-aware confidence sigma(w . x + b) over the validation set
  (the first of DATASETS.TEST, or --dataset): one value per proposal of the detector (per image of
  a classifier, per output pixel of a segmentor), ``DistributionAlignment.input_confidence`` of
  the features each alignment reads.

The config is read as train_net.py reads it (``disalign.engine.build_config``, its checks
included); the weights are loaded with the project's safe DetectionCheckpointer. A model with
several alignments (the cascade's three stages) gets one curve and one histogram per alignment.
"""

import argparse
import json
import os
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "projects", "DisAlign"))
from lvis_fast import lvis_frequency  # noqa: E402 (after the path)

# images of the dataset whose confidences the histogram shows, by default
DEFAULT_MAX_IMAGES = 300
BAND_NAMES = {"r": "rare", "c": "common", "f": "frequent"}
BAND_COLORS = {"r": "#f4c7c3", "c": "#fce8b2", "f": "#b7e1cd"}
# what one confidence value belongs to, per meta architecture
CONFIDENCE_UNITS = {
    "DisAlignRCNN": "proposals",
    "DisAlignImageClassifier": "images",
    "DisAlignSemanticSegmentor": "pixels",
}


@dataclass
class CalibrationData:
    """
    Everything the plot shows. K: number of classes; P: number of confidence values.

    Attributes:
        order: (K,) class indices, most frequent in training first.
        class_names: the K names, in that order.
        counts: (K,) training counts, in that order.
        count_by (str): what was counted ("images", "instances" or "pixels").
        bands: K of "r", "c", "f" in that order, or None when not known.
        alpha, beta: per alignment module name, (K,) arrays in that order (alpha 1 where the
            magnitude is not learned, beta 0 where the margin is not).
        learned: per alignment module name, whether (alpha, beta, confidence) are learned.
        confidence: per alignment module name, (P,) values of sigma(w . x + b) in [0, 1] (empty
            when the alignment has no confidence layer).
        dataset (str): the dataset the confidences come from; num_images: how many of its images.
        unit (str): what one confidence value belongs to ("proposals", ...).
    """

    order: np.ndarray
    class_names: List[str]
    counts: np.ndarray
    count_by: str
    bands: Optional[List[str]]
    alpha: Dict[str, np.ndarray]
    beta: Dict[str, np.ndarray]
    learned: Dict[str, Tuple[bool, bool, bool]]
    confidence: Dict[str, np.ndarray]
    dataset: str
    num_images: int
    unit: str


def alignment_modules(model: torch.nn.Module):
    """
    Returns:
        list[(str, DistributionAlignment)]: the model's alignments with their module names.
    """
    from disalign.modeling.layers import DistributionAlignment

    return [(n, m) for n, m in model.named_modules() if isinstance(m, DistributionAlignment)]


def frequency_order(counts: Sequence[float]) -> np.ndarray:
    """
    Args:
        counts: (K,) training counts.

    Returns:
        ndarray: (K,) class indices by decreasing count (ties: by class index).
    """
    counts = np.asarray(counts)
    return np.lexsort((np.arange(len(counts)), -counts))


def _lvis_categories(dataset_name: str):
    """The LVIS categories (dicts with "id" and maybe "frequency") of a dataset, or None."""
    from detectron2.data import MetadataCatalog

    if dataset_name.startswith("lvis_v1"):
        from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES

        return LVIS_CATEGORIES
    if dataset_name.startswith("lvis_v0.5"):
        from detectron2.data.datasets.lvis_v0_5_categories import LVIS_CATEGORIES

        return LVIS_CATEGORIES
    json_file = MetadataCatalog.get(dataset_name).get("json_file", None)
    if not json_file or not json_file.endswith(".json") or not os.path.isfile(json_file):
        return None
    with open(json_file) as f:
        return json.load(f).get("categories")


def frequency_bands(dataset_name: str, counts: Sequence[int], count_by: str) -> Optional[List[str]]:
    """
    Args:
        dataset_name: the (first) training dataset.
        counts: (K,) its training counts, by ``count_by``.

    Returns:
        list[str] or None: "r", "c" or "f" per class (in class index order): the categories'
        LVIS ``frequency`` if they all have one, else LVIS' rule on counts of images or instances
        (1-10 rare, 11-100 common, more frequent); None for pixel counts.
    """
    categories = _lvis_categories(dataset_name)
    if categories and len(categories) == len(counts):
        if all(c.get("frequency") in BAND_NAMES for c in categories):
            return [c["frequency"] for c in sorted(categories, key=lambda c: c["id"])]
    if count_by == "pixels":
        return None
    return [lvis_frequency(n) for n in counts]


def gather_alignment_parameters(model: torch.nn.Module, order: np.ndarray):
    """
    Args:
        model: a model with :class:`DistributionAlignment` modules aligning at least K logits.
        order: (K,) class indices, the order to return the values in.

    Returns:
        (dict, dict, dict): alpha and beta per alignment module name, each (K,) in ``order``;
        whether each module learns (alpha, beta, confidence).
    """
    alpha, beta, learned = {}, {}, {}
    k = len(order)
    for name, module in alignment_modules(model):
        if module.num_aligned < k:
            raise ValueError(f"{name} aligns {module.num_aligned} logits, fewer than {k} classes")
        a = module.alpha.detach().cpu().numpy() if module.alpha is not None else np.ones(k)
        b = module.beta.detach().cpu().numpy() if module.beta is not None else np.zeros(k)
        alpha[name] = np.asarray(a[:k], dtype=np.float64)[order]
        beta[name] = np.asarray(b[:k], dtype=np.float64)[order]
        learned[name] = (
            module.alpha is not None,
            module.beta is not None,
            module.confidence is not None,
        )
    return alpha, beta, learned


def collect_confidences(model: torch.nn.Module, data_loader, max_images: int = 0):
    """
    Run ``model`` (in eval mode, without autograd) over ``data_loader`` and, with a forward hook
    on every alignment, take ``input_confidence`` (sigma(w . x + b)) of the features it reads;
    nothing else is changed.

    Args:
        max_images (int): stop after this many images (0: all).

    Returns:
        (dict, int): per alignment module name, (P,) confidences (empty for an alignment without
        confidence layer); the number of images run.
    """
    values = {name: [] for name, _ in alignment_modules(model)}
    handles = []
    for name, module in alignment_modules(model):
        if module.confidence is not None:

            def hook(module, inputs, _output, name=name):  # inputs: (logits, features)
                sigma = module.input_confidence(inputs[1].detach())
                values[name].append(sigma.float().flatten().cpu())

            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    num_images = 0
    try:
        with torch.no_grad():
            for batch in data_loader:
                if max_images:
                    batch = batch[: max_images - num_images]
                model(batch)
                num_images += len(batch)
                if max_images and num_images >= max_images:
                    break
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    confidences = {
        name: torch.cat(v).numpy() if v else np.zeros(0, dtype=np.float32)
        for name, v in values.items()
    }
    return confidences, num_images


def gather(cfg, model: torch.nn.Module, dataset: Optional[str] = None, max_images: int = 0):
    """
    Collect what the plot shows from a built, loaded model.

    Args:
        cfg: the model's config.
        dataset: the dataset for the confidences (default: the first of cfg.DATASETS.TEST).
        max_images (int): use only this many of its images (0: all).

    Returns:
        CalibrationData
    """
    from detectron2.data import MetadataCatalog

    from disalign import InputError
    from disalign.config import class_count_key
    from disalign.data import build_test_loader
    from disalign.data.class_counts import training_class_counts

    if not alignment_modules(model):
        raise InputError(
            "the model has no DistributionAlignment: use a DisAlign config "
            "(MODEL.DISALIGN.CALIBRATION True)"
        )
    _, k = class_count_key(cfg)
    count_by = cfg.MODEL.DISALIGN.GRW.COUNT_BY
    counts = np.asarray(training_class_counts(cfg.DATASETS.TRAIN, k, count_by))
    order = frequency_order(counts)
    bands = frequency_bands(cfg.DATASETS.TRAIN[0], counts, count_by)
    meta = MetadataCatalog.get(cfg.DATASETS.TRAIN[0])
    names = meta.get("thing_classes", None) or meta.get("stuff_classes", None)
    names = list(names) if names and len(names) == k else [str(i) for i in range(k)]
    alpha, beta, learned = gather_alignment_parameters(model, order)
    dataset = dataset or cfg.DATASETS.TEST[0]
    confidence, num_images = collect_confidences(model, build_test_loader(cfg, dataset), max_images)
    return CalibrationData(
        order=order,
        class_names=[names[i] for i in order],
        counts=counts[order],
        count_by=count_by,
        bands=[bands[i] for i in order] if bands else None,
        alpha=alpha,
        beta=beta,
        learned=learned,
        confidence=confidence,
        dataset=dataset,
        num_images=num_images,
        unit=CONFIDENCE_UNITS.get(cfg.MODEL.META_ARCHITECTURE, "inputs"),
    )


def _runs(labels: Sequence[str]):
    """(start, end, label) of the runs of equal consecutive labels."""
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            yield start, i, labels[start]
            start = i


def plot(data: CalibrationData, output: str, title: str = "") -> None:
    """Write the two-panel PNG of ``data`` to ``output``."""
    k = len(data.order)
    fig = Figure(figsize=(min(max(8.0, 0.16 * k + 3.0), 24.0), 8.5))
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, gridspec_kw={"height_ratios": [3, 2]})
    x = np.arange(k)

    handles = []
    if data.bands:
        for start, end, band in _runs(data.bands):
            top.axvspan(start - 0.5, end - 0.5, color=BAND_COLORS[band], lw=0, zorder=0)
        handles += [
            Patch(color=BAND_COLORS[b], label=BAND_NAMES[b])
            for b in ("f", "c", "r")
            if b in data.bands
        ]
    right = top.twinx()
    styles = ["-", "--", ":", "-."]
    several = len(data.alpha) > 1
    for i, name in enumerate(data.alpha):
        suffix = f" ({name})" if several else ""
        learns_alpha, learns_beta, _ = data.learned[name]
        (line,) = top.plot(
            x, data.alpha[name], styles[i % 4], color="tab:blue", marker=".", ms=4, lw=1.2
        )
        line.set_label("magnitude alpha" + suffix + ("" if learns_alpha else ", not learned"))
        handles.append(line)
        (line,) = right.plot(
            x, data.beta[name], styles[i % 4], color="tab:red", marker=".", ms=4, lw=1.2
        )
        line.set_label("margin beta" + suffix + ("" if learns_beta else ", not learned"))
        handles.append(line)
    top.axhline(1.0, color="tab:blue", lw=0.6, alpha=0.5)
    right.axhline(0.0, color="tab:red", lw=0.6, alpha=0.5)
    top.set_ylabel("magnitude alpha", color="tab:blue")
    right.set_ylabel("margin beta", color="tab:red")
    top.set_xlim(-0.5, k - 0.5)
    top.set_xlabel(
        f"classes, most frequent first (training {data.count_by} per class: "
        f"{int(data.counts[0])} to {int(data.counts[-1])})"
    )
    if k <= 80:
        top.set_xticks(x)
        top.set_xticklabels(data.class_names, rotation=90, fontsize=7)
    top.legend(handles=handles, loc="upper left", fontsize=8, ncol=2, framealpha=0.9)
    top.set_title(title or "DisAlign: learned calibration per class")

    bins = np.linspace(0.0, 1.0, 51)
    total = 0
    for i, (name, values) in enumerate(data.confidence.items()):
        if len(values) == 0:
            continue
        total = max(total, len(values))
        label = f"{name}: " if several else ""
        bottom.hist(
            values,
            bins=bins,
            histtype="stepfilled" if not several else "step",
            alpha=0.6 if not several else 1.0,
            lw=1.2,
            label=f"{label}mean {values.mean():.3f}, median {np.median(values):.3f}",
        )
    if total:
        bottom.legend(loc="upper left", fontsize=8)
    else:
        bottom.text(0.5, 0.5, "no confidence layer: sigma = 1", ha="center", va="center")
    bottom.set_xlim(0.0, 1.0)
    bottom.set_xlabel(
        f"confidence sigma(w . x + b) on {total} {data.unit} of {data.num_images} images "
        f"of {data.dataset}"
    )
    bottom.set_ylabel(data.unit)
    fig.tight_layout()
    fig.savefig(output, dpi=100)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="a DisAlign config")
    parser.add_argument("--output", help="the PNG to write (default OUTPUT_DIR/calibration.png)")
    parser.add_argument("--dataset", help="dataset for the confidences (default DATASETS.TEST[0])")
    parser.add_argument(
        "--max-images",
        type=int,
        default=DEFAULT_MAX_IMAGES,
        help=f"images of it for the confidences (default {DEFAULT_MAX_IMAGES}; 0: all)",
    )
    parser.add_argument("opts", nargs="*", help="MODEL.WEIGHTS W, KEY VALUE ...")
    # the options anywhere, also after the overrides (argparse.REMAINDER took them for overrides)
    return parser.parse_intermixed_args(argv)


def main(argv=None) -> CalibrationData:
    """Parse ``argv``, write the PNG and return what it shows."""
    from detectron2.modeling import build_model

    from disalign import InputError
    from disalign.engine import SafeDetectionCheckpointer, build_config

    args = parse_args(argv)
    args.eval_only = True  # the config is checked as for an evaluation
    cfg = build_config(args)
    if not cfg.MODEL.WEIGHTS:
        raise InputError("MODEL.WEIGHTS: give the checkpoint of the DisAlign model to plot")
    model = build_model(cfg)
    SafeDetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    data = gather(cfg, model, args.dataset, args.max_images)
    title = f"{os.path.basename(args.config_file)}: {os.path.basename(cfg.MODEL.WEIGHTS)}"
    args.output = args.output or os.path.join(cfg.OUTPUT_DIR, "calibration.png")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    plot(data, args.output, title)
    print(
        f"wrote {args.output}: alpha and beta of {len(data.order)} classes, "
        f"{sum(len(v) for v in data.confidence.values())} confidences on {data.num_images} "
        f"images of {data.dataset}"
    )
    return data


if __name__ == "__main__":
    # before detectron2: the package imports it without the installed torch's deprecation warnings
    # of torch.jit.script (harmless: detectron2 and fvcore script small functions)
    from disalign import InputError

    try:
        main()
    except InputError as e:
        sys.exit(f"error: {e}")
