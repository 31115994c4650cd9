"""
The training set's class counts (disalign.data.class_counts) that GRW weighs by: images,
instances or pixels per class, summed over the training datasets, the warning about classes
without training data, and the cache of the counts (JSON only, written atomically, out of date
when the annotation or label files change).
"""

import json
import logging
import os
import pickle
import re

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from disalign import count_class_samples, training_class_counts

DICTS = [
    {"annotations": [{"category_id": 0}, {"category_id": 0}, {"category_id": 2}]},
    {"annotations": [{"category_id": 0}]},
    {"annotations": []},
]


def test_count_class_samples_by_images_and_instances():
    assert count_class_samples(DICTS, 4, "images") == [2, 0, 1, 0]
    assert count_class_samples(DICTS, 4, "instances") == [3, 0, 1, 0]
    with pytest.raises(ValueError, match="count_by"):
        count_class_samples(DICTS, 4, "pixels")
    with pytest.raises(ValueError, match="configured number of classes"):
        count_class_samples(DICTS, 2, "images")
    labelled = [{"label": 1}, {"label": 1}, {"label": 0}]  # image classification records
    assert count_class_samples(labelled, 3, "images") == [1, 2, 0]


def test_training_class_counts_from_the_registered_miniature_lvis():
    import json

    from detectron2.data import DatasetCatalog, MetadataCatalog

    counts = training_class_counts(("miniature_lvis_train",), 36, "images")
    with open(MetadataCatalog.get("miniature_lvis_train").json_file) as f:
        categories = json.load(f)["categories"]
    assert counts == [c["image_count"] for c in sorted(categories, key=lambda c: c["id"])]
    assert min(counts) >= 1 and max(counts) > 100
    assert len(DatasetCatalog.get("miniature_lvis_train")) < sum(counts)  # several per image


def _register_label_images(tmp_path, name, images, ignore_label=None):
    """A registered segmentation dataset of uint8 label images (lists of rows)."""
    records = []
    for i, rows in enumerate(images):
        path = tmp_path / f"{name}-{i}.png"
        Image.fromarray(np.array(rows, dtype=np.uint8)).save(path)
        records.append({"file_name": str(path), "sem_seg_file_name": str(path)})
    DatasetCatalog.register(name, lambda: records)
    if ignore_label is not None:
        MetadataCatalog.get(name).set(ignore_label=ignore_label)
    return [r["sem_seg_file_name"] for r in records]


def test_pixel_counts_by_hand_with_each_dataset_ignore_label_and_the_default_cache(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("DISALIGN_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # the default cache: ~/.cache/disalign
    names = ("pixels_ignore_7", "pixels_ignore_default")
    try:
        # ignore label 7 from the metadata: 0: 3, 1: 5, 2: 1 pixels
        _register_label_images(
            tmp_path, names[0], [[[0, 0, 1], [2, 7, 1]], [[1, 1, 1], [0, 7, 7]]], ignore_label=7
        )
        # no ignore label in the metadata, so 255: 0: 1, 1: 1, 2: 2 pixels
        _register_label_images(tmp_path, names[1], [[[2, 2, 255], [255, 0, 1]]])
        counts = training_class_counts(names, 3, "pixels")
        assert counts == [4, 6, 3] and all(type(n) is int for n in counts)
        cache = tmp_path / ".cache" / "disalign"
        cached = sorted(p.name for p in cache.iterdir())
        assert len(cached) == 2
        for name, file_name in zip(names, cached):
            assert re.fullmatch(f"pixel_counts-{name}-[0-9a-f]{{16}}\\.json", file_name)
        # a cache entry that does not fit (not K counts) is recomputed
        (cache / cached[0]).write_text(json.dumps([1, 2]))
        assert training_class_counts(names, 3, "pixels") == [4, 6, 3]
        assert json.loads((cache / cached[0]).read_text()) == [3, 5, 1]
        # a label file rewritten: its cache entry is out of date, the counts are new
        Image.fromarray(np.full((2, 3), 2, dtype=np.uint8)).save(tmp_path / f"{names[0]}-1.png")
        assert training_class_counts(names, 3, "pixels") == [3, 3, 9]
        assert len(list(cache.iterdir())) == 3
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


@pytest.mark.parametrize("count_by", ["images", "instances"])
def test_sample_counts_are_cached_by_the_annotation_file(tmp_path, monkeypatch, count_by):
    """A second count (stage 2 after the loader, --resume, the evaluator) does not load the
    dataset again while its json_file is unchanged; a rewritten file is loaded and counted."""
    monkeypatch.setenv("DISALIGN_CACHE", str(tmp_path / "cache"))
    json_file = tmp_path / "annotations.json"
    json_file.write_text("{}")
    loads = []

    def load():
        loads.append(1)
        return DICTS

    name = f"sample_counts_cache_{count_by}"
    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(json_file=str(json_file))
    expected = {"images": [2, 0, 1, 0], "instances": [3, 0, 1, 0]}[count_by]
    try:
        assert training_class_counts((name,), 4, count_by) == expected and len(loads) == 1
        cached = list((tmp_path / "cache").iterdir())
        assert len(cached) == 1
        assert re.fullmatch(f"{count_by}_counts-{name}-[0-9a-f]{{16}}\\.json", cached[0].name)
        assert training_class_counts((name,), 4, count_by) == expected and len(loads) == 1
        # other K: another entry, counted from the records
        assert training_class_counts((name,), 5, count_by) == expected + [0] and len(loads) == 2
        json_file.write_text('{"changed": 1}')
        cached[0].write_text(json.dumps([9, 9, 9, 9]))  # an entry of the old file is not read
        assert training_class_counts((name,), 4, count_by) == expected and len(loads) == 3
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


@pytest.mark.parametrize("label", [3, 200])
def test_pixel_label_outside_the_classes_is_an_error_naming_the_file(tmp_path, monkeypatch, label):
    monkeypatch.setenv("DISALIGN_CACHE", str(tmp_path / "cache"))
    name = f"pixels_bad_label_{label}"
    try:
        files = _register_label_images(tmp_path, name, [[[0, 1, 2]], [[2, label, 255]]])
        message = f"'{files[1]}' has label {label} outside [0, 3) that is not the ignore label 255"
        with pytest.raises(ValueError, match=re.escape(message)):
            training_class_counts((name,), 3, "pixels")
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_count_class_samples_counts_images_by_default():
    assert count_class_samples(DICTS, 4) == [2, 0, 1, 0]


def test_count_class_samples_of_records_without_annotations_and_its_error():
    assert count_class_samples([{"file_name": "a.jpg"}, {"label": 1}], 2) == [0, 1]
    message = (
        "class 5 of 'b.jpg' is outside [0, 2): the configured number of classes does not match "
        "the dataset"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        count_class_samples([{"file_name": "b.jpg", "annotations": [{"category_id": 5}]}], 2)


@pytest.mark.parametrize("num_classes", [11, 12, 13])
def test_training_class_counts_sums_datasets_and_names_the_missing_classes(num_classes, caplog):
    """
    Two registered detection datasets; every class but the first is missing: the warning names
    the first 10 missing classes, and how many more there are.
    """
    first = [{"file_name": "a.jpg", "annotations": [{"category_id": 0}, {"category_id": 0}]}]
    second = [{"file_name": "b.jpg", "annotations": [{"category_id": 0}]}]
    names = ("grw_counts_first", "grw_counts_second")
    letters = [chr(ord("a") + c) for c in range(num_classes)]
    try:
        DatasetCatalog.register(names[0], lambda: first)
        DatasetCatalog.register(names[1], lambda: second)
        MetadataCatalog.get(names[0]).set(thing_classes=letters)
        with caplog.at_level(logging.INFO, logger="disalign"):
            counts = training_class_counts(names, num_classes, grw=True)  # by images
        assert counts == [2] + [0] * (num_classes - 1)
        assert training_class_counts(names, num_classes, "instances")[0] == 3
    finally:
        for name in names:
            DatasetCatalog.remove(name)
        MetadataCatalog.remove(names[0])
    missing = num_classes - 1
    more = f" and {missing - 10} more" if missing > 10 else ""
    warning = (
        f"GRW: {missing} of {num_classes} classes have no training images in {names} "
        f"({', '.join(letters[1:11])}{more}); they get the weight of a class seen once."
    )
    info = f"GRW class counts by images over {names}: min 0, max 2, total 2"
    messages = [r.getMessage() for r in caplog.records]
    assert warning in messages and info in messages, messages


def test_training_class_counts_without_class_names_shows_indices_and_refuses_no_dataset(caplog):
    name = "grw_counts_unnamed"
    try:
        DatasetCatalog.register(name, lambda: [{"annotations": [{"category_id": 1}]}])
        with caplog.at_level(logging.WARNING, logger="disalign"):
            assert training_class_counts((name,), 3, "instances", grw=True) == [0, 1, 0]
    finally:
        DatasetCatalog.remove(name)
    assert any("(0, 2); they get the weight" in r.getMessage() for r in caplog.records)
    message = r"^GRW needs class counts, but cfg.DATASETS.TRAIN is empty$"
    with pytest.raises(ValueError, match=message):
        training_class_counts((), 3)


def test_count_class_pixels_ignores_255_by_default(tmp_path):
    from disalign.data.class_counts import count_class_pixels

    path = tmp_path / "labels.png"
    Image.fromarray(np.array([[0, 255, 2], [2, 255, 255]], dtype=np.uint8)).save(path)
    records = [{"sem_seg_file_name": str(path)}] * 2
    assert count_class_pixels(records, 3) == [2, 0, 4]
    # another ignore label: 255 is then a label outside the classes
    with pytest.raises(ValueError, match="has label 255 outside"):
        count_class_pixels(records, 3, ignore_label=2)


class _RunsCode:
    """Unpickled, runs ``touch marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pixel_counts_reproduce_a_known_ratio_table_and_are_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("DISALIGN_CACHE", str(tmp_path / "cache"))
    ratios = [0.5, 0.3, 0.15, 0.04, 0.01]  # over 3 label images of 10 x 10 pixels, 300 pixels
    flat = np.repeat(np.arange(5), [int(r * 300) for r in ratios]).astype(np.uint8)
    flat[:6] = 255  # 6 ignored pixels of class 0
    records = []
    for i, part in enumerate(np.split(np.random.RandomState(0).permutation(flat), 3)):
        path = tmp_path / f"{i}.png"
        Image.fromarray(part.reshape(10, 10)).save(path)
        records.append({"file_name": str(path), "sem_seg_file_name": str(path)})
    name = "known_ratio_table"
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(ignore_label=255)
    renames = []

    def recording_replace(source, target):  # what reached the cache's name, and from where
        renames.append((os.path.basename(source), os.path.basename(target), open(source).read()))
        os.rename(source, target)

    try:
        with monkeypatch.context() as m:
            m.setattr(os, "replace", recording_replace)
            counts = training_class_counts((name,), 5, "pixels")
        assert counts == [144, 90, 45, 12, 3]
        cached = list((tmp_path / "cache").glob(f"pixel_counts-{name}-*.json"))
        assert len(cached) == 1 and json.loads(cached[0].read_text()) == counts
        # written completely under a temporary name, then renamed to the cache's name
        assert len(renames) == 1
        temporary, final, content = renames[0]
        assert final == cached[0].name and temporary != final and json.loads(content) == counts
        assert os.listdir(tmp_path / "cache") == [final]
        cached[0].write_text(json.dumps([1, 2, 3, 4, 5]))  # the cache is what is read next
        assert training_class_counts((name,), 5, "pixels") == [1, 2, 3, 4, 5]
        # a pickle that would run code when unpickled is never unpickled: the counts are
        # counted again and the cache rewritten as JSON
        marker = tmp_path / "code_ran"
        cached[0].write_bytes(pickle.dumps(_RunsCode(marker)))
        assert not marker.exists()
        assert training_class_counts((name,), 5, "pixels") == [144, 90, 45, 12, 3]
        assert not marker.exists()
        assert json.loads(cached[0].read_text()) == [144, 90, 45, 12, 3]
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
