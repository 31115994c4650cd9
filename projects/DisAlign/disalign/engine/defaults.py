# -*- coding: utf-8 -*-
"""
What train_net.py does with its command line before anything else, in the place of
detectron2's ``setup(args)`` in its tools: the config from the file and the overrides, checked.
"""

import os

from detectron2.config import get_cfg

from ..config import add_disalign_config
from ..input_checks import InputError, check_device, check_inputs

__all__ = ["build_config"]


def build_config(args):
    """
    The config of a train_net.py run, as its command line gives it: the file
    ``args.config_file`` merged with the KEY VALUE pairs ``args.opts``, then checked
    (:func:`disalign.input_checks.check_inputs`, for an evaluation when ``args.eval_only``, and
    the device for ``args.num_gpus``, default 1), before anything is built or written. Tools
    that read a config as train_net.py does call it too.

    Raises:
        InputError: one line that names the problem.
    """
    cfg = get_cfg()
    add_disalign_config(cfg)
    if not os.path.isfile(args.config_file):
        raise InputError(f"config file '{args.config_file}' does not exist")
    try:
        cfg.merge_from_file(args.config_file)
    except (KeyError, AssertionError, ValueError) as e:  # yacs' "Non-existent config key: ..."
        raise InputError(f"{args.config_file}: {e.args[0]}") from None
    opts = list(args.opts)
    if len(opts) % 2:
        raise InputError(f"command-line overrides are KEY VALUE pairs; '{opts[-1]}' has no value")
    for key, value in zip(opts[0::2], opts[1::2]):
        try:
            cfg.merge_from_list([key, value])
        except (KeyError, AssertionError) as e:  # yacs' "Non-existent key: ..."
            raise InputError(f"command-line override: {e.args[0]}") from None
        except ValueError:  # yacs' "Type mismatch ...": the value reads as another type
            current = cfg
            for name in key.split("."):
                current = current[name]
            names = {int: "an int", float: "a float", str: "a string", bool: "a bool"}
            wanted, given = (
                names.get(type(v), f"a {type(v).__name__}")
                for v in (current, cfg._decode_cfg_value(value))
            )
            raise InputError(
                f"command-line override {key} {value}: {key} is {wanted} (here {current!r}), "
                f"'{value}' reads as {given}"
            ) from None
    cfg.freeze()
    check_device(cfg.MODEL.DEVICE, getattr(args, "num_gpus", 1))
    check_inputs(cfg, training=not args.eval_only)
    return cfg
