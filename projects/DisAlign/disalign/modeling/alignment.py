# -*- coding: utf-8 -*-
"""
The alignment stage (stage 2): everything is frozen except DisAlign's alignment parameters (or,
for the paper's "no calibration" ablation, the base classifier).

One mechanism serves every model (detector, image classifier, semantic segmentor):
:class:`AlignmentStageMixin` freezes the model when it is built
(:func:`freeze_for_alignment_stage`) and holds the frozen subtrees (:func:`frozen_submodules`) in
eval mode in ``train()``. Autograd records nothing for the frozen trunk: neither its parameters nor
its inputs need gradients. In training, the models leave out the work done only for frozen
parameters (the losses of frozen heads), asking :func:`skips_frozen_work`.
"""

import contextlib
from typing import Iterator, List

from detectron2.config import configurable
from torch import nn

from .layers import DistributionAlignment

__all__ = [
    "frozen_work_kept",
    "AlignmentStageMixin",
    "alignment_parameter_names",
    "freeze_for_alignment_stage",
    "frozen_submodules",
    "has_trainable_parameters",
    "skips_frozen_work",
]

# The savings of the alignment stage (no losses for frozen heads) change no result; the
# benchmark and the tests turn them off with frozen_work_kept() to check that.
_SKIP_FROZEN_WORK = True


@contextlib.contextmanager
def frozen_work_kept():
    """Within: training does the frozen modules' work too (their losses), as a plain freeze."""
    global _SKIP_FROZEN_WORK
    previous, _SKIP_FROZEN_WORK = _SKIP_FROZEN_WORK, False
    try:
        yield
    finally:
        _SKIP_FROZEN_WORK = previous


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


class AlignmentStageMixin:
    """
    For a meta-architecture (put it before the nn.Module base class): in the alignment stage, its
    parameters are frozen when it is built and ``train()`` keeps the frozen submodules in eval
    mode, so that their buffers (BatchNorm statistics) never move and they run as at inference.

    Before a detectron2 meta-architecture whose ``__init__`` builds the whole model, the mixin's
    configurable ``__init__`` adds the arguments ``alignment_stage`` and
    ``alignment_stage_trainable`` (from ``cfg.MODEL.DISALIGN``) and freezes after the base class
    has built everything. A model that builds itself differently calls
    :meth:`setup_alignment_stage` at the end of its own ``__init__``.
    """

    alignment_stage = False

    @configurable
    def __init__(
        self,
        *,
        alignment_stage: bool = False,
        alignment_stage_trainable: str = "alignment",
        **kwargs,
    ):
        """
        Args:
            alignment_stage (bool): build the model for the alignment stage (stage 2).
            alignment_stage_trainable (str): what stage 2 trains, see
                :func:`freeze_for_alignment_stage`.
            kwargs: the base class' arguments.
        """
        super().__init__(**kwargs)
        self.setup_alignment_stage(alignment_stage, alignment_stage_trainable)

    @classmethod
    def from_config(cls, cfg):
        return {**super().from_config(cfg), **cls.alignment_stage_config(cfg)}

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

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.alignment_stage:
            for module in frozen_submodules(self):
                module.eval()
        return self
