# -*- coding: utf-8 -*-
"""
What the embedded synthetic datasets share: 36 classes, each a (colour, shape) pair, drawn as
polygons on noise; and the safe, concurrent first-time generation of a dataset directory.

A rare class shares its colour with some frequent classes and its shape with others, as the rare
categories of a real long-tailed dataset share parts and textures with its frequent ones.
"""

import logging
import math
import os
import shutil
import tempfile
from typing import Callable, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "CLASS_NAMES",
    "COLOURS",
    "SHAPES",
    "class_appearance",
    "draw_shapes",
    "ensure_generated",
    "pack_into_images",
    "place_objects",
    "shape_polygon",
    "version_file_check",
    "write_version_file",
]

logger = logging.getLogger(__name__)

COLOURS = {
    "red": (215, 40, 40),
    "green": (40, 180, 60),
    "blue": (45, 75, 220),
    "yellow": (225, 210, 40),
    "magenta": (200, 50, 200),
    "cyan": (40, 200, 210),
}
SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
CLASS_NAMES = [f"{colour}_{shape}" for colour in COLOURS for shape in SHAPES]


def shape_polygon(shape, cx, cy, radius, angle) -> List[Tuple[float, float]]:
    """Vertices [(x, y), ...] of a shape centred at (cx, cy), rotated by ``angle`` radians."""
    if shape == "circle":
        points = [(1.0, 2 * math.pi * i / 20) for i in range(20)]
    elif shape == "square":
        points = [(1.0, math.pi / 4 + math.pi / 2 * i) for i in range(4)]
    elif shape == "triangle":
        points = [(1.0, -math.pi / 2 + 2 * math.pi / 3 * i) for i in range(3)]
    elif shape == "diamond":
        points = [(1.0, 0.0), (1.0, math.pi / 2), (1.0, math.pi), (1.0, 3 * math.pi / 2)]
    elif shape == "star":
        points = [(1.0 if i % 2 == 0 else 0.45, -math.pi / 2 + math.pi / 5 * i) for i in range(10)]
    elif shape == "cross":
        a, b = 1.0, 0.35  # arm half-length and half-width, in units of the radius
        corners = [(b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b)]
        corners += [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b)]
        points = [(math.hypot(x, y), math.atan2(y, x)) for x, y in corners]
    else:
        raise ValueError(shape)
    # diamonds are taller than wide, so that they differ from squares beyond the rotation
    stretch_y = 1.35 if shape == "diamond" else 1.0
    return [
        (
            cx + radius * r * math.cos(t + angle),
            cy + radius * r * stretch_y * math.sin(t + angle),
        )
        for r, t in points
    ]


def pack_into_images(
    rng, slots: Sequence[int], objects_per_image: Sequence[int]
) -> List[List[int]]:
    """
    Group class occurrences into images: ``slots`` lists each class as many times as it must
    appear; they are shuffled and packed into images of ``objects_per_image`` (a random choice)
    distinct classes each, so that a class's occurrences are its number of images.
    """
    slots = [slots[i] for i in rng.permutation(len(slots))]
    images = []
    while slots:
        k = min(int(rng.choice(objects_per_image)), len(set(slots)))
        chosen = []
        for c in list(slots):
            if c not in chosen:
                chosen.append(c)
                slots.remove(c)
                if len(chosen) == k:
                    break
        images.append(chosen)
    return images


def place_objects(rng, classes: Sequence[int], size: int, radius_range):
    """
    Non-overlapping discs for the objects of one image: [(class, cx, cy, radius), ...].

    Args:
        radius_range: (min, max) radius in pixels, or a mapping from class to its (min, max).
    """
    placed = []
    for c in classes:
        low, high = radius_range[c] if isinstance(radius_range, dict) else radius_range
        for attempt in range(100):
            radius = rng.uniform(low, high) * (0.97**attempt)
            margin = radius * 1.4 + 1
            cx, cy = rng.uniform(margin, size - margin, size=2)
            if all(math.hypot(cx - x, cy - y) > 1.4 * (radius + r) for _, x, y, r in placed):
                placed.append((c, cx, cy, radius))
                break
        else:
            raise RuntimeError("could not place the objects of an image")
    return placed


def class_appearance(c: int) -> Tuple[str, Tuple[int, int, int]]:
    """The shape and base RGB colour of class ``c`` of CLASS_NAMES."""
    colour_name, shape = CLASS_NAMES[c].split("_")
    return shape, COLOURS[colour_name]


def draw_shapes(
    rng,
    size: int,
    objects: Sequence[Tuple[object, float, float, float]],
    background=None,
    appearance: Callable = class_appearance,
):
    """
    Draw ``objects`` ([(key, cx, cy, radius), ...]) on a size x size image: noise, or the given
    ``background`` (size, size, 3) uint8. ``appearance(key)`` gives an object's shape and base
    colour (by default the key is a class of CLASS_NAMES); the colour is jittered per object.

    Returns:
        ndarray: the RGB image (size, size, 3), uint8.
        list: each object's polygon, flat [x0, y0, x1, y1, ...].
    """
    if background is None:
        image = rng.randint(70, 186, size=(size, size, 3)).astype(np.uint8)
    else:
        image = np.asarray(background, dtype=np.uint8)
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    polygons = []
    for key, cx, cy, radius in objects:
        shape, base_colour = appearance(key)
        colour = np.clip(np.array(base_colour) + rng.randint(-25, 26, size=3), 0, 255)
        vertices = shape_polygon(shape, cx, cy, radius, rng.uniform(-0.15, 0.15))
        draw.polygon(vertices, fill=tuple(int(v) for v in colour))
        polygons.append([round(v, 2) for xy in vertices for v in xy])
    pixels = np.asarray(canvas).astype(np.int16) + rng.randint(-12, 13, size=image.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8), polygons


def write_version_file(dataset_dir: str, version: int) -> None:
    """Mark ``dataset_dir`` as made by generator ``version`` (a ``VERSION`` file)."""
    with open(os.path.join(dataset_dir, "VERSION"), "w") as f:
        f.write(f"{version}\n")


def version_file_check(version: int) -> Callable[[str], bool]:
    """The ``is_current`` of :func:`ensure_generated` for datasets marked by
    :func:`write_version_file`: whether a directory was made by generator ``version``."""

    def is_current(dataset_dir: str) -> bool:
        try:
            with open(os.path.join(dataset_dir, "VERSION")) as f:
                return f.read().strip() == str(version)
        except OSError:
            return False

    return is_current


def ensure_generated(
    root: str, dirname: str, is_current: Callable[[str], bool], generate: Callable[[str], None]
) -> str:
    """
    Make ``root/dirname`` with ``generate(directory)`` unless ``is_current(directory)`` says an
    up-to-date copy is there. Several processes may call it at once: each writes a private
    directory and renames it into place; a stale copy is replaced.

    Returns:
        str: the dataset directory.
    """
    dataset_dir = os.path.join(root, dirname)
    if is_current(dataset_dir):
        return dataset_dir
    os.makedirs(root, exist_ok=True)
    logger.info(f"Generating {dataset_dir} ...")
    staging = tempfile.mkdtemp(prefix=f".{dirname}-", dir=root)
    try:
        generate(staging)
        if os.path.isdir(dataset_dir) and not is_current(dataset_dir):
            stale = tempfile.mkdtemp(prefix=f".{dirname}-stale-", dir=root)
            os.rename(dataset_dir, os.path.join(stale, dirname))
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(staging, dataset_dir)
        except OSError:
            if not is_current(dataset_dir):  # not a concurrent generation that won the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dataset_dir
