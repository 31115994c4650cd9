# -*- coding: utf-8 -*-
"""
The embedded default for image classification: a small, deterministic, long-tailed dataset in the
ImageNet-LT split-file format, made by the project the first time it is loaded.

Each 32x32 image shows one coloured shape on noise; the class is the (colour, shape) pair (36
classes, see :mod:`disalign.data.synthetic`). Training images per class fall log-uniformly from
``MAX_TRAIN_IMAGES`` to ``MIN_TRAIN_IMAGES``: 12 Many (> 100 images), 12 Medium (20-100) and
12 Few (< 20) classes. The test split is balanced (``TEST_IMAGES_PER_CLASS`` per class), and so
is the held-out validation split (``VAL_IMAGES_PER_CLASS`` per class, images drawn after and apart
from the test images), on which post-hoc methods choose their hyper-parameters.

Registered as ``miniature_lt_train`` / ``miniature_lt_val`` / ``miniature_lt_test`` and read by
the same ``load_split_file`` as ImageNet-LT.
"""

import functools
import os

import numpy as np
from PIL import Image

from .classification import load_split_file, register_classification_dataset
from .synthetic import (
    CLASS_NAMES,
    draw_shapes,
    ensure_generated,
    version_file_check,
    write_version_file,
)

__all__ = ["generate_miniature_lt", "register_miniature_lt"]

# Bump when anything below changes what is generated: existing copies are then made again.
GENERATOR_VERSION = 2
SEED = 20210620
IMAGE_SIZE = 32
MAX_TRAIN_IMAGES = 500
MIN_TRAIN_IMAGES = 4
TEST_IMAGES_PER_CLASS = 20
VAL_IMAGES_PER_CLASS = 10
OBJECT_RADIUS = (6, 12)  # pixels
DIRNAME = "miniature_lt"
SPLITS = {"miniature_lt_train": "train", "miniature_lt_val": "val", "miniature_lt_test": "test"}


def train_image_counts(rng) -> list:
    """Training images per class, log-uniform from MAX to MIN, in a random class order."""
    num_classes = len(CLASS_NAMES)
    counts = np.geomspace(MAX_TRAIN_IMAGES, MIN_TRAIN_IMAGES, num_classes).round().astype(int)
    return counts[rng.permutation(num_classes)].tolist()


def generate_miniature_lt(output_dir: str) -> None:
    """
    Write ``miniature_lt_{train,test,val}.txt`` (``<path> <label>`` lines) and the images under
    ``train/``, ``test/`` and ``val/`` into ``output_dir``. Deterministic: the same files on every
    call. The val split is drawn last, so that train and test are those of generator version 1.
    """
    rng = np.random.RandomState(SEED)
    counts = {
        "train": train_image_counts(rng),
        "test": [TEST_IMAGES_PER_CLASS] * len(CLASS_NAMES),
        "val": [VAL_IMAGES_PER_CLASS] * len(CLASS_NAMES),
    }
    for split, per_class in counts.items():
        os.makedirs(os.path.join(output_dir, split), exist_ok=True)
        labels = [c for c, n in enumerate(per_class) for _ in range(n)]
        labels = [labels[i] for i in rng.permutation(len(labels))]
        lines = []
        for index, label in enumerate(labels):
            radius = rng.uniform(*OBJECT_RADIUS)
            cx, cy = rng.uniform(radius + 1, IMAGE_SIZE - radius - 1, size=2)
            pixels, _ = draw_shapes(rng, IMAGE_SIZE, [(label, cx, cy, radius)])
            path = f"{split}/{index + 1:06d}.png"
            Image.fromarray(pixels).save(os.path.join(output_dir, path))
            lines.append(f"{path} {label}\n")
        with open(os.path.join(output_dir, f"miniature_lt_{split}.txt"), "w") as f:
            f.writelines(lines)
    write_version_file(output_dir, GENERATOR_VERSION)


def _load_split(root, split):
    dataset_dir = ensure_generated(
        root, DIRNAME, version_file_check(GENERATOR_VERSION), generate_miniature_lt
    )
    return load_split_file(os.path.join(dataset_dir, f"miniature_lt_{split}.txt"), dataset_dir)


def register_miniature_lt(root: str) -> None:
    """Register ``miniature_lt_train``, ``miniature_lt_val`` and ``miniature_lt_test`` under
    ``root``."""
    dataset_dir = os.path.join(root, DIRNAME)
    for name, split in SPLITS.items():
        register_classification_dataset(
            name,
            functools.partial(_load_split, root, split),
            len(CLASS_NAMES),
            thing_classes=list(CLASS_NAMES),
            json_file=os.path.join(dataset_dir, f"miniature_lt_{split}.txt"),
            image_root=dataset_dir,
            generated_on_demand=True,
        )
