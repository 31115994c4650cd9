# -*- coding: utf-8 -*-
"""
The plumbing of training runs: the checked config of a command line (``defaults``),
training-loop pieces for exact resumption and multi-process training (``training``), safe
checkpoint loading (``checkpoint``) and atomic file writes (``file_io``).
"""

from .checkpoint import SafeDetectionCheckpointer, UnsafeCheckpointError
from .defaults import build_config
from .file_io import restored_on_error, write_atomically
from .training import (
    IterationSeedHook,
    OptimizerStateMixin,
    cpu_ddp,
    init_distributed_from_torchrun,
    replace_data_loader,
    started_by_torchrun,
    torchrun_process_group,
)
