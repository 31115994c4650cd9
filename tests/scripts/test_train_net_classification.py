"""
train_net.py on long-tailed image classification: a two-stage run on the miniature, its Many /
Medium / Few accuracies against the saved predictions, and a classifier checkpoint of another
class count refused in one line.
"""

import json
import os

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog

from conftest import REPO_ROOT, split_file_class_counts, train_net, train_two_stages

BASELINE = os.path.join(REPO_ROOT, "configs/Miniature-LT/resnet18_baseline.yaml")
DISALIGN = os.path.join(REPO_ROOT, "configs/Miniature-LT/resnet18_disalign.yaml")
SMALL = ["MODEL.WEIGHTS", "", "SOLVER.IMS_PER_BATCH", 8, "DATALOADER.NUM_WORKERS", 0]


def test_train_net_two_stages(tmp_path, small_lt_test):
    fast = [*map(str, SMALL[2:]), "SOLVER.MAX_ITER", "3"]
    env = small_lt_test  # evaluated on 4 test images per class

    train_two_stages(BASELINE, DISALIGN, tmp_path, *fast, env=env)
    # the accuracies, by hand from the saved predictions and the training split's counts:
    # many > 100 training images, medium 20-100, few < 20
    train_counts = split_file_class_counts(MetadataCatalog.get("miniature_lt_train").json_file, 36)
    group = ["many" if n > 100 else "medium" if n >= 20 else "few" for n in train_counts]
    for stage in ("s1", "s2"):
        results = json.loads((tmp_path / stage / "eval_results.json").read_text())["classification"]
        inference = tmp_path / stage / "inference" / "miniature_lt_test"
        saved = inference / "classification_predictions.json"
        predictions = json.loads(saved.read_text())
        correct = [p["label"] == p["prediction"] for p in predictions]
        assert results["top1"] == pytest.approx(100.0 * sum(correct) / len(correct))
        for name in ("many", "medium", "few"):
            per_class = [
                np.mean([hit for hit, p in zip(correct, predictions) if p["label"] == c])
                for c in range(36)
                if group[c] == name and any(p["label"] == c for p in predictions)
            ]
            assert results[name] == pytest.approx(100.0 * np.mean(per_class))
    s1, s2 = (torch.load(tmp_path / s / "model_final.pth")["model"] for s in ("s1", "s2"))
    assert set(s2) - set(s1) == {
        "alignment.alpha",
        "alignment.beta",
        "alignment.confidence.weight",
        "alignment.confidence.bias",
    }
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_class_count_mismatch_of_a_classifier_checkpoint(tmp_path):
    checkpoint = tmp_path / "model.pth"
    torch.save({"model": {"cls_score.weight": torch.zeros(36, 8)}}, checkpoint)
    result = train_net(
        "--config-file",
        DISALIGN,
        "MODEL.WEIGHTS",
        checkpoint,
        "MODEL.IMAGE_CLASSIFIER.NUM_CLASSES",
        20,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: MODEL.WEIGHTS: checkpoint '{checkpoint}' does not fit the model's classes: its "
        "'cls_score.weight' has shape (36, 8), the model's 'cls_score.weight' (20, 512) (check "
        "the config's NUM_CLASSES; 1 class-dependent parameter(s) differ)"
    )
