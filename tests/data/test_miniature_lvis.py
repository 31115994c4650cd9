"""
The embedded dataset: deterministic, long-tailed with all three LVIS frequency groups, in LVIS
format, and loaded by detectron2's own LVIS loader.
"""

import hashlib
import json
import os
from collections import Counter

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from disalign.data import MINIATURE_LVIS_CLASSES, generate_miniature_lvis


def _digest(directory):
    digest = hashlib.sha256()
    for root, _, files in sorted(os.walk(directory)):
        for name in sorted(files):
            digest.update(name.encode())
            with open(os.path.join(root, name), "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    directory = tmp_path_factory.mktemp("miniature_a")
    generate_miniature_lvis(str(directory))
    return directory


def _load(directory, split):
    with open(os.path.join(directory, f"miniature_lvis_{split}.json")) as f:
        return json.load(f)


def test_generation_is_deterministic(generated, tmp_path):
    generate_miniature_lvis(str(tmp_path))
    assert _digest(generated) == _digest(tmp_path)


def test_long_tail_and_lvis_frequency_groups(generated):
    train, val = _load(generated, "train"), _load(generated, "val")
    categories = train["categories"]
    assert [c["id"] for c in categories] == list(range(1, 37))
    assert [c["name"] for c in categories] == MINIATURE_LVIS_CLASSES
    groups = Counter(c["frequency"] for c in categories)
    assert all(groups[g] >= 5 for g in "rcf"), groups
    # image counts recomputed from the annotations match the categories and their frequency
    images_per_class = Counter()
    for image_id in {a["image_id"] for a in train["annotations"]}:
        for c in {a["category_id"] for a in train["annotations"] if a["image_id"] == image_id}:
            images_per_class[c] += 1
    for c in categories:
        n = images_per_class[c["id"]]
        assert n == c["image_count"]
        assert c["frequency"] == ("r" if n <= 10 else "c" if n <= 100 else "f")
    assert max(images_per_class.values()) / min(images_per_class.values()) >= 100
    # the validation split is balanced
    assert set(Counter(a["category_id"] for a in val["annotations"]).values()) == {8}


def _image_digests(directory, split):
    with open(os.path.join(directory, f"miniature_lvis_{split}.json")) as f:
        images = json.load(f)["images"]
    digests = set()
    for image in images:
        with open(os.path.join(directory, image["coco_url"].split("/", 1)[1]), "rb") as f:
            digests.add(hashlib.sha256(f.read()).hexdigest())
    assert len(digests) == len(images)
    return digests


def test_held_out_split_is_balanced_and_apart_from_val(generated):
    heldout, val = _load(generated, "heldout"), _load(generated, "val")
    assert heldout["categories"] == val["categories"]
    # every class, 4 instances each; val keeps its 8
    assert Counter(a["category_id"] for a in heldout["annotations"]) == {c: 4 for c in range(1, 37)}
    assert Counter(a["category_id"] for a in val["annotations"]) == {c: 8 for c in range(1, 37)}
    assert {i["coco_url"].split("/")[1] for i in heldout["images"]} == {"heldout"}
    # no held-out image is a val image
    assert not _image_digests(generated, "heldout") & _image_digests(generated, "val")


def test_lvis_fields_and_polygons(generated):
    val = _load(generated, "val")
    for image in val["images"]:
        present = {a["category_id"] for a in val["annotations"] if a["image_id"] == image["id"]}
        assert set(image["neg_category_ids"]) == set(range(1, 37)) - present
        assert image["not_exhaustive_category_ids"] == []
        assert os.path.isfile(os.path.join(generated, image["coco_url"].split("/", 1)[1]))
    for ann in val["annotations"]:
        (polygon,) = ann["segmentation"]
        assert len(polygon) >= 6 and len(polygon) % 2 == 0
        x, y, w, h = ann["bbox"]
        assert min(polygon[0::2]) == pytest.approx(x, abs=0.01)
        assert min(polygon[1::2]) == pytest.approx(y, abs=0.01)
        assert 0 < ann["area"] < w * h


@pytest.mark.parametrize("split", ["val", "heldout"])
def test_registered_through_detectron2_lvis_loader(split):
    dicts = DatasetCatalog.get(f"miniature_lvis_{split}")
    metadata = MetadataCatalog.get(f"miniature_lvis_{split}")
    assert metadata.evaluator_type == "lvis"
    assert metadata.thing_classes == MINIATURE_LVIS_CLASSES
    assert len(dicts) == len(_load(os.path.dirname(metadata.json_file), split)["images"])
    record = dicts[0]
    assert os.path.isfile(record["file_name"])
    assert {"neg_category_ids", "not_exhaustive_category_ids", "annotations"} <= set(record)
    assert all(0 <= a["category_id"] < 36 for d in dicts for a in d["annotations"])


def test_real_lvis_names_stay_registered():
    # detectron2's builtin LVIS datasets (read from DETECTRON2_DATASETS when the user has them)
    for name in ("lvis_v0.5_train", "lvis_v0.5_val", "lvis_v1_train", "lvis_v1_val"):
        assert name in DatasetCatalog.list()
        assert MetadataCatalog.get(name).evaluator_type == "lvis"
