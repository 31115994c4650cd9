"""
The DisAlign image classifier (disalign.modeling.classifier): its aligned logits follow the
formula over all classes, its GRW loss, and stage 2 trains only the alignment.
"""

import os

import torch
from detectron2.data import MetadataCatalog, build_detection_train_loader
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer
from torch.nn import functional as F

from disalign import GRWCrossEntropy

from conftest import (
    REPO_ROOT,
    RecordingTrainer,
    hand_grw_weights,
    load_config,
    split_file_class_counts,
)

DISALIGN = os.path.join(REPO_ROOT, "configs/Miniature-LT/resnet18_disalign.yaml")
SMALL = ["MODEL.WEIGHTS", "", "SOLVER.IMS_PER_BATCH", 8, "DATALOADER.NUM_WORKERS", 0]


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
