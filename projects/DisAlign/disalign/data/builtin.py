# -*- coding: utf-8 -*-
"""
Registration of the project's datasets, as detectron2's ``detectron2/data/datasets/builtin.py``
registers its own, under the same datasets root (``$DETECTRON2_DATASETS``, default ``datasets``):
the embedded miniatures (made the first time they are loaded), ImageNet-LT, Places-LT and
iNaturalist 2018, and the head / body / tail groups on detectron2's ADE20K metadata. Importing
:mod:`disalign.data` imports this module; the modules it calls only define their datasets.
"""

import os

from .ade20k import register_ade20k_class_groups
from .classification import register_all_long_tail_classification
from .miniature_lt import register_miniature_lt
from .miniature_lvis import register_miniature_lvis
from .miniature_seg import register_miniature_seg

__all__ = ["DATASETS_ROOT", "DEFAULT_DATASETS_ROOT", "register_all"]

DEFAULT_DATASETS_ROOT = "datasets"
# the datasets root as the user gave it (not expanded), read once, as detectron2 reads it
DATASETS_ROOT = os.getenv("DETECTRON2_DATASETS", DEFAULT_DATASETS_ROOT)


def register_all(root: str) -> None:
    """Register the project's datasets under the datasets directory ``root``."""
    register_ade20k_class_groups()
    register_all_long_tail_classification(root)
    register_miniature_lt(root)
    register_miniature_lvis(root)
    register_miniature_seg(root)


register_all(os.path.expanduser(DATASETS_ROOT))
