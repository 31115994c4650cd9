"""
The alignment stage's savings (no losses for frozen heads, frozen modules in eval mode) change no
result: stage 2 trains its parameters to the same values with them and without them, autograd
records nothing for the frozen trunk, and gradients still reach any module a config makes
trainable.
"""

import pytest
import torch
from detectron2.data import build_detection_train_loader
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer
from detectron2.utils.events import EventStorage
from torch import nn

import disalign.modeling.alignment
from disalign.modeling.alignment import alignment_parameter_names

from conftest import MINIATURE_DISALIGN, load_config

NUM_ITERS = 3
TRUNK = ("backbone", "proposal_generator", "roi_heads.box_pooler", "roi_heads.box_head")
CASCADE_OPTS = [
    "MODEL.ROI_HEADS.NAME",
    "DisAlignCascadeROIHeads",
    "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG",
    True,
]


def _stage2_cfg(*opts):
    cfg = load_config(
        MINIATURE_DISALIGN,
        *("MODEL.WEIGHTS", "", "SOLVER.IMS_PER_BATCH", 2, "DATALOADER.NUM_WORKERS", 0),
        *("SOLVER.BASE_LR", 0.5),  # large, so that the trained parameters move visibly
        *opts,
    )
    return cfg


@pytest.fixture(scope="module")
def batches():
    loader = iter(build_detection_train_loader(_stage2_cfg()))
    return [next(loader) for _ in range(NUM_ITERS)]


def _record_output_needs_grad(model, names):
    """Record, at each call of the named submodules, whether any output tensor needs grad."""
    modules = dict(model.named_modules())
    record = {name: [] for name in names}

    def needs_grad(output):
        if isinstance(output, torch.Tensor):
            return output.requires_grad
        if isinstance(output, dict):
            return any(needs_grad(v) for v in output.values())
        if isinstance(output, (list, tuple)):
            return any(needs_grad(v) for v in output)
        if hasattr(output, "get_fields"):  # Instances
            return any(needs_grad(v) for v in output.get_fields().values())
        return getattr(getattr(output, "tensor", None), "requires_grad", False)

    for name in names:
        for module in (
            modules[name] if isinstance(modules[name], nn.ModuleList) else [modules[name]]
        ):
            module.register_forward_hook(
                lambda m, args, output, name=name: record[name].append(needs_grad(output))
            )
    return record


def _train(cfg, batches, record_names=()):
    """Stage 2 for len(batches) iterations as detectron2's SimpleTrainer does them."""
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    optimizer = build_optimizer(cfg, model)
    grad_modes = _record_output_needs_grad(model, record_names)
    loss_names = []
    with EventStorage():
        for batch in batches:
            loss_dict = model(batch)
            loss_names.append(sorted(loss_dict))
            losses = sum(loss_dict.values())
            optimizer.zero_grad()
            losses.backward()
            optimizer.step()
    assert torch.is_grad_enabled()
    return model, loss_names, grad_modes


@pytest.mark.parametrize("cascade", [False, True], ids=["standard", "cascade"])
def test_savings_do_not_change_stage2_results(batches, cascade):
    cfg = _stage2_cfg(*(CASCADE_OPTS if cascade else []))
    fast, fast_losses, fast_modes = _train(cfg, batches, TRUNK)
    with disalign.modeling.alignment.frozen_work_kept():
        plain, plain_losses, plain_modes = _train(cfg, batches, TRUNK)

    # autograd records nothing in the frozen trunk; the savings happened: no box regression loss
    for name in TRUNK:
        assert fast_modes[name] and not any(fast_modes[name]), name
        assert plain_modes[name] and not any(plain_modes[name]), name
    cls = ["loss_cls_stage0", "loss_cls_stage1", "loss_cls_stage2"] if cascade else ["loss_cls"]
    assert fast_losses == [cls] * NUM_ITERS
    assert all("loss_box_reg" in " ".join(n) for n in plain_losses)

    # ... and changed nothing: the same trained parameters, the same everything else
    trained = alignment_parameter_names(fast)
    assert len(trained) == (12 if cascade else 4)
    fast_state, plain_state = fast.state_dict(), plain.state_dict()
    torch.manual_seed(0)
    initial = build_model(cfg).state_dict()
    for name in trained:
        assert not torch.allclose(fast_state[name], initial[name]), name  # it did train
    for name in fast_state:
        torch.testing.assert_close(fast_state[name], plain_state[name], rtol=1e-5, atol=1e-6)


def test_gradients_reach_a_box_head_made_trainable(batches):
    cfg = _stage2_cfg()
    torch.manual_seed(0)
    model = build_model(cfg)
    box_head = model.roi_heads.box_head
    for p in box_head.parameters():  # as a config training the box head too would
        p.requires_grad_(True)
    model.train()
    grad_modes = _record_output_needs_grad(model, TRUNK)
    with EventStorage():
        losses = model(batches[0])
    sum(losses.values()).backward()

    assert not any(grad_modes["backbone"] + grad_modes["proposal_generator"])
    assert not any(grad_modes["roi_heads.box_pooler"])  # frozen, and its inputs need no grad
    assert all(grad_modes["roi_heads.box_head"])
    for name, p in box_head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in model.backbone.parameters())
