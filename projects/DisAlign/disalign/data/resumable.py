# -*- coding: utf-8 -*-
"""
A training loader that can be resumed exactly: the batches after iteration ``k`` of a resumed run
are the batches after iteration ``k`` of an uninterrupted run, images, augmentations and all.

detectron2's training loader restarts its sampler from the beginning on ``--resume``, draws
augmentations from per-worker random generators whose state is not checkpointed, and groups images
by aspect ratio inside each worker. Here, instead:

* the stream of dataset indices is detectron2's own sampler (``TrainingSampler`` or
  ``RepeatFactorTrainingSampler``) or the class-balanced one (:class:`ClassBalancedSampler`,
  ``DATALOADER.SAMPLER_TRAIN "ClassBalancedSampler"``), seeded from ``cfg.SEED``, sharded over
  processes as detectron2 shards it (process ``rank`` takes global positions
  ``rank, rank + world, ...``);
* batches are formed in the main process by :class:`ResumableBatchSampler` from the images'
  recorded width and height (aspect-ratio grouping without reading any image), so that skipping
  the batches of finished iterations costs no I/O;
* every image is mapped (read, augmented) with random generators seeded from its global position
  in the stream (:class:`PositionSeededDataset`), whichever worker maps it.

The stream depends only on ``cfg.SEED``, the datasets and the total batch size: the same images
get the same augmentations with 1 process x 2 images or 2 processes x 1 image.
"""

import itertools
import logging
import random
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import DatasetFromList, get_detection_dataset_dicts
from detectron2.data.build import trivial_batch_collator
from detectron2.data.samplers import RepeatFactorTrainingSampler, TrainingSampler
from detectron2.utils import comm
from torch.utils.data import DataLoader, Dataset, Sampler

from ..input_checks import InputError, check_training_records, dataset_loading_errors

__all__ = [
    "ClassBalancedSampler",
    "PositionSeededDataset",
    "ResumableBatchSampler",
    "build_resumable_train_loader",
    "derived_seed",
]


def derived_seed(*keys: int) -> int:
    """A 31-bit seed that is a fixed function of the integers ``keys``."""
    (state,) = np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]).generate_state(1)
    return int(state) & 0x7FFFFFFF


class PositionSeededDataset(Dataset):
    """
    Maps ``(global position, dataset index)`` items to model inputs with ``mapper``, inside a fork
    of the torch, NumPy and Python random generators seeded from ``(seed, global position)``:
    the augmentations of an image depend on where it is in the stream, not on which process or
    worker maps it, nor on what was mapped before.
    """

    def __init__(self, dataset: Sequence[Dict], mapper: Callable[[Dict], Dict], seed: int):
        self.dataset = DatasetFromList(list(dataset), copy=True)
        self.mapper = mapper
        self.seed = seed

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item: Tuple[int, int]):
        position, index = item
        seed = derived_seed(self.seed, position)
        numpy_state, python_state = np.random.get_state(), random.getstate()
        with torch.random.fork_rng(devices=[]):
            try:
                torch.manual_seed(seed)
                np.random.seed(seed)
                random.seed(seed)
                record = self.dataset[index]
                try:
                    return self.mapper(record)
                except OSError as e:  # PIL's UnidentifiedImageError included
                    raise InputError(f"cannot read image '{record['file_name']}': {e}") from None
            finally:
                np.random.set_state(numpy_state)
                random.setstate(python_state)


class ResumableBatchSampler:
    """
    Batches of ``(global position, dataset index)`` for this process, from an infinite sampler
    of dataset indices (this process' shard), optionally grouped by aspect ratio (landscape vs
    portrait, as detectron2's ``AspectRatioGroupedDataset``), starting at batch ``start_batch``.
    """

    def __init__(
        self,
        sampler,
        batch_size: int,
        landscape: Optional[Sequence[bool]] = None,
        start_batch: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        """
        Args:
            sampler: an infinite iterable of dataset indices, this process' shard of the global
                stream (detectron2's training samplers).
            batch_size (int): images per batch in this process.
            landscape: for each dataset index, whether its image is wider than tall; None: no
                aspect-ratio grouping.
            start_batch (int): batches to skip (the iterations already done).
            rank, world_size (int): this process' place in the global stream.
        """
        self.sampler = sampler
        self.batch_size = batch_size
        self.landscape = landscape
        self.start_batch = start_batch
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        buckets = {False: [], True: []}
        batches_made = 0
        for local_position, index in enumerate(self.sampler):
            bucket = buckets[bool(self.landscape[index]) if self.landscape is not None else False]
            bucket.append((self.rank + local_position * self.world_size, index))
            if len(bucket) == self.batch_size:
                if batches_made >= self.start_batch:
                    yield list(bucket)
                batches_made += 1
                bucket.clear()


def record_classes(record: Dict) -> List[int]:
    """
    The classes of a training record: its "label" (classification), else the distinct
    ``category_id`` of its annotations (detection: the classes the image contains).
    """
    if "label" in record:
        return [int(record["label"])]
    return sorted({int(a["category_id"]) for a in record.get("annotations", ())})


class ClassBalancedSampler(Sampler):
    """
    Class-balanced sampling (Kang et al., ICLR 2020; mmdetection's ``ClassAwareSampler`` for
    detection): an infinite stream of dataset indices, each drawn by picking a class uniformly
    among the classes that have images, then uniformly one image of that class (for detection,
    one image containing it). Images without any class are never drawn.

    Like detectron2's ``TrainingSampler``, the global stream depends only on the seed, and
    process ``rank`` yields its positions ``rank, rank + world_size, ...``.
    """

    _CHUNK = 4096  # draws made at a time

    def __init__(
        self,
        image_classes: Sequence[Sequence[int]],
        seed: int,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
    ):
        """
        Args:
            image_classes: for each dataset index, the classes of its image
                (:func:`record_classes`).
            seed (int): the seed of the stream.
            rank, world_size (int): this process' shard (default: detectron2's comm).
        """
        images_of = {}
        for index, classes in enumerate(image_classes):
            for c in classes:
                images_of.setdefault(int(c), []).append(index)
        if not images_of:
            raise ValueError("class-balanced sampling: no training image has a class")
        self.classes = sorted(images_of)
        self._images_of = [torch.as_tensor(images_of[c]) for c in self.classes]
        counts = [len(images_of[c]) for c in self.classes]
        self._counts = torch.as_tensor(counts, dtype=torch.float64)
        self._seed = int(seed)
        self._rank = comm.get_rank() if rank is None else rank
        self._world_size = comm.get_world_size() if world_size is None else world_size

    def __iter__(self) -> Iterator[int]:
        yield from itertools.islice(self._infinite_indices(), self._rank, None, self._world_size)

    def _infinite_indices(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self._seed)
        while True:
            classes = torch.randint(len(self.classes), (self._CHUNK,), generator=generator)
            uniform = torch.rand(self._CHUNK, generator=generator, dtype=torch.float64)
            positions = (uniform * self._counts[classes]).long()  # in [0, n_c)
            for c, p in zip(classes.tolist(), positions.tolist()):
                yield int(self._images_of[c][p])


def _landscape(dataset_dicts: Sequence[Dict]) -> Optional[List[bool]]:
    if not all("width" in d and "height" in d for d in dataset_dicts):
        return None  # e.g. semantic segmentation records: sizes are known only once read
    return [d["width"] > d["height"] for d in dataset_dicts]


def _training_sampler(cfg, dataset_dicts, seed: int):
    name = cfg.DATALOADER.SAMPLER_TRAIN
    if name == "TrainingSampler":
        return TrainingSampler(len(dataset_dicts), seed=seed)
    if name == "RepeatFactorTrainingSampler":
        repeat_factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
            dataset_dicts, cfg.DATALOADER.REPEAT_THRESHOLD
        )
        return RepeatFactorTrainingSampler(repeat_factors, seed=seed)
    if name == "ClassBalancedSampler":
        return ClassBalancedSampler([record_classes(d) for d in dataset_dicts], seed)
    raise ValueError(
        f"DATALOADER.SAMPLER_TRAIN must be TrainingSampler, RepeatFactorTrainingSampler or "
        f"ClassBalancedSampler, got '{name}'"
    )


def build_resumable_train_loader(cfg, mapper: Callable[[Dict], Dict], start_iter: int = 0):
    """
    The training loader of ``cfg.DATASETS.TRAIN`` (same datasets, filtering, sampler and batch
    size as detectron2's ``build_detection_train_loader``), resumable at iteration ``start_iter``.

    Returns:
        an infinite iterable of lists of ``cfg.SOLVER.IMS_PER_BATCH / world size`` mapped dicts.
    """
    world_size, rank = comm.get_world_size(), comm.get_rank()
    total_batch_size = cfg.SOLVER.IMS_PER_BATCH
    if total_batch_size % world_size != 0:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH ({total_batch_size}) must be divisible by the number of "
            f"processes ({world_size})"
        )
    with dataset_loading_errors(cfg.DATASETS.TRAIN):
        dataset_dicts = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            min_keypoints=(
                cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0
            ),
            proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
        )
    check_training_records(dataset_dicts, cfg.MODEL.ROI_HEADS.NUM_CLASSES, cfg.DATASETS.TRAIN)
    seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
    if cfg.SEED < 0:
        logging.getLogger(__name__).warning(
            "SEED is negative: the training stream is random and a resumed run will not repeat "
            "the batches of an uninterrupted one; set SEED to make --resume exact"
        )
    batch_sampler = ResumableBatchSampler(
        _training_sampler(cfg, dataset_dicts, seed),
        total_batch_size // world_size,
        _landscape(dataset_dicts) if cfg.DATALOADER.ASPECT_RATIO_GROUPING else None,
        start_batch=start_iter,
        rank=rank,
        world_size=world_size,
    )
    return DataLoader(
        PositionSeededDataset(dataset_dicts, mapper, seed),
        batch_sampler=batch_sampler,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        collate_fn=trivial_batch_collator,
    )
