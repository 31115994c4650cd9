# -*- coding: utf-8 -*-
"""
The differences between detectron2 0.6 and current detectron2 that the project absorbs, in one
place. Both report ``detectron2.__version__ == "0.6"``, so each difference is detected by the
feature itself. Each item says what makes it dead code: "0.6 only" items go when detectron2 0.6 is
no longer supported.
"""

from detectron2.engine import DefaultTrainer
from detectron2.utils import comm

__all__ = [
    "TRAINER_SAVES_OPTIMIZER",
    "create_local_process_group",
    "forget_failed_url",
    "launch_supports_cpu",
    "requests_sigmoid_or_federated_loss",
    "set_data_loader_iterator",
]

# Current detectron2's DefaultTrainer checkpoints the optimizer (its state_dict includes the inner
# trainer's); 0.6's saves only the iteration and the hooks' state. 0.6 only.
TRAINER_SAVES_OPTIMIZER = "state_dict" in DefaultTrainer.__dict__

# Current detectron2's comm has create_local_process_group, which its launch calls after
# starting CPU (gloo) or CUDA (nccl) processes; 0.6's launch creates the group inline and asserts
# CUDA. Dead with 0.6.
_HAS_LOCAL_PROCESS_GROUP_API = hasattr(comm, "create_local_process_group")


def launch_supports_cpu() -> bool:
    """Whether the installed detectron2's ``launch`` starts CPU processes (gloo backend)."""
    return _HAS_LOCAL_PROCESS_GROUP_API


def create_local_process_group(local_world_size: int) -> None:
    """
    detectron2's per-machine process group, for processes joined to torch.distributed by another
    launcher than detectron2's (``torchrun``).
    """
    if _HAS_LOCAL_PROCESS_GROUP_API:
        comm.create_local_process_group(local_world_size)
        return
    # 0.6 only: no public call; what its launch does
    import torch.distributed as dist

    machine = dist.get_rank() // local_world_size
    for i in range(dist.get_world_size() // local_world_size):
        group = dist.new_group(list(range(i * local_world_size, (i + 1) * local_world_size)))
        if i == machine:
            comm._LOCAL_PROCESS_GROUP = group


def set_data_loader_iterator(simple_trainer, data_loader) -> None:
    """
    Give a ``SimpleTrainer`` an iterator over ``data_loader`` made now: current detectron2 keeps it
    in ``_data_loader_iter_obj`` (made lazily), 0.6 in ``_data_loader_iter``. The 0.6 branch is
    0.6 only.
    """
    simple_trainer.data_loader = data_loader
    if hasattr(simple_trainer, "_data_loader_iter_obj"):
        simple_trainer._data_loader_iter_obj = iter(data_loader)
    else:
        simple_trainer._data_loader_iter = iter(data_loader)


def forget_failed_url(checkpointer) -> None:
    """
    Current detectron2's DetectionCheckpointer keeps ``_parsed_url_during_load`` set when loading a
    URL fails, and then refuses every later load; clear it. Dead once detectron2 resets it itself.
    """
    if getattr(checkpointer, "_parsed_url_during_load", None) is not None:
        checkpointer._parsed_url_during_load = None


def requests_sigmoid_or_federated_loss(cfg) -> bool:
    """
    Whether ``cfg`` asks the box predictor for sigmoid cross-entropy or the federated loss: keys
    ``MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE`` / ``USE_FED_LOSS``, which exist only after 0.6 (False
    there). The ``get`` default is 0.6 only.
    """
    box_head = cfg.MODEL.ROI_BOX_HEAD
    return bool(box_head.get("USE_SIGMOID_CE", False) or box_head.get("USE_FED_LOSS", False))
