# -*- coding: utf-8 -*-
"""
The embedded default for semantic segmentation: a small, deterministic scene-parsing dataset whose
class pixel ratios span head, body and tail as ADE20K's do, made the first time it is loaded.

A 128x128 scene is split by a random straight line into two "stuff" regions (4 textured classes:
grass, sand, water, rock, each well above 1% of the pixels: head) with 2-4 objects on top. An
object's class is its colour, one of 16 hues around the colour wheel (so that neighbouring classes
are alike), its shape is any of :mod:`disalign.data.synthetic`'s. As in ADE20K, where the tail is
made of small things (vases, clocks, flags) that still occur in many images, a class is both rarer
and smaller the further down the tail it is: training images per class fall log-uniformly from
300 to 20 and object radii from about 24 to 7 pixels, so that the objects span head (> 1% of the
training pixels), body (0.1% - 1%) and tail (< 0.1%). The validation split shows each object class
the same number of times, at its own size; so does the smaller held-out split
(``HELDOUT_IMAGES_PER_CLASS`` per class, images drawn after and apart from the validation images),
on which post-hoc methods choose their hyper-parameters. Labels are PNGs of class indices (255:
ignore, unused here); the splits are registered as ``miniature_seg_train`` / ``miniature_seg_val``
/ ``miniature_seg_heldout`` and read by detectron2's own ``load_sem_seg``.
"""

import colorsys
import functools
import math
import os

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_sem_seg
from PIL import Image, ImageDraw

from .synthetic import (
    SHAPES,
    draw_shapes,
    ensure_generated,
    pack_into_images,
    place_objects,
    version_file_check,
    write_version_file,
)

__all__ = ["MINIATURE_SEG_CLASSES", "generate_miniature_seg", "register_miniature_seg"]

# Bump when anything below changes what is generated: existing copies are then made again.
GENERATOR_VERSION = 3  # 3: the held-out split (train and val are those of version 2)
SEED = 20210621
IMAGE_SIZE = 128
STUFF = {
    "grass": (70, 125, 55),
    "sand": (190, 170, 125),
    "water": (55, 95, 150),
    "rock": (115,) * 3,
}
NUM_HUES = 16
HUE_NAMES = [f"hue_{round(360 * i / NUM_HUES):03d}" for i in range(NUM_HUES)]
MINIATURE_SEG_CLASSES = list(STUFF) + HUE_NAMES
MAX_TRAIN_IMAGES = 300
MIN_TRAIN_IMAGES = 20
MAX_RADIUS = 24  # pixels, the most frequent class; the rarest has MIN_RADIUS
MIN_RADIUS = 7
VAL_IMAGES_PER_CLASS = 10
HELDOUT_IMAGES_PER_CLASS = 6
OBJECTS_PER_IMAGE = (2, 3, 4)
IGNORE_LABEL = 255
DIRNAME = "miniature_seg"
SPLITS = {
    "miniature_seg_train": "train",
    "miniature_seg_val": "val",
    "miniature_seg_heldout": "heldout",
}


def _hue_appearance(key):
    """(hue class, shape) -> (shape, RGB of the hue at saturation 0.85, value 0.9)."""
    hue, shape = key
    rgb = colorsys.hsv_to_rgb(hue / NUM_HUES, 0.85, 0.9)
    return shape, tuple(int(255 * v) for v in rgb)


def _stuff_scene(rng):
    """Two textured stuff regions split by a random line: the RGB image and its labels."""
    first, second = rng.choice(len(STUFF), size=2, replace=False)
    angle = rng.uniform(0, math.pi)
    offset = rng.uniform(-0.3, 0.3) * IMAGE_SIZE
    ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] - IMAGE_SIZE / 2
    side = xs * math.cos(angle) + ys * math.sin(angle) > offset
    labels = np.where(side, second, first).astype(np.uint8)
    colours = np.array(list(STUFF.values()), dtype=np.int16)[labels]
    texture = rng.randint(-35, 36, size=colours.shape)
    return np.clip(colours + texture, 0, 255).astype(np.uint8), labels


def generate_miniature_seg(output_dir: str) -> None:
    """
    Write ``images/{train,val,heldout}/*.png`` and ``labels/{train,val,heldout}/*.png`` into
    ``output_dir``. Deterministic: the same files on every call. The held-out split is drawn last,
    from the same generator, so that train and val are those of generator version 2.
    """
    rng = np.random.RandomState(SEED)
    rank = rng.permutation(NUM_HUES)  # rank[c]: how far down the tail hue class c is
    counts = np.geomspace(MAX_TRAIN_IMAGES, MIN_TRAIN_IMAGES, NUM_HUES).round().astype(int)[rank]
    radius = np.geomspace(MAX_RADIUS, MIN_RADIUS, NUM_HUES)[rank]
    radius_range = {c: (0.85 * radius[c], 1.15 * radius[c]) for c in range(NUM_HUES)}
    slots = {
        "train": [c for c in range(NUM_HUES) for _ in range(counts[c])],
        "val": [c for c in range(NUM_HUES) for _ in range(VAL_IMAGES_PER_CLASS)],
        "heldout": [c for c in range(NUM_HUES) for _ in range(HELDOUT_IMAGES_PER_CLASS)],
    }
    for split, split_slots in slots.items():
        for kind in ("images", "labels"):
            os.makedirs(os.path.join(output_dir, kind, split), exist_ok=True)
        for index, hues in enumerate(pack_into_images(rng, split_slots, OBJECTS_PER_IMAGE)):
            background, labels = _stuff_scene(rng)
            discs = place_objects(rng, hues, IMAGE_SIZE, radius_range)
            objects = [((hue, SHAPES[rng.randint(len(SHAPES))]), x, y, r) for hue, x, y, r in discs]
            pixels, polygons = draw_shapes(
                rng, IMAGE_SIZE, objects, background=background, appearance=_hue_appearance
            )
            label_image = Image.fromarray(labels)
            draw = ImageDraw.Draw(label_image)
            for (hue, _, _, _), polygon in zip(discs, polygons):
                draw.polygon(list(zip(polygon[0::2], polygon[1::2])), fill=len(STUFF) + hue)
            name = f"{index + 1:06d}.png"
            Image.fromarray(pixels).save(os.path.join(output_dir, "images", split, name))
            label_image.save(os.path.join(output_dir, "labels", split, name))
    write_version_file(output_dir, GENERATOR_VERSION)


def _load_split(root, split):
    dataset_dir = ensure_generated(
        root, DIRNAME, version_file_check(GENERATOR_VERSION), generate_miniature_seg
    )
    return load_sem_seg(
        os.path.join(dataset_dir, "labels", split),
        os.path.join(dataset_dir, "images", split),
        gt_ext="png",
        image_ext="png",
    )


def register_miniature_seg(root: str) -> None:
    """
    Register ``miniature_seg_train``, ``miniature_seg_val`` and ``miniature_seg_heldout`` under
    ``root``.
    """
    dataset_dir = os.path.join(root, DIRNAME)
    for name, split in SPLITS.items():
        DatasetCatalog.register(name, functools.partial(_load_split, root, split))
        MetadataCatalog.get(name).set(
            stuff_classes=list(MINIATURE_SEG_CLASSES),
            image_root=os.path.join(dataset_dir, "images", split),
            sem_seg_root=os.path.join(dataset_dir, "labels", split),
            evaluator_type="sem_seg",
            ignore_label=IGNORE_LABEL,
            generated_on_demand=True,
        )
