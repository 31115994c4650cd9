import json
import logging
import math
import os
import re

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from disalign import GRWCrossEntropy, count_class_samples, grw_class_weights, training_class_counts

from conftest import hand_grw_weights


def test_grw_weights_against_hand_computation():
    counts = [100, 10, 1]
    w = grw_class_weights(counts, rho=0.5)
    # r = [100, 10, 1] / 111; r^-0.5 proportional to [0.1, 1/sqrt(10), 1]; normalised to sum 3
    raw = [1 / math.sqrt(100), 1 / math.sqrt(10), 1.0]
    expected = [3 * v / sum(raw) for v in raw]
    torch.testing.assert_close(w, torch.tensor(expected))
    assert w.dtype == torch.float32
    assert w.sum().item() == pytest.approx(3.0)


def test_grw_rho_zero_is_uniform_and_rho_orders_classes():
    torch.testing.assert_close(grw_class_weights([5, 50, 500], 0.0), torch.ones(3))
    w = grw_class_weights([5, 50, 500], 0.8)
    assert w[0] > w[1] > w[2]


def test_grw_zero_count_class_gets_the_weight_of_a_class_seen_once():
    w = grw_class_weights([0, 1, 8], rho=1.0)
    # counts are raised to at least 1: [1, 1, 8] -> r^-1 proportional to [1, 1, 1/8]
    raw = [1.0, 1.0, 0.125]
    torch.testing.assert_close(w, torch.tensor([3 * v / sum(raw) for v in raw]))
    assert torch.isfinite(w).all()
    assert torch.isfinite(grw_class_weights([0, 0, 0], rho=0.8)).all()


@pytest.mark.parametrize("counts", [[], [[1, 2]], [1, -1], [1, float("nan")]])
def test_grw_rejects_bad_counts(counts):
    with pytest.raises(ValueError):
        grw_class_weights(counts, 0.8)


DICTS = [
    {"annotations": [{"category_id": 0}, {"category_id": 0}, {"category_id": 2}]},
    {"annotations": [{"category_id": 0}]},
    {"annotations": []},
]


def test_count_class_samples_by_images_and_instances():
    assert count_class_samples(DICTS, 4, "images") == [2, 0, 1, 0]
    assert count_class_samples(DICTS, 4, "instances") == [3, 0, 1, 0]
    with pytest.raises(ValueError, match="count_by"):
        count_class_samples(DICTS, 4, "pixels")
    with pytest.raises(ValueError, match="configured number of classes"):
        count_class_samples(DICTS, 2, "images")
    labelled = [{"label": 1}, {"label": 1}, {"label": 0}]  # image classification records
    assert count_class_samples(labelled, 3, "images") == [1, 2, 0]


def test_training_class_counts_from_the_registered_miniature_lvis():
    import json

    from detectron2.data import DatasetCatalog, MetadataCatalog

    counts = training_class_counts(("miniature_lvis_train",), 36, "images")
    with open(MetadataCatalog.get("miniature_lvis_train").json_file) as f:
        categories = json.load(f)["categories"]
    assert counts == [c["image_count"] for c in sorted(categories, key=lambda c: c["id"])]
    assert min(counts) >= 1 and max(counts) > 100
    assert len(DatasetCatalog.get("miniature_lvis_train")) < sum(counts)  # several per image


def test_grw_cross_entropy_weights_targets_and_ignores_the_ignore_label():
    loss = GRWCrossEntropy(1.0, [1, 3], num_classes=2, num_unweighted=1)
    torch.testing.assert_close(loss.class_weights(), torch.tensor([1.5, 0.5, 1.0]))
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [5.0, 5.0, 5.0]])
    targets = torch.tensor([0, 1, 2, 255])
    nll = -torch.log_softmax(logits, dim=1)[torch.arange(3), targets[:3]]
    expected = (1.5 * nll[0] + 0.5 * nll[1] + 1.0 * nll[2]) / 3.0
    torch.testing.assert_close(loss(logits, targets, ignore_index=255), expected)
    # per-pixel logits (N, C, H, W) as in segmentation
    pixels = logits[:3].t().reshape(1, 3, 1, 3)
    torch.testing.assert_close(loss(pixels, targets[:3].reshape(1, 1, 3)), expected)
    # divided by the targets' summed weights (1.5 + 1.5 + 0.5 = 3.5), not their number (3)
    targets = torch.tensor([0, 0, 1])
    nll = -torch.log_softmax(logits[:3], dim=1)[torch.arange(3), targets]
    expected = (1.5 * nll[0] + 1.5 * nll[1] + 0.5 * nll[2]) / 3.5
    torch.testing.assert_close(loss(logits[:3], targets), expected)
    empty = loss(logits, torch.full((4,), 255), ignore_index=255)
    assert empty.item() == 0.0 and empty.requires_grad is False


def _register_label_images(tmp_path, name, images, ignore_label=None):
    """A registered segmentation dataset of uint8 label images (lists of rows)."""
    records = []
    for i, rows in enumerate(images):
        path = tmp_path / f"{name}-{i}.png"
        Image.fromarray(np.array(rows, dtype=np.uint8)).save(path)
        records.append({"file_name": str(path), "sem_seg_file_name": str(path)})
    DatasetCatalog.register(name, lambda: records)
    if ignore_label is not None:
        MetadataCatalog.get(name).set(ignore_label=ignore_label)
    return [r["sem_seg_file_name"] for r in records]


def test_pixel_counts_by_hand_with_each_dataset_ignore_label_and_the_default_cache(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("DISALIGN_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # the default cache: ~/.cache/disalign
    names = ("pixels_ignore_7", "pixels_ignore_default")
    try:
        # ignore label 7 from the metadata: 0: 3, 1: 5, 2: 1 pixels
        _register_label_images(
            tmp_path, names[0], [[[0, 0, 1], [2, 7, 1]], [[1, 1, 1], [0, 7, 7]]], ignore_label=7
        )
        # no ignore label in the metadata, so 255: 0: 1, 1: 1, 2: 2 pixels
        _register_label_images(tmp_path, names[1], [[[2, 2, 255], [255, 0, 1]]])
        counts = training_class_counts(names, 3, "pixels")
        assert counts == [4, 6, 3] and all(type(n) is int for n in counts)
        cache = tmp_path / ".cache" / "disalign"
        cached = sorted(p.name for p in cache.iterdir())
        assert len(cached) == 2
        for name, file_name in zip(names, cached):
            assert re.fullmatch(f"pixel_counts-{name}-[0-9a-f]{{16}}\\.json", file_name)
        # a cache entry that does not fit (not K counts) is recomputed
        (cache / cached[0]).write_text(json.dumps([1, 2]))
        assert training_class_counts(names, 3, "pixels") == [4, 6, 3]
        assert json.loads((cache / cached[0]).read_text()) == [3, 5, 1]
        # a label file rewritten: its cache entry is out of date, the counts are new
        Image.fromarray(np.full((2, 3), 2, dtype=np.uint8)).save(tmp_path / f"{names[0]}-1.png")
        assert training_class_counts(names, 3, "pixels") == [3, 3, 9]
        assert len(list(cache.iterdir())) == 3
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


@pytest.mark.parametrize("count_by", ["images", "instances"])
def test_sample_counts_are_cached_by_the_annotation_file(tmp_path, monkeypatch, count_by):
    """A second count (stage 2 after the loader, --resume, the evaluator) does not load the
    dataset again while its json_file is unchanged; a rewritten file is loaded and counted."""
    monkeypatch.setenv("DISALIGN_CACHE", str(tmp_path / "cache"))
    json_file = tmp_path / "annotations.json"
    json_file.write_text("{}")
    loads = []

    def load():
        loads.append(1)
        return DICTS

    name = f"sample_counts_cache_{count_by}"
    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(json_file=str(json_file))
    expected = {"images": [2, 0, 1, 0], "instances": [3, 0, 1, 0]}[count_by]
    try:
        assert training_class_counts((name,), 4, count_by) == expected and len(loads) == 1
        cached = list((tmp_path / "cache").iterdir())
        assert len(cached) == 1
        assert re.fullmatch(f"{count_by}_counts-{name}-[0-9a-f]{{16}}\\.json", cached[0].name)
        assert training_class_counts((name,), 4, count_by) == expected and len(loads) == 1
        # other K: another entry, counted from the records
        assert training_class_counts((name,), 5, count_by) == expected + [0] and len(loads) == 2
        json_file.write_text('{"changed": 1}')
        cached[0].write_text(json.dumps([9, 9, 9, 9]))  # an entry of the old file is not read
        assert training_class_counts((name,), 4, count_by) == expected and len(loads) == 3
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


@pytest.mark.parametrize("label", [3, 200])
def test_pixel_label_outside_the_classes_is_an_error_naming_the_file(tmp_path, monkeypatch, label):
    monkeypatch.setenv("DISALIGN_CACHE", str(tmp_path / "cache"))
    name = f"pixels_bad_label_{label}"
    try:
        files = _register_label_images(tmp_path, name, [[[0, 1, 2]], [[2, label, 255]]])
        message = f"'{files[1]}' has label {label} outside [0, 3) that is not the ignore label 255"
        with pytest.raises(ValueError, match=re.escape(message)):
            training_class_counts((name,), 3, "pixels")
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_grw_loss_of_targets_whose_weights_sum_below_one():
    loss = GRWCrossEntropy(1.0, [1, 3], num_classes=2)  # weights 1.5, 0.5
    logits = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    targets = torch.tensor([1, -100])
    expected = -torch.log_softmax(logits[0], dim=0)[1]  # 0.5 * nll / 0.5
    torch.testing.assert_close(loss(logits, targets), expected)


def test_grw_loss_under_ddp_divides_by_the_mean_summed_weights_of_the_processes(monkeypatch):
    """
    With 2 processes, the summed target weights are all-reduced (here: the other process holds
    targets of summed weight 2.5) and divided by 2, since DDP averages the gradients.
    """
    reduced = []

    def all_reduce(tensor):
        assert not tensor.requires_grad
        reduced.append(tensor.item())
        tensor += 2.5

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    loss = GRWCrossEntropy(1.0, [1, 3], num_classes=2, num_unweighted=1)  # weights 1.5, 0.5, 1
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], requires_grad=True)
    targets = torch.tensor([0, 1])
    nll = -torch.log_softmax(logits.detach(), dim=1)[torch.arange(2), targets]
    value = loss(logits, targets)
    assert reduced == [2.0]  # this process' summed weights, 1.5 + 0.5
    torch.testing.assert_close(value, (1.5 * nll[0] + 0.5 * nll[1]) / ((2.0 + 2.5) / 2))
    assert value.requires_grad


def test_grw_weights_keep_float64_precision_for_large_counts():
    # pixel counts exceed float32's 2**24: computed in float32, 2**24 + 1 would equal 2**24 + 2
    # summed with the other class, and the weights would be 2 ** -23 and 2 (not 2 - 2 ** -23)
    counts = [2**24 + 1, 1]
    expected = torch.tensor(hand_grw_weights(counts, 1.0), dtype=torch.float32)
    assert grw_class_weights(counts, 1.0).tolist() == expected.tolist()
    assert expected[1].item() < 2.0


def test_grw_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"^class_counts must be a non-empty 1-d sequence, got"):
        grw_class_weights([], 0.8)
    with pytest.raises(ValueError, match=r"^class_counts must be finite and non-negative$"):
        grw_class_weights([1, -1], 0.8)


def test_grw_loss_mean_reduction_and_float64_logits():
    """reduction="mean": the weighted sum divided by the number of targets, ignored ones too."""
    loss = GRWCrossEntropy(1.0, [1, 3], num_classes=2, reduction="mean")  # weights 1.5, 0.5
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    targets = torch.tensor([0, 1, 255])
    nll = -torch.log_softmax(logits, dim=1)[torch.arange(2), targets[:2]]
    value = loss(logits, targets, ignore_index=255)
    assert value.dtype == torch.float64
    torch.testing.assert_close(value, (1.5 * nll[0] + 0.5 * nll[1]) / 3)
    # the default reduction: divided by the summed target weights, 1.5 + 0.5
    value = GRWCrossEntropy(1.0, [1, 3], num_classes=2)(logits, targets, ignore_index=255)
    torch.testing.assert_close(value, (1.5 * nll[0] + 0.5 * nll[1]) / 2.0)


def test_grw_loss_from_the_config():
    from detectron2.layers import ShapeSpec

    from disalign import DisAlignFastRCNNOutputLayers, DisAlignImageClassifier

    from conftest import MINIATURE_DISALIGN, REPO_ROOT, load_config

    cfg = load_config(MINIATURE_DISALIGN, "MODEL.WEIGHTS", "", "MODEL.DISALIGN.GRW.RHO", 0.7)
    cfg.MODEL.DISALIGN.GRW.REDUCTION = "mean"
    grw = DisAlignFastRCNNOutputLayers(cfg, ShapeSpec(channels=4)).grw
    k = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    assert (grw.rho, grw.num_classes, grw.num_unweighted, grw.reduction) == (0.7, k, 1, "mean")
    # classification: no background class
    cfg = load_config(os.path.join(REPO_ROOT, "configs/Miniature-LT/resnet18_disalign.yaml"))
    cfg.merge_from_list(["MODEL.WEIGHTS", "", "MODEL.DISALIGN.ALIGNMENT_STAGE", False])
    grw = DisAlignImageClassifier(cfg).grw
    assert (grw.num_classes, grw.num_unweighted, grw.reduction) == (
        cfg.MODEL.IMAGE_CLASSIFIER.NUM_CLASSES,
        0,
        "weighted_mean",
    )
    cfg.MODEL.DISALIGN.GRW.ENABLED = False
    assert DisAlignImageClassifier(cfg).grw is None


def test_count_class_samples_counts_images_by_default():
    assert count_class_samples(DICTS, 4) == [2, 0, 1, 0]


def test_count_class_samples_of_records_without_annotations_and_its_error():
    assert count_class_samples([{"file_name": "a.jpg"}, {"label": 1}], 2) == [0, 1]
    message = (
        "class 5 of 'b.jpg' is outside [0, 2): the configured number of classes does not match "
        "the dataset"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        count_class_samples([{"file_name": "b.jpg", "annotations": [{"category_id": 5}]}], 2)


@pytest.mark.parametrize("num_classes", [11, 12, 13])
def test_training_class_counts_sums_datasets_and_names_the_missing_classes(num_classes, caplog):
    """
    Two registered detection datasets; every class but the first is missing: the warning names
    the first 10 missing classes, and how many more there are.
    """
    first = [{"file_name": "a.jpg", "annotations": [{"category_id": 0}, {"category_id": 0}]}]
    second = [{"file_name": "b.jpg", "annotations": [{"category_id": 0}]}]
    names = ("grw_counts_first", "grw_counts_second")
    letters = [chr(ord("a") + c) for c in range(num_classes)]
    try:
        DatasetCatalog.register(names[0], lambda: first)
        DatasetCatalog.register(names[1], lambda: second)
        MetadataCatalog.get(names[0]).set(thing_classes=letters)
        with caplog.at_level(logging.INFO, logger="disalign"):
            counts = training_class_counts(names, num_classes, grw=True)  # by images
        assert counts == [2] + [0] * (num_classes - 1)
        assert training_class_counts(names, num_classes, "instances")[0] == 3
    finally:
        for name in names:
            DatasetCatalog.remove(name)
        MetadataCatalog.remove(names[0])
    missing = num_classes - 1
    more = f" and {missing - 10} more" if missing > 10 else ""
    warning = (
        f"GRW: {missing} of {num_classes} classes have no training images in {names} "
        f"({', '.join(letters[1:11])}{more}); they get the weight of a class seen once."
    )
    info = f"GRW class counts by images over {names}: min 0, max 2, total 2"
    messages = [r.getMessage() for r in caplog.records]
    assert warning in messages and info in messages, messages


def test_training_class_counts_without_class_names_shows_indices_and_refuses_no_dataset(caplog):
    name = "grw_counts_unnamed"
    try:
        DatasetCatalog.register(name, lambda: [{"annotations": [{"category_id": 1}]}])
        with caplog.at_level(logging.WARNING, logger="disalign"):
            assert training_class_counts((name,), 3, "instances", grw=True) == [0, 1, 0]
    finally:
        DatasetCatalog.remove(name)
    assert any("(0, 2); they get the weight" in r.getMessage() for r in caplog.records)
    message = r"^GRW needs class counts, but cfg.DATASETS.TRAIN is empty$"
    with pytest.raises(ValueError, match=message):
        training_class_counts((), 3)


def test_grw_loss_mean_reduction_of_one_target():
    """One target element: the "mean" reduction divides its weighted loss by 1."""
    loss = GRWCrossEntropy(1.0, [1, 3], num_classes=2, reduction="mean")  # weights 1.5, 0.5
    logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax: 1/4, 3/4
    torch.testing.assert_close(loss(logits, torch.tensor([1])), torch.tensor(0.5 * math.log(4 / 3)))
    torch.testing.assert_close(loss(logits, torch.tensor([0])), torch.tensor(1.5 * math.log(4.0)))


def test_count_class_pixels_ignores_255_by_default(tmp_path):
    from disalign.data.class_counts import count_class_pixels

    path = tmp_path / "labels.png"
    Image.fromarray(np.array([[0, 255, 2], [2, 255, 255]], dtype=np.uint8)).save(path)
    records = [{"sem_seg_file_name": str(path)}] * 2
    assert count_class_pixels(records, 3) == [2, 0, 4]
    # another ignore label: 255 is then a label outside the classes
    with pytest.raises(ValueError, match="has label 255 outside"):
        count_class_pixels(records, 3, ignore_label=2)


def test_grw_class_weights_move_to_the_device_of_the_logits():
    """
    The weights, computed on the CPU, are moved to the logits' device: here torch's "meta" device,
    which, like a GPU, refuses a weight left on the CPU.
    """
    loss = GRWCrossEntropy(1.0, [1, 3], num_classes=2, reduction="mean")
    value = loss(torch.zeros(3, 2, device="meta"), torch.tensor([0, 1, 1], device="meta"))
    assert value.device.type == "meta" and value.shape == ()
    with pytest.raises(RuntimeError, match="device"):  # what a weight on the CPU would give
        torch.nn.functional.cross_entropy(
            torch.zeros(3, 2, device="meta"),
            torch.tensor([0, 1, 1], device="meta"),
            weight=loss.class_weights(),
        )
