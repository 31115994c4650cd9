# -*- coding: utf-8 -*-
"""
Long-tailed image classification data: readers for the standard split files, registration of
ImageNet-LT, Places-LT and iNaturalist 2018 in detectron2's DatasetCatalog, and the dataset mapper.

A classification record is ``{"file_name": str, "image_id": int, "label": int}`` with ``label`` in
[0, K). Its dataset's metadata has ``evaluator_type="classification"`` and ``num_classes``.
"""

import functools
import json
import os
from typing import Dict, List

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from torchvision.transforms import v2 as T

from ..input_checks import InputError

__all__ = [
    "ClassificationDatasetMapper",
    "load_split_file",
    "load_inaturalist_json",
    "register_classification_dataset",
    "register_all_long_tail_classification",
]

# name: (annotation file, image root, number of classes), relative to the datasets root
_SPLIT_FILES = {
    "imagenet_lt_train": ("ImageNet_LT/ImageNet_LT_train.txt", "imagenet", 1000),
    "imagenet_lt_val": ("ImageNet_LT/ImageNet_LT_val.txt", "imagenet", 1000),
    "imagenet_lt_test": ("ImageNet_LT/ImageNet_LT_test.txt", "imagenet", 1000),
    "places_lt_train": ("Places_LT/Places_LT_train.txt", "places365", 365),
    "places_lt_val": ("Places_LT/Places_LT_val.txt", "places365", 365),
    "places_lt_test": ("Places_LT/Places_LT_test.txt", "places365", 365),
}
_INATURALIST = {
    "inaturalist2018_train": ("inaturalist2018/train2018.json", "inaturalist2018", 8142),
    "inaturalist2018_val": ("inaturalist2018/val2018.json", "inaturalist2018", 8142),
}


def load_split_file(split_file: str, image_root: str) -> List[Dict]:
    """
    Read a split file with one ``<image path relative to image_root> <label>`` per line (the
    ImageNet-LT / Places-LT format), the label a non-negative integer in ASCII digits. Blank lines
    are skipped.

    Raises:
        InputError: naming the file and line of the first malformed line.
    """
    records = []
    with open(split_file) as f:
        for line_number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or not (fields[1].isascii() and fields[1].isdigit()):
                raise InputError(
                    f"{split_file}:{line_number}: expected '<image path> <non-negative integer "
                    f"label>', got '{line.strip()}'"
                )
            records.append(
                {
                    "file_name": os.path.join(image_root, fields[0].lstrip("/")),
                    "image_id": len(records),
                    "label": int(fields[1]),
                }
            )
    return records


def load_inaturalist_json(json_file: str, image_root: str) -> List[Dict]:
    """
    Read an iNaturalist 2018 annotation file (``images``, ``annotations`` with one category per
    image, ``categories``); labels are the category ids in contiguous order.
    """
    with open(json_file) as f:
        data = json.load(f)
    label_of = {c["id"]: i for i, c in enumerate(sorted(data["categories"], key=lambda c: c["id"]))}
    category_of = {a["image_id"]: a["category_id"] for a in data["annotations"]}
    records = []
    for image in data["images"]:
        if image["id"] not in category_of:
            raise InputError(f"{json_file}: image {image['id']} has no annotation")
        category = category_of[image["id"]]
        if category not in label_of:
            raise InputError(f"{json_file}: image {image['id']} has unknown category {category}")
        records.append(
            {
                "file_name": os.path.join(image_root, image["file_name"]),
                "image_id": image["id"],
                "label": label_of[category],
            }
        )
    return records


def register_classification_dataset(name, loader, num_classes, **metadata):
    """Register a classification dataset: ``loader()`` returns its records."""
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(
        evaluator_type="classification", num_classes=num_classes, **metadata
    )


def register_all_long_tail_classification(root: str) -> None:
    """Register ImageNet-LT, Places-LT and iNaturalist 2018 (train / val / test) under ``root``."""
    readers = [(load_split_file, _SPLIT_FILES), (load_inaturalist_json, _INATURALIST)]
    for reader, splits in readers:
        for name, (annotation, images, num_classes) in splits.items():
            annotation_file = os.path.join(root, annotation)
            image_root = os.path.join(root, images)
            register_classification_dataset(
                name,
                functools.partial(reader, annotation_file, image_root),
                num_classes,
                json_file=annotation_file,
                image_root=image_root,
            )


class ClassificationDatasetMapper:
    """
    Read a classification record's image and transform it: in training a RandomResizedCrop and a
    random horizontal flip, at test a resize of the shorter side and a centre crop.

    Returns a dict with "image" (uint8 tensor of shape (C, S, S)), "label", "image_id".
    """

    def __init__(self, cfg, is_train: bool):
        c = cfg.INPUT.CLASSIFICATION
        self.image_format = cfg.INPUT.FORMAT
        if is_train:
            self.transform = T.Compose(
                [
                    T.RandomResizedCrop(c.TRAIN_CROP_SIZE, scale=tuple(c.TRAIN_CROP_SCALE)),
                    T.RandomHorizontalFlip(),
                ]
            )
        else:
            self.transform = T.Compose([T.Resize(c.TEST_RESIZE), T.CenterCrop(c.TEST_CROP_SIZE)])

    def __call__(self, record: Dict) -> Dict:
        image = utils.read_image(record["file_name"], format=self.image_format)  # (H, W, C)
        image = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return {
            "image": self.transform(image),
            "label": record["label"],
            "image_id": record["image_id"],
            "file_name": record["file_name"],
        }
