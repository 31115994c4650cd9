"""
The alignment-stage functions of disalign.modeling.alignment on a tiny model (no detector, no
data): which parameters are trainable, which submodules are frozen, the eval mode that train()
keeps for them, and the mixin's configurable construction.
"""

import pytest
import torch
from detectron2.config import CfgNode, configurable
from torch import nn

from disalign import DistributionAlignment
from disalign.modeling.alignment import (
    AlignmentStageMixin,
    alignment_parameter_names,
    freeze_for_alignment_stage,
    frozen_submodules,
    has_trainable_parameters,
    skips_frozen_work,
)

ALIGNMENT = [
    "head.alignment.alpha",
    "head.alignment.beta",
    "head.alignment.confidence.weight",
    "head.alignment.confidence.bias",
]
CLASSIFIER = ["head.cls_score.weight", "head.cls_score.bias"]


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.box = nn.Linear(3, 4)
        self.cls_score = nn.Linear(3, 2)
        self.alignment = DistributionAlignment(2, 3)


class Base(nn.Module):
    """A trunk (with BatchNorm and Dropout), a parameter-free module and a head."""

    @configurable
    def __init__(self, *, width: int = 3):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(3, width), nn.BatchNorm1d(width), nn.Dropout(0.5))
        self.act = nn.ReLU()
        self.head = Head()
        self.my_cls_score = nn.Linear(3, 1)  # not a classifier: not named "cls_score"
        self.cls_score_aux = nn.Linear(3, 1)  # nor this one

    @classmethod
    def from_config(cls, cfg):
        return {"width": cfg.WIDTH}


class Tiny(AlignmentStageMixin, Base):
    pass


def _cfg(stage, trainable="alignment"):
    return CfgNode(
        {
            "WIDTH": 5,
            "MODEL": {
                "DISALIGN": {"ALIGNMENT_STAGE": stage, "ALIGNMENT_STAGE_TRAINABLE": trainable}
            },
        }
    )


def _trainable(model):
    return [n for n, p in model.named_parameters() if p.requires_grad]


def test_alignment_parameter_names_with_and_without_a_prefix():
    assert alignment_parameter_names(Base()) == ALIGNMENT
    # the model itself an alignment: names without a prefix
    alignment = DistributionAlignment(2, 3)
    assert alignment_parameter_names(alignment) == [
        "alpha",
        "beta",
        "confidence.weight",
        "confidence.bias",
    ]
    # two alignments, one without confidence layer; a model without any
    two = nn.ModuleDict({"a": DistributionAlignment(2, 3, confidence=False), "b": alignment})
    assert alignment_parameter_names(two) == ["a.alpha", "a.beta"] + [
        "b." + n for n in ("alpha", "beta", "confidence.weight", "confidence.bias")
    ]
    assert alignment_parameter_names(nn.Sequential(nn.Linear(2, 2))) == []


def test_freeze_for_alignment_stage_leaves_the_alignment_trainable():
    model = Base()
    assert freeze_for_alignment_stage(model) == sorted(ALIGNMENT)
    assert _trainable(model) == ALIGNMENT
    # frozen again: what was trainable, and only that, is trainable again
    for p in model.parameters():
        p.requires_grad_(True)
    assert freeze_for_alignment_stage(model, "alignment") == sorted(ALIGNMENT)
    assert _trainable(model) == ALIGNMENT


def test_freeze_for_alignment_stage_with_the_classifier_at_every_depth():
    model = Base()
    returned = freeze_for_alignment_stage(model, "classifier")
    assert returned == sorted(ALIGNMENT + CLASSIFIER)
    assert _trainable(model) == CLASSIFIER + ALIGNMENT  # in the model's order
    # a classifier at the top, and one two levels down; no alignment
    plain = nn.ModuleDict({"cls_score": nn.Linear(2, 2), "a": nn.ModuleDict({"b": Head()})})
    del plain["a"]["b"].alignment
    assert freeze_for_alignment_stage(plain, "classifier") == [
        "a.b.cls_score.bias",
        "a.b.cls_score.weight",
        "cls_score.bias",
        "cls_score.weight",
    ]
    assert not any(p.requires_grad for p in plain["a"]["b"].box.parameters())


def test_freeze_without_alignment_parameters_is_an_error_naming_the_fix():
    message = (
        "MODEL.DISALIGN.ALIGNMENT_STAGE is on, but the model has no alignment parameters to "
        "train: set MODEL.DISALIGN.CALIBRATION True and use DisAlign's ROI heads"
    )
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="^" + message.replace(".", r"\.") + "$"):
        freeze_for_alignment_stage(model)
    with pytest.raises(ValueError, match="no alignment parameters"):
        freeze_for_alignment_stage(model, "classifier")  # no cls_score either
    assert all(p.requires_grad for p in model.parameters())  # left untouched


def test_trainable_parameters_and_skipped_work():
    layer = nn.Linear(2, 2)
    assert has_trainable_parameters(layer) and not skips_frozen_work(layer)
    layer.weight.requires_grad_(False)  # one trainable parameter is enough
    assert has_trainable_parameters(layer) and not skips_frozen_work(layer)
    layer.bias.requires_grad_(False)
    assert not has_trainable_parameters(layer) and skips_frozen_work(layer)
    # a module without parameters has nothing to train
    assert not has_trainable_parameters(nn.ReLU()) and skips_frozen_work(nn.ReLU())
    layer.bias.requires_grad_(True)  # made trainable later: checked at every call
    assert not skips_frozen_work(layer)


def test_frozen_submodules_are_the_largest_frozen_subtrees():
    model = Base()
    freeze_for_alignment_stage(model)
    frozen = [id(m) for m in frozen_submodules(model)]
    expected = [
        model.trunk,
        model.act,
        model.head.box,
        model.head.cls_score,
        model.my_cls_score,
        model.cls_score_aux,
    ]
    assert frozen == [id(m) for m in expected]
    # nothing frozen: nothing with parameters, only the parameter-free modules
    fresh = Base()
    assert [id(m) for m in frozen_submodules(fresh)] == [
        id(m) for m in (fresh.trunk[2], fresh.act)
    ]
    # everything frozen: the children themselves
    for p in fresh.parameters():
        p.requires_grad_(False)
    assert [id(m) for m in frozen_submodules(fresh)] == [id(m) for m in fresh.children()]


def test_mixin_from_the_config_freezes_and_keeps_the_frozen_parts_in_eval_mode():
    model = Tiny(_cfg(True))
    assert model.alignment_stage is True
    assert model.trunk[0].out_features == 5  # the base class' own config value
    assert _trainable(model) == ALIGNMENT
    assert model.train() is model
    assert model.training and model.head.training and model.head.alignment.training
    for frozen in (model.trunk, *model.trunk, model.act, model.head.box, model.head.cls_score):
        assert not frozen.training
    # the BatchNorm statistics do not move in a training-mode forward
    before = model.trunk[1].running_mean.clone()
    model.trunk(torch.randn(4, 3))
    assert torch.equal(model.trunk[1].running_mean, before)
    assert model.train(False) is model
    assert not any(m.training for m in model.modules())
    model.train(True)
    assert model.head.training and not model.trunk.training


def test_mixin_classifier_trainable_from_the_config():
    model = Tiny(_cfg(True, "classifier"))
    assert _trainable(model) == CLASSIFIER + ALIGNMENT
    model.train()
    assert model.head.cls_score.training and model.head.alignment.training
    assert not model.head.box.training and not model.trunk.training


def test_mixin_outside_the_alignment_stage_trains_everything():
    model = Tiny(_cfg(False))
    assert model.alignment_stage is False
    assert len(_trainable(model)) == len(list(model.parameters()))
    model.eval()
    assert model.train() is model
    assert all(m.training for m in model.modules())  # Dropout and ReLU included
    # the arguments directly, and their defaults: not the alignment stage
    assert Tiny(width=2).alignment_stage is False
    model = Tiny(width=2, alignment_stage=True)
    assert _trainable(model) == ALIGNMENT and model.trunk[0].out_features == 2
    model = Tiny(alignment_stage=True, alignment_stage_trainable="classifier")
    assert _trainable(model) == CLASSIFIER + ALIGNMENT


def test_a_model_that_never_sets_up_the_stage_is_not_in_it():
    class SelfBuilt(AlignmentStageMixin, nn.Module):
        def __init__(self):
            nn.Module.__init__(self)
            self.dropout = nn.Dropout(0.5)

    model = SelfBuilt()
    assert model.alignment_stage is False
    assert model.train().dropout.training
    model.setup_alignment_stage(False)
    assert model.alignment_stage is False and model.train().dropout.training
    # set up later, with the default: the alignment parameters trainable
    model = Tiny(_cfg(False))
    model.setup_alignment_stage(True)
    assert model.alignment_stage is True and _trainable(model) == ALIGNMENT
    assert not model.train().trunk.training
