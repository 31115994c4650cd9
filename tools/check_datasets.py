#!/usr/bin/env python
"""
Check that datasets are where detectron2 will look for them ($DETECTRON2_DATASETS, default
./datasets), printing one line per problem.

    python tools/check_datasets.py                        # LVIS v0.5 and v1.0, train and val
    python tools/check_datasets.py lvis_v1_val            # named datasets
    python tools/check_datasets.py --config-file CONFIG.yaml  # the datasets of a config

Exit status 0 when everything is there, 1 otherwise.
"""

import argparse
import os
import sys

from detectron2.config import get_cfg

from disalign import add_disalign_config, dataset_problems

DEFAULT_DATASETS = ("lvis_v0.5_train", "lvis_v0.5_val", "lvis_v1_train", "lvis_v1_val")


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("datasets", nargs="*", help="registered dataset names")
    parser.add_argument("--config-file", help="check the datasets of this config")
    args = parser.parse_args()

    names = list(args.datasets)
    if args.config_file:
        cfg = get_cfg()
        add_disalign_config(cfg)
        cfg.merge_from_file(args.config_file)
        names += list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    names = list(dict.fromkeys(names or DEFAULT_DATASETS))

    root = os.environ.get("DETECTRON2_DATASETS", "datasets")
    if not os.path.isdir(os.path.expanduser(root)):
        print(f"missing: DETECTRON2_DATASETS={root} is not a directory")
        sys.exit(1)
    problems = 0
    for name in names:
        found = dataset_problems(name)
        for line in found:
            print(f"missing: {line}")
        if not found:
            print(f"ok: {name}")
        problems += len(found)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
