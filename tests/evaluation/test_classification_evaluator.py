"""
The Many / Medium / Few evaluator of long-tailed classification (disalign.evaluation
.classification), against accuracies computed by hand.
"""

import json

import pytest
import torch

from disalign.evaluation import ClassificationEvaluator, group_accuracies, shot_group


def test_shot_groups_and_group_accuracies_by_hand():
    assert [shot_group(n) for n in (101, 100, 20, 19)] == ["many", "medium", "medium", "few"]
    counts = [500, 50, 5, 5]  # class 0 many, class 1 medium, classes 2 and 3 few
    labels = [0, 0, 1, 1, 1, 1, 2, 2, 3]
    predicted = [0, 1, 1, 1, 0, 0, 2, 0, 1]
    r = group_accuracies(labels, predicted, counts)
    assert r["top1"] == pytest.approx(100 * 4 / 9)
    assert r["many"] == pytest.approx(50.0)
    assert r["medium"] == pytest.approx(50.0)
    assert r["few"] == pytest.approx(25.0)  # mean of class 2 (1/2) and class 3 (0/1)


def test_classification_evaluator(tmp_path):
    evaluator = ClassificationEvaluator("toy", [200, 30, 3], output_dir=str(tmp_path))
    evaluator.reset()
    probs = torch.eye(3)
    evaluator.process(
        [{"image_id": 0, "label": 0}, {"image_id": 1, "label": 2}],
        [{"probs": probs[0]}, {"probs": probs[1]}],
    )
    evaluator.process([{"image_id": 2, "label": 1}], [{"probs": probs[1]}])
    results = evaluator.evaluate()["classification"]
    assert results == pytest.approx({"top1": 200 / 3, "many": 100.0, "medium": 100.0, "few": 0.0})
    saved = json.loads((tmp_path / "classification_predictions.json").read_text())
    assert saved[1] == {"image_id": 1, "label": 2, "prediction": 1}
