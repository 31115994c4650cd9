# -*- coding: utf-8 -*-
"""
DisAlign (Distribution Alignment, CVPR 2021) for detectron2.

Importing the package registers its modules in detectron2's registries (the DisAlignRCNN meta
architecture, the DisAlign ROI heads) and the embedded miniature LVIS datasets.
"""

from . import data  # noqa: F401  (registers the embedded datasets)
from . import rcnn, roi_heads  # noqa: F401  (only registration)
from .alignment import alignment_parameter_names, freeze_for_alignment_stage, frozen_submodules
from .config import add_disalign_config
from .fast_rcnn import DisAlignFastRCNNOutputLayers
from .grw import count_class_samples, grw_class_weights, training_class_counts
from .layers import CosineClassifier, DistributionAlignment
from .rcnn import DisAlignRCNN
from .roi_heads import DisAlignCascadeROIHeads, DisAlignROIHeads
from .validation import InputError, check_inputs, dataset_problems

__version__ = "0.1.0"
