# -*- coding: utf-8 -*-
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, CascadeROIHeads, StandardROIHeads

from .alignment import has_trainable_parameters, skips_frozen_work
from .fast_rcnn import DisAlignFastRCNNOutputLayers

__all__ = ["DisAlignROIHeads", "DisAlignCascadeROIHeads"]


class _SkipFrozenHeadLosses:
    """
    In training, skip the mask and keypoint branches whose parameters are all frozen (the
    alignment stage): their losses would train nothing (and a frozen head held in eval mode would
    predict instead).
    """

    @staticmethod
    def _skips_head(head) -> bool:
        return skips_frozen_work(head) or (not head.training and not has_trainable_parameters(head))

    def _forward_mask(self, features, instances):
        if self.training and self.mask_on and self._skips_head(self.mask_head):
            return {}
        return super()._forward_mask(features, instances)

    def _forward_keypoint(self, features, instances):
        if self.training and self.keypoint_on and self._skips_head(self.keypoint_head):
            return {}
        return super()._forward_keypoint(features, instances)


@ROI_HEADS_REGISTRY.register()
class DisAlignROIHeads(_SkipFrozenHeadLosses, StandardROIHeads):
    """
    detectron2's StandardROIHeads with the DisAlign box predictor.
    """

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        ret["box_predictor"] = DisAlignFastRCNNOutputLayers(cfg, ret["box_head"].output_shape)
        return ret


@ROI_HEADS_REGISTRY.register()
class DisAlignCascadeROIHeads(_SkipFrozenHeadLosses, CascadeROIHeads):
    """
    detectron2's CascadeROIHeads with a DisAlign box predictor at every cascade stage (each with
    its own alignment parameters); the stages keep their own box regression weights.
    """

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        ret["box_predictors"] = [
            DisAlignFastRCNNOutputLayers(
                cfg, head.output_shape, box2box_transform=stock.box2box_transform
            )
            for head, stock in zip(ret["box_heads"], ret["box_predictors"])
        ]
        return ret
