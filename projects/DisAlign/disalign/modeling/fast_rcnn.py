# -*- coding: utf-8 -*-
"""
The DisAlign ROI box predictor.

Shape shorthand in this module (as in detectron2's fast_rcnn.py):

    R: number of ROIs, combined over all images, in the minibatch
    D: box head feature size
    K: number of foreground classes; index K is the background class
"""

from typing import Optional

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, cat, cross_entropy
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers, _log_classification_stats

from ..compat import requests_sigmoid_or_federated_loss
from ..input_checks import InputError
from .alignment import skips_frozen_work
from .decoupled import PostHocClassifier, build_post_hoc_classifier
from .grw import GRWCrossEntropy, grw_loss_from_config
from .layers import DistributionAlignment, build_alignment, build_cls_head

__all__ = ["DisAlignFastRCNNOutputLayers"]


class DisAlignFastRCNNOutputLayers(FastRCNNOutputLayers):
    """
    detectron2's Fast R-CNN predictor with DisAlign's parts, each optional:

    * the classifier head: dot-product (detectron2's nn.Linear) or cosine;
    * the distribution alignment of the foreground logits (alpha, beta, confidence sigma(x)),
      the background logit left unchanged;
    * GRW-weighted cross-entropy as the classification loss;
    * at inference, a post-hoc classifier of the foreground logits (tau-normalisation or logit
      adjustment, ``MODEL.DECOUPLED.POST_HOC``), the background logit left unchanged.

    Box regression, inference (box decoding, score threshold, NMS, top-k) and the softmax over the
    (aligned) logits are detectron2's own.
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        cls_head: str = "dot",
        cosine_scale: float = 20.0,
        alignment: Optional[DistributionAlignment] = None,
        grw: Optional[GRWCrossEntropy] = None,
        post_hoc: Optional[PostHocClassifier] = None,
        **kwargs,
    ):
        """
        Args:
            input_shape, kwargs: as for detectron2's FastRCNNOutputLayers.
            cls_head (str): "dot" or "cosine".
            cosine_scale (float): initial learnable scale of the cosine head.
            alignment (DistributionAlignment or None): the alignment of the first A logits (A = K
                foreground-only, or K + 1), reading the (R, D) box features; None: plain scores.
            grw (GRWCrossEntropy or None): the GRW classification loss over the K foreground
                classes and the background (``num_unweighted=1``); None uses plain cross-entropy.
            post_hoc (PostHocClassifier or None): replaces the K foreground logits of
                ``cls_score`` at inference ("tau_norm" or "logit_adjustment"); None: not.
        """
        super().__init__(input_shape, **kwargs)
        if isinstance(input_shape, int):
            input_shape = ShapeSpec(channels=input_shape)
        input_size = input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1)
        if cls_head != "dot":  # "dot" is detectron2's own nn.Linear, initialised by it
            self.cls_score = build_cls_head(
                cls_head, input_size, self.num_classes + 1, cosine_scale
            )
        self.alignment = alignment
        if grw is not None and (grw.num_classes, grw.num_unweighted) != (self.num_classes, 1):
            raise ValueError(f"the GRW loss must cover {self.num_classes} classes + background")
        self.grw = grw
        self.post_hoc = post_hoc

    @classmethod
    def from_config(cls, cfg, input_shape):
        if requests_sigmoid_or_federated_loss(cfg):
            raise ValueError(
                "DisAlign's box predictor uses softmax cross-entropy: set "
                "MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE and USE_FED_LOSS to False"
            )
        if cfg.MODEL.DECOUPLED.POST_HOC == "ncm":
            raise InputError(
                "MODEL.DECOUPLED.POST_HOC 'ncm' is for image classification; a detector takes "
                "'tau_norm' or 'logit_adjustment'"
            )
        ret = super().from_config(cfg, input_shape)
        d = cfg.MODEL.DISALIGN
        num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
        input_size = input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1)
        ret.update(
            {
                "cls_head": d.CLS_HEAD,
                "cosine_scale": d.COSINE_SCALE,
                "alignment": build_alignment(
                    cfg, num_classes if d.FOREGROUND_ONLY else num_classes + 1, input_size
                ),
                "grw": grw_loss_from_config(cfg, num_classes, num_unweighted=1),
                "post_hoc": build_post_hoc_classifier(cfg, d.CLS_HEAD, num_classes, input_size),
            }
        )
        if cfg.TEST.FIXED_AP.ENABLED:  # more per image: the evaluator's top K per category
            ret["test_topk_per_image"] = cfg.TEST.FIXED_AP.DETS_PER_IMAGE
        return ret

    def forward(self, x):
        """
        Args:
            x: per-region features of shape (R, D) (or (R, ...), flattened to (R, D)).

        Returns:
            (Tensor, Tensor):
            First tensor: shape (R, K+1), the (aligned) logits; softmax gives the class scores.
            Second tensor: box regression deltas, shape (R, K*4) or (R, 4) if class-agnostic.
        """
        if x.dim() > 2:
            x = torch.flatten(x, start_dim=1)
        if self.post_hoc is not None and not self.training:
            scores = self.post_hoc(x, self.cls_score)
        else:
            scores = self.cls_score(x)
        if self.alignment is not None:
            scores = self.alignment(scores, x)
        return scores, self.bbox_pred(x)

    def classification_loss(self, scores: torch.Tensor, gt_classes: torch.Tensor) -> torch.Tensor:
        """
        Args:
            scores: logits of shape (R, K+1).
            gt_classes: labels of shape (R,) in [0, K].

        Returns:
            Tensor: scalar; cross-entropy, GRW-weighted when ``grw`` is set.
        """
        if self.grw is None:
            return cross_entropy(scores, gt_classes, reduction="mean")
        return self.grw(scores, gt_classes)

    def losses(self, predictions, proposals):
        """
        Args:
            predictions: return values of :meth:`forward()`.
            proposals (list[Instances]): proposals that match the features of the predictions,
                with fields ``proposal_boxes``, ``gt_boxes``, ``gt_classes``.

        Returns:
            Dict[str, Tensor]: "loss_cls", and "loss_box_reg" unless the box regressor is frozen
            (the alignment stage), in which case that loss would train nothing.
        """
        scores, proposal_deltas = predictions
        gt_classes = (
            cat([p.gt_classes for p in proposals], dim=0)
            if len(proposals)
            else torch.empty(0, dtype=torch.long, device=scores.device)
        )
        _log_classification_stats(scores, gt_classes)
        losses = {"loss_cls": self.classification_loss(scores, gt_classes)}

        if not skips_frozen_work(self.bbox_pred):
            if len(proposals):
                proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
                # proposals without a match have no "gt_boxes"; they are background and their
                # placeholder boxes are not used by the regression loss
                gt_boxes = cat(
                    [
                        (p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor
                        for p in proposals
                    ],
                    dim=0,
                )
            else:
                proposal_boxes = gt_boxes = torch.empty((0, 4), device=proposal_deltas.device)
            losses["loss_box_reg"] = self.box_reg_loss(
                proposal_boxes, gt_boxes, proposal_deltas, gt_classes
            )
        return {k: v * self.loss_weight.get(k, 1.0) for k, v in losses.items()}
