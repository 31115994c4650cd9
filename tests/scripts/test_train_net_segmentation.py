"""
train_net.py on semantic segmentation: a two-stage run on the miniature, its head / body / tail
metrics against detectron2's per-class numbers and groups computed from the training labels; a
post-hoc config evaluating the stage-1 checkpoint.
"""

import json
import os

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from PIL import Image

from conftest import REPO_ROOT, ok, train_net, train_two_stages

BASELINE = os.path.join(REPO_ROOT, "configs/Miniature-Seg/deeplabv3plus_R_18_baseline.yaml")
DISALIGN = os.path.join(REPO_ROOT, "configs/Miniature-Seg/deeplabv3plus_R_18_disalign.yaml")
SMALL = ["MODEL.WEIGHTS", "", "SOLVER.IMS_PER_BATCH", 2, "DATALOADER.NUM_WORKERS", 0]

LOGIT_ADJUSTMENT = os.path.join(
    REPO_ROOT, "configs/Miniature-Seg/deeplabv3plus_R_18_logit_adjustment.yaml"
)
FAST = [*map(str, SMALL[2:]), "SOLVER.MAX_ITER", "3"]


@pytest.fixture(scope="module")
def stages(tmp_path_factory, small_seg_val):
    """Both stages, 3 iterations each, evaluated on val images that hold every class."""
    out = tmp_path_factory.mktemp("seg")
    train_two_stages(BASELINE, DISALIGN, out, *FAST, env=small_seg_val)
    return out


def test_train_net_two_stages(stages, small_seg_val):
    tmp_path, env = stages, small_seg_val
    # the group means are the means of detectron2's per-class IoU / accuracy over each group's
    # classes that have pixels in the val set (NaN per-class values)
    names = MetadataCatalog.get("miniature_seg_val").stuff_classes
    # the groups by hand from the training label images' pixels (255: ignored): head above 1% of
    # the labelled pixels, tail below 0.1%, body in between
    labels = os.path.join(env["DETECTRON2_DATASETS"], "miniature_seg", "labels", "train")
    counts = np.zeros(256, dtype=np.int64)
    for name in os.listdir(labels):
        pixels = np.asarray(Image.open(os.path.join(labels, name)))
        counts += np.bincount(pixels.ravel(), minlength=256)
    assert counts[len(names) : 255].sum() == 0
    ratios = counts[: len(names)] / counts[: len(names)].sum()
    groups = np.where(ratios > 0.01, "head", np.where(ratios < 0.001, "tail", "body"))
    assert set(groups) == {"head", "body", "tail"}
    for stage in ("s1", "s2"):
        results = json.loads((tmp_path / stage / "eval_results.json").read_text())["sem_seg"]
        iou = np.array([results[f"IoU-{n}"] for n in names], dtype=float)
        acc = np.array([results[f"ACC-{n}"] for n in names], dtype=float)
        assert results["mIoU"] == pytest.approx(np.nanmean(iou))
        assert results["mAcc"] == pytest.approx(np.nanmean(acc))
        for group in ("head", "body", "tail"):
            assert results[f"mIoU_{group}"] == pytest.approx(np.nanmean(iou[groups == group]))
            assert results[f"mAcc_{group}"] == pytest.approx(np.nanmean(acc[groups == group]))
    s1, s2 = (torch.load(tmp_path / s / "model_final.pth")["model"] for s in ("s1", "s2"))
    assert set(s2) - set(s1) == {
        f"sem_seg_head.alignment.{n}"
        for n in ("alpha", "beta", "confidence.weight", "confidence.bias")
    }
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_post_hoc_segmentation_evaluates_the_stage1_checkpoint(stages, small_seg_val, tmp_path):
    # logit adjustment with tau 0 is stage 1 itself: the same numbers through the per-pixel path
    result = ok(
        train_net(
            "--config-file", LOGIT_ADJUSTMENT, "--eval-only", *FAST, "MODEL.DECOUPLED.TAU", "0.0",
            "MODEL.WEIGHTS", stages / "s1" / "model_final.pth", "OUTPUT_DIR", tmp_path,
            env=small_seg_val,
        )
    )  # fmt: skip
    assert "(post_hoc): PostHocClassifier(method=logit_adjustment, tau=0.0)" in result.stdout
    assert json.loads((tmp_path / "eval_results.json").read_text()) == json.loads(
        (stages / "s1" / "eval_results.json").read_text()
    )
