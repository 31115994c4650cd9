# -*- coding: utf-8 -*-
"""
DisAlign (Distribution Alignment, CVPR 2021) for detectron2.

Importing the package registers its modules in detectron2's registries (the DisAlignRCNN,
DisAlignImageClassifier and DisAlignSemanticSegmentor meta architectures, the DisAlign ROI heads
and semantic segmentation heads) and its datasets (the embedded miniatures, ImageNet-LT,
Places-LT, iNaturalist 2018, and the head/body/tail groups of detectron2's ADE20K).
"""

from . import data  # noqa: F401  (registers the embedded datasets)
from .config import add_disalign_config
from .data.class_counts import count_class_samples, training_class_counts
from .input_checks import InputError, check_inputs, dataset_problems
from .modeling import classifier, rcnn, roi_heads, segmentation  # noqa: F401  (only registration)
from .modeling.alignment import (
    AlignmentStageMixin,
    alignment_parameter_names,
    freeze_for_alignment_stage,
    frozen_submodules,
)
from .modeling.classifier import DisAlignImageClassifier
from .modeling.fast_rcnn import DisAlignFastRCNNOutputLayers
from .modeling.grw import GRWCrossEntropy, grw_class_weights, grw_loss_from_config
from .modeling.layers import CosineClassifier, DistributionAlignment
from .modeling.rcnn import DisAlignRCNN
from .modeling.roi_heads import DisAlignCascadeROIHeads, DisAlignROIHeads
from .modeling.segmentation import (
    DisAlignDeepLabV3PlusHead,
    DisAlignFCNHead,
    DisAlignSemanticSegmentor,
)

__version__ = "0.1.0"
