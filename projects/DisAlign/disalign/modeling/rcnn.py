# -*- coding: utf-8 -*-
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN

from .alignment import AlignmentStageMixin

__all__ = ["DisAlignRCNN"]


@META_ARCH_REGISTRY.register()
class DisAlignRCNN(AlignmentStageMixin, GeneralizedRCNN):
    """
    detectron2's GeneralizedRCNN that knows DisAlign's two stages.

    With ``MODEL.DISALIGN.ALIGNMENT_STAGE`` off it is exactly GeneralizedRCNN (stage 1, baselines).
    With it on (stage 2) it freezes, when built, every parameter except those stage 2 trains
    (``MODEL.DISALIGN.ALIGNMENT_STAGE_TRAINABLE``: the alignment parameters by default), and its
    ``train()`` keeps the frozen submodules (backbone, RPN, box and mask heads, ...) in eval mode:
    their buffers never move, the RPN proposes boxes as at inference and computes no loss.
    Autograd records nothing for the frozen trunk (backbone, RPN, box pooler and box head), and the
    ROI heads leave out the losses of frozen heads (mask, box regression): a training step computes
    only what the trained parameters' loss needs.
    """
