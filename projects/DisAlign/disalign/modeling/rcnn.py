# -*- coding: utf-8 -*-
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN

from .alignment import AlignmentStageMixin
from .decoupled import reinitialize_classifier_on_load

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

    ``MODEL.DISALIGN.ALIGNMENT_STAGE_RPN_TRAIN_MODE`` keeps the frozen RPN in training mode in
    stage 2, as the official code does: it proposes with the training top-k and computes its
    (gradient-free) losses.

    ``MODEL.DECOUPLED.REINIT_CLASSIFIER`` (cRT) keeps the box predictors' classifiers
    (``cls_score``) at their fresh initialisation when a stage-1 checkpoint is loaded.
    """

    @configurable
    def __init__(
        self,
        *,
        alignment_stage_rpn_train_mode: bool = False,
        reinit_classifier: bool = False,
        **kwargs,
    ):
        """
        Args:
            alignment_stage_rpn_train_mode (bool): in the alignment stage, run the frozen RPN in
                training mode (training pre/post-NMS top-k) instead of eval mode.
            reinit_classifier (bool): cRT, see :func:`reinitialize_classifier_on_load`.
            kwargs: the arguments of :class:`AlignmentStageMixin` and ``GeneralizedRCNN``.
        """
        super().__init__(**kwargs)
        self.alignment_stage_rpn_train_mode = alignment_stage_rpn_train_mode
        if reinit_classifier:
            reinitialize_classifier_on_load(self)

    @classmethod
    def from_config(cls, cfg):
        return {
            **super().from_config(cfg),
            "alignment_stage_rpn_train_mode": cfg.MODEL.DISALIGN.ALIGNMENT_STAGE_RPN_TRAIN_MODE,
            "reinit_classifier": cfg.MODEL.DECOUPLED.REINIT_CLASSIFIER,
        }

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.alignment_stage and self.alignment_stage_rpn_train_mode:
            self.proposal_generator.train()
        return self
