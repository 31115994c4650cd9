#!/usr/bin/env python
"""
Check that datasets are where detectron2 will look for them ($DETECTRON2_DATASETS, default
./datasets), printing one line per problem, and one line with the counts found per dataset.

For each dataset: its annotation file and image directory exist; a JSON annotation file parses
and has non-empty ``images`` and lists of ``annotations`` and ``categories`` (a split file of the
classification datasets: ``<image path> <label>`` lines, read by the project's own reader, so the
same lines pass and fail as in training); the image directory is not empty and
holds the first images the annotation file names. Semantic segmentation (ADE20K): the image and
label directories are not empty and the first images have a label map. (LVIS' training JSON takes
a while to read.)

    python tools/check_datasets.py                        # LVIS v0.5 and v1.0, train and val
    python tools/check_datasets.py lvis_v1_val            # named datasets
    python tools/check_datasets.py --config-file CONFIG.yaml  # the datasets of a config

Exit status 0 when everything is there, 1 otherwise.
"""

import argparse
import json
import os
import sys
from typing import List, Optional, Tuple

from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog

from disalign import InputError, add_disalign_config, dataset_problems
from disalign.data import load_split_file
from disalign.data.builtin import DATASETS_ROOT

DEFAULT_DATASETS = ("lvis_v0.5_train", "lvis_v0.5_val", "lvis_v1_train", "lvis_v1_val")
# images whose files are looked for, from the start of each annotation file
FIRST_IMAGES = 5


def _image_path(image: dict, image_root: str, lvis: bool) -> str:
    """Where detectron2's loader looks for an image of the annotation file."""
    if lvis:  # load_lvis_json: image_root + the split folder and file of coco_url
        split_folder, file_name = image["coco_url"].split("/")[-2:]
        return os.path.join(image_root + split_folder, file_name)
    return os.path.join(image_root, image["file_name"])


def _read_json(path: str, lvis: bool, image_root: str) -> Tuple[List[str], str, List[str]]:
    """(problems, counts, first image paths) of a COCO / LVIS / iNaturalist style JSON."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        return [f"annotation file '{path}' is not valid JSON ({e})"], "", []
    if not isinstance(data, dict):
        return [f"annotation file '{path}' holds no JSON object"], "", []
    problems = [
        f"annotation file '{path}' has no '{key}' list"
        for key in ("images", "annotations", "categories")
        if not isinstance(data.get(key), list)
    ]
    if problems:
        return problems, "", []
    if not data["images"]:
        return [f"annotation file '{path}' lists no images"], "", []
    counts = (
        f"{len(data['images'])} images, {len(data['annotations'])} annotations, "
        f"{len(data['categories'])} categories"
    )
    try:
        files = [_image_path(i, image_root, lvis) for i in data["images"][:FIRST_IMAGES]]
    except (KeyError, AttributeError, ValueError) as e:
        return [f"annotation file '{path}': an image has no usable file name ({e})"], counts, []
    return [], counts, files


def _read_split_file(path: str, image_root: str) -> Tuple[List[str], str, List[str]]:
    """(problems, counts, first image paths) of a '<image path> <label>' split file."""
    try:
        records = load_split_file(path, image_root)
    except InputError as e:
        return [str(e)], "", []
    if not records:
        return [f"split file '{path}' lists no images"], "", []
    counts = f"{len(records)} images, {len({r['label'] for r in records})} classes"
    return [], counts, [r["file_name"] for r in records[:FIRST_IMAGES]]


def content_problems(name: str) -> Tuple[List[str], Optional[str]]:
    """
    What is wrong inside a dataset whose files exist (see the module docstring), and the counts
    found ("N images, M annotations, K categories"), or None where the dataset has no annotation
    file to read (e.g. generated on first use and not generated yet).
    """
    metadata = MetadataCatalog.get(name)
    path, image_root = metadata.get("json_file", None), metadata.get("image_root", None)
    label_root = metadata.get("sem_seg_root", None)
    if path is None and image_root and label_root and os.path.isdir(image_root):
        # semantic segmentation (e.g. ADE20K): an image and a label map per file name
        images, labels = os.listdir(image_root), os.listdir(label_root)
        problems = [
            f"{kind} directory '{d}' is empty"
            for kind, d, files in (("image", image_root, images), ("label", label_root, labels))
            if not files
        ]
        stems = {os.path.splitext(f)[0] for f in labels}
        problems += [
            f"image '{os.path.join(image_root, f)}' has no label map in '{label_root}'"
            for f in sorted(images)[:FIRST_IMAGES]
            if os.path.splitext(f)[0] not in stems
        ]
        return [f"dataset '{name}': {p}" for p in problems], (
            f"{len(images)} images, {len(labels)} label maps"
        )
    if path is None or not os.path.isfile(path):
        return [], None
    lvis = metadata.get("evaluator_type", None) == "lvis"
    if path.endswith(".txt"):
        problems, counts, files = _read_split_file(path, image_root or "")
    else:
        problems, counts, files = _read_json(path, lvis, image_root or "")
    if image_root is not None and os.path.isdir(image_root) and not os.listdir(image_root):
        problems.append(f"image directory '{image_root}' is empty")
    else:
        problems += [
            f"image '{f}' named by '{path}' does not exist" for f in files if not os.path.isfile(f)
        ]
    return [f"dataset '{name}': {p}" for p in problems], counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("datasets", nargs="*", help="registered dataset names")
    parser.add_argument("--config-file", help="check the datasets of this config")
    args = parser.parse_args()

    names = list(args.datasets)
    if args.config_file:
        cfg = get_cfg()
        add_disalign_config(cfg)
        cfg.merge_from_file(args.config_file)
        names += list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    names = list(dict.fromkeys(names or DEFAULT_DATASETS))

    if not os.path.isdir(os.path.expanduser(DATASETS_ROOT)):
        print(f"missing: DETECTRON2_DATASETS={DATASETS_ROOT} is not a directory")
        sys.exit(1)
    problems = 0
    for name in names:
        found = dataset_problems(name)
        for line in found:
            print(f"missing: {line}")
        if not found:
            found, counts = content_problems(name)
            for line in found:
                print(f"bad: {line}")
            if not found:
                print(f"ok: {name}" + (f" ({counts})" if counts else ""))
        problems += len(found)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
