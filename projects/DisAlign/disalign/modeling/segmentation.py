# -*- coding: utf-8 -*-
"""
Semantic segmentation with DisAlign: detectron2's SemanticSegmentor with the alignment stage, and
two heads (an FCN head, and detectron2's DeepLabV3+ head) whose per-pixel logits are aligned. At
inference, either head's 1x1 classifier can be replaced per pixel by a post-hoc one
(tau-normalisation or logit adjustment, ``MODEL.DECOUPLED.POST_HOC``; see
:mod:`disalign.modeling.decoupled`).

Shape shorthand in this module:

    N: number of images in the minibatch
    K: number of classes (segmentation has no background class; the ignore label stays ignored)
    D: channels of the head's last feature map
    h, w: size of the head's output (the input size / its output stride)
"""

from typing import Dict, Optional

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import META_ARCH_REGISTRY, SEM_SEG_HEADS_REGISTRY, SemanticSegmentor
from detectron2.projects.deeplab import DeepLabV3PlusHead
from torch import nn
from torch.nn import functional as F

from ..input_checks import InputError
from .alignment import AlignmentStageMixin
from .decoupled import PostHocClassifier, build_post_hoc_classifier
from .grw import GRWCrossEntropy, grw_loss_from_config
from .layers import DistributionAlignment, build_alignment

__all__ = ["DisAlignSemanticSegmentor", "DisAlignFCNHead", "DisAlignDeepLabV3PlusHead"]


@META_ARCH_REGISTRY.register()
class DisAlignSemanticSegmentor(AlignmentStageMixin, SemanticSegmentor):
    """
    detectron2's SemanticSegmentor that knows DisAlign's two stages (see
    :class:`disalign.modeling.alignment.AlignmentStageMixin`): with
    ``MODEL.DISALIGN.ALIGNMENT_STAGE`` on, everything but the head's alignment parameters is frozen
    and held in eval mode.
    """


def _segmentation_loss(logits, targets, grw: Optional[GRWCrossEntropy], ignore_value):
    """Cross-entropy of (N, K, H, W) logits, GRW-weighted when ``grw`` is given."""
    if grw is not None:
        return grw(logits, targets, ignore_index=ignore_value)
    return F.cross_entropy(logits, targets, ignore_index=ignore_value)


def _classify_and_align(head: nn.Module, y: torch.Tensor, classifier_input=None) -> torch.Tensor:
    """
    A segmentation head's last step: the logits z of its 1x1 classifier ``head.cls_score`` (of
    ``classifier_input``, e.g. after dropout, else of ``y``) or, at inference, of its post-hoc
    classifier ``head.post_hoc`` (when set) applied to every pixel, then aligned by
    ``head.alignment`` (when set), whose confidence reads the features ``y``.

    Args:
        y: features of shape (N, D, h, w).

    Returns:
        Tensor: shape (N, K, h, w).
    """
    x = y if classifier_input is None else classifier_input
    if head.post_hoc is not None and not head.training:
        logits = head.post_hoc(x, head.cls_score)
    else:
        logits = head.cls_score(x)
    return logits if head.alignment is None else head.alignment(logits, y)


def _check_dot_head(cfg):
    if cfg.MODEL.DISALIGN.CLS_HEAD != "dot":
        raise ValueError("DisAlign's segmentation heads have a dot-product (1x1 conv) classifier")
    if cfg.MODEL.DECOUPLED.POST_HOC == "ncm":
        raise InputError(
            "MODEL.DECOUPLED.POST_HOC 'ncm' is for image classification; a segmentation head "
            "takes 'tau_norm' or 'logit_adjustment'"
        )


@SEM_SEG_HEADS_REGISTRY.register()
class DisAlignFCNHead(nn.Module):
    """
    The FCN head of the paper's segmentation experiments: two 3x3 convolutions on one backbone
    feature (the dilated res5, output stride 8), dropout, a 1x1 convolution classifier
    ``cls_score`` (at inference, optionally replaced per pixel by a post-hoc classifier) and
    DisAlign's per-pixel alignment of all K logits; the logits are upsampled bilinearly to the
    input size.
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        in_feature: str,
        num_classes: int,
        conv_dims: int,
        norm: str,
        ignore_value: int = 255,
        loss_weight: float = 1.0,
        alignment: Optional[DistributionAlignment] = None,
        grw: Optional[GRWCrossEntropy] = None,
        post_hoc: Optional[PostHocClassifier] = None,
    ):
        """
        Args:
            input_shape: the backbone's output shapes.
            in_feature (str): the backbone feature the head reads.
            num_classes (int): K.
            conv_dims (int): D, channels of the two convolutions.
            norm (str): normalisation of the convolutions ("BN", "SyncBN", "GN", "").
            ignore_value (int): the label of pixels that carry no loss.
            loss_weight (float): weight of the segmentation loss.
            alignment: the per-pixel alignment of the K logits (reading the (N, D, h, w)
                features), or None.
            grw: the GRW loss over K classes, or None (cross-entropy).
            post_hoc: a post-hoc classifier that replaces ``cls_score`` at inference, on every
                pixel's D features ("tau_norm" or "logit_adjustment"), or None.
        """
        super().__init__()
        self.in_feature = in_feature
        self.common_stride = input_shape[in_feature].stride
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        convs, in_channels = [], input_shape[in_feature].channels
        for _ in range(2):
            conv = Conv2d(
                in_channels,
                conv_dims,
                kernel_size=3,
                padding=1,
                bias=not norm,
                norm=get_norm(norm, conv_dims),
                activation=F.relu,
            )
            weight_init.c2_msra_fill(conv)
            convs.append(conv)
            in_channels = conv_dims
        self.convs = nn.Sequential(*convs)
        self.dropout = nn.Dropout2d(0.1)
        self.cls_score = Conv2d(conv_dims, num_classes, kernel_size=1)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.constant_(self.cls_score.bias, 0.0)
        self.alignment = alignment
        self.grw = grw
        self.post_hoc = post_hoc

    @classmethod
    def from_config(cls, cfg, input_shape):
        _check_dot_head(cfg)
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": input_shape,
            "in_feature": head.IN_FEATURES[0],
            "num_classes": head.NUM_CLASSES,
            "conv_dims": head.CONVS_DIM,
            "norm": head.NORM,
            "ignore_value": head.IGNORE_VALUE,
            "loss_weight": head.LOSS_WEIGHT,
            "alignment": build_alignment(cfg, head.NUM_CLASSES, head.CONVS_DIM),
            "grw": grw_loss_from_config(cfg, head.NUM_CLASSES),
            "post_hoc": build_post_hoc_classifier(
                cfg, cfg.MODEL.DISALIGN.CLS_HEAD, head.NUM_CLASSES, head.CONVS_DIM
            ),
        }

    def logits(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """
        Returns:
            Tensor: the (aligned) logits at the head's resolution, shape (N, K, h, w).
        """
        y = self.convs(features[self.in_feature])  # (N, D, h, w)
        return _classify_and_align(self, y, self.dropout(y))

    def forward(self, features, targets=None):
        """
        Returns:
            In training, (None, {"loss_sem_seg": loss}); in inference, ((N, K, H, W) logits, {}).
        """
        logits = F.interpolate(
            self.logits(features),
            scale_factor=self.common_stride,
            mode="bilinear",
            align_corners=False,
        )
        if self.training:
            loss = _segmentation_loss(logits, targets, self.grw, self.ignore_value)
            return None, {"loss_sem_seg": loss * self.loss_weight}
        return logits, {}


@SEM_SEG_HEADS_REGISTRY.register()
class DisAlignDeepLabV3PlusHead(DeepLabV3PlusHead):
    """
    detectron2's DeepLabV3+ head (from its DeepLab project) with its 1x1 classifier renamed
    ``cls_score`` (at inference, optionally replaced per pixel by a post-hoc classifier),
    DisAlign's per-pixel alignment of the K logits (reading the decoder's output) and the GRW
    loss.
    """

    @configurable
    def __init__(
        self,
        input_shape,
        *,
        alignment: Optional[DistributionAlignment] = None,
        grw: Optional[GRWCrossEntropy] = None,
        post_hoc: Optional[PostHocClassifier] = None,
        **kwargs,
    ):
        """
        Args:
            alignment: the per-pixel alignment of the K logits, or None.
            grw: the GRW loss over K classes, or None (the head's own loss).
            post_hoc: a post-hoc classifier that replaces ``cls_score`` at inference, on every
                pixel of the decoder's output ("tau_norm" or "logit_adjustment"), or None.
            input_shape, kwargs: as for detectron2's DeepLabV3PlusHead.
        """
        super().__init__(input_shape, **kwargs)
        # detectron2's layers() then returns the decoder's output; the classifier is applied here
        self.cls_score = self.predictor
        del self.predictor
        self.decoder_only = True
        self.alignment = alignment
        self.grw = grw
        self.post_hoc = post_hoc

    @classmethod
    def from_config(cls, cfg, input_shape):
        _check_dot_head(cfg)
        ret = super().from_config(cfg, input_shape)
        num_classes, channels = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, ret["decoder_channels"][0]
        ret["alignment"] = build_alignment(cfg, num_classes, channels)
        ret["grw"] = grw_loss_from_config(cfg, num_classes)
        ret["post_hoc"] = build_post_hoc_classifier(
            cfg, cfg.MODEL.DISALIGN.CLS_HEAD, num_classes, channels
        )
        return ret

    def logits(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """
        Returns:
            Tensor: the (aligned) logits at the decoder's resolution, shape (N, K, h, w).
        """
        y = self.layers(features)  # (N, D, h, w), the decoder's output
        return _classify_and_align(self, y)

    def forward(self, features, targets=None):
        """
        Returns:
            In training, (None, {"loss_sem_seg": loss}); in inference, ((N, K, H, W) logits, {}).
        """
        logits = self.logits(features)
        if self.training:
            return None, self.losses(logits, targets)
        logits = F.interpolate(
            logits, scale_factor=self.common_stride, mode="bilinear", align_corners=False
        )
        return logits, {}

    def losses(self, predictions, targets):
        if self.grw is None:
            return super().losses(predictions, targets)
        predictions = F.interpolate(
            predictions, scale_factor=self.common_stride, mode="bilinear", align_corners=False
        )
        loss = _segmentation_loss(predictions, targets, self.grw, self.ignore_value)
        return {"loss_sem_seg": loss * self.loss_weight}
