# -*- coding: utf-8 -*-
"""
The decoupled long-tail baselines beside DisAlign, on the same stage-1 model (Kang et al.,
"Decoupling Representation and Classifier for Long-Tailed Recognition", ICLR 2020; Menon et al.,
"Long-tail learning via logit adjustment", ICLR 2021). Each is selected by config keys:

* cRT (classifier re-training): an alignment stage that trains the classifier alone
  (``MODEL.DISALIGN.ALIGNMENT_STAGE_TRAINABLE "classifier"``) from a fresh initialisation
  (``MODEL.DECOUPLED.REINIT_CLASSIFIER``, :func:`reinitialize_classifier_on_load`), with
  class-balanced sampling (``DATALOADER.SAMPLER_TRAIN "ClassBalancedSampler"``).
* LWS (learnable weight scaling, f_j -> s_j f_j): DisAlign's calibration with the magnitude alone
  (``MAGNITUDE True, MARGIN False, CONFIDENCE False, ALPHA_INIT 1.0``, GRW off): alpha is s, and
  with s = 1 the logits are stage 1's, bit for bit. Class-balanced sampling as cRT.
* The post-hoc classifiers of :class:`PostHocClassifier` (``MODEL.DECOUPLED.POST_HOC``): no
  training; tau-normalisation, post-hoc logit adjustment and the nearest class mean (NCM).

Shape shorthand in this module:

    R: number of inputs (images in classification, ROIs in detection, pixels in segmentation)
    D: feature size
    K: number of classes
    N, h, w: images, and the height and width of their feature maps (segmentation)
"""

from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from ..config import POST_HOC_CHOICES
from ..input_checks import InputError

__all__ = [
    "POST_HOC_CHOICES",
    "PostHocClassifier",
    "adjusted_logits",
    "build_post_hoc_classifier",
    "class_mean_features",
    "ncm_logits",
    "reinitialize_classifier_on_load",
    "tau_normalized_weight",
]

# the buffer that marks a checkpoint written by a model whose classifier was re-initialised (cRT)
REINIT_MARKER = "decoupled_classifier_reinitialized"


def tau_normalized_weight(weight: torch.Tensor, tau: float) -> torch.Tensor:
    """
    tau-normalisation of a dot-product classifier: w_j / ||w_j||^tau.

    Args:
        weight: W, shape (K, D).
        tau (float): 0 leaves W unchanged, 1 gives unit-norm rows.

    Returns:
        Tensor: shape (K, D).
    """
    if tau == 0:
        return weight
    return weight / weight.norm(dim=1, keepdim=True).pow(tau)


def adjusted_logits(logits: torch.Tensor, class_counts: torch.Tensor, tau: float) -> torch.Tensor:
    """
    Post-hoc logit adjustment: z_j - tau * log(pi_j), pi_j = n_j / sum_k n_k. Counts below 1 are
    raised to 1 (as GRW does), so that a class never seen in training gets a finite prior.

    Args:
        logits: z, shape (R, K).
        class_counts: n, the K training counts.
        tau (float): 0 leaves z unchanged; 1 is the Bayes-consistent choice for the balanced error.

    Returns:
        Tensor: shape (R, K).
    """
    if tau == 0:
        return logits
    counts = torch.as_tensor(class_counts, dtype=torch.float64).clamp(min=1.0)
    log_prior = (counts / counts.sum()).log().to(dtype=logits.dtype, device=logits.device)
    return logits - tau * log_prior


def ncm_logits(features: torch.Tensor, class_means: torch.Tensor) -> torch.Tensor:
    """
    Nearest class mean by cosine similarity: cos(x, mu_j).

    Args:
        features: x, shape (R, D).
        class_means: mu, shape (K, D).

    Returns:
        Tensor: shape (R, K), in [-1, 1]; the nearest mean has the largest.
    """
    return F.linear(F.normalize(features, dim=1), F.normalize(class_means, dim=1))


def class_mean_features(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> Dict[str, torch.Tensor]:
    """
    Per-class sums and counts of features (summable over batches and processes).

    Args:
        features: shape (R, D).
        labels: shape (R,), in [0, K).

    Returns:
        dict: "sums" (K, D) float64 and "counts" (K,) float64.
    """
    features = features.double()
    sums = features.new_zeros(num_classes, features.shape[1]).index_add_(0, labels, features)
    counts = features.new_zeros(num_classes).index_add_(0, labels, features.new_ones(len(labels)))
    return {"sums": sums, "counts": counts}


class PostHocClassifier(nn.Module):
    """
    A classifier made at inference from a trained one and the training set, with no training:

    * "tau_norm": z_j = (w_j / ||w_j||^tau) . x, the bias dropped (dot-product head);
    * "logit_adjustment": z_j = f_j(x) - tau * log(pi_j), pi the training class frequencies;
    * "ncm": z_j = cos(x, mu_j), mu_j the mean feature of class j's training images (the
      non-persistent buffer ``class_means``, computed at the model's first inference).
    """

    def __init__(
        self,
        method: str,
        num_classes: int,
        in_features: int,
        tau: float = 1.0,
        class_counts: Optional[Callable[[], Sequence[int]]] = None,
    ):
        """
        Args:
            method (str): "tau_norm", "logit_adjustment" or "ncm".
            num_classes (int): K.
            in_features (int): D.
            tau (float): tau of tau_norm and logit_adjustment.
            class_counts: a function returning the K training counts (logit_adjustment); called
                at the first use, so that a model built for training never reads them.
        """
        super().__init__()
        if method not in POST_HOC_CHOICES[1:]:
            raise InputError(
                f"MODEL.DECOUPLED.POST_HOC must be one of {POST_HOC_CHOICES}, got '{method}'"
            )
        self.method = method
        self.num_classes = num_classes
        self.tau = float(tau)
        self._class_counts = class_counts
        self._counts = None
        if method == "ncm":
            # not in checkpoints: computed from the training set by the model that uses them
            self.register_buffer("class_means", torch.zeros(num_classes, in_features), False)
            self.register_buffer("class_means_ready", torch.tensor(False), False)

    @property
    def needs_class_means(self) -> bool:
        """Whether NCM's class means are still to be computed."""
        return self.method == "ncm" and not bool(self.class_means_ready)

    def set_class_means(self, sums: torch.Tensor, counts: torch.Tensor):
        """
        Args:
            sums: per-class feature sums, shape (K, D); counts: images per class, shape (K,).
                A class without images keeps a zero mean (cosine 0 to every feature).
        """
        means = sums / counts.clamp(min=1)[:, None]
        self.class_means.copy_(means.to(self.class_means.dtype))
        self.class_means_ready.fill_(True)

    def class_counts(self) -> torch.Tensor:
        if self._counts is None:
            self._counts = torch.as_tensor(list(self._class_counts()), dtype=torch.float64)
        return self._counts

    def forward(self, features: torch.Tensor, cls_score: nn.Module) -> torch.Tensor:
        """
        Args:
            features: x, shape (R, D); or per pixel, shape (N, D, h, w).
            cls_score: the trained classifier, (R, D) -> (R, C): C = K, or K + 1 in detection,
                whose last logit (background) is passed on unchanged. Per pixel: a 1x1
                convolution (N, D, h, w) -> (N, C, h, w), whose (C, D, 1, 1) weight acts on
                every pixel's x as a linear classifier's (C, D) weight.

        Returns:
            Tensor: the logits, shape (R, C); per pixel, (N, C, h, w).
        """
        if features.dim() == 4:
            n, d, h, w = features.shape
            pixels = features.permute(0, 2, 3, 1).reshape(n * h * w, d)  # (R = N * h * w, D)
            logits = self(pixels, _PixelClassifier(cls_score))
            return logits.reshape(n, h, w, -1).permute(0, 3, 1, 2)
        k = self.num_classes
        if self.method == "ncm":
            if self.needs_class_means:
                raise RuntimeError("NCM's class means are not computed")
            return ncm_logits(features, self.class_means)
        logits = cls_score(features)
        if self.method == "tau_norm":
            foreground = F.linear(features, tau_normalized_weight(cls_score.weight[:k], self.tau))
        else:
            foreground = adjusted_logits(logits[:, :k], self.class_counts(), self.tau)
        return torch.cat([foreground, logits[:, k:]], dim=1)

    def extra_repr(self) -> str:
        return f"method={self.method}, tau={self.tau}"


class _PixelClassifier:
    """A 1x1 convolution classifier seen as a linear one of its pixels: (R, D) -> (R, C)."""

    def __init__(self, conv: nn.Module):
        if conv.weight.dim() != 4 or conv.weight.shape[2:] != (1, 1):
            raise ValueError(
                "a per-pixel post-hoc classifier needs a 1x1 convolution classifier, got weight "
                f"of shape {tuple(conv.weight.shape)}"
            )
        self.weight = conv.weight.flatten(1)  # (C, D)
        self.bias = conv.bias  # (C,) or None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


def build_post_hoc_classifier(
    cfg, cls_head: str, num_classes: int, in_features: int
) -> Optional[PostHocClassifier]:
    """
    The post-hoc classifier of ``cfg.MODEL.DECOUPLED.POST_HOC``, or None.

    Args:
        cls_head (str): the trained classifier's kind ("dot" or "cosine"); tau-normalisation
            needs the dot-product head (a cosine head's rows are normalised already).
    """
    d = cfg.MODEL.DECOUPLED
    if not d.POST_HOC:
        return None
    if d.POST_HOC == "tau_norm" and cls_head != "dot":
        raise InputError(
            "MODEL.DECOUPLED.POST_HOC 'tau_norm' needs MODEL.DISALIGN.CLS_HEAD 'dot' (a cosine "
            "head's weights are normalised already)"
        )
    from .grw import training_class_counts

    # the frequencies GRW counts: images per class (LVIS' image_count in detection), or pixels
    names, count_by = tuple(cfg.DATASETS.TRAIN), cfg.MODEL.DISALIGN.GRW.COUNT_BY
    return PostHocClassifier(
        d.POST_HOC,
        num_classes,
        in_features,
        tau=d.TAU,
        class_counts=lambda: training_class_counts(names, num_classes, count_by),
    )


def reinitialize_classifier_on_load(model: nn.Module) -> None:
    """
    cRT: make ``model`` keep the fresh initialisation of its classifiers (submodules named
    ``cls_score``) when it loads a checkpoint that was not written by such a model (the stage-1
    model), while a checkpoint it wrote itself (``--resume``) loads in full. The model gets a
    persistent buffer ``decoupled_classifier_reinitialized`` that marks its own checkpoints.
    """
    model.register_buffer(REINIT_MARKER, torch.tensor(True))
    prefixes = [
        f"{name}." for name, module in model.named_modules() if name.split(".")[-1] == "cls_score"
    ]

    def drop_classifier(state_dict, prefix, *args):
        if prefix + REINIT_MARKER in state_dict:
            return
        for key in [k for k in state_dict if any(k.startswith(prefix + p) for p in prefixes)]:
            del state_dict[key]

    model._register_load_state_dict_pre_hook(drop_classifier)


@torch.no_grad()
def accumulate_class_means(
    feature_fn: Callable[[List[Dict]], torch.Tensor],
    batches: Iterable[List[Dict]],
    num_classes: int,
) -> Dict[str, torch.Tensor]:
    """
    Per-class feature sums and counts over ``batches`` (this process' shard), summed over all
    processes.

    Args:
        feature_fn: maps a list of input dicts (with "label") to their features, shape (R, D).
        batches: the training set's inputs, e.g. a test-time loader of DATASETS.TRAIN.

    Returns:
        dict: "sums" (K, D) and "counts" (K,), float64.
    """
    total = None
    for batch in batches:
        features = feature_fn(batch)
        labels = torch.as_tensor([x["label"] for x in batch], device=features.device)
        part = class_mean_features(features, labels, num_classes)
        total = part if total is None else {k: total[k] + part[k] for k in total}
    if total is None:
        raise InputError("NCM: the training set gave no images for the class means")
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for value in total.values():
            dist.all_reduce(value)
    return total
