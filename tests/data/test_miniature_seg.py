"""
The embedded segmentation miniature: its label images match what is drawn in the images; the
held-out split is apart from val and holds every class; train and val are generator version 2's.
"""

import hashlib
import os

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

# the miniature's drawing: stuff classes 0-3 in these RGB colours (with a zero-mean texture and
# noise), object classes 4-19 in 16 hues around the colour wheel (class 4 + i: 22.5 * i degrees),
# saturation 0.85 and value 0.9 (each object's colour jittered, with per-pixel noise)
MINIATURE_STUFF_RGB = {0: (70, 125, 55), 1: (190, 170, 125), 2: (55, 95, 150), 3: (115, 115, 115)}
MINIATURE_HUE_STEP = 22.5


def _hue_saturation(rgb):
    """HSV hue (degrees) and saturation of (N, 3) RGB pixels."""
    rgb = rgb.astype(np.float64)
    high, low = rgb.max(axis=1), rgb.min(axis=1)
    chroma = np.maximum(high - low, 1e-9)
    r, g, b = rgb.T
    sector = np.where(high == g, (b - r) / chroma + 2, (r - g) / chroma + 4)
    sector = np.where(high == r, (g - b) / chroma % 6, sector)
    return 60 * sector, (high - low) / np.maximum(high, 1e-9)


def test_miniature_labels_match_the_drawing():
    hue_errors = {}  # object class -> each region's median hue error (degrees)
    object_pixels = off_colour = 0
    records = DatasetCatalog.get("miniature_seg_val")
    assert len(records) > 40
    for record in records:
        labels = np.asarray(Image.open(record["sem_seg_file_name"]))
        image = np.asarray(Image.open(record["file_name"])).astype(np.int64)
        assert labels.shape == image.shape[:2] == (128, 128)
        assert (labels < 20).all() and (labels >= 4).any()
        for c in np.unique(labels).tolist():
            pixels = image[labels == c]
            if c < 4:  # a stuff region: its mean colour is the table's, within 1.5
                assert np.abs(pixels.mean(axis=0) - MINIATURE_STUFF_RGB[c]).max() < 1.5, (record, c)
                continue
            hue, saturation = _hue_saturation(pixels)
            error = (hue - MINIATURE_HUE_STEP * (c - 4) + 180) % 360 - 180
            hue_errors.setdefault(c, []).append(np.median(error))
            assert np.median(saturation) > 0.6, (record, c)
            # the region is the object: all but a few edge pixels have the object's colour
            off = np.abs(pixels - np.median(pixels, axis=0)).max(axis=1) > 40
            object_pixels, off_colour = object_pixels + len(pixels), off_colour + off.sum()
    assert sorted(hue_errors) == list(range(4, 20))
    # within 18 degrees per region (the jitter), 5 on average per class (neighbours: 22.5 apart)
    assert max(abs(e) for errors in hue_errors.values() for e in errors) < 18
    assert max(abs(np.mean(errors)) for errors in hue_errors.values()) < 5
    # labels shifted by a pixel would put a few percent of the object labels on the background
    assert off_colour / object_pixels < 0.01


def _pixels_digest(records):
    """sha256 of the records' file names, image pixels and label pixels, in file-name order."""
    h = hashlib.sha256()
    for record in sorted(records, key=lambda r: os.path.basename(r["file_name"])):
        h.update(os.path.basename(record["file_name"]).encode())
        for path in (record["file_name"], record["sem_seg_file_name"]):
            h.update(np.asarray(Image.open(path)).tobytes())
    return h.hexdigest()


def test_train_and_val_are_those_of_generator_version_2():
    # the digests of the 555 train and 56 val images generator version 2 wrote (before the
    # held-out split was added), pixels rather than PNG bytes
    expected = {
        "miniature_seg_train": (
            555, "f46a0fad9aec85e228be4544bcd5f0cecd0df158371a30ec0186af9ea58879c7"
        ),
        "miniature_seg_val": (
            56, "ae07776111848615e73a0452e171fe14f449260984058bd2f2e1fdbed90e69b8"
        ),
    }
    for name, (count, digest) in expected.items():
        records = DatasetCatalog.get(name)
        assert (len(records), _pixels_digest(records)) == (count, digest), name


def test_held_out_split_is_apart_from_val_and_holds_every_class():
    heldout, val = (DatasetCatalog.get(f"miniature_seg_{s}") for s in ("heldout", "val"))
    assert 20 <= len(heldout) <= 60  # a few dozen images

    def contents(records):
        return {np.asarray(Image.open(r["file_name"])).tobytes() for r in records}

    files = {r["file_name"] for r in heldout} | {r["sem_seg_file_name"] for r in heldout}
    assert not files & ({r["file_name"] for r in val} | {r["sem_seg_file_name"] for r in val})
    assert not contents(heldout) & contents(val)
    images_per_class = np.zeros(20, dtype=int)
    for record in heldout:
        labels = np.unique(np.asarray(Image.open(record["sem_seg_file_name"])))
        assert labels.max() < 20
        images_per_class[labels] += 1
    assert (images_per_class[:4] > 0).all()  # every stuff class
    assert (images_per_class[4:] == 6).all()  # each object class in 6 images
    meta = MetadataCatalog.get("miniature_seg_heldout")
    assert meta.evaluator_type == "sem_seg" and len(meta.stuff_classes) == 20
