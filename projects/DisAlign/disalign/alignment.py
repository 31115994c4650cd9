# -*- coding: utf-8 -*-
"""
The alignment stage (stage 2): everything is frozen except DisAlign's alignment parameters (or,
for the paper's "no calibration" ablation, the base classifier).

One mechanism serves every model: :func:`freeze_for_alignment_stage` sets ``requires_grad`` and
:func:`frozen_submodules` names the subtrees to hold in eval mode, which a model applies in its
``train()`` (see :class:`disalign.rcnn.DisAlignRCNN`).
"""

from typing import Iterator, List

from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from torch import nn

from .layers import DistributionAlignment

__all__ = [
    "ALIGNMENT_STAGE_TRAINABLE_CHOICES",
    "alignment_parameter_names",
    "freeze_for_alignment_stage",
    "frozen_submodules",
    "has_trainable_parameters",
]

# what stage 2 trains: "alignment" (alpha, beta, confidence: DisAlign) or "classifier" (also the
# base classifier, e.g. re-trained with GRW and no calibration)
ALIGNMENT_STAGE_TRAINABLE_CHOICES = ("alignment", "classifier")


def alignment_parameter_names(model: nn.Module) -> List[str]:
    """
    Returns:
        list[str]: names of the parameters of every :class:`DistributionAlignment` in ``model``
        (alpha, beta and the confidence layer's weight and bias).
    """
    names = []
    for module_name, module in model.named_modules():
        if isinstance(module, DistributionAlignment):
            prefix = f"{module_name}." if module_name else ""
            names.extend(prefix + n for n, _ in module.named_parameters())
    return names


def _classifier_parameter_names(model: nn.Module) -> List[str]:
    names = []
    for module_name, module in model.named_modules():
        if isinstance(module, FastRCNNOutputLayers):
            prefix = f"{module_name}.cls_score." if module_name else "cls_score."
            names.extend(prefix + n for n, _ in module.cls_score.named_parameters())
    return names


def freeze_for_alignment_stage(model: nn.Module, trainable: str = "alignment") -> List[str]:
    """
    Set ``requires_grad=False`` on every parameter of ``model`` except the alignment parameters
    (and, with ``trainable="classifier"``, the box predictors' base classifiers).

    Returns:
        list[str]: the names of the parameters left trainable.
    """
    if trainable not in ALIGNMENT_STAGE_TRAINABLE_CHOICES:
        raise ValueError(
            f"MODEL.DISALIGN.ALIGNMENT_STAGE_TRAINABLE must be one of "
            f"{ALIGNMENT_STAGE_TRAINABLE_CHOICES}, got '{trainable}'"
        )
    names = alignment_parameter_names(model)
    if trainable == "classifier":
        names += _classifier_parameter_names(model)
    if not names:
        raise ValueError(
            "MODEL.DISALIGN.ALIGNMENT_STAGE is on, but the model has no alignment parameters to "
            "train: set MODEL.DISALIGN.CALIBRATION True and use DisAlign's ROI heads"
        )
    trainable = set(names)
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)
    return sorted(trainable)


def has_trainable_parameters(module: nn.Module) -> bool:
    """Whether any parameter of ``module`` has ``requires_grad``."""
    return any(p.requires_grad for p in module.parameters())


def frozen_submodules(model: nn.Module) -> Iterator[nn.Module]:
    """
    Yield the largest submodules of ``model`` that have no trainable parameter (modules without
    parameters included). Held in eval mode, they keep their buffers (BatchNorm statistics)
    unchanged and run as at inference (e.g. the RPN computes no loss).
    """
    for child in model.children():
        if has_trainable_parameters(child):
            yield from frozen_submodules(child)
        else:
            yield child
