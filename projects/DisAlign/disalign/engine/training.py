# -*- coding: utf-8 -*-
"""
Training-loop pieces for exact resumption and for multi-process training on the CPU (the
differences between detectron2 versions they meet are in :mod:`disalign.compat`).

* :class:`IterationSeedHook` reseeds the random generators before every iteration from
  ``(cfg.SEED, iteration, rank)``, so that what a model draws at iteration ``k`` (e.g. the ROI
  heads' proposal sampling) does not depend on whether the run was resumed;
  :mod:`disalign.data.resumable` does the same for the data.
* :class:`OptimizerStateMixin` puts the optimizer's state (momentum) in the checkpoints of a
  ``DefaultTrainer``: detectron2 0.6 saves only the iteration and the hooks' state, so that a
  resumed run restarts SGD's momentum from zero (current detectron2 saves it itself).
* :func:`replace_data_loader` swaps a trainer's data loader and starts its iterator before
  training (detectron2 0.6 and current detectron2 keep the iterator differently).
* :func:`cpu_ddp` lets detectron2's ``DefaultTrainer`` wrap a CPU model in
  ``DistributedDataParallel`` (its ``create_ddp_model`` always passes ``device_ids``, which torch
  refuses for CPU modules).
* :func:`init_distributed_from_torchrun`: current detectron2's ``launch`` starts CPU processes
  with the gloo backend; detectron2 0.6's requires CUDA (see
  :func:`disalign.compat.launch_supports_cpu`). There, processes are started by PyTorch's own
  launcher, ``torchrun``, and joined here to
  torch.distributed (gloo on the CPU) and detectron2's local process group.
"""

import contextlib
import os
from unittest import mock

import torch
import torch.distributed as dist
from detectron2.engine import HookBase
from detectron2.engine import defaults as detectron2_defaults
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng

from ..compat import TRAINER_SAVES_OPTIMIZER, create_local_process_group, set_data_loader_iterator
from ..data.resumable import derived_seed

__all__ = [
    "IterationSeedHook",
    "OptimizerStateMixin",
    "cpu_ddp",
    "init_distributed_from_torchrun",
    "replace_data_loader",
    "started_by_torchrun",
]


class IterationSeedHook(HookBase):
    """Before each iteration, seed torch, NumPy and Python from ``(seed, iteration, rank)``."""

    def __init__(self, seed: int):
        self.seed = seed

    def before_step(self):
        seed_all_rng(derived_seed(self.seed, self.trainer.iter, comm.get_rank()))


class OptimizerStateMixin:
    """For a DefaultTrainer subclass: its checkpoints hold the inner trainer's (optimizer) state."""

    def state_dict(self):
        ret = super().state_dict()
        if not TRAINER_SAVES_OPTIMIZER:
            ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if not TRAINER_SAVES_OPTIMIZER and "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])


def replace_data_loader(simple_trainer, data_loader):
    """
    Make a detectron2 ``SimpleTrainer`` read its next batches from ``data_loader``, through an
    iterator made now, before training starts: making it consumes random numbers, which inside
    an iteration would shift that iteration's draws (current detectron2 makes it lazily, at the
    first step of the run, which is another iteration for a resumed run than for a fresh one).
    """
    set_data_loader_iterator(simple_trainer, data_loader)


@contextlib.contextmanager
def cpu_ddp():
    """Within: detectron2's DefaultTrainer wraps CPU models in DDP without ``device_ids``."""
    create_ddp_model = detectron2_defaults.create_ddp_model

    def create_ddp_model_for_device(model, **kwargs):
        if comm.get_world_size() > 1 and next(model.parameters()).device.type == "cpu":
            kwargs.setdefault("device_ids", None)
        return create_ddp_model(model, **kwargs)

    with mock.patch.object(detectron2_defaults, "create_ddp_model", create_ddp_model_for_device):
        yield


def started_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (torch.distributed's launcher)."""
    return "TORCHELASTIC_RUN_ID" in os.environ and "LOCAL_RANK" in os.environ


def init_distributed_from_torchrun(device: str):
    """
    Join the process group that ``torchrun`` set up (``env://``): nccl for CUDA, gloo for the
    CPU, and detectron2's per-machine process group, as detectron2's ``launch`` does.
    """
    backend = "gloo" if device == "cpu" else "nccl"
    dist.init_process_group(backend=backend, init_method="env://")
    create_local_process_group(int(os.environ["LOCAL_WORLD_SIZE"]))
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    comm.synchronize()


@contextlib.contextmanager
def torchrun_process_group(device: str):
    """
    :func:`init_distributed_from_torchrun` for the duration of the block, then leave the process
    group. A gloo process that exits without destroying its group may abort at interpreter exit
    ("terminate called without an active exception") while its worker threads still run. The
    group is left together: after an evaluation, the other processes wait at a barrier for the
    main one, which alone computes the metrics, instead of tearing down their side of the
    group while it still runs (PyTorch asks every rank to destroy a group at the same point).
    """
    init_distributed_from_torchrun(device)
    try:
        yield
        comm.synchronize()  # not after an error: the failed process's peers are stopped anyway
    finally:
        dist.destroy_process_group()
