# -*- coding: utf-8 -*-
"""
The embedded default dataset: a small, deterministic, long-tailed instance segmentation dataset in
LVIS json format, made by the project the first time it is loaded (no download exists).

Images are noise with 1-3 coloured shapes; a class is a (colour, shape) pair, so a rare class
shares its colour with some frequent classes and its shape with others, as LVIS' rare categories
share parts and textures with frequent ones. Masks are the shapes' polygons. Training image counts
per class fall log-uniformly from ``MAX_TRAIN_IMAGES`` to ``MIN_TRAIN_IMAGES``, and each category
carries LVIS' ``frequency`` from its count: rare (1-10 images), common (11-100), frequent (>100).
The validation split is class-balanced (``VAL_INSTANCES_PER_CLASS`` per class), so rare classes
are measured as well as frequent ones. So is the held-out split (``HELDOUT_INSTANCES_PER_CLASS``
per class, images drawn after and apart from the validation images), on which post-hoc methods
choose their hyper-parameters (``MODEL.DECOUPLED.TUNE_DATASET``).

The splits are registered in detectron2's DatasetCatalog as ``miniature_lvis_train``,
``miniature_lvis_val`` and ``miniature_lvis_heldout``, loaded by detectron2's own
``load_lvis_json`` and evaluated as real LVIS is: by the project's LVIS evaluator (lvis-api's
metrics, see :mod:`disalign.evaluation.lvis`).
"""

import functools
import json
import os

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.lvis import load_lvis_json
from PIL import Image

from lvis_fast import lvis_frequency

from .synthetic import CLASS_NAMES, draw_shapes, ensure_generated, pack_into_images, place_objects

__all__ = ["MINIATURE_LVIS_CLASSES", "generate_miniature_lvis", "register_miniature_lvis"]

# Bump when anything below changes what is generated: existing copies are then made again.
GENERATOR_VERSION = 2
SEED = 20210619
IMAGE_SIZE = 128
MINIATURE_LVIS_CLASSES = CLASS_NAMES
MAX_TRAIN_IMAGES = 300
MIN_TRAIN_IMAGES = 2
VAL_INSTANCES_PER_CLASS = 8
HELDOUT_INSTANCES_PER_CLASS = 4
OBJECTS_PER_IMAGE = (1, 2, 3)
OBJECT_RADIUS = (10, 22)  # pixels, half the object's extent

DIRNAME = "miniature_lvis"
SPLITS = {
    "miniature_lvis_train": "train",
    "miniature_lvis_val": "val",
    "miniature_lvis_heldout": "heldout",
}


def _train_image_counts(rng):
    """Training images per class, log-uniform from MAX to MIN, in a random class order."""
    num_classes = len(MINIATURE_LVIS_CLASSES)
    counts = np.geomspace(MAX_TRAIN_IMAGES, MIN_TRAIN_IMAGES, num_classes).round().astype(int)
    return counts[rng.permutation(num_classes)].tolist()


def _polygon_area(flat):
    xs, ys = flat[0::2], flat[1::2]
    return 0.5 * abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs))))


def _balanced_images(rng, instances_per_class):
    """The classes of each image of a class-balanced split; a class at most once per image."""
    slots = [c for c in range(len(MINIATURE_LVIS_CLASSES)) for _ in range(instances_per_class)]
    return pack_into_images(rng, slots, OBJECTS_PER_IMAGE)


def _write_split(rng, output_dir, split, image_classes, categories):
    """Draw the images of ``image_classes`` (the classes of each image) into ``output_dir``/
    ``split`` and write their annotations to ``miniature_lvis_<split>.json``."""
    all_category_ids = [cat["id"] for cat in categories]
    os.makedirs(os.path.join(output_dir, split), exist_ok=True)
    images, annotations = [], []
    for index, classes in enumerate(image_classes):
        image_id = index + 1
        objects = place_objects(rng, classes, IMAGE_SIZE, OBJECT_RADIUS)
        pixels, polygons = draw_shapes(rng, IMAGE_SIZE, objects)
        file_name = f"{image_id:06d}.png"
        Image.fromarray(pixels).save(os.path.join(output_dir, split, file_name))
        present = {c + 1 for c in classes}
        images.append(
            {
                "id": image_id,
                "width": IMAGE_SIZE,
                "height": IMAGE_SIZE,
                "file_name": file_name,
                "coco_url": f"{DIRNAME}/{split}/{file_name}",
                # annotation is exhaustive: every absent category is verified absent
                "neg_category_ids": [i for i in all_category_ids if i not in present],
                "not_exhaustive_category_ids": [],
            }
        )
        for c, polygon in zip(classes, polygons):
            xs, ys = polygon[0::2], polygon[1::2]
            x0, y0 = max(min(xs), 0.0), max(min(ys), 0.0)
            x1, y1 = min(max(xs), IMAGE_SIZE), min(max(ys), IMAGE_SIZE)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": c + 1,
                    "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                    "area": round(_polygon_area(polygon), 2),
                    "segmentation": [polygon],
                }
            )
    dataset = {
        "info": {
            "description": f"miniature long-tailed LVIS-format dataset, {split} split",
            "generator_version": GENERATOR_VERSION,
        },
        "licenses": [],
        "categories": categories,
        "images": images,
        "annotations": annotations,
    }
    with open(os.path.join(output_dir, f"miniature_lvis_{split}.json"), "w") as f:
        json.dump(dataset, f)


def generate_miniature_lvis(output_dir: str) -> None:
    """
    Write the dataset into ``output_dir``: ``miniature_lvis_{train,val,heldout}.json`` in LVIS
    format and the images under ``train/``, ``val/`` and ``heldout/``. Deterministic: the same
    files on every call. The held-out split is drawn last, so that train and val are those of
    generator version 1, image for image (only their json's ``generator_version`` differs).
    """
    rng = np.random.RandomState(SEED)
    train_counts = _train_image_counts(rng)
    categories = [
        {
            "id": c + 1,
            "name": name,
            "synonyms": [name],
            "synset": f"{name}.n.01",
            "def": name.replace("_", " "),
            "frequency": lvis_frequency(train_counts[c]),
            "image_count": train_counts[c],
            "instance_count": train_counts[c],
        }
        for c, name in enumerate(MINIATURE_LVIS_CLASSES)
    ]
    num_classes = len(MINIATURE_LVIS_CLASSES)
    train_slots = [c for c in range(num_classes) for _ in range(train_counts[c])]
    # both packed before either is drawn: the order of version 1
    splits = {
        "train": pack_into_images(rng, train_slots, OBJECTS_PER_IMAGE),
        "val": _balanced_images(rng, VAL_INSTANCES_PER_CLASS),
    }
    for split, image_classes in splits.items():
        _write_split(rng, output_dir, split, image_classes, categories)
    heldout = _balanced_images(rng, HELDOUT_INSTANCES_PER_CLASS)
    _write_split(rng, output_dir, "heldout", heldout, categories)


def _is_current(dataset_dir):
    for split in SPLITS.values():
        try:
            with open(os.path.join(dataset_dir, f"miniature_lvis_{split}.json")) as f:
                if json.load(f)["info"]["generator_version"] != GENERATOR_VERSION:
                    return False
        except (OSError, ValueError, KeyError):
            return False
    return True


def ensure_miniature_lvis(root: str) -> str:
    """Make the dataset under ``root/miniature_lvis`` unless an up-to-date copy is there."""
    return ensure_generated(root, DIRNAME, _is_current, generate_miniature_lvis)


def _load_split(root, split):
    dataset_dir = ensure_miniature_lvis(root)
    return load_lvis_json(
        os.path.join(dataset_dir, f"miniature_lvis_{split}.json"), dataset_dir + os.sep
    )


def register_miniature_lvis(root: str) -> None:
    """
    Register ``miniature_lvis_train``, ``miniature_lvis_val`` and ``miniature_lvis_heldout``
    under ``root`` (the datasets directory). Nothing is generated until one of them is loaded.
    """
    dataset_dir = os.path.join(root, DIRNAME)
    for name, split in SPLITS.items():
        DatasetCatalog.register(name, functools.partial(_load_split, root, split))
        MetadataCatalog.get(name).set(
            thing_classes=list(MINIATURE_LVIS_CLASSES),
            json_file=os.path.join(dataset_dir, f"miniature_lvis_{split}.json"),
            image_root=dataset_dir + os.sep,
            evaluator_type="lvis",
            generated_on_demand=True,
        )
