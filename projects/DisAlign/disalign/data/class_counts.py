# -*- coding: utf-8 -*-
"""
Class counts of the registered training datasets: images, instances or pixels per class,
cached as JSON by the files they come from, for GRW's weights and the evaluators' frequency
groups (LVIS' rule: :func:`lvis_fast.lvis_frequency`).
"""

import hashlib
import json
import logging
import os
from typing import Dict, Iterable, List, Sequence

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from ..engine.file_io import write_atomically

__all__ = ["count_class_pixels", "count_class_samples", "training_class_counts"]

logger = logging.getLogger(__name__)


def count_class_samples(
    dataset_dicts: Iterable[Dict], num_classes: int, count_by: str = "images"
) -> List[int]:
    """
    Count, per class, the images that contain it (``count_by="images"``) or its annotated
    instances (``count_by="instances"``) in detectron2 dataset dicts.

    Args:
        dataset_dicts: dicts in detectron2's standard format, where
            ``annotations[i]["category_id"]`` is the contiguous class index in [0, num_classes),
            or image classification dicts with a ``label`` in [0, num_classes).
        num_classes (int): K.
        count_by (str): "images" or "instances".

    Returns:
        list[int]: K counts.
    """
    if count_by not in ("images", "instances"):
        raise ValueError(f"count_by must be 'images' or 'instances', got '{count_by}'")
    counts = [0] * num_classes
    for record in dataset_dicts:
        if "label" in record:
            classes = [record["label"]]
        else:
            classes = [ann["category_id"] for ann in record.get("annotations", ())]
        if count_by == "images":
            classes = set(classes)
        for c in classes:
            if not 0 <= c < num_classes:
                raise ValueError(
                    f"class {c} of '{record.get('file_name')}' is outside [0, {num_classes}): the "
                    "configured number of classes does not match the dataset"
                )
            counts[c] += 1
    return counts


def count_class_pixels(
    dataset_dicts: Iterable[Dict], num_classes: int, ignore_label: int = 255
) -> List[int]:
    """
    Count, per class, the labelled pixels of semantic segmentation dicts (``sem_seg_file_name``
    images of class indices; ``ignore_label`` pixels are not counted).
    """
    counts = np.zeros(num_classes, dtype=np.int64)
    for record in dataset_dicts:
        labels = np.asarray(Image.open(record["sem_seg_file_name"]), dtype=np.int64)
        labels = labels[labels != ignore_label]
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"'{record['sem_seg_file_name']}' has label {labels.max()} outside [0, "
                f"{num_classes}) that is not the ignore label {ignore_label}"
            )
        counts += np.bincount(labels, minlength=num_classes)
    return counts.tolist()


def _cache_dir() -> str:
    return os.path.expanduser(os.getenv("DISALIGN_CACHE", "~/.cache/disalign"))


def _file_fingerprint(path: str) -> str:
    stat = os.stat(path)
    return f"{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}\n"


def _cached(kind: str, name: str, fingerprint: str, num_classes: int, count):
    """
    ``count()`` (K counts), cached as JSON under $DISALIGN_CACHE (~/.cache/disalign) by
    ``fingerprint`` (the names, sizes and modification times of the files the counts come from):
    a changed file is counted again.
    """
    digest = hashlib.sha1(f"{kind}:{num_classes}:{fingerprint}".encode()).hexdigest()[:16]
    path = os.path.join(_cache_dir(), f"{kind}-{name}-{digest}.json")
    try:
        with open(path) as f:
            counts = json.load(f)
        if isinstance(counts, list) and len(counts) == num_classes:
            return counts
    except (OSError, ValueError):
        pass
    counts = count()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomically(path, lambda f: json.dump(counts, f))
    return counts


def _dataset_class_counts(name: str, num_classes: int, count_by: str) -> List[int]:
    """
    One registered dataset's counts. Pixel counts are cached by the label files; image and
    instance counts by the annotation file (``json_file`` of the dataset's metadata, as detectron2's
    COCO and LVIS registrations set it), so that a second run (stage 2 after the loader's own
    reading, --resume, the evaluator) does not load a large annotation file again.
    """
    if count_by == "pixels":
        dicts = DatasetCatalog.get(name)
        ignore_label = MetadataCatalog.get(name).get("ignore_label", 255)
        fingerprint = f"{ignore_label}:" + "".join(
            _file_fingerprint(record["sem_seg_file_name"]) for record in dicts
        )
        return _cached(
            "pixel_counts",
            name,
            fingerprint,
            num_classes,
            lambda: count_class_pixels(dicts, num_classes, ignore_label),
        )
    json_file = MetadataCatalog.get(name).get("json_file", None)
    if not json_file or not os.path.isfile(json_file):
        return count_class_samples(DatasetCatalog.get(name), num_classes, count_by)
    return _cached(
        f"{count_by}_counts",
        name,
        _file_fingerprint(json_file),
        num_classes,
        lambda: count_class_samples(DatasetCatalog.get(name), num_classes, count_by),
    )


def training_class_counts(
    dataset_names: Sequence[str], num_classes: int, count_by: str = "images", grw: bool = False
) -> List[int]:
    """
    Class counts over the registered training datasets (summed), for GRW and the evaluators'
    frequency groups.

    Args:
        dataset_names: names in detectron2's DatasetCatalog (cfg.DATASETS.TRAIN).
        num_classes (int): K.
        count_by (str): "images", "instances" or "pixels" (semantic segmentation). Cached as
            JSON under $DISALIGN_CACHE (default ~/.cache/disalign): pixel counts by the label
            files, image and instance counts by the dataset's ``json_file``.
        grw (bool): the counts are for GRW's weights: warn about the classes without any (they
            get the weight of a class seen once).

    Returns:
        list[int]: K counts.
    """
    if not dataset_names:
        raise ValueError("GRW needs class counts, but cfg.DATASETS.TRAIN is empty")
    counts = [0] * num_classes
    if count_by not in ("images", "instances", "pixels"):
        raise ValueError(f"count_by must be 'images', 'instances' or 'pixels', got '{count_by}'")
    for name in dataset_names:
        for c, n in enumerate(_dataset_class_counts(name, num_classes, count_by)):
            counts[c] += n
    missing = [c for c, n in enumerate(counts) if n == 0]
    if grw and missing:
        names = MetadataCatalog.get(dataset_names[0]).get("thing_classes", None)
        shown = ", ".join(str(names[c] if names else c) for c in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        logger.warning(
            f"GRW: {len(missing)} of {num_classes} classes have no training {count_by} in "
            f"{tuple(dataset_names)} ({shown}{more}); they get the weight of a class seen once."
        )
    logger.info(
        f"{'GRW ' if grw else ''}class counts by {count_by} over {tuple(dataset_names)}: "
        f"min {min(counts)}, max {max(counts)}, total {sum(counts)}"
    )
    return counts
