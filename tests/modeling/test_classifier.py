"""
Long-tailed image classification: the DisAlign classifier head, GRW, the alignment stage, the
split-file readers, the Many / Medium / Few evaluator and a two-stage run of train_net.py.
"""

import json
import os

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog, build_detection_train_loader
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer
from torch.nn import functional as F

from disalign import GRWCrossEntropy, InputError
from disalign.data import load_inaturalist_json, load_split_file
from disalign.evaluation import ClassificationEvaluator, group_accuracies, shot_group

from conftest import (
    REPO_ROOT,
    RecordingTrainer,
    hand_grw_weights,
    load_config,
    ok,
    split_file_class_counts,
    train_net,
)

BASELINE = os.path.join(REPO_ROOT, "configs/Miniature-LT/resnet18_baseline.yaml")
DISALIGN = os.path.join(REPO_ROOT, "configs/Miniature-LT/resnet18_disalign.yaml")
SMALL = ["MODEL.WEIGHTS", "", "SOLVER.IMS_PER_BATCH", 8, "DATALOADER.NUM_WORKERS", 0]


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


def test_split_file_reader(tmp_path):
    split = tmp_path / "train.txt"
    split.write_text("train/a/1.JPEG 3\n\ntrain/b/2.JPEG 0\n")
    records = load_split_file(str(split), "/data/imagenet")
    assert records == [
        {"file_name": "/data/imagenet/train/a/1.JPEG", "image_id": 0, "label": 3},
        {"file_name": "/data/imagenet/train/b/2.JPEG", "image_id": 1, "label": 0},
    ]
    for bad in ("train/c.JPEG three", "train/c.JPEG", "train/c.JPEG -1", "a b 1"):
        split.write_text(f"train/a/1.JPEG 3\n\n{bad}\n")
        with pytest.raises(InputError) as error:
            load_split_file(str(split), "/data")
        assert str(error.value) == (
            f"{split}:3: expected '<image path> <non-negative integer label>', got '{bad}'"
        )


def test_inaturalist_reader(tmp_path):
    data = {
        "images": [
            {"id": 7, "file_name": "train_val2018/A/1.jpg"},
            {"id": 9, "file_name": "x.jpg"},
        ],
        "annotations": [{"image_id": 7, "category_id": 40}, {"image_id": 9, "category_id": 12}],
        "categories": [{"id": 40}, {"id": 12}],
    }
    path = tmp_path / "train2018.json"
    path.write_text(json.dumps(data))
    assert [(r["image_id"], r["label"]) for r in load_inaturalist_json(str(path), "/r")] == [
        (7, 1),
        (9, 0),
    ]
    data["annotations"][1]["category_id"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="image 9 has unknown category 99"):
        load_inaturalist_json(str(path), "/r")


def test_classifier_logits_follow_the_formula_over_all_classes():
    torch.manual_seed(0)
    cfg = load_config(DISALIGN, *SMALL, "MODEL.DISALIGN.CLS_HEAD", "cosine")
    model = build_model(cfg).eval()
    a = model.alignment
    with torch.no_grad():
        a.alpha.copy_(torch.linspace(0.5, 1.5, 36))
        a.beta.copy_(torch.linspace(-1, 1, 36))
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        x = model.backbone(images)["res5"].mean(dim=(2, 3))
        z = 20.0 * F.normalize(x, dim=1) @ F.normalize(model.cls_score.weight, dim=1).t()
        sigma = torch.sigmoid(a.confidence(x))
        expected = sigma * (a.alpha * z + a.beta) + (1 - sigma) * z
        torch.testing.assert_close(model.logits(images), expected)


def test_classifier_grw_loss_and_stage2_freezing():
    torch.manual_seed(0)
    cfg = load_config(DISALIGN, *SMALL, "SOLVER.BASE_LR", 0.5)
    model = build_model(cfg)
    assert isinstance(model.grw, GRWCrossEntropy) and model.grw.rho == 1.2
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        f"alignment.{n}" for n in ("alpha", "beta", "confidence.weight", "confidence.bias")
    }
    # the loss is GRW-weighted cross-entropy on the aligned logits
    batch = [
        {"image": torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8), "label": c}
        for c in (0, 5, 5)
    ]
    images = (torch.stack([b["image"] for b in batch]).float() - model.pixel_mean) / model.pixel_std
    model.train()
    loss = model(batch)["loss_cls"]
    split_file = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).json_file
    weights = torch.tensor(hand_grw_weights(split_file_class_counts(split_file, 36), 1.2))
    with torch.no_grad():
        logits = model.logits(images)
    labels = torch.tensor([0, 5, 5])
    nll = -F.log_softmax(logits, dim=1)[torch.arange(3), labels]
    torch.testing.assert_close(loss, (weights[labels] * nll).sum() / weights[labels].sum())

    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = RecordingTrainer(
        model, build_detection_train_loader(cfg), build_optimizer(cfg, model)
    )
    trainer.train(0, 3)
    assert not model.backbone.training and not model.cls_score.training
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == trainable and any("running_mean" in k for k in before)


def test_train_net_two_stages(tmp_path, small_lt_test):
    fast = [*map(str, SMALL[2:]), "SOLVER.MAX_ITER", "3"]
    env = small_lt_test  # evaluated on 4 test images per class

    ok(train_net("--config-file", BASELINE, *fast, "OUTPUT_DIR", tmp_path / "s1", env=env))
    weights = tmp_path / "s1/model_final.pth"
    ok(
        train_net(
            "--config-file",
            DISALIGN,
            *fast,
            "MODEL.WEIGHTS",
            weights,
            "OUTPUT_DIR",
            tmp_path / "s2",
            env=env,
        )
    )
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
