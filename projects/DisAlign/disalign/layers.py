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
from torch import nn
from torch.nn import functional as F

__all__ = ["CosineClassifier", "DistributionAlignment", "build_alignment"]


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


class DistributionAlignment(nn.Module):
    """
    DisAlign's alignment of classifier logits z, for the first A of them:

        s_j = alpha_j * z_j + beta_j                        (adaptive calibration)
        sigma(x) = sigmoid(w . x + b)                       (input-aware confidence)
        z^_j = sigma(x) * s_j + (1 - sigma(x)) * z_j        for j < A

    Logits at positions >= A (the background in detection) pass through unchanged. Its parameters
    (alpha, beta, w, b) are the only ones trained in the alignment stage.
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
    ):
        """
        Args:
            num_aligned (int): A, the number of leading logits to align.
            in_features (int): D, the feature size the confidence layer reads.
            magnitude (bool): learn alpha; if False, alpha = 1.
            margin (bool): learn beta; if False, beta = 0.
            confidence (bool): learn sigma(x); if False, sigma = 1 (input-agnostic calibration).
            alpha_init, beta_init (float): initial alpha and beta (the paper: 1 and 0).
        """
        super().__init__()
        self.num_aligned = num_aligned
        self.alpha = (
            nn.Parameter(torch.full((num_aligned,), float(alpha_init))) if magnitude else None
        )
        self.beta = nn.Parameter(torch.full((num_aligned,), float(beta_init))) if margin else None
        if confidence:
            self.confidence = nn.Linear(in_features, 1)
            nn.init.normal_(self.confidence.weight, std=0.01)
            nn.init.constant_(self.confidence.bias, 0.0)
        else:
            self.confidence = None

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
            return aligned.reshape(n, h, w, c).permute(0, 3, 1, 2)
        z = logits[:, : self.num_aligned]
        s = z
        if self.alpha is not None:
            s = s * self.alpha
        if self.beta is not None:
            s = s + self.beta
        if self.confidence is not None:
            sigma = torch.sigmoid(self.confidence(features))  # (R, 1)
            # sigma * s + (1 - sigma) * z, written so that s == z gives exactly z
            s = z + sigma * (s - z)
        return torch.cat([s, logits[:, self.num_aligned :]], dim=1)

    def extra_repr(self) -> str:
        return (
            f"num_aligned={self.num_aligned}, magnitude={self.alpha is not None}, "
            f"margin={self.beta is not None}, confidence={self.confidence is not None}"
        )


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
    )
