#!/usr/bin/env python
"""
The shipped LVIS configs, run as shipped at LVIS's scale on the CPU (``make smoke-lvis``).

    python tools/smoke_lvis.py [--output-dir output/smoke_lvis] [--device cpu|cuda]
                               [--datasets-dir DIR] [--doc docs/smoke_lvis.md] [--regenerate]
    python tools/smoke_lvis.py --report-only [--doc docs/smoke_lvis.md]   # the last run's report

1. generates (once; cached under OUTPUT_DIR/datasets, with a stamp of the generator's settings) a
   synthetic dataset in LVIS's format, laid out where detectron2's built-in ``lvis_v1_train``,
   ``lvis_v1_val``, ``lvis_v0.5_train`` and ``lvis_v0.5_val`` expect it under
   ``DETECTRON2_DATASETS``. ``lvis_v1_train.json`` has LVIS v1 train's size: 100,170 images,
   1,270,141 annotations with polygon masks, LVIS v1's 1,203 categories (detectron2's own list:
   names, synsets, the 337 / 461 / 405 rare / common / frequent split) with training image
   counts in each group's range; its images are a handful of real JPEG files of COCO's sizes
   (640x480, 480x640, ...), linked under every image's own file name. The val splits have a few
   images; LVIS v0.5 train (1,230 categories, for the model-zoo config) is a smaller file;
2. writes stand-in weights in the formats of detectron2's ImageNet ``R-50.pkl`` (Caffe2 names,
   ``res2_0_branch2a_w``, ``res2_0_branch2a_bn_s`` ..., renamed on load by detectron2's c2
   conversion) and of its LVIS v0.5 model-zoo ``.pkl`` (detectron2 names,
   ``{"model": {...}, "__author__": ...}``), random, with BatchNorm statistics that keep the
   activations bounded;
3. measures GRW's class counting over the LVIS-train-size file (10% and 100% of it) and the
   model build, each in a fresh process;
4. runs ``train_net.py`` on the shipped ``configs/LVIS-v1.0/mask_rcnn_R_50_FPN_1x_baseline.yaml``
   (stage 1, 3 iterations from the ImageNet stand-in), its ``_disalign.yaml`` (stage 2, 3
   iterations from stage 1's model_final.pth), ``--eval-only`` of stage 2 with both LVIS
   evaluation backends (TEST.LVIS_EVAL_BACKEND "fast" and "lvis-api") on the few val images,
   and ``configs/LVIS-v0.5/mask_rcnn_R_50_FPN_1x_disalign_from_zoo.yaml`` (stage 2 from the
   model-zoo stand-in, 2 iterations, then ``--resume`` for one more, evaluated). Each run
   overrides only MODEL.DEVICE, MODEL.WEIGHTS, SOLVER.IMS_PER_BATCH 2, SOLVER.MAX_ITER and
   OUTPUT_DIR, and the training runs but the last DATASETS.TEST () (no evaluation after
   training);
5. prints one line per step and a summary, and writes the report with every run's command to
   OUTPUT_DIR/smoke_lvis.md (and to --doc), the numbers to OUTPUT_DIR/summary.json.

The time and memory of every train_net.py run are measured from outside: its wall and CPU time,
the peak RSS of the process, its RSS and its data-loader workers' PSS during the iterations; the
iteration time is detectron2's own (metrics.json). Measured on the shared 2-core machine: the
train_net.py runs take about 17 minutes of CPU (most of it the inference of the --eval-only runs
at 300 detections and 1,203 class-specific masks per image), the rest about 3; the datasets'
generation under a minute, once (docs/smoke_lvis.md).
"""

import argparse
import json
import math
import os
import pickle
import re
import shutil
import subprocess
import sys
import threading
import time

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# LVIS v1 train's size (the LVIS paper's v1 release: 100,170 images, 1,270,141 annotations)
V1_TRAIN_IMAGES = 100_170
V1_TRAIN_ANNOTATIONS = 1_270_141
# LVIS v1's image count ranges per frequency group: rare 1-10, common 11-100, frequent > 100
FREQUENCY_RANGES = {"r": (1, 10), "c": (11, 100), "f": (101, 6000)}
# COCO / LVIS image sizes (width, height), the first the most common
IMAGE_SIZES = [
    (640, 480),
    (640, 427),
    (480, 640),
    (640, 426),
    (427, 640),
    (500, 375),
    (640, 360),
    (612, 612),
]
IMAGE_SIZE_WEIGHTS = [0.4, 0.2, 0.1, 0.08, 0.07, 0.06, 0.05, 0.04]
# polygon vertices per annotation: uniform in this range
POLYGON_VERTICES = (6, 16)
GENERATOR_VERSION = 2


def lvis_categories(version: str):
    """
    detectron2's LVIS category list (id, name, synset, synonyms, def, frequency), read from its
    module file without importing detectron2 (and torch).
    """
    import importlib.util

    module = {"v1": "lvis_v1_categories", "v0.5": "lvis_v0_5_categories"}[version]
    package = os.path.dirname(importlib.util.find_spec("detectron2").origin)
    path = os.path.join(package, "data", "datasets", f"{module}.py")
    spec = importlib.util.spec_from_file_location(module, path)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return sorted((dict(c) for c in loaded.LVIS_CATEGORIES), key=lambda c: c["id"])


def _log_uniform_int(rng, low, high, size):
    return np.floor(np.exp(rng.uniform(np.log(low), np.log(high + 1), size))).astype(np.int64)


def _pairs_by_frequency_ranges(rng, frequency, num_images):
    """(image, category) pairs: each category in as many distinct images as its frequency group's
    range allows (FREQUENCY_RANGES, log-uniform); images left without one get a frequent one."""
    image_counts = np.zeros(len(frequency), dtype=np.int64)
    for group, (low, high) in FREQUENCY_RANGES.items():
        members = np.flatnonzero(frequency == group)
        low, high = min(low, num_images), min(high, num_images)
        image_counts[members] = np.clip(_log_uniform_int(rng, low, high, len(members)), low, high)
    pair_images = np.concatenate(
        [rng.choice(num_images, size=n, replace=False) for n in image_counts]
    )
    pair_categories = np.repeat(np.arange(len(frequency)), image_counts)
    empty = np.setdiff1d(np.arange(num_images), pair_images)
    frequent = np.flatnonzero(frequency == "f")
    pair_images = np.concatenate([pair_images, empty])
    pair_categories = np.concatenate([pair_categories, rng.choice(frequent, size=len(empty))])
    return pair_images, pair_categories


def _pairs_by_weight(rng, frequency, num_images, categories_per_image, cover_all):
    """(image, category) pairs for small splits: 1 + Poisson(categories_per_image - 1) distinct
    categories per image, frequent ones 10x as likely as common and 100x as rare ones; with
    ``cover_all``, each category left out is added to a random image."""
    weights = np.select([frequency == "f", frequency == "c"], [1.0, 0.1], 0.01)
    weights = weights * rng.lognormal(0.0, 0.5, len(frequency))
    counts = np.minimum(1 + rng.poisson(categories_per_image - 1, num_images), len(frequency))
    pair_categories = np.concatenate(
        [
            rng.choice(len(frequency), size=k, replace=False, p=weights / weights.sum())
            for k in counts
        ]
    )
    pair_images = np.repeat(np.arange(num_images), counts)
    if cover_all:
        missing = np.setdiff1d(np.arange(len(frequency)), pair_categories)
        pair_images = np.concatenate([pair_images, rng.integers(0, num_images, len(missing))])
        pair_categories = np.concatenate([pair_categories, missing])
    return pair_images, pair_categories


def generate_split(
    categories,
    num_images,
    num_annotations,
    seed,
    split_folder,
    first_image_id=1,
    categories_per_image=None,
    cover_all=True,
):
    """
    A synthetic LVIS split: image entries of COCO's sizes, annotations, and the categories with
    their ``image_count`` / ``instance_count``.

    Without ``categories_per_image``, each category is in a number of images drawn in its LVIS
    frequency group's range (the LVIS v1 train scale); with it, each image draws about that many
    categories (small splits). The annotations beyond one per (image, category) pair are extra
    instances spread over the pairs with heavy-tailed weights, so that the split has exactly
    ``num_annotations``.

    Returns:
        (images, annotations, categories): ``images`` and ``categories`` as lists of LVIS dicts,
        ``annotations`` as arrays "image_id", "category_id" and "size" (the image's width and
        height), grouped by image; :func:`write_lvis_json` adds the polygons.
    """
    rng = np.random.default_rng(seed)
    num_categories = len(categories)
    frequency = np.array([c["frequency"] for c in categories])
    if categories_per_image is None:
        pair_images, pair_categories = _pairs_by_frequency_ranges(rng, frequency, num_images)
    else:
        pair_images, pair_categories = _pairs_by_weight(
            rng, frequency, num_images, categories_per_image, cover_all
        )
    num_pairs = len(pair_images)
    if num_annotations < num_pairs:
        raise ValueError(f"{num_annotations} annotations cannot cover {num_pairs} pairs")
    weights = rng.lognormal(0.0, 1.5, num_pairs)
    extra = rng.choice(num_pairs, size=num_annotations - num_pairs, p=weights / weights.sum())
    instances = 1 + np.bincount(extra, minlength=num_pairs)
    order = np.lexsort((pair_categories, pair_images))  # annotations grouped by image
    ann_image = np.repeat(pair_images[order], instances[order])
    ann_category = np.repeat(pair_categories[order], instances[order])

    size_index = rng.choice(len(IMAGE_SIZES), size=num_images, p=IMAGE_SIZE_WEIGHTS)
    sizes = np.array(IMAGE_SIZES, dtype=np.int32)[size_index]  # (width, height)
    annotations = {
        "image_id": (ann_image + first_image_id).astype(np.int64),
        "category_id": (ann_category + 1).astype(np.int64),
        "size": sizes[ann_image],
    }
    # LVIS' negative categories (verified absent) and not-exhaustive ones (some instances
    # unannotated): up to 4 random absent categories per image, and 5% of the present pairs
    pair_keys = pair_images * num_categories + pair_categories
    negatives = rng.integers(0, num_categories, (num_images, 4))
    absent = ~np.isin(np.arange(num_images)[:, None] * num_categories + negatives, pair_keys)
    not_exhaustive = [[] for _ in range(num_images)]
    for i in rng.choice(num_pairs, size=num_pairs // 20, replace=False).tolist():
        not_exhaustive[pair_images[i]].append(int(pair_categories[i]) + 1)
    images = []
    for i in range(num_images):
        image_id = i + first_image_id
        width, height = IMAGE_SIZES[size_index[i]]
        images.append(
            {
                "id": image_id,
                "coco_url": f"http://images.cocodataset.org/{split_folder}/{image_id:012d}.jpg",
                "width": width,
                "height": height,
                "date_captured": "2013-11-14 11:18:45",
                "license": 1,
                "flickr_url": "",
                "neg_category_ids": sorted({int(c) + 1 for c in negatives[i][absent[i]]}),
                "not_exhaustive_category_ids": sorted(not_exhaustive[i]),
            }
        )
    return images, annotations, with_counts(categories, annotations)


def with_counts(categories, annotations):
    """``categories`` with the ``image_count`` and ``instance_count`` of ``annotations``."""
    num = len(categories)
    index = annotations["category_id"] - 1
    keys = np.unique(annotations["image_id"] * num + index)
    image_count = np.bincount(keys % num, minlength=num)
    instance_count = np.bincount(index, minlength=num)
    return [
        dict(c, image_count=int(image_count[j]), instance_count=int(instance_count[j]))
        for j, c in enumerate(categories)
    ]


def subset(images, annotations, categories, fraction):
    """The first ``fraction`` of the images of a split, with their annotations."""
    kept = images[: round(len(images) * fraction)]
    stop = int(np.searchsorted(annotations["image_id"], kept[-1]["id"], side="right"))
    part = {key: value[:stop] for key, value in annotations.items()}
    return kept, part, with_counts(categories, part)


def polygons(rng, sizes):
    """
    One polygon per annotation inside its image (``sizes``: (N, 2) widths and heights): a
    radially jittered ellipse of POLYGON_VERTICES vertices in a box of log-uniform size and aspect
    ratio, and its bbox and area.

    Returns:
        dict of arrays: "xy" (N, 2 * max vertices; the vertices after a polygon's own number
        repeat its first one), "vertices" (N,), "bbox" (N, 4) as x, y, width, height, "area" (N,).
    """
    n = len(sizes)
    width, height = sizes[:, 0].astype(np.float64), sizes[:, 1].astype(np.float64)
    scale = np.exp(rng.uniform(np.log(0.03), np.log(0.7), n)) * np.minimum(width, height)
    aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0), n))
    half_w = 0.5 * np.minimum(scale * np.sqrt(aspect), width - 2)
    half_h = 0.5 * np.minimum(scale / np.sqrt(aspect), height - 2)
    center_x = half_w + rng.uniform(0, 1, n) * (width - 1 - 2 * half_w)
    center_y = half_h + rng.uniform(0, 1, n) * (height - 1 - 2 * half_h)
    low, high = POLYGON_VERTICES
    vertices = rng.integers(low, high + 1, n)
    cos, sin = _UNIT_POLYGONS
    radius = 1.0 - 0.35 * rng.random((n, high), dtype=np.float32)
    x = np.round(center_x[:, None] + half_w[:, None] * radius * cos[vertices], 2)
    y = np.round(center_y[:, None] + half_h[:, None] * radius * sin[vertices], 2)
    past = np.arange(high)[None, :] >= vertices[:, None]
    x[past] = np.broadcast_to(x[:, :1], x.shape)[past]
    y[past] = np.broadcast_to(y[:, :1], y.shape)[past]
    left, top = x.min(axis=1), y.min(axis=1)
    area = 0.5 * np.abs(np.sum(x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y, axis=1))
    return {
        "xy": np.stack([x, y], axis=2).reshape(n, 2 * high),
        "vertices": vertices,
        "bbox": np.round(np.stack([left, top, x.max(1) - left, y.max(1) - top], axis=1), 2),
        "area": np.round(area, 2),
    }


def _unit_polygons():
    """cos and sin of the vertex angles of regular polygons, indexed (vertices, vertex)."""
    high = POLYGON_VERTICES[1]
    vertices = np.maximum(np.arange(high + 1), 1)[:, None]
    angle = 2 * np.pi * np.arange(high)[None, :] / vertices
    return np.cos(angle), np.sin(angle)


_UNIT_POLYGONS = _unit_polygons()


def chunk_polygons(annotations, seed, start, stop, chunk=50_000):
    """The polygons of annotations ``start:stop`` (a chunk of ``chunk`` annotations), from the
    random generator of ``(seed, chunk index)``."""
    rng = np.random.default_rng([seed, start // chunk])
    return polygons(rng, annotations["size"][start:stop])


def write_lvis_json(path, images, annotations, categories, seed, chunk=50_000):
    """
    Write an LVIS json file, the annotations' polygons generated and serialized a chunk at a time
    (bounded memory; chunk ``i``'s geometry from the random generator of ``(seed, i)``).
    """
    import orjson

    from disalign.engine.file_io import write_atomically

    num = len(annotations["image_id"])
    image_id, category_id = annotations["image_id"].tolist(), annotations["category_id"].tolist()

    def write(f):
        f.write(b'{"info":{"description":"synthetic LVIS-format data (tools/smoke_lvis.py)"},')
        f.write(b'"licenses":[{"id":1,"name":"synthetic","url":""}],"categories":')
        f.write(orjson.dumps(categories))
        f.write(b',"images":')
        f.write(orjson.dumps(images))
        f.write(b',"annotations":[')
        for start in range(0, num, chunk):
            stop = min(num, start + chunk)
            geometry = chunk_polygons(annotations, seed, start, stop, chunk)
            xy, vertices = geometry["xy"], (2 * geometry["vertices"]).tolist()
            bbox, area = geometry["bbox"].tolist(), geometry["area"].tolist()
            dicts = [
                {
                    "id": start + i + 1,
                    "image_id": image_id[start + i],
                    "category_id": category_id[start + i],
                    "segmentation": [xy[i, : vertices[i]]],
                    "area": area[i],
                    "bbox": bbox[i],
                }
                for i in range(stop - start)
            ]
            f.write(b"," if start else b"")
            f.write(orjson.dumps(dicts, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1])
        f.write(b"]}")

    write_atomically(path, write, "wb")


# ---------------------------------------------------------------------------------------------
# the dataset folder: DETECTRON2_DATASETS laid out as detectron2's built-in LVIS datasets expect


# (name, categories, images, annotations, seed, folder, first image id, categories per image)
SPLITS = [
    ("lvis_v1_train", "v1", V1_TRAIN_IMAGES, V1_TRAIN_ANNOTATIONS, 1, "train2017", 1, None),
    ("lvis_v1_val", "v1", 4, 64, 2, "val2017", 1_000_001, 10),
    ("lvis_v0.5_train", "v0.5", 2_000, 25_000, 3, "train2017", 2_000_001, 10),
    ("lvis_v0.5_val", "v0.5", 4, 64, 4, "val2017", 3_000_001, 10),
]
GRW_FRACTION_FILE = "lvis_v1_train_10pct.json"  # the first 10% of lvis_v1_train's images


def _settings():
    return {
        "version": GENERATOR_VERSION,
        "splits": SPLITS,
        "frequency_ranges": FREQUENCY_RANGES,
        "image_sizes": IMAGE_SIZES,
        "polygon_vertices": POLYGON_VERTICES,
    }


def render_image(path, width, height, seed, polygons_xy=()):
    """A real JPEG file: a colour gradient with noise and the given polygons filled."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    base = rng.uniform(40, 200, 3)
    slope = rng.uniform(-0.1, 0.1, (3, 2))
    pixels = base + slope[:, 0] * xs[..., None] + slope[:, 1] * ys[..., None]
    pixels += rng.normal(0, 12, (height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for xy in polygons_xy:
        draw.polygon(
            [tuple(p) for p in np.reshape(xy, (-1, 2))], fill=tuple(rng.integers(0, 255, 3))
        )
    image.save(path, quality=90)


def generate_datasets(root, log=print):
    """
    Write the LVIS json files and images under ``root`` (a DETECTRON2_DATASETS folder) unless
    ``root/stamp.json`` says that the same settings already wrote them. Returns the seconds spent.
    """
    stamp = os.path.join(root, "stamp.json")
    settings = json.loads(json.dumps(_settings()))
    if os.path.isfile(stamp):
        with open(stamp) as f:
            if json.load(f) == settings:
                return 0.0
    start = time.perf_counter()
    shutil.rmtree(root, ignore_errors=True)
    for folder in ("lvis", "coco/train2017", "coco/val2017", "coco/images"):
        os.makedirs(os.path.join(root, folder))
    # the handful of real images behind every training image entry, one per size
    for k, (width, height) in enumerate(IMAGE_SIZES):
        render_image(os.path.join(root, "coco/images", f"{width}x{height}.jpg"), width, height, k)
    for name, version, num_images, num_annotations, seed, folder, first_id, per_image in SPLITS:
        split_start = time.perf_counter()
        images, annotations, categories = generate_split(
            lvis_categories(version),
            num_images,
            num_annotations,
            seed,
            folder,
            first_id,
            per_image,
            cover_all=name.endswith("train"),
        )
        json_path = os.path.join(root, "lvis", f"{name}.json")
        write_lvis_json(json_path, images, annotations, categories, seed)
        if name == "lvis_v1_train":
            part = subset(images, annotations, categories, 0.1)
            write_lvis_json(os.path.join(root, "lvis", GRW_FRACTION_FILE), *part, seed)
        if folder == "train2017":  # links to the real image of each entry's size
            for image in images:
                target = f"../images/{image['width']}x{image['height']}.jpg"
                os.symlink(target, os.path.join(root, "coco", folder, f"{image['id']:012d}.jpg"))
        else:  # a few images, each its own file with its annotations drawn
            geometry = chunk_polygons(annotations, seed, 0, len(annotations["size"]))
            for image in images:
                mine = np.flatnonzero(annotations["image_id"] == image["id"])
                xy = [geometry["xy"][i, : 2 * geometry["vertices"][i]] for i in mine]
                path = os.path.join(root, "coco", folder, f"{image['id']:012d}.jpg")
                render_image(path, image["width"], image["height"], image["id"], xy)
        log(
            f"  {name}: {len(images):,} images, {len(annotations['image_id']):,} annotations, "
            f"{len(categories)} categories, {os.path.getsize(json_path) / 2**20:.0f} MiB, "
            f"{time.perf_counter() - split_start:.1f} s"
        )
    with open(stamp, "w") as f:
        json.dump(settings, f)
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# stand-in weights in the formats of detectron2's ImageNet R-50.pkl and LVIS model-zoo .pkl files

# the spread of an input image's pixels after detectron2's normalisation (PIXEL_STD 1 for the
# MSRA weights): the stem's scale divides by it
PIXEL_SPREAD = 57.0
# the output scale of each convolution relative to its input (ReLU halves the second moment; the
# residual branch's last convolution small, so that the sum over the blocks stays bounded)
GAINS = {"conv1": 2 ** 0.5, "conv2": 2 ** 0.5, "conv3": 0.3, "shortcut": 1.0}
R50_STAGES = [(3, 64, 256), (4, 128, 512), (6, 256, 1024), (3, 512, 2048)]  # blocks, width, out


def imagenet_r50_caffe2(seed=0):
    """
    A random ResNet-50 in the format of detectron2's ``ImageNetPretrained/MSRA/R-50.pkl``: a
    pickled dict of float32 NumPy arrays under Caffe2 names (``conv1_w``, ``res_conv1_bn_s``,
    ``res2_0_branch2a_w``, ``res2_0_branch2a_bn_s`` / ``_b``, ``res2_0_branch1_w``, ...,
    ``fc1000_w``), BatchNorm folded into a scale and a bias as there. The weights are N(0, 1) and
    each BatchNorm scale is gain / sqrt(fan-in x input variance), so activations keep their size.
    """
    rng = np.random.default_rng(seed)
    blobs = {}

    def conv(name, bn_name, out_channels, in_channels, kernel, gain, input_variance=1.0):
        shape = (out_channels, in_channels, kernel, kernel)
        blobs[f"{name}_w"] = rng.standard_normal(shape, dtype=np.float32)
        fan_in = in_channels * kernel * kernel * input_variance
        blobs[f"{bn_name}_bn_s"] = np.full(out_channels, gain / fan_in ** 0.5, dtype=np.float32)
        blobs[f"{bn_name}_bn_b"] = np.zeros(out_channels, dtype=np.float32)

    conv("conv1", "res_conv1", 64, 3, 7, GAINS["conv1"], PIXEL_SPREAD ** 2)
    in_channels = 64
    for stage, (blocks, width, out_channels) in enumerate(R50_STAGES, start=2):
        for block in range(blocks):
            prefix = f"res{stage}_{block}"
            if block == 0:
                conv(f"{prefix}_branch1", f"{prefix}_branch1", out_channels, in_channels, 1, 1.0)
            for branch, (cout, cin, kernel, gain) in {
                "2a": (width, in_channels, 1, GAINS["conv1"]),
                "2b": (width, width, 3, GAINS["conv2"]),
                "2c": (out_channels, width, 1, GAINS["conv3"]),
            }.items():
                conv(
                    f"{prefix}_branch{branch}", f"{prefix}_branch{branch}", cout, cin, kernel, gain
                )
            in_channels = out_channels
    blobs["fc1000_w"] = 0.01 * rng.standard_normal((1000, 2048), dtype=np.float32)
    blobs["fc1000_b"] = np.zeros(1000, dtype=np.float32)
    return blobs


def model_zoo_checkpoint(config_file, seed=0):
    """
    A random model in the format of detectron2's LVIS model-zoo ``.pkl`` files
    (``{"model": {name: float32 array}, "__author__": "Detectron2 Model Zoo"}``), with the names
    and shapes of detectron2's own Mask R-CNN (``GeneralizedRCNN``, ``StandardROIHeads``) of the
    architecture and class count of ``config_file``. Each backbone convolution is N(0, 1) with
    FrozenBN statistics that scale its output by gain / sqrt(fan-in x input variance); the other
    layers are N(0, 1 / fan-in), the classifier, box regressor and mask predictor as small as
    detectron2 initialises them.
    """
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from disalign import add_disalign_config

    cfg = get_cfg()
    add_disalign_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    state = build_model(cfg).state_dict()
    rng = np.random.default_rng(seed)
    small = {"cls_score": 0.01, "bbox_pred": 0.001, "predictor": 0.001}
    model = {}
    for key, value in state.items():
        shape = tuple(value.shape)
        if key in model:
            continue
        if not key.endswith(".weight") or len(shape) < 2:
            model[key] = np.zeros(shape, dtype=np.float32)  # biases; norms are set below
            continue
        weight = rng.standard_normal(shape, dtype=np.float32)
        fan_in = float(np.prod(shape[1:]))
        module = key[: -len(".weight")]
        if f"{module}.norm.running_var" in state:  # a backbone convolution with FrozenBN
            name = module.rsplit(".", 1)[-1]
            stem = module.endswith("stem.conv1")
            channels = shape[0]
            model[f"{module}.norm.weight"] = np.full(channels, GAINS[name], dtype=np.float32)
            model[f"{module}.norm.bias"] = np.zeros(channels, dtype=np.float32)
            model[f"{module}.norm.running_mean"] = np.zeros(channels, dtype=np.float32)
            variance = fan_in * (PIXEL_SPREAD ** 2 if stem else 1.0)
            model[f"{module}.norm.running_var"] = np.full(channels, variance, dtype=np.float32)
        else:
            std = small.get(module.rsplit(".", 1)[-1], fan_in ** -0.5)
            weight *= std
        model[key] = weight
    model = {key: model[key] for key in state}  # detectron2's order
    return {"model": model, "__author__": "Detectron2 Model Zoo"}


def write_weights(folder, zoo_config):
    """The two stand-ins under ``folder`` (written once). Returns their paths."""
    from disalign.engine.file_io import write_atomically

    os.makedirs(folder, exist_ok=True)
    paths = {
        "imagenet": os.path.join(folder, "R-50.pkl"),
        "zoo": os.path.join(folder, "model_final_lvis_v0.5_mask_rcnn_R_50_FPN_1x.pkl"),
    }
    stamp = os.path.join(folder, "stamp.json")
    settings = {"version": GENERATOR_VERSION, "gains": GAINS, "zoo_config": zoo_config}
    if os.path.isfile(stamp) and all(map(os.path.isfile, paths.values())):
        with open(stamp) as f:
            if json.load(f) == settings:
                return paths
    for key, make in (
        ("imagenet", imagenet_r50_caffe2),
        ("zoo", lambda: model_zoo_checkpoint(os.path.join(REPO_ROOT, zoo_config))),
    ):
        checkpoint = make()
        write_atomically(paths[key], lambda f: pickle.dump(checkpoint, f), "wb")
    with open(stamp, "w") as f:
        json.dump(settings, f)
    return paths


# ---------------------------------------------------------------------------------------------
# measurements in fresh processes: GRW's class counting, the model build


# what a GPU holds besides the tensors (CUDA context, cuDNN workspace): an assumed round number
# for the memory estimate, not a measurement
GPU_CONTEXT_MIB = 1024


def _rss_mib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def measure_grw(json_file, image_root):
    """
    In this (fresh) process: load the LVIS json file through detectron2's DatasetCatalog and count
    its classes as GRW does when its cache has no counts for the file
    (``disalign.data.class_counts.count_class_samples``, by images and by instances). Returns
    times (s), memory (MiB) and whether the counts equal the file's ``image_count`` /
    ``instance_count``.
    """
    import resource

    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.build import (
        filter_images_with_only_crowd_annotations,
        print_instances_class_histogram,
    )
    from detectron2.data.datasets.lvis import load_lvis_json

    from disalign.data.class_counts import count_class_samples
    from disalign.input_checks import check_training_records

    with open(json_file, "rb") as f:  # the categories, from the file's head
        head = f.read(4 << 20)
    categories = json.loads(head[head.index(b'"categories":') + 13 : head.index(b',"images":')])
    name = "smoke_lvis_grw_" + os.path.basename(json_file)
    DatasetCatalog.register(name, lambda: load_lvis_json(json_file, image_root))
    names = [c["name"] for c in categories]
    MetadataCatalog.get(name).set(
        thing_classes=names,
        json_file=json_file,
        image_root=image_root,
        evaluator_type="lvis",
    )
    rss_before = _rss_mib()
    start = time.perf_counter()
    dicts = DatasetCatalog.get(name)
    load_s = time.perf_counter() - start
    rss_loaded = _rss_mib()
    result = {}
    for count_by, field in (("images", "image_count"), ("instances", "instance_count")):
        start = time.perf_counter()  # GRW's counting (training_class_counts, not its cache)
        counts = count_class_samples(dicts, len(categories), count_by)
        result[f"count_{count_by}_s"] = time.perf_counter() - start
        result[f"{count_by}_match"] = counts == [c[field] for c in categories]
    # the other passes over the loaded records that each training run makes: the project's
    # check of the records, detectron2's filter and class histogram (get_detection_dataset_dicts)
    for key, check in (
        ("check_records_s", lambda: check_training_records(dicts, len(categories), [name])),
        ("d2_filter_s", lambda: filter_images_with_only_crowd_annotations(dicts)),
        ("d2_histogram_s", lambda: print_instances_class_histogram(dicts, names)),
    ):
        start = time.perf_counter()
        check()
        result[key] = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result.update(
        images=len(dicts),
        annotations=sum(len(d["annotations"]) for d in dicts),
        file_mib=os.path.getsize(json_file) / 2 ** 20,
        load_s=load_s,
        rss_before_mib=rss_before,
        rss_loaded_mib=rss_loaded,
        peak_rss_mib=peak,
    )
    return result


def measure_build(configs, device):
    """Seconds to build each config's model with detectron2's DefaultTrainer.build_model, which
    train_net.py's Trainer keeps (a fresh process; the first build includes the one-time costs)."""
    from detectron2.engine import DefaultTrainer

    from disalign.engine import build_config

    result = {}
    for config in configs:
        args = argparse.Namespace(
            config_file=os.path.join(REPO_ROOT, config),
            opts=["MODEL.DEVICE", device, "MODEL.WEIGHTS", ""],
            eval_only=True,
            num_gpus=1,
        )
        cfg = build_config(args)
        start = time.perf_counter()
        model = DefaultTrainer.build_model(cfg)
        result[config] = {
            "build_s": time.perf_counter() - start,
            "parameters": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        }
        del model
    return result


def run_measurement(kind, arguments, env, log_path):
    """Run a measurement of this script in a fresh process; returns its JSON result."""
    command = [sys.executable, os.path.abspath(__file__), f"--measure-{kind}", *arguments]
    with open(log_path, "w") as log:
        done = subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=log)
    if done.returncode != 0:
        raise RuntimeError(f"measurement {kind} failed (log: {log_path})")
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# train_net.py runs, watched: wall time, memory of the process and its data-loader workers


def _proc_kib(pid, field, name="status"):
    try:
        with open(f"/proc/{pid}/{name}") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


class Watched:
    """
    A subprocess whose output goes to a log file, and whose memory is sampled every 0.2 s: the
    main process' peak RSS (the kernel's high-water mark, VmHWM), its RSS during the training
    iterations (from detectron2's "Starting training" line to its "Total training time" line),
    and the summed PSS of its children (the data-loader workers) during training.
    """

    def __init__(self, command, env, log_path):
        self.log_path = log_path
        self.marks = {}  # first arrival time (s from start) of lines of interest
        self.peak_rss = self.train_rss = self.workers_pss = 0
        self.train_start_rss = 0  # RSS at the first sample after "Starting training"
        self.start = time.perf_counter()
        self.training = False
        self.process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()
        with open(log_path, "w", buffering=1) as log:  # line-buffered: a log to follow
            for line in self.process.stdout:
                log.write(line)
                self._mark(line)
        self.returncode = self.process.wait()
        self.seconds = time.perf_counter() - self.start
        self.sampler.join()

    MARKS = {
        "train_start": "Starting training from iteration",
        "train_end": "Total training time",
        "inference_start": "Start inference on",
        "inference_end": "Total inference time",
        "evaluated": "Evaluation results for segm",
    }

    def _mark(self, line):
        for key, text in self.MARKS.items():
            if text in line and key not in self.marks:
                self.marks[key] = time.perf_counter() - self.start
                self.training = key == "train_start" or (self.training and key != "train_end")

    def _sample(self):
        pid = self.process.pid
        while self.process.poll() is None:
            self.peak_rss = max(self.peak_rss, _proc_kib(pid, "VmHWM:"))
            if self.training:
                rss = _proc_kib(pid, "VmRSS:")
                self.train_start_rss = self.train_start_rss or rss
                self.train_rss = max(self.train_rss, rss)
                pss = sum(_proc_kib(c, "Pss:", "smaps_rollup") for c in _children(pid))
                self.workers_pss = max(self.workers_pss, pss)
            time.sleep(0.2)


def _training_set_loads(log):
    """How many times a run's log says detectron2 loaded an LVIS training file."""
    return len(re.findall(r"Loaded \d+ images in the LVIS format from \S+_train\.json", log))


def _children_cpu_s():
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tail(path, lines=8):
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def last_metrics(output_dir):
    """The last record of detectron2's metrics.json that has the iteration time."""
    path = os.path.join(output_dir, "metrics.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    timed = [r for r in records if "time" in r] or [r for r in records if "total_loss" in r]
    return timed[-1] if timed else {}


# ---------------------------------------------------------------------------------------------
# the smoke run

STAGE1 = "configs/LVIS-v1.0/mask_rcnn_R_50_FPN_1x_baseline.yaml"
STAGE2 = "configs/LVIS-v1.0/mask_rcnn_R_50_FPN_1x_disalign.yaml"
FROM_ZOO = "configs/LVIS-v0.5/mask_rcnn_R_50_FPN_1x_disalign_from_zoo.yaml"
ZOO_ARCHITECTURE = "configs/LVIS-v0.5/mask_rcnn_R_50_FPN_1x_baseline.yaml"
# training iterations: detectron2 times the iterations from the third on (its IterationTimer), so
# the third is the one timed; the first of stage 2 also counts GRW's classes
ITERATIONS = 3
ZOO_ITERATIONS = 2  # then --resume for one more
# the training runs leave out detectron2's evaluation after the last iteration (DATASETS.TEST
# empty), except the resumed one: the --eval-only runs evaluate
NO_EVALUATION = ["DATASETS.TEST", "()"]


def _mib(path):
    return os.path.getsize(path) / 2 ** 20 if os.path.isfile(path) else float("nan")


def _fmt_time(seconds):
    return f"{seconds:.1f} s" if seconds == seconds else "n/a"


class Smoke:
    def __init__(self, args):
        self.args = args
        self.out = os.path.join(REPO_ROOT, args.output_dir)
        self.datasets = os.path.join(
            REPO_ROOT, args.datasets_dir or os.path.join(self.out, "datasets")
        )
        # class counts cached in a folder of this run, emptied first: every run measures stage 2
        # as a user's first one (counted once, then read from the cache)
        cache = os.path.join(self.out, "class_counts_cache")
        shutil.rmtree(cache, ignore_errors=True)
        self.env = dict(
            os.environ,
            DETECTRON2_DATASETS=self.datasets,
            DISALIGN_CACHE=cache,
            PYTHONUNBUFFERED="1",
        )
        self.steps = []  # (name, ok, seconds, note)
        self.runs = {}  # name -> dict of measurements
        self.failed = False
        self.generated_s, self.load_start, self.load_end = 0.0, "?", "?"
        self.grw, self.build, self.weights, self.total_s = {}, {}, {}, 0.0

    def note(self, name, ok, seconds, detail=""):
        self.steps.append({"step": name, "ok": ok, "seconds": seconds, "detail": detail})
        status = "ok" if ok else "FAILED"
        print(
            f"[smoke-lvis] {name}: {status} in {seconds:.1f} s{'; ' + detail if detail else ''}",
            flush=True,
        )
        self.failed |= not ok

    def train_net(self, name, config, weights, output, *, iterations=None, extra=(), opts=()):
        """One train_net.py run; returns its measurements (None when it failed)."""
        command = [sys.executable, "train_net.py", *extra, "--config-file", config]
        command += ["MODEL.DEVICE", self.args.device, "MODEL.WEIGHTS", weights]
        command += ["SOLVER.IMS_PER_BATCH", "2"]
        if iterations is not None:
            command += ["SOLVER.MAX_ITER", str(iterations)]
        command += [*opts, "OUTPUT_DIR", output]
        if "--resume" not in extra:
            shutil.rmtree(os.path.join(REPO_ROOT, output), ignore_errors=True)
        log_path = os.path.join(self.out, "logs", f"{name.replace(' ', '_').replace(',', '')}.log")
        cpu_before = _children_cpu_s()
        watched = Watched(command, self.env, log_path)
        cpu_s = _children_cpu_s() - cpu_before
        metrics = last_metrics(os.path.join(REPO_ROOT, output))
        with open(log_path) as f:
            log = f.read()
        marks = watched.marks
        run = {
            "command": " ".join(["python"] + command[1:]),
            "seconds": watched.seconds,
            "cpu_s": cpu_s,
            "peak_rss_mib": watched.peak_rss / 1024,
            "train_rss_mib": watched.train_rss / 1024,
            "train_start_rss_mib": watched.train_start_rss / 1024,
            # what the iterations added to the RSS: what a training step holds, at its peak
            "iterations_added_mib": (watched.train_rss - watched.train_start_rss) / 1024,
            "workers_pss_mib": watched.workers_pss / 1024,
            "iteration_s": metrics.get("time", float("nan")),
            "data_time_s": metrics.get("data_time", float("nan")),
            "total_loss": metrics.get("total_loss", float("nan")),
            "dataset_loads": _training_set_loads(log),
            "checkpoint_mib": _mib(os.path.join(REPO_ROOT, output, "model_final.pth")),
            "inference_s": marks.get("inference_end", 0) - marks.get("inference_start", 0),
            "evaluation_s": (
                marks["evaluated"] - marks["inference_end"]
                if "evaluated" in marks and "inference_end" in marks
                else float("nan")
            ),
            "log": os.path.relpath(log_path, REPO_ROOT),
        }
        found = re.search(r"Total inference time: \S+ \(([\d.]+) s / iter", log)
        run["inference_per_image_s"] = float(found[1]) if found else float("nan")
        found = re.findall(r"Loading \S+ takes ([\d.]+) seconds", log)
        run["lvis_api_json_load_s"] = [float(s) for s in found]
        self.runs[name] = run
        ok = watched.returncode == 0
        detail = f"log {run['log']}"
        # detectron2 times an iteration from the third on: none in a resumed run of one
        if ok and iterations is not None and math.isfinite(run["iteration_s"]):
            detail = (
                f"{run['iteration_s']:.2f} s/iteration, peak RSS {run['peak_rss_mib']:.0f} MiB, "
                f"total_loss {run['total_loss']:.3g}; " + detail
            )
        self.note(name, ok, watched.seconds, detail)
        if not ok:
            print(tail(log_path), flush=True)
        return run if ok else None

    def main(self):
        args = self.args
        total_start = time.perf_counter()
        self.load_start = f"{os.getloadavg()[0]:.1f}"
        os.makedirs(os.path.join(self.out, "logs"), exist_ok=True)
        if args.regenerate:
            shutil.rmtree(self.datasets, ignore_errors=True)
        start = time.perf_counter()
        generated = generate_datasets(self.datasets, log=lambda line: print(line, flush=True))
        self.note(
            "datasets",
            True,
            time.perf_counter() - start,
            ("generated" if generated else "cached") + f" under {os.path.relpath(self.datasets)}",
        )
        self.generated_s = generated
        start = time.perf_counter()
        weights = write_weights(os.path.join(self.out, "weights"), ZOO_ARCHITECTURE)
        self.weights = {k: (os.path.relpath(p, REPO_ROOT), _mib(p)) for k, p in weights.items()}
        self.note("stand-in weights", True, time.perf_counter() - start, "R-50.pkl, model-zoo .pkl")

        lvis = os.path.join(self.datasets, "lvis")
        image_root = os.path.join(self.datasets, "coco") + os.sep
        self.grw = {}
        for label, name in (("10%", GRW_FRACTION_FILE), ("100%", "lvis_v1_train.json")):
            start = time.perf_counter()
            log_path = os.path.join(self.out, "logs", f"grw_{label[:-1]}pct.log")
            try:
                result = run_measurement(
                    "grw", [os.path.join(lvis, name), image_root], self.env, log_path
                )
            except RuntimeError as e:
                self.note(f"GRW counting, {label}", False, time.perf_counter() - start, str(e))
                continue
            self.grw[label] = result
            self.note(
                f"GRW counting, {label} of lvis_v1_train",
                result["images_match"] and result["instances_match"],
                time.perf_counter() - start,
                f"{result['annotations']:,} annotations: load {result['load_s']:.1f} s, count "
                f"{result['count_images_s']:.2f} s, peak RSS {result['peak_rss_mib']:.0f} MiB, "
                f"counts equal the file's: {result['images_match'] and result['instances_match']}",
            )
        start = time.perf_counter()
        try:
            self.build = run_measurement(
                "build",
                [args.device, STAGE1, STAGE2],
                self.env,
                os.path.join(self.out, "logs", "build.log"),
            )
            self.note(
                "model build",
                True,
                time.perf_counter() - start,
                ", ".join(
                    f"{os.path.basename(c)} {r['build_s']:.1f} s" for c, r in self.build.items()
                ),
            )
        except RuntimeError as e:
            self.build = {}
            self.note("model build", False, time.perf_counter() - start, str(e))

        out = os.path.relpath(self.out, REPO_ROOT)
        stage1 = self.train_net(
            "stage 1",
            STAGE1,
            weights["imagenet"],
            f"{out}/stage1",
            iterations=ITERATIONS,
            opts=NO_EVALUATION,
        )
        stage2 = stage1 and self.train_net(
            "stage 2",
            STAGE2,
            f"{out}/stage1/model_final.pth",
            f"{out}/stage2",
            iterations=ITERATIONS,
            opts=NO_EVALUATION,
        )
        if stage2:
            for backend in ("fast", "lvis-api"):
                self.train_net(
                    f"eval-only, {backend}",
                    STAGE2,
                    f"{out}/stage2/model_final.pth",
                    f"{out}/eval_{backend}",
                    extra=["--eval-only"],
                    opts=["TEST.LVIS_EVAL_BACKEND", backend],
                )
        zoo = self.train_net(
            "from zoo, stage 2",
            FROM_ZOO,
            weights["zoo"],
            f"{out}/from_zoo",
            iterations=ZOO_ITERATIONS,
            opts=NO_EVALUATION,
        )
        if zoo:
            self.train_net(
                "from zoo, --resume",
                FROM_ZOO,
                weights["zoo"],
                f"{out}/from_zoo",
                iterations=ZOO_ITERATIONS + 1,
                extra=["--resume"],
            )
        self.total_s = time.perf_counter() - total_start
        self.load_end = f"{os.getloadavg()[0]:.1f}"
        self.report()
        return 1 if self.failed else 0

    SUMMARY_KEYS = (
        "steps",
        "runs",
        "grw",
        "build",
        "weights",
        "total_s",
        "generated_s",
        "load_start",
        "load_end",
    )

    def report_again(self):
        """The report of the last run again, from OUTPUT_DIR/summary.json."""
        with open(os.path.join(self.out, "summary.json")) as f:
            summary = json.load(f)
        for key in self.SUMMARY_KEYS:
            setattr(self, key, summary.get(key, getattr(self, key, None)))
        for run in self.runs.values():  # recounted from the logs
            path = os.path.join(REPO_ROOT, run["log"])
            if os.path.isfile(path):
                with open(path, errors="replace") as f:
                    run["dataset_loads"] = _training_set_loads(f.read())
        if "generated_s" not in summary:  # an older summary: from the datasets step
            step = next((s for s in self.steps if s["step"] == "datasets"), None)
            generated = step and step["detail"].startswith("generated")
            self.generated_s = step["seconds"] if generated else 0.0
        self.report()
        return 0 if all(step["ok"] for step in self.steps) else 1

    def report(self):
        md = self.markdown()
        path = os.path.join(self.out, "smoke_lvis.md")
        for target in [path] + ([self.args.doc] if self.args.doc else []):
            with open(target, "w") as f:
                f.write(md)
        summary = {key: getattr(self, key) for key in self.SUMMARY_KEYS}
        with open(os.path.join(self.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        print("\n--- summary (also in " + os.path.relpath(path, REPO_ROOT) + ")")
        for line in self.summary_lines():
            print(line)

    def summary_lines(self):
        lines = []
        s1, s2 = self.runs.get("stage 1"), self.runs.get("stage 2")
        for name, run in (("stage 1", s1), ("stage 2", s2)):
            if run:
                lines.append(
                    f"{name}: {run['iteration_s']:.2f} s/iteration, peak RSS "
                    f"{run['peak_rss_mib']:.0f} MiB (during iterations {run['train_rss_mib']:.0f} "
                    f"MiB, workers' PSS {run['workers_pss_mib']:.0f} MiB), training set loaded "
                    f"{run['dataset_loads']}x, checkpoint {run['checkpoint_mib']:.0f} MiB"
                )
        if s1 and s2:
            lines.append(
                f"stage 2 / stage 1: iteration time {s2['iteration_s'] / s1['iteration_s']:.3f}, "
                f"peak RSS {s2['peak_rss_mib'] / s1['peak_rss_mib']:.3f}, RSS during iterations "
                f"{s2['train_rss_mib'] / s1['train_rss_mib']:.3f}"
            )
        for label, g in self.grw.items():
            lines.append(
                f"GRW counting over {label} of lvis_v1_train ({g['annotations']:,} annotations): "
                f"dataset load {g['load_s']:.1f} s, counting by images {g['count_images_s']:.2f} s "
                f"/ instances {g['count_instances_s']:.2f} s, RSS {g['rss_before_mib']:.0f} -> "
                f"{g['peak_rss_mib']:.0f} MiB"
            )
        for config, b in self.build.items():
            lines.append(f"model build, {os.path.basename(config)}: {b['build_s']:.1f} s")
        for name, run in self.runs.items():
            if name.startswith("eval-only"):
                lines.append(
                    f"{name}: {run['seconds']:.1f} s in all, inference "
                    f"{run['inference_per_image_s']:.2f} s/image, evaluation "
                    f"{_fmt_time(run['evaluation_s'])}"
                )
        lines.append(
            f"total: {self.total_s / 60:.1f} min ({len([s for s in self.steps if s['ok']])} of "
            f"{len(self.steps)} steps ok; datasets generated in {self.generated_s:.0f} s"
            f"{'' if self.generated_s else ', cached'}); device {self.args.device}"
        )
        return lines

    def observations(self):
        """What the numbers say, as measured in this run."""
        runs, grw, notes = self.runs, self.grw, []
        s1, s2 = runs.get("stage 1"), runs.get("stage 2")
        full = grw.get("100%")
        if s2 and full:
            reads = (
                "once, for its data loader: GRW's class counts came from their cache"
                if s2["dataset_loads"] == 1
                else f"{s2['dataset_loads']} times: for its data loader, and at its first "
                "iteration for GRW's class counts, which are then cached by the annotation file "
                "(`disalign.data.class_counts`, `$DISALIGN_CACHE`), so that a later stage 2, "
                "`--resume` or evaluation on the same file does not read it again"
            )
            notes.append(
                f"* Stage 2 read the training set {reads} (stage 1: "
                f"{s1['dataset_loads'] if s1 else '?'}). At LVIS v1 train's size one such load "
                f"took {full['load_s']:.0f} s and raised the process from "
                f"{full['rss_before_mib']:.0f} to {full['peak_rss_mib']:.0f} MiB; the counting "
                f"itself took {full['count_images_s']:.2f} s."
            )
        resumed = runs.get("from zoo, --resume")
        if resumed and runs.get("from zoo, stage 2"):
            notes.append(
                f"* The resumed stage 2 read its training set {resumed['dataset_loads']} times, "
                f"the same run started afresh {runs['from zoo, stage 2']['dataset_loads']} "
                "(train_net.py continues the loader it built at the checkpoint's iteration)."
            )
        if len(grw) > 1:
            small, large = grw.get("10%"), full
            if small and large:
                notes.append(
                    "* From 10% to 100% of the annotations "
                    f"({large['annotations'] / small['annotations']:.1f}x), "
                    f"loading grew {large['load_s'] / small['load_s']:.1f}x and GRW's counting "
                    f"{large['count_images_s'] / small['count_images_s']:.1f}x: both linear."
                )
        if s1 and s2 and self.build and self.args.device == "cpu":
            weights_mib = max(b["parameters"] for b in self.build.values()) * 4 / 2 ** 20
            gib = lambda run: (  # noqa: E731
                run["iterations_added_mib"] + weights_mib + GPU_CONTEXT_MIB
            ) / 1024
            notes.append(
                "* GPU memory, estimated from these CPU runs: the configs' batch, 16 images over 8 "
                "GPUs, is these runs' 2 per GPU, at LVIS's image sizes (COCO's, resized to the "
                "shipped shorter side of 640-800). The iterations added "
                f"{s1['iterations_added_mib']:.0f} MiB (stage 1) and "
                f"{s2['iterations_added_mib']:.0f} MiB (stage 2) to the process's RSS at their "
                "peak: what a training step holds. Add the weights "
                f"({weights_mib:.0f} MiB: parameters x 4 bytes) and a GPU's CUDA context and "
                f"cuDNN workspace, taken as {GPU_CONTEXT_MIB / 1024:.0f} GiB: about "
                f"{gib(s1):.1f} GiB (stage 1) and {gib(s2):.1f} GiB (stage 2) per GPU, "
                + ("within" if max(gib(s1), gib(s2)) < 16 else "beyond")
                + " a 16 GB GPU. An estimate: the CPU's high-water mark holds the forward "
                "pass's transient tensors and what the allocator keeps after freeing them, not "
                "only what backward needs (which is why stage 2, whose frozen trunk records "
                "nothing for backward, can add about as much as stage 1), and a GPU's kernels "
                "and caching allocator keep other amounts; on a GPU, detectron2's log prints the "
                "measured `max_mem`."
            )
        if s1:
            notes.append(
                '* detectron2\'s "Overall training speed" divides the time of the iterations '
                "from the third on by one iteration fewer than it timed (its IterationTimer); the "
                "iteration times here are its per-iteration timer's values (`metrics.json`)."
            )
        return ["## Reading the numbers", ""] + notes + [""] if notes else []

    def markdown(self):
        """The report: every measurement, the steps and the commands."""
        runs, grw, s1, s2 = self.runs, self.grw, self.runs.get("stage 1"), self.runs.get("stage 2")
        cpus = os.cpu_count()
        date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        lines = [
            "# `make smoke-lvis`: the shipped LVIS configs at LVIS's scale on the CPU",
            "",
            f"Written by `tools/smoke_lvis.py` on {date}, device `{self.args.device}`, {cpus} "
            "CPU cores (load average "
            f"{self.load_start} at the start, {self.load_end} at the end: the machine "
            "is shared, so wall times depend on the other jobs; CPU times less so). "
            + (
                "**No GPU figure exists yet**: this has only run on the CPU."
                if self.args.device == "cpu"
                else "Device: CUDA."
            ),
            "",
            "`make smoke-lvis` runs `train_net.py` on the shipped "
            f"`{STAGE1}` (stage 1, {ITERATIONS} iterations from a stand-in of detectron2's "
            f"ImageNet `R-50.pkl`), its `_disalign.yaml` (stage 2, {ITERATIONS} iterations from "
            "stage 1's `model_final.pth`), `--eval-only` with both LVIS evaluation backends "
            f"(`TEST.LVIS_EVAL_BACKEND`), and `{FROM_ZOO}` ({ZOO_ITERATIONS} iterations from a "
            "stand-in of detectron2's LVIS v0.5 model-zoo `.pkl`, then `--resume` for one more). "
            "Each run overrides only `MODEL.DEVICE`, `MODEL.WEIGHTS`, `SOLVER.IMS_PER_BATCH 2`, "
            "`SOLVER.MAX_ITER`, `OUTPUT_DIR` and, for the training runs but the resumed one, "
            "`DATASETS.TEST ()` (no evaluation after training: the `--eval-only` runs evaluate). "
            "The datasets are detectron2's built-in `lvis_v1_train`, `lvis_v1_val`, "
            "`lvis_v0.5_train`, `lvis_v0.5_val`, read from a synthetic `DETECTRON2_DATASETS` "
            "folder (`output/smoke_lvis/datasets`, generated once and cached).",
            "",
            "## The synthetic dataset",
            "",
            "LVIS's own category lists (detectron2's, with names, synsets and the rare / common / "
            "frequent split), each category's training image count in its group's range (1-10, "
            f"11-100, {FREQUENCY_RANGES['f'][0]}-{FREQUENCY_RANGES['f'][1]}), images of COCO's "
            f"sizes ({', '.join(f'{w}x{h}' for w, h in IMAGE_SIZES[:4])}, ...), polygon masks of "
            f"{POLYGON_VERTICES[0]}-{POLYGON_VERTICES[1]} vertices, negative and not-exhaustive "
            "category ids. The training entries point to a handful of real JPEG files (one per "
            "size, linked under every entry's own file name).",
            "",
            "| split | images | annotations | categories | r / c / f | file |",
            "|---|---|---|---|---|---|",
        ]
        for name, version, num_images, num_annotations, *_ in SPLITS:
            path = os.path.join(self.datasets, "lvis", f"{name}.json")
            frequency = [c["frequency"] for c in lvis_categories(version)]
            split = " / ".join(str(frequency.count(f)) for f in "rcf")
            lines.append(
                f"| `{name}` | {num_images:,} | {num_annotations:,} | {len(frequency):,} | "
                f"{split} | {_mib(path):.0f} MiB |"
            )
        lines += [
            "",
            f"Generated in {self.generated_s:.0f} s"
            + (" (this run)." if self.generated_s else " (cached: generated by an earlier run)."),
            "",
        ]
        if s1 and s2:
            ratio = lambda key: s2[key] / s1[key] if s1[key] else float("nan")  # noqa: E731
            rows = [
                ("iteration time (detectron2's timer: the third iteration)", "iteration_s", "s"),
                ("data time of that iteration", "data_time_s", "s"),
                ("wall time of the run", "seconds", "s"),
                ("CPU time of the run (process and workers)", "cpu_s", "s"),
                ("peak RSS of the process (VmHWM)", "peak_rss_mib", "MiB"),
                ("RSS when the iterations start", "train_start_rss_mib", "MiB"),
                ("RSS during the iterations (peak)", "train_rss_mib", "MiB"),
                ("what the iterations added (peak minus start)", "iterations_added_mib", "MiB"),
                (
                    "data-loader workers' PSS during the iterations (sum, peak)",
                    "workers_pss_mib",
                    "MiB",
                ),
                ("checkpoint `model_final.pth`", "checkpoint_mib", "MiB"),
            ]
            lines += [
                "## Training at real size",
                "",
                "Batch 2, 1,203 classes, the shipped input sizes (shorter side 640-800), "
                "the shipped 4 data-loader workers.",
                "",
                "| | stage 1 | stage 2 | stage 2 / stage 1 |",
                "|---|---|---|---|",
            ]
            for label, key, unit in rows:
                lines.append(
                    f"| {label} | {s1[key]:.2f} {unit} | {s2[key]:.2f} {unit} | "
                    f"{ratio(key):.3f} |"
                )
            lines += [
                f'| loads of the training set (detectron2\'s "Loaded ... in the LVIS format") | '
                f"{s1['dataset_loads']} | {s2['dataset_loads']} | |",
                f"| lvis-api's reading of the json (its log, each load) | "
                f"{', '.join(f'{t:.1f} s' for t in s1['lvis_api_json_load_s'])} | "
                f"{', '.join(f'{t:.1f} s' for t in s2['lvis_api_json_load_s'])} | |",
                f"| total_loss at the last iteration | {s1['total_loss']:.3f} | "
                f"{s2['total_loss']:.3f} | |",
                "",
            ]
        if grw:
            keys = list(grw)
            rows = [
                ("loading through DatasetCatalog (detectron2's `load_lvis_json`)", "load_s"),
                (
                    "GRW's counting by images (`training_class_counts`, loaded records)",
                    "count_images_s",
                ),
                ("GRW's counting by instances", "count_instances_s"),
                (
                    "the project's check of the records (`check_training_records`)",
                    "check_records_s",
                ),
                ("detectron2's filter of empty images", "d2_filter_s"),
                ("detectron2's class histogram", "d2_histogram_s"),
            ]
            head = " | ".join(
                f"{k} ({grw[k]['images']:,} images, {grw[k]['annotations']:,} annotations, "
                f"{grw[k]['file_mib']:.0f} MiB)"
                for k in keys
            )
            lines += [
                "## GRW class counting over LVIS v1 train's size",
                "",
                "Each in a fresh process: the file loaded through detectron2's DatasetCatalog, "
                "then GRW's counts computed from the loaded records (they equal the file's "
                f"`image_count` / `instance_count`: {all(g['images_match'] for g in grw.values())}"
                f" / {all(g['instances_match'] for g in grw.values())}).",
                "",
                f"| | {head} | ratio |",
                "|---|" + "---|" * (len(keys) + 1),
            ]
            for label, key in rows:
                values = [grw[k][key] for k in keys]
                growth = values[-1] / values[0] if len(values) > 1 and values[0] else float("nan")
                lines.append(
                    f"| {label} | {' | '.join(f'{v:.2f} s' for v in values)} | {growth:.1f} |"
                )
            lines.append(
                "| RSS after the imports -> with the records -> peak | "
                + " | ".join(
                    f"{grw[k]['rss_before_mib']:.0f} -> {grw[k]['rss_loaded_mib']:.0f} -> "
                    f"{grw[k]['peak_rss_mib']:.0f} MiB"
                    for k in keys
                )
                + " | |"
            )
            lines.append("")
        if self.build:
            lines += [
                "## Model build",
                "",
                "`Trainer.build_model` of train_net.py, one fresh process, the configs in turn "
                "(the first build includes one-time costs).",
                "",
                "| config | build time | parameters | trainable |",
                "|---|---|---|---|",
            ]
            for config, b in self.build.items():
                lines.append(
                    f"| `{config}` | {b['build_s']:.2f} s | {b['parameters']:,} | "
                    f"{b['trainable']:,} |"
                )
            lines.append("")
        lines += ["## Checkpoints", "", "| file | size |", "|---|---|"]
        for key, (path, mib) in self.weights.items():
            lines.append(f"| stand-in, `{os.path.basename(path)}` | {mib:.0f} MiB |")
        for name, run in runs.items():
            if run["checkpoint_mib"] == run["checkpoint_mib"] and "eval" not in name:
                lines.append(f"| {name}, `model_final.pth` | {run['checkpoint_mib']:.0f} MiB |")
        lines.append("")
        evaluations = {n: r for n, r in runs.items() if r["inference_s"] > 0}
        if evaluations:
            lines += [
                "## Evaluation",
                "",
                "The few val images of the synthetic split (4), 300 detections per image, masks.",
                "",
                "| run | wall time | inference per image | evaluation (after inference) |",
                "|---|---|---|---|",
            ]
            for name, run in evaluations.items():
                lines.append(
                    f"| {name} | {run['seconds']:.1f} s | {run['inference_per_image_s']:.2f} s | "
                    f"{_fmt_time(run['evaluation_s'])} |"
                )
            lines.append("")
        lines += self.observations()
        lines += ["## Steps", "", "| step | status | wall time | detail |", "|---|---|---|---|"]
        for step in self.steps:
            status = "ok" if step["ok"] else "FAILED"
            lines.append(
                f"| {step['step']} | {status} | {step['seconds']:.1f} s | {step['detail']} |"
            )
        lines += [
            "",
            f"Total: {self.total_s / 60:.1f} min of wall time; the train_net.py runs used "
            f"{sum(r['cpu_s'] for r in runs.values()) / 60:.1f} min of CPU (processes and "
            "data-loader workers).",
            "",
            "## Commands",
            "",
            "```bash",
            "make smoke-lvis   # python tools/smoke_lvis.py",
        ]
        lines += [
            f"DETECTRON2_DATASETS={os.path.relpath(self.datasets, REPO_ROOT)} "
            + r["command"].replace(REPO_ROOT + os.sep, "")
            for r in runs.values()
        ]
        lines += ["```", ""]
        return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0].strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output-dir", default="output/smoke_lvis", help="relative to the repo")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument(
        "--datasets-dir",
        default=None,
        help="where the synthetic datasets are generated and cached (default: OUTPUT_DIR/datasets)",
    )
    parser.add_argument("--doc", default=None, help="also write the report to this markdown file")
    parser.add_argument("--regenerate", action="store_true", help="generate the datasets again")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="write the report of the last run again from OUTPUT_DIR/summary.json",
    )
    parser.add_argument(
        "--measure-grw", nargs=2, metavar=("JSON", "IMAGE_ROOT"), help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--measure-build", nargs="+", metavar="DEVICE CONFIG", help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.measure_grw:
        print(json.dumps(measure_grw(*args.measure_grw)))
        return 0
    if args.measure_build:
        print(json.dumps(measure_build(args.measure_build[1:], args.measure_build[0])))
        return 0
    return Smoke(args).report_again() if args.report_only else Smoke(args).main()


if __name__ == "__main__":
    sys.exit(main())
