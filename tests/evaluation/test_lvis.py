"""
The project's LVIS evaluator, on both backends (TEST.LVIS_EVAL_BACKEND "fast" and "lvis-api"), on
hand-made ground truth and detections whose AP can be worked out by hand.
"""

import json

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances

import disalign
from disalign.evaluation import build_evaluator

CATEGORIES = [  # one category per LVIS frequency group
    {"id": 1, "name": "f_class", "frequency": "f", "synset": "f.n.01", "synonyms": [], "def": ""},
    {"id": 2, "name": "r_class", "frequency": "r", "synset": "r.n.01", "synonyms": [], "def": ""},
    {"id": 3, "name": "c_class", "frequency": "c", "synset": "c.n.01", "synonyms": [], "def": ""},
]
BOXES = {1: [10, 10, 20, 20], 2: [50, 50, 30, 30], 3: [5, 60, 20, 20]}  # XYWH


def _annotation(ann_id, image_id, category_id):
    x, y, w, h = BOXES[category_id]
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [x, y, w, h],
        "area": w * h,
        "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
    }


@pytest.fixture(scope="module")
def dataset_name(tmp_path_factory):
    root = tmp_path_factory.mktemp("hand_lvis")
    images = [
        {
            "id": i,
            "width": 100,
            "height": 100,
            "coco_url": f"x/val/{i}.png",
            "neg_category_ids": neg,
            "not_exhaustive_category_ids": [],
        }
        for i, neg in ((1, [2, 3]), (2, [1]))
    ]
    annotations = [_annotation(1, 1, 1), _annotation(2, 2, 2), _annotation(3, 2, 3)]
    json_file = root / "gt.json"
    json_file.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES})
    )
    name = "hand_made_lvis_val"
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(
        json_file=str(json_file),
        evaluator_type="lvis",
        thing_classes=[c["name"] for c in CATEGORIES],
    )
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _instances(detections):
    """detections: [(contiguous class, XYWH box, score)] -> Instances with boxes and masks."""
    inst = Instances((100, 100))
    boxes = torch.tensor(
        [[x, y, x + w, y + h] for _, (x, y, w, h), _ in detections], dtype=torch.float
    )
    inst.pred_boxes = Boxes(boxes)
    inst.scores = torch.tensor([s for _, _, s in detections])
    inst.pred_classes = torch.tensor([c for c, _, _ in detections])
    masks = torch.zeros(len(detections), 100, 100, dtype=torch.bool)
    for k, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
        masks[k, y0:y1, x0:x1] = True
    inst.pred_masks = masks
    return inst


@pytest.mark.parametrize("backend", ["fast", "lvis-api"])
def test_lvis_evaluator_reports_hand_computed_ap(dataset_name, backend, tmp_path):
    cfg = get_cfg()
    disalign.add_disalign_config(cfg)
    cfg.TEST.LVIS_EVAL_BACKEND = backend
    evaluator = build_evaluator(cfg, dataset_name, str(tmp_path))
    evaluator.reset()
    # image 1: an exact f_class detection (true positive)
    evaluator.process([{"image_id": 1}], [{"instances": _instances([(0, BOXES[1], 0.9)])}])
    # image 2: an exact c_class detection; an r_class box that misses its object (IoU 0.28);
    # a low-scored f_class false positive, counted because f_class is in the image's negatives
    image2 = [(2, BOXES[3], 0.8), (1, [60, 60, 30, 30], 0.7), (0, [50, 50, 30, 30], 0.1)]
    evaluator.process([{"image_id": 2}], [{"instances": _instances(image2)}])
    results = evaluator.evaluate()

    for task in ("bbox", "segm"):
        r = results[task]
        # f_class and c_class are found before any false positive: AP 100; r_class: AP 0
        assert r["APf"] == pytest.approx(100.0)
        assert r["APc"] == pytest.approx(100.0)
        assert r["APr"] == pytest.approx(0.0)
        assert r["AP"] == pytest.approx(200.0 / 3)
        assert r["AP50"] == pytest.approx(200.0 / 3)
    assert (tmp_path / "lvis_instances_results.json").exists()

    # the same AP per category, with its ground truth count (one object each) and frequency
    per_category = json.loads((tmp_path / "per_category_ap.json").read_text())
    assert per_category["dataset"] == dataset_name
    assert per_category["tasks"] == ["bbox", "segm"]
    expected_ap = {1: 100.0, 2: 0.0, 3: 100.0}
    assert [c["id"] for c in per_category["categories"]] == [1, 2, 3]
    for entry, category in zip(per_category["categories"], CATEGORIES):
        assert entry["name"] == category["name"]
        assert entry["frequency"] == category["frequency"]
        assert entry["train_image_count"] is None  # no "image_count" in this ground truth
        assert entry["gt_instances"] == 1
        assert set(entry["AP"]) == {"bbox", "segm"}
        for task in ("bbox", "segm"):
            assert entry["AP"][task] == pytest.approx(expected_ap[category["id"]])
