#!/usr/bin/env python
"""
DisAlign training and evaluation script, in the shape of detectron2's tools/train_net.py.

Stage 1 (the detector, classifier or segmentor) and stage 2 (the alignment) are both runs of this
script; they differ only in their configs. Evaluation results are also written to
OUTPUT_DIR/eval_results.json.
"""

import json
import os
import sys

import detectron2.utils.comm as comm
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch

from disalign import InputError, add_disalign_config, check_inputs
from disalign.data import build_test_loader, build_train_loader
from disalign.evaluation import build_evaluator


class Trainer(DefaultTrainer):
    """detectron2's DefaultTrainer with the project's loaders and evaluators for every task."""

    @classmethod
    def build_train_loader(cls, cfg):
        return build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        results = super().test(cfg, model, evaluators)
        if comm.is_main_process():
            with open(os.path.join(cfg.OUTPUT_DIR, "eval_results.json"), "w") as f:
                json.dump(results, f, indent=2)
        return results


def build_config(args):
    """The config from the file and command-line options; raises InputError on bad input."""
    cfg = get_cfg()
    add_disalign_config(cfg)
    if not os.path.isfile(args.config_file):
        raise InputError(f"config file '{args.config_file}' does not exist")
    try:
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(args.opts)
    except (KeyError, AssertionError) as e:  # yacs' "Non-existent (config) key: ..."
        raise InputError(f"{args.config_file}: {e.args[0]}") from None
    cfg.freeze()
    check_inputs(cfg, training=not args.eval_only)
    return cfg


def main(args, cfg):
    default_setup(cfg, args)

    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        return Trainer.test(cfg, model)

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    try:
        cfg = build_config(args)  # fails before any worker starts or anything is written
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args, cfg),
        )
    except InputError as e:
        sys.exit(f"error: {e}")
