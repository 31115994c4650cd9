"""
The head / body / tail metrics of semantic segmentation (disalign.evaluation.sem_seg) against a
confusion matrix worked out by hand.
"""

import numpy as np
import pytest

from disalign.evaluation import group_segmentation_metrics


def test_group_metrics_against_a_hand_computed_confusion_matrix():
    # rows: predicted class, columns: true class; the last row / column is the ignore label
    conf = np.array(
        [
            [8, 1, 0, 5],  # predicted 0
            [2, 3, 0, 0],  # predicted 1
            [0, 0, 0, 0],  # predicted 2 (class 2 has no pixel: left out of every mean)
            [9, 9, 9, 9],
        ]
    )
    r = group_segmentation_metrics(conf, ["head", "tail", "tail"])
    assert r["mIoU_head"] == pytest.approx(100 * 8 / (10 + 9 - 8))  # TP / (GT + predicted - TP)
    assert r["mAcc_head"] == pytest.approx(100 * 8 / 10)
    assert r["mIoU_tail"] == pytest.approx(100 * 3 / (4 + 5 - 3))
    assert r["mAcc_tail"] == pytest.approx(100 * 3 / 4)
    assert np.isnan(r["mIoU_body"]) and np.isnan(r["mAcc_body"])
