"""
Semantic segmentation: the DisAlign heads' per-pixel math, pixel GRW, the head / body / tail
metrics, ADE20K's Table 7 split, the alignment stage and a two-stage run of train_net.py.
"""

import json
import os
import pickle

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer
from PIL import Image
from torch.nn import functional as F

from disalign import DisAlignFCNHead, DistributionAlignment, training_class_counts
from disalign.data import build_train_loader
from disalign.data.ade20k import ADE20K_CLASS_GROUPS, ADE20K_PIXEL_RATIOS
from disalign.evaluation import group_segmentation_metrics, pixel_ratio_group

from conftest import REPO_ROOT, RecordingTrainer, load_config, ok, train_net

BASELINE = os.path.join(REPO_ROOT, "configs/Miniature-Seg/deeplabv3plus_R_18_baseline.yaml")
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


class _RunsCode:
    """Unpickled, runs ``touch marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pixel_counts_reproduce_a_known_ratio_table_and_are_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("DISALIGN_CACHE", str(tmp_path / "cache"))
    ratios = [0.5, 0.3, 0.15, 0.04, 0.01]  # over 3 label images of 10 x 10 pixels, 300 pixels
    flat = np.repeat(np.arange(5), [int(r * 300) for r in ratios]).astype(np.uint8)
    flat[:6] = 255  # 6 ignored pixels of class 0
    records = []
    for i, part in enumerate(np.split(np.random.RandomState(0).permutation(flat), 3)):
        path = tmp_path / f"{i}.png"
        Image.fromarray(part.reshape(10, 10)).save(path)
        records.append({"file_name": str(path), "sem_seg_file_name": str(path)})
    name = "known_ratio_table"
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(ignore_label=255)
    renames = []

    def recording_replace(source, target):  # what reached the cache's name, and from where
        renames.append((os.path.basename(source), os.path.basename(target), open(source).read()))
        os.rename(source, target)

    try:
        with monkeypatch.context() as m:
            m.setattr(os, "replace", recording_replace)
            counts = training_class_counts((name,), 5, "pixels")
        assert counts == [144, 90, 45, 12, 3]
        cached = list((tmp_path / "cache").glob(f"pixel_counts-{name}-*.json"))
        assert len(cached) == 1 and json.loads(cached[0].read_text()) == counts
        # written completely under a temporary name, then renamed to the cache's name
        assert len(renames) == 1
        temporary, final, content = renames[0]
        assert final == cached[0].name and temporary != final and json.loads(content) == counts
        assert os.listdir(tmp_path / "cache") == [final]
        cached[0].write_text(json.dumps([1, 2, 3, 4, 5]))  # the cache is what is read next
        assert training_class_counts((name,), 5, "pixels") == [1, 2, 3, 4, 5]
        # a pickle that would run code when unpickled is never unpickled: the counts are
        # counted again and the cache rewritten as JSON
        marker = tmp_path / "code_ran"
        cached[0].write_bytes(pickle.dumps(_RunsCode(marker)))
        assert not marker.exists()
        assert training_class_counts((name,), 5, "pixels") == [144, 90, 45, 12, 3]
        assert not marker.exists()
        assert json.loads(cached[0].read_text()) == [144, 90, 45, 12, 3]
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


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


def test_ade20k_table7_split():
    assert len(ADE20K_PIXEL_RATIOS) == 150
    assert [pixel_ratio_group(r) if r != 0.001 else "tail" for _, r, _ in ADE20K_PIXEL_RATIOS] == (
        ADE20K_CLASS_GROUPS
    )  # the paper prints 'swivel chair' (0.1%, rounded) as tail
    assert [ADE20K_CLASS_GROUPS.count(g) for g in ("head", "body", "tail")] == [20, 55, 75]
    for name in ("ade20k_sem_seg_train", "ade20k_sem_seg_val"):
        metadata = MetadataCatalog.get(name)
        assert metadata.class_groups == ADE20K_CLASS_GROUPS
        assert len(metadata.stuff_classes) == 150 and metadata.stuff_classes[0] == "wall"


# the miniature's drawing: stuff classes 0-3 in these RGB colours (with a zero-mean texture and
# noise), object classes 4-19 in 16 hues around the colour wheel (class 4 + i: 22.5 * i degrees),
# saturation 0.85 and value 0.9 (each object's colour jittered, with per-pixel noise)
MINIATURE_STUFF_RGB = {0: (70, 125, 55), 1: (190, 170, 125), 2: (55, 95, 150), 3: (115, 115, 115)}
MINIATURE_HUE_STEP = 22.5


def _hue_saturation(rgb):
    """HSV hue (degrees) and saturation of (N, 3) RGB pixels."""
    rgb = rgb.astype(np.float64)
    high, low = rgb.max(axis=1), rgb.min(axis=1)
    chroma = np.maximum(high - low, 1e-9)
    r, g, b = rgb.T
    sector = np.where(high == g, (b - r) / chroma + 2, (r - g) / chroma + 4)
    sector = np.where(high == r, (g - b) / chroma % 6, sector)
    return 60 * sector, (high - low) / np.maximum(high, 1e-9)


def test_miniature_labels_match_the_drawing():
    hue_errors = {}  # object class -> each region's median hue error (degrees)
    object_pixels = off_colour = 0
    records = DatasetCatalog.get("miniature_seg_val")
    assert len(records) > 40
    for record in records:
        labels = np.asarray(Image.open(record["sem_seg_file_name"]))
        image = np.asarray(Image.open(record["file_name"])).astype(np.int64)
        assert labels.shape == image.shape[:2] == (128, 128)
        assert (labels < 20).all() and (labels >= 4).any()
        for c in np.unique(labels).tolist():
            pixels = image[labels == c]
            if c < 4:  # a stuff region: its mean colour is the table's, within 1.5
                assert np.abs(pixels.mean(axis=0) - MINIATURE_STUFF_RGB[c]).max() < 1.5, (record, c)
                continue
            hue, saturation = _hue_saturation(pixels)
            error = (hue - MINIATURE_HUE_STEP * (c - 4) + 180) % 360 - 180
            hue_errors.setdefault(c, []).append(np.median(error))
            assert np.median(saturation) > 0.6, (record, c)
            # the region is the object: all but a few edge pixels have the object's colour
            off = np.abs(pixels - np.median(pixels, axis=0)).max(axis=1) > 40
            object_pixels, off_colour = object_pixels + len(pixels), off_colour + off.sum()
    assert sorted(hue_errors) == list(range(4, 20))
    # within 18 degrees per region (the jitter), 5 on average per class (neighbours: 22.5 apart)
    assert max(abs(e) for errors in hue_errors.values() for e in errors) < 18
    assert max(abs(np.mean(errors)) for errors in hue_errors.values()) < 5
    # labels shifted by a pixel would put a few percent of the object labels on the background
    assert off_colour / object_pixels < 0.01


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


def test_train_net_two_stages(tmp_path, small_seg_val):
    fast = [*map(str, SMALL[2:]), "SOLVER.MAX_ITER", "3"]
    env = small_seg_val  # evaluated on val images that hold every class

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
