"""
Class-balanced sampling (disalign.data.resumable), the sampler of the decoupled baselines' cRT
stage: classes drawn uniformly, a stream that resumes exactly and is sharded over processes, and
the training loader built from the config.
"""

import os
from collections import Counter

import torch

from disalign.data import build_train_loader
from disalign.data.resumable import (
    ClassBalancedSampler,
    ResumableBatchSampler,
    _training_sampler,
    record_classes,
)

from conftest import REPO_ROOT, load_config

MINIATURE = os.path.join(REPO_ROOT, "configs", "Miniature-LT")


def _config(name, *opts):
    return load_config(os.path.join(MINIATURE, name), "MODEL.WEIGHTS", "", *opts)


def _long_tail_classes():
    counts = [1000, 300, 100, 30, 10, 3, 1]
    return [[c] for c, n in enumerate(counts) for _ in range(n)], counts


def test_class_balanced_sampling_draws_classes_uniformly():
    image_classes, counts = _long_tail_classes()
    draws = 70000
    sampler = ClassBalancedSampler(image_classes, seed=3, rank=0, world_size=1)
    stream = list(zip(range(draws), sampler))
    by_class = Counter(image_classes[i][0] for _, i in stream)
    for c in range(len(counts)):  # 1/7 each; the binomial std is 0.0013
        assert abs(by_class[c] / draws - 1 / 7) < 0.006, (c, by_class[c])
    # within a class, its images uniformly: class 4 has 10 images, 1000 draws of it
    first = sum(counts[:4])
    of_class = Counter(i - first for _, i in stream if image_classes[i][0] == 4)
    assert set(of_class) == set(range(10))
    assert all(abs(n / by_class[4] - 0.1) < 0.04 for n in of_class.values())


def test_class_balanced_sampling_resumes_exactly_and_shards_the_global_stream():
    image_classes, _ = _long_tail_classes()

    def batches(start, rank=0, world=1, n=20):
        sampler = ClassBalancedSampler(image_classes, seed=5, rank=rank, world_size=world)
        it = iter(ResumableBatchSampler(sampler, 4 // world, None, start, rank, world))
        return [next(it) for _ in range(n)]

    uninterrupted = batches(0, n=30)
    assert batches(10) == uninterrupted[10:30]  # --resume at iteration 10
    # two processes of 2 images each take the global positions of one process's stream
    merged = sorted(p for r in (0, 1) for b in batches(0, r, 2, n=30) for p in b)
    assert merged == sorted(p for b in uninterrupted for p in b)


def test_class_balanced_training_loader_resumes_exactly():
    cfg = _config("resnet18_crt.yaml", "SOLVER.IMS_PER_BATCH", 4, "DATALOADER.NUM_WORKERS", 0)

    def batches(start, n):
        loader = iter(build_train_loader(cfg, start))
        return [[(x["file_name"], x["image"]) for x in next(loader)] for _ in range(n)]

    uninterrupted, resumed = batches(0, 6), batches(3, 3)
    for batch, expected in zip(resumed, uninterrupted[3:]):
        assert [f for f, _ in batch] == [f for f, _ in expected]
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(batch, expected))


def test_class_balanced_sampler_from_the_config_and_detection_records():
    cfg = _config("resnet18_crt.yaml")
    records = [{"label": 0}, {"label": 1}, {"label": 1}]
    sampler = _training_sampler(cfg, records, seed=1)
    assert isinstance(sampler, ClassBalancedSampler) and sampler.classes == [0, 1]
    detection = {"annotations": [{"category_id": 3}, {"category_id": 1}, {"category_id": 3}]}
    assert record_classes(detection) == [1, 3]
    assert record_classes({"annotations": []}) == []
