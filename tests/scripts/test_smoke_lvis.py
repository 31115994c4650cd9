"""
The generator of tools/smoke_lvis.py (`make smoke-lvis`), on small versions of its splits:
LVIS' category split, counts in each frequency group's range, exact sizes, valid polygons, and
files that detectron2's own LVIS loader reads; and what its runs measure: the memory a training
run's iterations add, and the GPU memory estimated from it.
"""

import argparse
import importlib.util
import os
import sys

import numpy as np
import pytest
from detectron2.data.datasets.lvis import load_lvis_json

from conftest import REPO_ROOT

_spec = importlib.util.spec_from_file_location(
    "smoke_lvis", os.path.join(REPO_ROOT, "tools", "smoke_lvis.py")
)
smoke_lvis = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(smoke_lvis)


@pytest.mark.parametrize("version, split", [("v1", (337, 461, 405)), ("v0.5", (454, 461, 315))])
def test_categories_are_lvis_own_with_its_frequency_split(version, split):
    categories = smoke_lvis.lvis_categories(version)
    assert [c["id"] for c in categories] == list(range(1, len(categories) + 1))
    frequency = [c["frequency"] for c in categories]
    assert tuple(frequency.count(f) for f in "rcf") == split


def test_counts_follow_each_frequency_group():
    categories = smoke_lvis.lvis_categories("v1")
    images, annotations, counted = smoke_lvis.generate_split(
        categories, 1_000, 200_000, seed=0, split_folder="train2017"
    )
    assert len(images) == 1_000 and len(annotations["image_id"]) == 200_000
    assert [i["id"] for i in images] == list(range(1, 1_001))
    assert np.all(np.diff(annotations["image_id"]) >= 0)  # grouped by image
    assert set(annotations["image_id"].tolist()) == set(range(1, 1_001))  # none left empty
    limits = {"r": (1, 10), "c": (11, 100), "f": (101, 1_000)}
    for c in counted:
        low, high = limits[c["frequency"]]
        # images left empty got a frequent category: only frequent counts may exceed the range
        assert low <= c["image_count"] <= (high if c["frequency"] != "f" else 1_000), c
        assert c["instance_count"] >= c["image_count"]
    assert sum(c["instance_count"] for c in counted) == 200_000
    width_height = {(i["width"], i["height"]) for i in images}
    assert width_height <= set(smoke_lvis.IMAGE_SIZES)


def test_polygons_lie_in_their_image_with_their_bbox_and_area():
    rng = np.random.default_rng(0)
    sizes = np.array(smoke_lvis.IMAGE_SIZES)[rng.integers(0, len(smoke_lvis.IMAGE_SIZES), 500)]
    geometry = smoke_lvis.polygons(rng, sizes)
    low, high = smoke_lvis.POLYGON_VERTICES
    assert np.all((geometry["vertices"] >= low) & (geometry["vertices"] <= high))
    for i in range(500):
        xy = geometry["xy"][i, : 2 * geometry["vertices"][i]].reshape(-1, 2)
        assert np.all(xy >= 0) and np.all(xy <= sizes[i] - 1)
        left, top = xy.min(0)
        np.testing.assert_allclose(geometry["bbox"][i], [left, top, *(xy.max(0) - xy.min(0))])
        x, y = xy[:, 0], xy[:, 1]
        area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))
        assert geometry["area"][i] == pytest.approx(area, abs=0.01) and area > 0


def test_written_split_loads_with_detectron2s_lvis_loader(tmp_path):
    categories = smoke_lvis.lvis_categories("v1")
    images, annotations, counted = smoke_lvis.generate_split(
        categories, 6, 90, seed=1, split_folder="val2017", categories_per_image=8, cover_all=False
    )
    path = str(tmp_path / "lvis_v1_val.json")
    smoke_lvis.write_lvis_json(path, images, annotations, counted, seed=1, chunk=40)
    records = load_lvis_json(path, str(tmp_path) + os.sep)
    assert len(records) == 6 and sum(len(r["annotations"]) for r in records) == 90
    assert records[0]["file_name"] == os.path.join(str(tmp_path), "val2017", "000000000001.jpg")
    for record in records:
        assert not set(record["neg_category_ids"]) & {
            a["category_id"] + 1 for a in record["annotations"]
        }
        for annotation in record["annotations"]:
            assert 0 <= annotation["category_id"] < 1203
            (polygon,) = annotation["segmentation"]
            assert len(polygon) % 2 == 0 and len(polygon) >= 6


def test_grw_measurement_counts_the_file_and_matches_its_category_counts(tmp_path, monkeypatch):
    """The counting the tool times is the counting itself, not a read of the counts' cache."""
    monkeypatch.setenv("DISALIGN_CACHE", str(tmp_path / "cache"))
    categories = smoke_lvis.lvis_categories("v1")
    images, annotations, counted = smoke_lvis.generate_split(
        categories, 6, 90, seed=2, split_folder="train2017", categories_per_image=8, cover_all=False
    )
    path = str(tmp_path / "lvis_v1_train.json")
    smoke_lvis.write_lvis_json(path, images, annotations, counted, seed=2, chunk=40)
    (tmp_path / "train2017").mkdir()
    for image in range(1, 7):  # the records' check wants the files
        (tmp_path / "train2017" / f"{image:012d}.jpg").write_bytes(b"")
    result = smoke_lvis.measure_grw(path, str(tmp_path) + os.sep)
    assert result["images_match"] and result["instances_match"]
    assert (result["images"], result["annotations"]) == (6, 90)
    assert not (tmp_path / "cache").exists()


def test_watched_run_measures_what_its_iterations_add(tmp_path):
    """The RSS at "Starting training" and the peak until "Total training time": a child that
    holds 100 MiB before the first line and allocates 200 MiB between the two adds 200 MiB."""
    child = (
        "import time\n"
        "before = bytearray(100 * 2**20); before[::4096] = b'x' * len(before[::4096])\n"
        "print('Starting training from iteration 0', flush=True); time.sleep(1.0)\n"
        "block = bytearray(200 * 2**20); block[::4096] = b'x' * len(block[::4096])\n"
        "time.sleep(1.0); print('Total training time', flush=True); time.sleep(0.5)\n"
    )
    watched = smoke_lvis.Watched(
        [sys.executable, "-c", child], dict(os.environ), str(tmp_path / "log")
    )
    assert watched.returncode == 0
    added_mib = (watched.train_rss - watched.train_start_rss) / 1024
    assert 190 <= added_mib <= 215, added_mib


def test_gpu_memory_estimate_adds_the_weights_and_the_context(tmp_path):
    args = argparse.Namespace(output_dir=str(tmp_path), datasets_dir=None, device="cpu")
    smoke = smoke_lvis.Smoke(args)
    smoke.runs = {
        "stage 1": {"iterations_added_mib": 3000.0, "dataset_loads": 1},
        "stage 2": {"iterations_added_mib": 500.0, "dataset_loads": 1},
    }
    smoke.build = {"baseline.yaml": {"parameters": 50_000_000}}
    # (3000 + 50e6 * 4 / 2**20 + 1024) / 1024 = 4.12; (500 + 190.7 + 1024) / 1024 = 1.67
    (note,) = [n for n in smoke.observations() if "GPU memory" in n]
    assert "(191 MiB: parameters x 4 bytes)" in note
    assert "about 4.1 GiB (stage 1) and 1.7 GiB (stage 2) per GPU, within a 16 GB GPU" in note
    smoke.runs["stage 1"]["iterations_added_mib"] = 16_000.0
    (note,) = [n for n in smoke.observations() if "GPU memory" in n]
    assert "about 16.8 GiB (stage 1)" in note and "beyond a 16 GB GPU" in note
