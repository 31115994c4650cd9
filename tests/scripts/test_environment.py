"""
The installed environment: every detectron2 module the project uses imports, and the NumPy /
Pillow pins (see requirements.txt) keep detectron2 0.6 and lvis-api working unmodified.
"""

import importlib
import re

import numpy as np
import pytest
from PIL import Image

# each module the project uses, with a name the project takes from it
DETECTRON2_MODULES = {
    "detectron2.checkpoint": "DetectionCheckpointer",
    "detectron2.config": "configurable",
    "detectron2.data": "DatasetCatalog",
    "detectron2.data.datasets.lvis": "load_lvis_json",
    "detectron2.engine": "DefaultTrainer",
    "detectron2.evaluation": "LVISEvaluator",
    "detectron2.layers": "ShapeSpec",
    "detectron2.modeling": "ROI_HEADS_REGISTRY",
    "detectron2.modeling.roi_heads": "StandardROIHeads",
    "detectron2.modeling.roi_heads.fast_rcnn": "FastRCNNOutputLayers",
    "detectron2.solver": "build_optimizer",
    "detectron2.structures": "Instances",
    "detectron2.utils.comm": "get_world_size",
    "detectron2.utils.events": "EventStorage",
    "detectron2.utils.collect_env": "collect_env_info",
}


@pytest.mark.parametrize("name", sorted(DETECTRON2_MODULES))
def test_detectron2_module_imports(name):
    module = importlib.import_module(name)
    assert module.__name__ == name
    assert hasattr(module, DETECTRON2_MODULES[name])


def test_names_used_by_detectron2_and_lvis_api_exist():
    # lvis-api 0.5.3's evaluator and detectron2 0.6 use these (removed in NumPy 1.24 / Pillow 10)
    assert np.float(1.5) == 1.5 and np.int(3) == 3 and np.bool(1) is True
    assert Image.LINEAR == Image.BILINEAR


def test_detectron2_class_histogram_runs(caplog):
    # detectron2 0.6 builds this histogram (with np.int) for every training set it loads
    import logging

    from detectron2.data.build import print_instances_class_histogram

    annotations = [{"category_id": c, "iscrowd": 0} for c in (0, 1, 1, 1)]
    with caplog.at_level(logging.INFO):
        print_instances_class_histogram([{"annotations": annotations}], ["cat", "dog"])
    table = caplog.text
    assert "2 categories" in table
    # the table pairs each name with its instance count, and the total
    assert re.search(r"cat\s*\|\s*1\b", table) and re.search(r"dog\s*\|\s*3\b", table)
    assert re.search(r"total\s*\|\s*4\b", table)


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
