# -*- coding: utf-8 -*-
from . import builtin  # noqa: F401  (registers the datasets)
from .build import build_test_loader, build_train_loader, dataset_kind
from .classification import (
    ClassificationDatasetMapper,
    load_inaturalist_json,
    load_split_file,
    register_classification_dataset,
)
from .miniature_lt import generate_miniature_lt
from .miniature_lvis import MINIATURE_LVIS_CLASSES, generate_miniature_lvis, register_miniature_lvis
from .miniature_seg import MINIATURE_SEG_CLASSES, generate_miniature_seg
