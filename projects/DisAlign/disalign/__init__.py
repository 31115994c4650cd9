# -*- coding: utf-8 -*-
"""
DisAlign (Distribution Alignment, CVPR 2021) for detectron2.

Importing the package registers its modules in detectron2's registries (the DisAlignRCNN,
DisAlignImageClassifier and DisAlignSemanticSegmentor meta architectures, the DisAlign ROI heads
and semantic segmentation heads) and its datasets (the embedded miniatures, ImageNet-LT,
Places-LT, iNaturalist 2018, and the head/body/tail groups of detectron2's ADE20K).

detectron2 and fvcore script a few small functions with ``torch.jit.script`` when they are
imported, which the installed torch deprecates with a FutureWarning each time; the package imports
them without that warning. A script that imports the package before detectron2 (train_net.py,
tools/plot_calibration.py) prints none; no warning filter outlives the import.
"""

import re as _re
import warnings as _warnings

with _warnings.catch_warnings():
    _warnings.filterwarnings(
        "ignore",
        message=_re.escape(
            "`torch.jit.script` is deprecated. Please switch to `torch.compile` or `torch.export`."
        ),
        category=FutureWarning,
    )
    # the package's data and modeling import the detectron2 and fvcore modules that script
    from . import data, modeling  # noqa: F401  (data also registers the embedded datasets)

from .config import add_disalign_config
from .data.class_counts import count_class_samples, training_class_counts
from .input_checks import InputError, check_inputs, dataset_problems
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
