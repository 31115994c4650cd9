"""
build_evaluator on a COCO-format dataset: detectron2's COCOEvaluator, with its compiled fast AP
only where detectron2 has its compiled ops, else pycocotools' COCOeval; the AP of detections
worked out by hand.
"""

import json
import os

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.data.datasets import register_coco_instances
from detectron2.evaluation import COCOEvaluator, inference_on_dataset
from detectron2.structures import Boxes, BoxMode, Instances

from disalign.evaluation.build import build_evaluator

from conftest import MINIATURE_DISALIGN, load_config


def _detectron2_is_compiled():
    """Independently of disalign: the stand-in of `make install` is a .py file."""
    import detectron2._C as C

    return not C.__file__.endswith(".py")


@pytest.fixture(scope="module")
def coco_miniature(tmp_path_factory):
    """The miniature LVIS val split as a COCO-format dataset, registered as detectron2 does it."""
    DatasetCatalog.get("miniature_lvis_val")  # made on first use
    meta = MetadataCatalog.get("miniature_lvis_val")
    lvis = json.loads(open(meta.json_file).read())
    images = lvis["images"][:40]
    ids = {image["id"] for image in images}
    coco = {
        "images": [
            {k: image[k] for k in ("id", "width", "height", "file_name")} for image in images
        ],
        "annotations": [{**a, "iscrowd": 0} for a in lvis["annotations"] if a["image_id"] in ids],
        "categories": [{"id": c["id"], "name": c["name"]} for c in lvis["categories"]],
    }
    path = tmp_path_factory.mktemp("coco") / "instances_miniature_val.json"
    path.write_text(json.dumps(coco))
    name = "miniature_coco_val_test"
    if name not in DatasetCatalog.list():
        register_coco_instances(name, {}, str(path), os.path.join(meta.image_root, "val"))
    return name, coco


class _GroundTruthDetector(torch.nn.Module):
    """Detects each ground-truth box of its image with score 1, except for ``skipped`` classes."""

    def __init__(self, skipped=()):
        super().__init__()
        self.skipped = set(skipped)

    def forward(self, inputs):
        outputs = []
        for x in inputs:
            boxes = [a["bbox"] for a in x["annotations"] if a["category_id"] not in self.skipped]
            classes = [
                a["category_id"] for a in x["annotations"] if a["category_id"] not in self.skipped
            ]
            instances = Instances((x["height"], x["width"]))
            instances.pred_boxes = Boxes(
                BoxMode.convert(
                    torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
                    BoxMode.XYWH_ABS,
                    BoxMode.XYXY_ABS,
                )
            )
            instances.scores = torch.ones(len(boxes))
            instances.pred_classes = torch.tensor(classes, dtype=torch.int64)
            outputs.append({"instances": instances})
        return outputs


def test_coco_format_dataset_is_evaluated_without_compiled_ops(coco_miniature, tmp_path):
    name, coco = coco_miniature
    cfg = load_config(MINIATURE_DISALIGN)
    evaluator = build_evaluator(cfg, name, str(tmp_path))
    assert isinstance(evaluator, COCOEvaluator)
    # the compiled fast AP only where detectron2 has its ops, else pycocotools' COCOeval
    assert evaluator._use_fast_impl == _detectron2_is_compiled()
    loader = build_detection_test_loader(DatasetCatalog.get(name), mapper=lambda d: d)
    # every ground-truth box found: AP 100
    results = inference_on_dataset(_GroundTruthDetector(), loader, evaluator)["bbox"]
    assert results["AP"] == pytest.approx(100.0) and results["AP50"] == pytest.approx(100.0)
    # the boxes of one class missed: its AP is 0, and the mean over the K classes with
    # ground truth is 100 (K - 1) / K
    present = sorted({a["category_id"] for a in coco["annotations"]})
    missed = present[0]  # contiguous index = id - 1 (ids are 1..36)
    evaluator.reset()
    results = inference_on_dataset(_GroundTruthDetector([missed - 1]), loader, evaluator)["bbox"]
    missed_name = next(c["name"] for c in coco["categories"] if c["id"] == missed)
    assert results[f"AP-{missed_name}"] == pytest.approx(0.0)
    assert results["AP"] == pytest.approx(100.0 * (len(present) - 1) / len(present))
