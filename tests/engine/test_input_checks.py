"""
The device checks of disalign.input_checks: MODEL.DEVICE cuda without a usable GPU is one line
from train_net.py, and a GPU that the installed torch build has no kernels for is refused.
"""

import pytest
import torch

from disalign import InputError
from disalign.input_checks import check_device

from conftest import MINIATURE_DISALIGN, one_line_error, train_net


def test_cuda_device_without_a_gpu_is_one_line(tmp_path):
    result = train_net(
        "--config-file",
        MINIATURE_DISALIGN,
        "MODEL.DEVICE",
        "cuda",
        "OUTPUT_DIR",
        tmp_path / "out",
        env={"CUDA_VISIBLE_DEVICES": ""},
    )
    one_line_error(result, "MODEL.DEVICE is 'cuda' but torch finds no usable GPU")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "capability, usable",
    [
        ((7, 0), False),
        ((7, 5), True),
        ((8, 9), True),
        ((10, 3), True),
        ((12, 1), True),
        ((6, 1), False),
    ],
)
def test_gpus_without_kernels_in_the_torch_build_are_refused(monkeypatch, capability, usable):
    # what torch 2.14.1+cu130 reports (torch.cuda.get_arch_list()), on a machine with one GPU
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(
        torch.cuda,
        "get_arch_list",
        lambda: ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"],
    )
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Tesla V100-SXM2-16GB")
    if usable:
        check_device("cuda", 1)
    else:
        major, minor = capability
        with pytest.raises(
            InputError, match=rf"compute capability {major}\.{minor}\) is not supported"
        ):
            check_device("cuda", 1)
    with pytest.raises(InputError, match="--num-gpus 2 but torch sees 1 GPU"):
        check_device("cuda", 2)
    check_device("cpu", 1)  # no GPU needed
