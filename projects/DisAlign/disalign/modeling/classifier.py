# -*- coding: utf-8 -*-
"""
Long-tailed image classification with DisAlign, as a detectron2 meta-architecture.

Shape shorthand in this module:

    N: number of images in the minibatch
    D: feature size of the trunk's last stage (2048 for ResNet-50, 512 for ResNet-18)
    K: number of classes (no background)
"""

from typing import Callable, Dict, Iterable, List, Optional

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from torch import nn
from torch.nn import functional as F

from .alignment import AlignmentStageMixin
from .decoupled import (
    PostHocClassifier,
    accumulate_class_means,
    build_post_hoc_classifier,
    reinitialize_classifier_on_load,
)
from .grw import GRWCrossEntropy, grw_loss_from_config
from .layers import DistributionAlignment, build_alignment, build_cls_head

__all__ = ["DisAlignImageClassifier"]


@META_ARCH_REGISTRY.register()
class DisAlignImageClassifier(AlignmentStageMixin, nn.Module):
    """
    A ResNet / ResNeXt trunk (detectron2's ``build_resnet_backbone``), global average pooling of
    its last stage, a dot-product or cosine classifier ``cls_score`` over K classes, and DisAlign's
    alignment of all K logits (classification has no background). Trained with cross-entropy
    (stage 1) or GRW-weighted cross-entropy on the aligned logits (stage 2). The decoupled
    baselines (:mod:`disalign.modeling.decoupled`) are the same model under other config keys: a
    re-initialised classifier trained alone (cRT), the magnitude-only alignment (LWS), or a
    post-hoc classifier at inference (tau-normalisation, logit adjustment, NCM).

    Input: detectron2-style list of dicts with "image" (C, H, W) tensors of one size and, in
    training, "label". Output at inference: one dict per image with "logits" (K,) and "probs" (K,).
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        in_feature: str,
        num_classes: int,
        cls_head: str = "dot",
        cosine_scale: float = 20.0,
        alignment: Optional[DistributionAlignment] = None,
        grw: Optional[GRWCrossEntropy] = None,
        pixel_mean,
        pixel_std,
        alignment_stage: bool = False,
        alignment_stage_trainable: str = "alignment",
        post_hoc: Optional[PostHocClassifier] = None,
        reinit_classifier: bool = False,
        class_mean_batches: Optional[Callable[[], Iterable[List[Dict]]]] = None,
    ):
        """
        Args:
            backbone: the trunk; ``backbone(images)[in_feature]`` has shape (N, D, h, w).
            in_feature (str): the trunk output to pool ("res5").
            num_classes (int): K.
            cls_head (str): "dot" or "cosine".
            cosine_scale (float): initial learnable scale of the cosine head.
            alignment: DisAlign's alignment over the K logits, or None (plain classifier).
            grw: the GRW loss over K classes, or None (plain cross-entropy).
            pixel_mean, pixel_std: per-channel input normalisation.
            alignment_stage, alignment_stage_trainable: see :class:`AlignmentStageMixin`.
            post_hoc: a post-hoc classifier that replaces ``cls_score`` at inference, or None.
            reinit_classifier (bool): cRT: a checkpoint from another model (stage 1) leaves
                ``cls_score`` at its fresh initialisation (see
                :func:`reinitialize_classifier_on_load`).
            class_mean_batches: NCM: a function returning the training set's inputs (with
                "label") for the class means, computed at the first inference.
        """
        # builds itself, then sets up the alignment stage (not the mixin's __init__, which
        # expects a base class that builds the model)
        nn.Module.__init__(self)
        self.backbone = backbone
        self.in_feature = in_feature
        in_channels = backbone.output_shape()[in_feature].channels
        self.cls_score = build_cls_head(cls_head, in_channels, num_classes, cosine_scale)
        self.alignment = alignment
        self.grw = grw
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.post_hoc = post_hoc
        self.class_mean_batches = class_mean_batches
        if reinit_classifier:
            reinitialize_classifier_on_load(self)
        self.setup_alignment_stage(alignment_stage, alignment_stage_trainable)

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)))
        in_feature = cfg.MODEL.IMAGE_CLASSIFIER.IN_FEATURE
        num_classes = cfg.MODEL.IMAGE_CLASSIFIER.NUM_CLASSES
        d = cfg.MODEL.DISALIGN
        in_channels = backbone.output_shape()[in_feature].channels
        alignment = build_alignment(cfg, num_classes, in_channels)

        def class_mean_batches():  # the training images, as the test set is read
            from ..data.build import build_test_loader

            for name in cfg.DATASETS.TRAIN:
                yield from build_test_loader(cfg, name)

        return {
            "backbone": backbone,
            "in_feature": in_feature,
            "num_classes": num_classes,
            "cls_head": d.CLS_HEAD,
            "cosine_scale": d.COSINE_SCALE,
            "alignment": alignment,
            "grw": grw_loss_from_config(cfg, num_classes),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            **cls.alignment_stage_config(cfg),
            "post_hoc": build_post_hoc_classifier(cfg, d.CLS_HEAD, num_classes, in_channels),
            "reinit_classifier": cfg.MODEL.DECOUPLED.REINIT_CLASSIFIER,
            "class_mean_batches": class_mean_batches,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """
        Args:
            images: normalised images, shape (N, C, H, W).

        Returns:
            Tensor: the pooled trunk features x, shape (N, D).
        """
        return self.backbone(images)[self.in_feature].mean(dim=(2, 3))

    def classify_features(self, features: torch.Tensor) -> torch.Tensor:
        """
        Args:
            features: x, shape (N, D).

        Returns:
            Tensor: the logits of the classifier (post-hoc at inference, if any), then aligned if
            the model has an alignment, shape (N, K).
        """
        if self.post_hoc is not None and not self.training:
            logits = self.post_hoc(features, self.cls_score)
        else:
            logits = self.cls_score(features)
        if self.alignment is not None:
            logits = self.alignment(logits, features)
        return logits

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """
        Args:
            images: normalised images, shape (N, C, H, W).

        Returns:
            Tensor: the (aligned) logits, shape (N, K).
        """
        return self.classify_features(self.features(images))

    def preprocess(self, batched_inputs: List[Dict]) -> torch.Tensor:
        """The inputs' images, normalised and batched: shape (N, C, H, W)."""
        images = torch.stack([x["image"].to(self.device) for x in batched_inputs])
        return (images.float() - self.pixel_mean) / self.pixel_std

    def compute_class_means(self, batches: Iterable[List[Dict]]) -> None:
        """NCM: set the post-hoc classifier's class means from the training inputs ``batches``."""
        was_training = self.training
        self.eval()
        try:
            total = accumulate_class_means(
                lambda batch: self.features(self.preprocess(batch)),
                batches,
                self.cls_score.weight.shape[0],
            )
        finally:
            self.train(was_training)
        self.post_hoc.set_class_means(total["sums"], total["counts"])

    def forward(self, batched_inputs: List[Dict]):
        if not self.training and self.post_hoc is not None and self.post_hoc.needs_class_means:
            self.compute_class_means(self.class_mean_batches())
        logits = self.logits(self.preprocess(batched_inputs))
        if self.training:
            labels = torch.as_tensor([x["label"] for x in batched_inputs], device=self.device)
            loss = F.cross_entropy(logits, labels) if self.grw is None else self.grw(logits, labels)
            return {"loss_cls": loss}
        probs = logits.softmax(dim=1)
        return [{"logits": z, "probs": p} for z, p in zip(logits, probs)]
