# -*- coding: utf-8 -*-
"""
DisAlign's method: the classifier heads and the distribution alignment (``layers``), GRW
(``grw``), the alignment stage (``alignment``), the box predictor and ROI heads (``fast_rcnn``,
``roi_heads``), and the meta-architectures (``rcnn``, ``classifier``, ``segmentation``), each
registered in detectron2's registries when imported.
"""

from . import classifier, rcnn, roi_heads, segmentation  # noqa: F401  (registration)
