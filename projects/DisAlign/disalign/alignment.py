# -*- coding: utf-8 -*-
"""
The alignment stage (stage 2): everything is frozen except DisAlign's alignment parameters (or,
for the paper's "no calibration" ablation, the base classifier).

One mechanism serves every model (detector, image classifier, semantic segmentor):
:class:`AlignmentStageMixin` freezes the model when it is built
(:func:`freeze_for_alignment_stage`), holds the frozen subtrees (:func:`frozen_submodules`) in
eval mode in ``train()`` and runs them without autograd (:func:`run_frozen_without_autograd`). In
training, the models leave out the work done only for frozen parameters (the losses of frozen
heads), asking :func:`skips_frozen_work`.
"""

import threading
from typing import Any, Iterator, List

import numpy as np
import torch
from torch import nn

from .layers import DistributionAlignment

__all__ = [
    "ALIGNMENT_STAGE_TRAINABLE_CHOICES",
    "AlignmentStageMixin",
    "alignment_parameter_names",
    "freeze_for_alignment_stage",
    "frozen_submodules",
    "has_trainable_parameters",
    "run_frozen_without_autograd",
    "skips_frozen_work",
]

# The savings of the alignment stage (frozen subtrees run without autograd, no losses for frozen
# heads) change no result. Setting this private switch to False turns them off, for checking that.
_SKIP_FROZEN_WORK = True

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
    # the base classifiers are the submodules named "cls_score", as in detectron2's predictors
    names = []
    for module_name, module in model.named_modules():
        if module_name.split(".")[-1] == "cls_score":
            names.extend(f"{module_name}.{n}" for n, _ in module.named_parameters())
    return names


def freeze_for_alignment_stage(model: nn.Module, trainable: str = "alignment") -> List[str]:
    """
    Set ``requires_grad=False`` on every parameter of ``model`` except the alignment parameters
    (and, with ``trainable="classifier"``, the base classifiers: submodules named ``cls_score``).

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


def skips_frozen_work(module: nn.Module) -> bool:
    """
    Whether training may leave out the work done only for ``module``'s parameters (e.g. the loss
    of a head): true when it has no trainable parameter. Checked at every call, so that a module
    made trainable later is trained.
    """
    return _SKIP_FROZEN_WORK and not has_trainable_parameters(module)


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


def _may_need_grad(obj: Any, depth: int = 0) -> bool:
    """
    Whether a module input may need gradients: a tensor that requires grad is reachable from it
    through lists, tuples, dicts and object attributes (detectron2's ImageList, Instances, Boxes,
    masks). Conservative: True for what it cannot look into.
    """
    if isinstance(obj, torch.Tensor):
        return obj.requires_grad
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, np.ndarray, np.generic)):
        return False
    if isinstance(obj, (torch.dtype, torch.device)):
        return False
    if depth >= 10:
        return True
    if isinstance(obj, (list, tuple, set, frozenset)):
        return any(_may_need_grad(x, depth + 1) for x in obj)
    if isinstance(obj, dict):
        return any(_may_need_grad(x, depth + 1) for x in obj.values())
    if isinstance(obj, nn.Module) or not hasattr(obj, "__dict__"):
        return True
    return any(_may_need_grad(x, depth + 1) for x in vars(obj).values())


_grad_mode_stack = threading.local()


def _enter_frozen_forward(module, args, kwargs):
    # forward pre-hook: no autograd for a frozen module whose inputs need no gradient (then its
    # outputs need none either, and running it under no_grad changes no result)
    stack = _grad_mode_stack.__dict__.setdefault("modes", [])
    enabled = torch.is_grad_enabled()
    stack.append(enabled)
    if enabled and skips_frozen_work(module) and not _may_need_grad((args, kwargs)):
        torch.set_grad_enabled(False)


def _exit_frozen_forward(module, args, kwargs, output):
    # forward hook, also called when the forward raises: restore the grad mode
    stack = _grad_mode_stack.__dict__.get("modes")
    if stack:
        torch.set_grad_enabled(stack.pop())


def run_frozen_without_autograd(model: nn.Module) -> List[nn.Module]:
    """
    Make the largest frozen subtrees of ``model`` (:func:`frozen_submodules`; the children of a
    frozen ModuleList or ModuleDict, which are never called themselves) run under
    ``torch.no_grad()`` whenever they still have no trainable parameter (checked at each call)
    and their inputs need no gradient. Gradients to trainable parameters, up- or downstream, are
    unchanged; no autograd state is kept for the frozen trunk.

    Returns:
        list[nn.Module]: the modules given the forward hooks that do this.
    """
    hooked = []
    pending = list(frozen_submodules(model))
    while pending:
        module = pending.pop(0)
        if isinstance(module, (nn.ModuleList, nn.ModuleDict)):
            pending.extend(module.children())
            continue
        module.register_forward_pre_hook(_enter_frozen_forward, prepend=True, with_kwargs=True)
        module.register_forward_hook(_exit_frozen_forward, with_kwargs=True, always_call=True)
        hooked.append(module)
    return hooked


class AlignmentStageMixin:
    """
    For a meta-architecture (put it before the nn.Module base class): in the alignment stage, its
    parameters are frozen when it is built (call :meth:`setup_alignment_stage` at the end of
    ``__init__``) and ``train()`` keeps the frozen submodules in eval mode, so that their buffers
    (BatchNorm statistics) never move and they run as at inference; they also run without
    autograd (:func:`run_frozen_without_autograd`).
    """

    alignment_stage = False

    @staticmethod
    def alignment_stage_config(cfg) -> dict:
        """The ``alignment_stage`` / ``alignment_stage_trainable`` arguments from ``cfg``."""
        return {
            "alignment_stage": cfg.MODEL.DISALIGN.ALIGNMENT_STAGE,
            "alignment_stage_trainable": cfg.MODEL.DISALIGN.ALIGNMENT_STAGE_TRAINABLE,
        }

    def setup_alignment_stage(self, enabled: bool, trainable: str = "alignment"):
        """
        Args:
            enabled (bool): whether the model is built for the alignment stage.
            trainable (str): what the stage trains, see :func:`freeze_for_alignment_stage`.
        """
        self.alignment_stage = enabled
        if enabled:
            freeze_for_alignment_stage(self, trainable)
            run_frozen_without_autograd(self)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.alignment_stage:
            for module in frozen_submodules(self):
                module.eval()
        return self
