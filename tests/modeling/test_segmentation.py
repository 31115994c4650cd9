"""
Semantic segmentation models (disalign.modeling.segmentation): the DisAlign heads' per-pixel
math, and stage 2 trains only the alignment.
"""

import os

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer
from torch.nn import functional as F

from disalign import DisAlignFCNHead, DistributionAlignment
from disalign.data import build_train_loader

from conftest import REPO_ROOT, RecordingTrainer, load_config

DISALIGN = os.path.join(REPO_ROOT, "configs/Miniature-Seg/deeplabv3plus_R_18_disalign.yaml")
SMALL = ["MODEL.WEIGHTS", "", "SOLVER.IMS_PER_BATCH", 2, "DATALOADER.NUM_WORKERS", 0]


def _set_alignment(alignment, k):
    with torch.no_grad():
        alignment.alpha.copy_(torch.linspace(0.5, 2.0, k))
        alignment.beta.copy_(torch.linspace(-1.0, 1.0, k))
        alignment.confidence.weight.normal_(0, 0.5)


def _expected(alignment, z, y):
    # the confidence is a 1x1 convolution of the features to one channel
    w = alignment.confidence.weight.view(1, -1, 1, 1)
    sigma = torch.sigmoid(F.conv2d(y, w, alignment.confidence.bias))  # (N, 1, h, w)
    s = alignment.alpha.view(1, -1, 1, 1) * z + alignment.beta.view(1, -1, 1, 1)
    return sigma * s + (1 - sigma) * z


def test_fcn_head_aligns_every_pixel_and_class():
    torch.manual_seed(0)
    k, d = 5, 6
    head = DisAlignFCNHead(
        {"res5": ShapeSpec(channels=8, stride=8)},
        in_feature="res5",
        num_classes=k,
        conv_dims=d,
        norm="",
        alignment=DistributionAlignment(k, d),
    ).eval()
    _set_alignment(head.alignment, k)
    features = {"res5": torch.randn(2, 8, 4, 3)}
    with torch.no_grad():
        y = head.convs(features["res5"])
        expected = _expected(head.alignment, head.cls_score(y), y)
        torch.testing.assert_close(head.logits(features), expected)
        logits, _ = head(features)
    assert logits.shape == (2, k, 32, 24)  # upsampled by the feature's stride


def test_deeplab_head_aligns_the_decoder_logits():
    torch.manual_seed(0)
    model = build_model(load_config(DISALIGN, *SMALL)).eval()
    head = model.sem_seg_head
    assert head.alignment.num_aligned == 20 and not hasattr(head, "predictor")
    _set_alignment(head.alignment, 20)
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, 128, 128))  # the crop size
        y = head.layers(features)  # the decoder output
        torch.testing.assert_close(
            head.logits(features), _expected(head.alignment, head.cls_score(y), y)
        )


def test_segmentor_stage2_trains_only_the_alignment(tmp_path):
    torch.manual_seed(0)
    cfg = load_config(DISALIGN, *SMALL, "SOLVER.BASE_LR", 0.5)
    model = build_model(cfg)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        f"sem_seg_head.alignment.{n}"
        for n in ("alpha", "beta", "confidence.weight", "confidence.bias")
    }
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = RecordingTrainer(model, build_train_loader(cfg), build_optimizer(cfg, model))
    trainer.train(0, 2)
    assert trainer.loss_names == [["loss_sem_seg"]] * 2
    assert not model.backbone.training and model.sem_seg_head.training
    assert not model.sem_seg_head.decoder.training
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == trainable and any("running_mean" in k for k in before)
