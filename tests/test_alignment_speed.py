"""
The alignment stage's savings (the frozen trunk run without autograd, no losses for frozen heads)
change no result: stage 2 trains its parameters to the same values with them and without them,
gradients still reach any module a config makes trainable, and the grad mode is always restored.
"""

import pytest
import torch
from detectron2.data import build_detection_train_loader
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer
from detectron2.utils.events import EventStorage
from torch import nn

import disalign.alignment
from disalign.alignment import alignment_parameter_names, run_frozen_without_autograd

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


def _record_grad_mode(model, names):
    """Record, at each call of the named submodules, whether autograd was enabled inside."""
    modules = dict(model.named_modules())
    record = {name: [] for name in names}
    for name in names:
        for module in (
            modules[name] if isinstance(modules[name], nn.ModuleList) else [modules[name]]
        ):
            module.register_forward_pre_hook(
                lambda m, args, name=name: record[name].append(torch.is_grad_enabled())
            )
    return record


def _train(cfg, batches, record_names=()):
    """Stage 2 for len(batches) iterations as detectron2's SimpleTrainer does them."""
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    optimizer = build_optimizer(cfg, model)
    grad_modes = _record_grad_mode(model, record_names)
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
def test_savings_do_not_change_stage2_results(batches, monkeypatch, cascade):
    cfg = _stage2_cfg(*(CASCADE_OPTS if cascade else []))
    fast, fast_losses, fast_modes = _train(cfg, batches, TRUNK)
    with monkeypatch.context() as m:
        m.setattr(disalign.alignment, "_SKIP_FROZEN_WORK", False)
        plain, plain_losses, plain_modes = _train(cfg, batches, TRUNK)

    # the savings happened: no autograd in the frozen trunk, no box regression loss
    for name in TRUNK:
        assert fast_modes[name] and not any(fast_modes[name]), name
        assert plain_modes[name] and all(plain_modes[name]), name
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
    grad_modes = _record_grad_mode(model, TRUNK)
    with EventStorage():
        losses = model(batches[0])
    sum(losses.values()).backward()

    assert not any(grad_modes["backbone"] + grad_modes["proposal_generator"])
    assert not any(grad_modes["roi_heads.box_pooler"])  # frozen, and its inputs need no grad
    assert all(grad_modes["roi_heads.box_head"])
    for name, p in box_head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in model.backbone.parameters())


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(3, 3)  # frozen, reads the input
        self.trained = nn.Linear(3, 3)
        self.last = nn.Linear(3, 1)  # frozen, reads what the trained layer made
        self.stages = nn.ModuleList([nn.Linear(3, 3)])  # frozen, called through the list
        for module in (self.first, self.last, self.stages):
            module.requires_grad_(False)

    def forward(self, x):
        return self.last(self.trained(self.stages[0](self.first(x))))


def test_frozen_modules_keep_the_gradients_that_flow_through_them():
    torch.manual_seed(0)
    toy = _Toy()
    hooked = run_frozen_without_autograd(toy)
    assert {id(m) for m in hooked} == {id(toy.first), id(toy.last), id(toy.stages[0])}
    modes = _record_grad_mode(toy, ("first", "last", "stages"))
    x = torch.randn(4, 3)
    toy(x).sum().backward()
    assert modes == {"first": [False], "last": [True], "stages": [False]}
    bare = _Toy()  # the same model without the hooks: the same gradient
    bare.load_state_dict(toy.state_dict())
    bare(x).sum().backward()
    torch.testing.assert_close(toy.trained.weight.grad, bare.trained.weight.grad)


def test_grad_mode_is_restored_when_a_frozen_forward_raises():
    toy = _Toy()
    run_frozen_without_autograd(toy)
    with pytest.raises(RuntimeError):
        toy(torch.randn(4, 5))  # wrong width: the first, frozen layer raises
    assert torch.is_grad_enabled()
    with torch.no_grad():
        toy(torch.randn(4, 3))
        assert not torch.is_grad_enabled()
    assert torch.is_grad_enabled()
