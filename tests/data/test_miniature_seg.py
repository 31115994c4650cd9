"""
The embedded segmentation miniature: its label images match what is drawn in the images.
"""

import numpy as np
from detectron2.data import DatasetCatalog
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
