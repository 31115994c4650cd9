# -*- coding: utf-8 -*-
"""
The two building blocks of DisAlign that sit on top of any classifier: the cosine classifier head
and the distribution alignment (adaptive calibration with input-aware confidence).

Shape shorthand in this module:

    R: number of inputs (ROIs in detection, images in classification, pixels in segmentation)
    D: feature dimension
    C: number of classifier outputs (K foreground classes + 1 background in detection)
    A: number of aligned (calibrated) outputs, the first A of the C; A = K for the paper's
       foreground-only detection setting, A = C in classification
"""

from typing import Optional

import torch
from detectron2.layers import get_norm
from fvcore.nn import weight_init
from torch import nn
from torch.nn import functional as F

from ..config import CLS_HEAD_CHOICES

__all__ = [
    "CosineClassifier",
    "DistributionAlignment",
    "NormalizedConfidence",
    "build_alignment",
    "build_cls_head",
]

# normalisations the confidence layer may have (MODEL.DISALIGN.CONFIDENCE_NORM; "" is none)


class CosineClassifier(nn.Module):
    """
    Cosine-similarity classifier: z_j = s * cos(x, W_j), with a learnable scale s.
    """

    def __init__(self, in_features: int, num_outputs: int, scale: float = 20.0):
        """
        Args:
            in_features (int): D.
            num_outputs (int): C.
            scale (float): initial value of the learnable scale s.
        """
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_outputs, in_features))
        nn.init.normal_(self.weight, std=0.01)
        self.scale = nn.Parameter(torch.tensor(float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: features of shape (R, D).

        Returns:
            Tensor: logits of shape (R, C).
        """
        return self.scale * F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[1]}, num_outputs={self.weight.shape[0]}"


class NormalizedConfidence(nn.Module):
    """
    The confidence layer of the official ADE20K head (``DisAlignFCNHead``, an mmcv ConvModule):
    a 1x1 convolution to one channel without bias, a normalisation and a ReLU,

        c(x) = ReLU(norm(w . x)),  so that sigma(x) = sigmoid(c(x)) >= 0.5.

    It reads (R, D) features (pixels as rows); the normalisation's statistics over the R rows are
    those of the (N, 1, h, w) map over its N * h * w pixels. The weight is initialised as the
    ConvModule does (kaiming normal, fan_out, ReLU gain: detectron2's ``c2_msra_fill``), the
    normalisation with weight 1 and bias 0.
    """

    def __init__(self, in_features: int, norm: str):
        """
        Args:
            in_features (int): D.
            norm (str): "BN", "SyncBN" or "naiveSyncBN" (detectron2's ``get_norm``), over 1 channel.
        """
        super().__init__()
        self.conv = nn.Conv2d(in_features, 1, kernel_size=1, bias=False)
        weight_init.c2_msra_fill(self.conv)
        self.norm = get_norm(norm, 1)

    @property
    def weight(self) -> torch.Tensor:
        """The (1, D, 1, 1) weight w."""
        return self.conv.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: features of shape (R, D).

        Returns:
            Tensor: c(x) of shape (R, 1), before the sigmoid.
        """
        y = self.conv(x[:, :, None, None])  # (R, 1, 1, 1)
        return F.relu(self.norm(y)).flatten(1)


class DistributionAlignment(nn.Module):
    """
    DisAlign's alignment of classifier logits z, for the first A of them:

        s_j = alpha_j * z_j + beta_j                        (adaptive calibration)
        sigma(x) = sigmoid(w . x + b)                       (input-aware confidence)
        z^_j = sigma(x) * s_j + (1 - sigma(x)) * z_j        for j < A

    Logits at positions >= A (the background in detection) pass through unchanged. Its parameters
    (alpha, beta, w, b) are the only ones trained in the alignment stage.

    The official classifier (cvpods ``DisAlignLinear``) writes the same map as
    z^ = (1 + sigma(x) * a) * z + sigma(x) * b with a = alpha - 1, b = beta; its initialisation
    (a = 1, b = 0, constant weight 0.1) is ``alpha_init=2.0, confidence_weight_init=0.1``. With
    ``confidence_norm``, sigma(x) = sigmoid(ReLU(norm(w . x))) (:class:`NormalizedConfidence`, the
    official ADE20K head).
    """

    def __init__(
        self,
        num_aligned: int,
        in_features: int,
        *,
        magnitude: bool = True,
        margin: bool = True,
        confidence: bool = True,
        alpha_init: float = 1.0,
        beta_init: float = 0.0,
        confidence_weight_init: Optional[float] = None,
        confidence_norm: str = "",
    ):
        """
        Args:
            num_aligned (int): A, the number of leading logits to align.
            in_features (int): D, the feature size the confidence layer reads.
            magnitude (bool): learn alpha; if False, alpha = 1.
            margin (bool): learn beta; if False, beta = 0.
            confidence (bool): learn sigma(x); if False, sigma = 1 (input-agnostic calibration).
            alpha_init, beta_init (float): initial alpha and beta (the paper: 1 and 0).
            confidence_weight_init (float or None): None initialises w ~ N(0, 0.01^2) and b = 0
                (the paper); a number sets every w_i to it and leaves b at torch's default init
                (the official DisAlignLinear: 0.1).
            confidence_norm (str): "" for sigmoid(w . x + b); "BN", "SyncBN" or "naiveSyncBN" for
                sigmoid(ReLU(norm(w . x))), the official ADE20K head.
        """
        super().__init__()
        self.num_aligned = num_aligned
        self.alpha = (
            nn.Parameter(torch.full((num_aligned,), float(alpha_init))) if magnitude else None
        )
        self.beta = nn.Parameter(torch.full((num_aligned,), float(beta_init))) if margin else None
        if confidence and confidence_norm:
            self.confidence = NormalizedConfidence(in_features, confidence_norm)
            if confidence_weight_init is not None:
                nn.init.constant_(self.confidence.weight, float(confidence_weight_init))
        elif confidence:
            self.confidence = nn.Linear(in_features, 1)
            if confidence_weight_init is None:
                nn.init.normal_(self.confidence.weight, std=0.01)
                nn.init.constant_(self.confidence.bias, 0.0)
            else:  # the bias keeps nn.Linear's default init, as in the official DisAlignLinear
                nn.init.constant_(self.confidence.weight, float(confidence_weight_init))
        else:
            self.confidence = None

    def input_confidence(self, features: torch.Tensor) -> torch.Tensor:
        """
        sigma(x), the input-aware confidence with which :meth:`forward` mixes the calibrated
        logits into the raw ones.

        Args:
            features: x, of shape (R, D), or per-pixel (N, D, H, W).

        Returns:
            Tensor: sigma(x) in [0, 1], of shape (R, 1), or per pixel (N, 1, H, W); ones without a
            confidence layer (the input-agnostic calibration, sigma = 1).
        """
        if features.dim() == 4:
            n, d, h, w = features.shape
            sigma = self.input_confidence(features.permute(0, 2, 3, 1).reshape(n * h * w, d))
            return sigma.reshape(n, h, w, 1).permute(0, 3, 1, 2)
        if self.confidence is None:
            return features.new_ones(features.shape[0], 1)
        return torch.sigmoid(self.confidence(features))

    def forward(self, logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """
        Args:
            logits: z, of shape (R, C) with C >= A, or per-pixel (N, C, H, W).
            features: x, of shape (R, D), or per-pixel (N, D, H, W); per pixel, the confidence
                layer acts as a 1x1 convolution to one channel.

        Returns:
            Tensor: z^, of the shape of ``logits``.
        """
        if logits.dim() == 4:
            n, c, h, w = logits.shape
            pixel_logits = logits.permute(0, 2, 3, 1).reshape(-1, c)
            pixel_features = features.permute(0, 2, 3, 1).reshape(n * h * w, -1)
            aligned = self.forward(pixel_logits, pixel_features)
            # contiguous in (N, C, H, W), as the logits came: the ops downstream then round
            # exactly as they would on the logits themselves
            return aligned.reshape(n, h, w, c).permute(0, 3, 1, 2).contiguous()
        z = logits[:, : self.num_aligned]
        s = z
        if self.alpha is not None:
            s = s * self.alpha
        if self.beta is not None:
            s = s + self.beta
        if self.confidence is not None:
            sigma = self.input_confidence(features)  # (R, 1)
            # sigma * s + (1 - sigma) * z, written so that s == z gives exactly z
            s = z + sigma * (s - z)
        return torch.cat([s, logits[:, self.num_aligned :]], dim=1)

    def extra_repr(self) -> str:
        return (
            f"num_aligned={self.num_aligned}, magnitude={self.alpha is not None}, "
            f"margin={self.beta is not None}, confidence={self.confidence is not None}"
        )


def build_cls_head(
    cls_head: str, in_features: int, num_outputs: int, cosine_scale: float
) -> nn.Module:
    """
    The classifier head z = f(x) of ``MODEL.DISALIGN.CLS_HEAD``: "dot", an nn.Linear with weights
    ~ N(0, 0.01^2) and zero bias (as detectron2 initialises its box classifier), or "cosine", a
    :class:`CosineClassifier` with initial scale ``cosine_scale``.

    Args:
        in_features (int): D.
        num_outputs (int): C.

    Returns:
        nn.Module: maps (R, D) features to (R, C) logits.
    """
    if cls_head == "cosine":
        return CosineClassifier(in_features, num_outputs, cosine_scale)
    if cls_head != "dot":
        raise ValueError(
            f"MODEL.DISALIGN.CLS_HEAD must be one of {CLS_HEAD_CHOICES}, got '{cls_head}'"
        )
    head = nn.Linear(in_features, num_outputs)
    nn.init.normal_(head.weight, std=0.01)
    nn.init.constant_(head.bias, 0.0)
    return head


def build_alignment(cfg, num_aligned: int, in_features: int) -> Optional[DistributionAlignment]:
    """
    The alignment that ``cfg.MODEL.DISALIGN`` asks for (None when CALIBRATION is off).

    Args:
        num_aligned (int): A.
        in_features (int): D, what the confidence layer reads.
    """
    d = cfg.MODEL.DISALIGN
    if not d.CALIBRATION:
        return None
    return DistributionAlignment(
        num_aligned,
        in_features,
        magnitude=d.MAGNITUDE,
        margin=d.MARGIN,
        confidence=d.CONFIDENCE,
        alpha_init=d.ALPHA_INIT,
        beta_init=d.BETA_INIT,
        confidence_weight_init=d.CONFIDENCE_WEIGHT_INIT,
        confidence_norm=d.CONFIDENCE_NORM,
    )
