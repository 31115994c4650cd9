"""
The installed environment: every detectron2 module the project uses imports, and the NumPy /
Pillow pins (see requirements.txt) keep detectron2 0.6 and lvis-api working unmodified.
"""

import importlib

import numpy as np
import pytest
from PIL import Image

DETECTRON2_MODULES = [
    "detectron2.checkpoint",
    "detectron2.config",
    "detectron2.data",
    "detectron2.data.datasets.lvis",
    "detectron2.engine",
    "detectron2.evaluation",
    "detectron2.layers",
    "detectron2.modeling",
    "detectron2.modeling.roi_heads",
    "detectron2.modeling.roi_heads.fast_rcnn",
    "detectron2.solver",
    "detectron2.structures",
    "detectron2.utils.comm",
    "detectron2.utils.events",
    "detectron2.utils.collect_env",
]


@pytest.mark.parametrize("name", DETECTRON2_MODULES)
def test_detectron2_module_imports(name):
    importlib.import_module(name)


def test_names_used_by_detectron2_and_lvis_api_exist():
    # lvis-api 0.5.3's evaluator and detectron2 0.6 use these (removed in NumPy 1.24 / Pillow 10)
    assert np.float(1.5) == 1.5 and np.int(3) == 3 and np.bool(1) is True
    assert Image.LINEAR == Image.BILINEAR


def test_detectron2_class_histogram_runs():
    # detectron2 0.6 builds this histogram (with np.int) for every training set it loads
    from detectron2.data.build import print_instances_class_histogram

    dicts = [{"annotations": [{"category_id": 0, "iscrowd": 0}, {"category_id": 1, "iscrowd": 0}]}]
    print_instances_class_histogram(dicts, ["a", "b"])


def test_collect_env_and_compiled_ops():
    import detectron2._C as ops
    import torch
    from detectron2.layers.rotated_boxes import pairwise_iou_rotated
    from detectron2.utils.collect_env import collect_env_info

    assert "detectron2" in collect_env_info()
    boxes = torch.tensor([[5.0, 5.0, 2.0, 2.0, 0.0]])
    if ops.__file__.endswith(".py"):  # the pure-Python build made by tools/install_detectron2.py
        with pytest.raises(RuntimeError, match="needs detectron2's compiled extension"):
            pairwise_iou_rotated(boxes, boxes)
    else:  # a detectron2 built with its C++ ops
        assert pairwise_iou_rotated(boxes, boxes).item() == pytest.approx(1.0)
