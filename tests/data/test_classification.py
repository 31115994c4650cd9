"""
The readers of long-tailed classification splits (disalign.data.classification): ImageNet-LT /
Places-LT split files and iNaturalist's json, and their one-line errors.
"""

import json

import pytest

from disalign import InputError
from disalign.data import load_inaturalist_json, load_split_file


def test_split_file_reader(tmp_path):
    split = tmp_path / "train.txt"
    split.write_text("train/a/1.JPEG 3\n\ntrain/b/2.JPEG 0\n")
    records = load_split_file(str(split), "/data/imagenet")
    assert records == [
        {"file_name": "/data/imagenet/train/a/1.JPEG", "image_id": 0, "label": 3},
        {"file_name": "/data/imagenet/train/b/2.JPEG", "image_id": 1, "label": 0},
    ]
    for bad in ("train/c.JPEG three", "train/c.JPEG", "train/c.JPEG -1", "a b 1"):
        split.write_text(f"train/a/1.JPEG 3\n\n{bad}\n")
        with pytest.raises(InputError) as error:
            load_split_file(str(split), "/data")
        assert str(error.value) == (
            f"{split}:3: expected '<image path> <non-negative integer label>', got '{bad}'"
        )


def test_inaturalist_reader(tmp_path):
    data = {
        "images": [
            {"id": 7, "file_name": "train_val2018/A/1.jpg"},
            {"id": 9, "file_name": "x.jpg"},
        ],
        "annotations": [{"image_id": 7, "category_id": 40}, {"image_id": 9, "category_id": 12}],
        "categories": [{"id": 40}, {"id": 12}],
    }
    path = tmp_path / "train2018.json"
    path.write_text(json.dumps(data))
    assert [(r["image_id"], r["label"]) for r in load_inaturalist_json(str(path), "/r")] == [
        (7, 1),
        (9, 0),
    ]
    data["annotations"][1]["category_id"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="image 9 has unknown category 99"):
        load_inaturalist_json(str(path), "/r")
