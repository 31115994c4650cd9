#!/usr/bin/env python
"""
DisAlign training and evaluation script, in the shape of detectron2's tools/train_net.py.

Stage 1 (the detector, classifier or segmentor) and stage 2 (the alignment) are both runs of this
script; they differ only in their configs. Evaluation results are also written to
OUTPUT_DIR/eval_results.json.
"""

import json
import math
import os
import sys
import weakref

if __name__ == "__main__":
    # first: the package imports detectron2 and fvcore without the installed torch's deprecation
    # warnings of torch.jit.script (harmless: they script small functions), see disalign/__init__
    import disalign  # noqa: F401

import detectron2.utils.comm as comm
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.projects.deeplab import build_lr_scheduler
from detectron2.utils.logger import setup_logger

from disalign import InputError
from disalign.compat import launch_supports_cpu
from disalign.data import build_test_loader, build_train_loader
from disalign.engine import (
    IterationSeedHook,
    OptimizerStateMixin,
    build_config,
    cpu_ddp,
    replace_data_loader,
    started_by_torchrun,
    torchrun_process_group,
)
from disalign.engine.checkpoint import SafeDetectionCheckpointer
from disalign.engine.file_io import restored_on_error, write_atomically
from disalign.evaluation import build_evaluator


class Trainer(OptimizerStateMixin, DefaultTrainer):
    """
    detectron2's DefaultTrainer with the project's loaders and evaluators for every task, safe
    atomic checkpoints, and exact resumption (the optimizer's state, the data stream and the random
    generators continue where the checkpoint left them: see disalign.data.resumable and
    disalign.engine).
    """

    def __init__(self, cfg):
        with cpu_ddp():  # multi-process training on the CPU
            super().__init__(cfg)

    def build_hooks(self):
        self.checkpointer = SafeDetectionCheckpointer(
            self._trainer.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        seed = self.cfg.SEED if self.cfg.SEED >= 0 else comm.shared_random_seed()
        return [IterationSeedHook(seed)] + super().build_hooks()

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume=resume)
        loader = self._trainer.data_loader
        if self.start_iter > 0:  # continue the data stream after the finished iterations
            loader.batch_sampler.start_batch = self.start_iter  # not a second loader: one load
        replace_data_loader(self._trainer, loader)

    def run_step(self):
        try:
            super().run_step()
        except FloatingPointError as e:  # detectron2's, not all of which name the iteration
            if "iteration" in str(e):
                raise
            raise FloatingPointError(f"{e} (iteration={self.iter})") from None

    @classmethod
    def build_train_loader(cls, cfg, start_iter=0):
        return build_train_loader(cfg, start_iter)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_test_loader(cfg, dataset_name)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        # detectron2's schedulers, and the DeepLab project's "WarmupPolyLR"
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        results = super().test(cfg, model, evaluators)
        if comm.is_main_process():

            def strict(value):  # a metric that is not a number (NaN: nothing to measure): null
                if isinstance(value, float) and not math.isfinite(value):
                    return None
                if isinstance(value, dict):
                    return {k: strict(v) for k, v in value.items()}
                if isinstance(value, (list, tuple)):
                    return [strict(v) for v in value]
                return value

            # strict JSON, which every parser reads; the returned results keep their NaNs
            write_atomically(
                os.path.join(cfg.OUTPUT_DIR, "eval_results.json"),
                lambda f: json.dump(strict(results), f, indent=2, allow_nan=False),
            )
        return results


def main(args, cfg):
    # a run that fails (bad data found while loading, a loss that became NaN) leaves the
    # config.yaml of the run that wrote the directory's checkpoints
    with restored_on_error([os.path.join(cfg.OUTPUT_DIR, "config.yaml")]):
        return run(args, cfg)


def run(args, cfg):
    default_setup(cfg, args)
    # the project's own messages (GRW class counts, the SEED warning, the fast LVIS evaluator's
    # tables) reach the console and OUTPUT_DIR/log.txt as detectron2's do
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="disalign")

    if args.eval_only:
        model = Trainer.build_model(cfg)
        SafeDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        return Trainer.test(cfg, model)

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def one_line(error: Exception) -> str:
    """The message of an error, on one line (errors from other processes carry a traceback)."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return lines[-1].split("Error: ", 1)[-1] if len(lines) > 1 else lines[0]


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    try:
        cfg = build_config(args)  # fails before any worker starts or anything is written
        if started_by_torchrun():  # e.g. CPU processes with detectron2 0.6, see disalign.engine
            with torchrun_process_group(cfg.MODEL.DEVICE):
                main(args, cfg)
        else:
            if args.num_gpus > 1 and cfg.MODEL.DEVICE == "cpu" and not launch_supports_cpu():
                raise InputError(
                    f"this detectron2's launch needs CUDA for --num-gpus {args.num_gpus}; on the "
                    f"CPU, start the processes with: torchrun --nproc_per_node {args.num_gpus} "
                    f"train_net.py ..."
                )
            launch(
                main,
                args.num_gpus,
                num_machines=args.num_machines,
                machine_rank=args.machine_rank,
                dist_url=args.dist_url,
                args=(args, cfg),
            )
    except (InputError, FloatingPointError) as e:  # bad input; a loss that became NaN or inf
        sys.exit(f"error: {one_line(e)}")
