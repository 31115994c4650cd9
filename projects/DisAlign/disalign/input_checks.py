# -*- coding: utf-8 -*-
"""
Checks of a user's inputs that fail early, with one line that names the problem, before anything
is written to the output directory.
"""

import contextlib
import json
import math
import os
import re
import tempfile
from typing import Dict, List, Sequence

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

from .config import (
    ALIGNMENT_STAGE_TRAINABLE_CHOICES,
    CLS_HEAD_CHOICES,
    CONFIDENCE_NORM_CHOICES,
    COUNT_BY_CHOICES,
    LVIS_EVAL_BACKENDS,
    REDUCTION_CHOICES,
    class_count_key,
)

__all__ = [
    "InputError",
    "check_device",
    "check_inputs",
    "check_training_records",
    "dataset_loading_errors",
    "dataset_problems",
]

_REMOTE_PREFIXES = ("detectron2://", "http://", "https://", "s3://", "manifold://")


class InputError(ValueError):
    """A problem with the user's inputs (config, files, datasets), reported in one line."""


def check_inputs(cfg, *, training: bool):
    """
    Check that the files and datasets ``cfg`` refers to exist.

    Args:
        cfg: a detectron2 config.
        training (bool): whether the config is about to be trained (else only evaluated).

    Raises:
        InputError: for the first problem found.
    """
    _check_disalign_keys(cfg.MODEL.DISALIGN)
    if cfg.TEST.LVIS_EVAL_BACKEND not in LVIS_EVAL_BACKENDS:
        raise InputError(
            f"TEST.LVIS_EVAL_BACKEND must be one of {', '.join(LVIS_EVAL_BACKENDS)}, "
            f"got '{cfg.TEST.LVIS_EVAL_BACKEND}'"
        )
    segmentation = cfg.MODEL.META_ARCHITECTURE == "DisAlignSemanticSegmentor"
    if cfg.MODEL.DISALIGN.GRW.COUNT_BY == "pixels" and not segmentation:
        raise InputError(
            "MODEL.DISALIGN.GRW.COUNT_BY 'pixels' is for semantic segmentation; detectors and "
            "classifiers count 'images' or 'instances'"
        )
    _check_output_dir(cfg.OUTPUT_DIR)
    from .data.builtin import DATASETS_ROOT, DEFAULT_DATASETS_ROOT  # (it imports this module)

    # the default may be missing: the miniatures are made there when loaded
    if DATASETS_ROOT != DEFAULT_DATASETS_ROOT and not os.path.isdir(
        os.path.expanduser(DATASETS_ROOT)
    ):
        raise InputError(f"DETECTRON2_DATASETS={DATASETS_ROOT} is not a directory")
    weights = cfg.MODEL.WEIGHTS
    if weights and not weights.startswith(_REMOTE_PREFIXES) and not os.path.isfile(weights):
        raise InputError(f"MODEL.WEIGHTS: checkpoint file '{weights}' does not exist")
    names = list(cfg.DATASETS.TEST) + (list(cfg.DATASETS.TRAIN) if training else [])
    for name in names:
        _check_dataset(name)
    from .engine.checkpoint import check_weights  # (it imports this module)

    check_weights(cfg)
    _check_dataset_classes(cfg, names)


def _check_disalign_keys(d):
    for key, value, choices in (
        ("CLS_HEAD", d.CLS_HEAD, CLS_HEAD_CHOICES),
        ("GRW.COUNT_BY", d.GRW.COUNT_BY, COUNT_BY_CHOICES),
        ("GRW.REDUCTION", d.GRW.REDUCTION, REDUCTION_CHOICES),
        ("CONFIDENCE_NORM", d.CONFIDENCE_NORM, CONFIDENCE_NORM_CHOICES),
        (
            "ALIGNMENT_STAGE_TRAINABLE",
            d.ALIGNMENT_STAGE_TRAINABLE,
            ALIGNMENT_STAGE_TRAINABLE_CHOICES,
        ),
    ):
        if value not in choices:
            raise InputError(f"MODEL.DISALIGN.{key} must be one of {choices}, got '{value}'")
    if not d.GRW.RHO >= 0:  # also catches NaN
        raise InputError(f"MODEL.DISALIGN.GRW.RHO must be >= 0, got {d.GRW.RHO}")
    init = d.CONFIDENCE_WEIGHT_INIT
    if init is not None and (
        isinstance(init, bool) or not isinstance(init, (int, float)) or not math.isfinite(init)
    ):
        raise InputError(
            "MODEL.DISALIGN.CONFIDENCE_WEIGHT_INIT must be None (N(0, 0.01) init) or a finite "
            f"number, got {init!r}"
        )
    if d.ALIGNMENT_STAGE and not d.CALIBRATION and d.ALIGNMENT_STAGE_TRAINABLE == "alignment":
        raise InputError(
            "MODEL.DISALIGN.ALIGNMENT_STAGE has nothing to train with CALIBRATION off; set "
            'CALIBRATION True, or ALIGNMENT_STAGE_TRAINABLE "classifier" to re-train the classifier'
        )


def _check_output_dir(path):
    """OUTPUT_DIR must exist as a writable directory, or be creatable."""
    if not path:
        return
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise InputError(f"OUTPUT_DIR '{path}' cannot be created: '{existing}' is not a directory")
    try:  # a real write: permission bits do not tell for root or read-only file systems
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise InputError(f"OUTPUT_DIR '{path}' is not writable ({e.strerror})") from None


def _check_dataset_classes(cfg, names: Sequence[str]):
    """The config's class count must be each registered dataset's (its metadata's class list)."""
    key_name, num_classes = class_count_key(cfg)
    segmentation = cfg.MODEL.META_ARCHITECTURE == "DisAlignSemanticSegmentor"
    field = "stuff_classes" if segmentation else "thing_classes"
    for name in names:
        metadata = MetadataCatalog.get(name)
        count = metadata.get("num_classes", None)
        if count is None and metadata.get(field, None) is not None:
            count = len(metadata.get(field))
        if count is not None and count != num_classes:
            raise InputError(
                f"{key_name}={num_classes}, but dataset '{name}' has {count} classes; set "
                f"{key_name} {count}"
            )


def dataset_problems(name: str) -> List[str]:
    """
    Every problem that keeps the registered dataset ``name`` from loading (missing annotation
    file, missing image directory), one line each; empty if there is none.
    """
    if name not in DatasetCatalog.list():
        registered = ", ".join(n for n in DatasetCatalog.list() if "lvis" in n)
        return [f"dataset '{name}' is not registered (registered LVIS datasets: {registered})"]
    metadata = MetadataCatalog.get(name)
    if metadata.get("generated_on_demand", False):
        return []  # made by the project the first time it is loaded
    from .data.builtin import DATASETS_ROOT  # (it imports this module)

    problems = []
    for key, kind, exists in (
        ("json_file", "annotation file", os.path.isfile),
        ("image_root", "image directory", os.path.isdir),
        ("sem_seg_root", "label directory", os.path.isdir),
    ):
        path = metadata.get(key, None)
        if path is not None and not exists(path):
            problems.append(
                f"dataset '{name}': {kind} '{path}' does not exist (datasets are read from "
                f"DETECTRON2_DATASETS={DATASETS_ROOT}; see datasets/README.md)"
            )
    return problems


def _check_dataset(name):
    problems = dataset_problems(name)
    if problems:
        raise InputError(problems[0])


@contextlib.contextmanager
def dataset_loading_errors(names: Sequence[str]):
    """
    Within: a dataset whose annotation file is not valid JSON, or whose annotations have a
    category outside its category list (detectron2 asserts it), raises InputError naming it.
    """
    try:
        yield
    except AssertionError as e:
        if "category_id" not in str(e):
            raise
        raise InputError(f"datasets {tuple(names)}: {e}") from None
    except json.JSONDecodeError as e:
        for name in names:
            path = MetadataCatalog.get(name).get("json_file", None)
            if path is None or not os.path.isfile(path):
                continue
            try:
                with open(path) as f:
                    json.load(f)
            except json.JSONDecodeError as bad:
                raise InputError(
                    f"dataset '{name}': annotation file '{path}' is not valid JSON ({bad})"
                ) from None
        raise InputError(f"a dataset of {tuple(names)} is not valid JSON ({e})") from None


def check_training_records(records: Sequence[Dict], num_classes: int, names: Sequence[str]):
    """
    The loaded training records must name existing image files, and every instance annotation
    must have a category index in [0, num_classes).
    """
    for record in records:
        if not os.path.isfile(record["file_name"]):
            raise InputError(
                f"datasets {tuple(names)}: image file '{record['file_name']}' does not exist"
            )
        for annotation in record.get("annotations", ()):
            category = annotation.get("category_id", 0)
            if not 0 <= category < num_classes:
                raise InputError(
                    f"datasets {tuple(names)}: image '{record['file_name']}' has an annotation "
                    f"with an invalid category_id={category} ({num_classes} classes)"
                )


def check_device(device: str, num_gpus: int):
    """A CUDA ``device`` needs ``num_gpus`` GPUs that this torch build has kernels for."""
    if not device.startswith("cuda"):
        return
    build = f"torch {torch.__version__}, CUDA {torch.version.cuda}"
    if torch.version.cuda is None or not torch.cuda.is_available():
        raise InputError(
            f"MODEL.DEVICE is '{device}' but torch finds no usable GPU ({build}; a missing GPU, or "
            f"an NVIDIA driver too old for this CUDA); set MODEL.DEVICE cpu, or see "
            f"docs/install.md, 'On a GPU machine'"
        )
    if torch.cuda.device_count() < num_gpus:
        raise InputError(
            f"--num-gpus {num_gpus} but torch sees {torch.cuda.device_count()} GPU(s) ({build})"
        )
    archs = torch.cuda.get_arch_list()  # e.g. ["sm_75", "sm_80", ...]; "compute_XY" is PTX
    built = [re.fullmatch(r"(sm|compute)_(\d+)(\d)[a-z]?", a) for a in archs]
    built = [(m[1], int(m[2]), int(m[3])) for m in built if m]
    for index in range(max(num_gpus, 1)):
        major, minor = torch.cuda.get_device_capability(index)
        # a cubin runs on GPUs of its major version and a newer minor one; PTX on any newer GPU
        if not any(
            (kind == "sm" and M == major and m <= minor)
            or (kind == "compute" and (M, m) <= (major, minor))
            for kind, M, m in built
        ):
            name = torch.cuda.get_device_name(index)
            raise InputError(
                f"GPU {index} ({name}, compute capability {major}.{minor}) is not supported by "
                f"{build}, built for {' '.join(archs)}; install a torch build for it "
                f"(make install TORCH_INDEX=..., see docs/install.md) or set MODEL.DEVICE cpu"
            )
