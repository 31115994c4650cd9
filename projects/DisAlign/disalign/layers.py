# -*- coding: utf-8 -*-
"""
The two building blocks of DisAlign that sit on top of any classifier: the cosine classifier head
and the distribution alignment (adaptive calibration with input-aware confidence).

Shape shorthand in this module:

    R: number of inputs (ROIs in detection, images in classification)
    D: feature dimension
    C: number of classifier outputs (K foreground classes + 1 background in detection)
    A: number of aligned (calibrated) outputs, the first A of the C; A = K for the paper's
       foreground-only detection setting, A = C in classification
"""

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["CosineClassifier", "DistributionAlignment"]


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
            logits: z, of shape (R, C) with C >= A.
            features: x, of shape (R, D).

        Returns:
            Tensor: z^, of shape (R, C).
        """
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
