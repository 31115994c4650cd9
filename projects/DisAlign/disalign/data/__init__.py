# -*- coding: utf-8 -*-
from . import miniature_lvis  # noqa: F401  (registers the embedded datasets)
from .miniature_lvis import MINIATURE_LVIS_CLASSES, generate_miniature_lvis, register_miniature_lvis
