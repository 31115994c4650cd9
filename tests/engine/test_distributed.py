"""
Multi-process training on the CPU (gloo) through torch.distributed: stage 2 with 2 processes
matches one process with the same total batch; every process computes the same GRW weights;
distributed evaluation reports what single-process evaluation reports.

Processes are started as a user would: detectron2's ``launch`` (``--num-gpus 2``) where it
supports the CPU, otherwise PyTorch's launcher ``torchrun`` (detectron2 0.6's ``launch`` needs
CUDA; see disalign/engine/training.py).
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from detectron2.data import MetadataCatalog

from disalign.compat import launch_supports_cpu

from conftest import (
    MINIATURE_BASELINE,
    MINIATURE_DISALIGN,
    REPO_ROOT,
    hand_grw_weights,
    json_class_counts,
    load_config,
)

TRAIN_NET = os.path.join(REPO_ROOT, "train_net.py")
# fmt: off
COMMON = [
    "SOLVER.IMS_PER_BATCH", "2",
    "DATALOADER.NUM_WORKERS", "0",
    "TEST.EVAL_PERIOD", "0",
    "TEST.FIXED_AP.DETS_PER_IMAGE", "10",  # masks of 10 detections per image, not 100
]
# every proposal is kept (no random subsampling), so that 1 and 2 processes see the same ROIs
STAGE2 = COMMON + [
    "SOLVER.MAX_ITER", "3",
    "DATALOADER.ASPECT_RATIO_GROUPING", "False",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "512",
    "MODEL.ROI_HEADS.POSITIVE_FRACTION", "1.0",
]
# fmt: on
ALIGNMENT = "roi_heads.box_predictor.alignment."


def _run(command, env=None, **kwargs):
    env = {**os.environ, **(env or {})}
    result = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, env=env, **kwargs
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def two_processes(script, *args, env=None):
    """``script`` in 2 CPU processes, started as train_net.py's README says."""
    if launch_supports_cpu() and script == TRAIN_NET:
        command = [sys.executable, script, "--num-gpus", "2", *args]
    else:
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            "2", script, *args,
        ]  # fmt: skip
    return _run([*command], env=env)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, miniature_stage1, small_lvis_val):
    # stage 1: the session's miniature detector; evaluations on the small val split
    stage1, _ = miniature_stage1
    env, _ = small_lvis_val
    out = tmp_path_factory.mktemp("distributed")
    (out / "stage1").symlink_to(stage1)
    stage2 = ["--config-file", MINIATURE_DISALIGN, *STAGE2,
              "MODEL.WEIGHTS", str(out / "stage1" / "model_final.pth")]  # fmt: skip
    _run([sys.executable, TRAIN_NET, *stage2, "OUTPUT_DIR", str(out / "one")], env=env)
    two_processes(TRAIN_NET, *stage2, "DATASETS.TEST", "()", "OUTPUT_DIR", str(out / "two"),
                  env=env)  # fmt: skip
    two_processes(TRAIN_NET, "--eval-only", "--config-file", MINIATURE_DISALIGN, *STAGE2,
                  "MODEL.WEIGHTS", str(out / "one" / "model_final.pth"),
                  "OUTPUT_DIR", str(out / "eval_two"), env=env)  # fmt: skip
    return out


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_stage2_with_two_processes_equals_one_process(runs):
    one, two = _weights(runs / "one/model_final.pth"), _weights(runs / "two/model_final.pth")
    stage1 = _weights(runs / "stage1/model_final.pth")
    aligned = [k for k in one if k.startswith(ALIGNMENT)]
    assert len(aligned) == 4
    assert not torch.allclose(one[ALIGNMENT + "alpha"], torch.ones(1))  # it trained
    for key in aligned:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-6)
    assert all(torch.equal(one[k], stage1[k]) and torch.equal(two[k], stage1[k]) for k in stage1)


def test_distributed_evaluation_reports_the_same_numbers(runs):
    single = json.loads((runs / "one/eval_results.json").read_text())
    distributed = json.loads((runs / "eval_two/eval_results.json").read_text())
    assert set(single) == {"bbox", "segm"}
    assert distributed == single


GRW_SCRIPT = """
import json, sys
import torch, torch.distributed as dist
from detectron2.modeling import build_model
sys.path.insert(0, {tests!r})
from conftest import MINIATURE_DISALIGN, load_config
from disalign.engine import torchrun_process_group

with torchrun_process_group("cpu"):
    model = build_model(load_config(MINIATURE_DISALIGN, "MODEL.WEIGHTS", ""))
    weights = model.roi_heads.box_predictor.grw.class_weights()
    gathered = [torch.zeros_like(weights) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, weights)
    if dist.get_rank() == 0:
        with open({out!r}, "w") as f:
            json.dump([g.tolist() for g in gathered], f)
"""


def test_every_process_computes_the_same_grw_weights(tmp_path):
    script, out = tmp_path / "grw_weights.py", tmp_path / "weights.json"
    script.write_text(GRW_SCRIPT.format(tests=os.path.join(REPO_ROOT, "tests"), out=str(out)))
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          str(script)])  # fmt: skip
    rank0, rank1 = json.loads(out.read_text())
    assert rank0 == rank1
    # the weights of the paper's formula, from the training json's image counts; background 1
    cfg = load_config(MINIATURE_DISALIGN, "MODEL.WEIGHTS", "")
    counts = json_class_counts(MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).json_file, "images")
    expected = hand_grw_weights(counts, cfg.MODEL.DISALIGN.GRW.RHO) + [1.0]
    assert rank0 == pytest.approx(expected, rel=1e-6)
    assert min(expected[:-1]) < 1 < max(expected[:-1])  # the miniature is long-tailed


@pytest.mark.skipif(launch_supports_cpu(), reason="this detectron2's launch starts CPU processes")
def test_launch_on_the_cpu_points_to_torchrun():
    result = subprocess.run(
        [sys.executable, TRAIN_NET, "--num-gpus", "2", "--config-file", MINIATURE_BASELINE],
        cwd=REPO_ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "error: this detectron2's launch needs CUDA for --num-gpus 2; on the CPU, start the "
        "processes with: torchrun --nproc_per_node 2 train_net.py ..."
    )


LEAVE_SCRIPT = """
import sys, time
import torch.distributed as dist
from disalign.engine import torchrun_process_group

with torchrun_process_group("cpu"):
    rank = dist.get_rank()
    if rank == 0:  # the main process alone computes the metrics
        time.sleep(2)
    finished = time.time()
left = time.time()
with open({out!r} + str(rank), "w") as f:
    f.write(f"{{finished}} {{left}}")
"""


def test_processes_leave_the_group_together(tmp_path):
    # a process that tears down its side of the group while the main one still works may abort
    script, out = tmp_path / "leave.py", tmp_path / "times"
    script.write_text(LEAVE_SCRIPT.format(out=str(out)))
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          str(script)])  # fmt: skip
    main_finished, _ = map(float, (tmp_path / "times0").read_text().split())
    other_finished, other_left = map(float, (tmp_path / "times1").read_text().split())
    assert main_finished - other_finished > 1.5  # the other process was done 2 s earlier
    assert other_left >= main_finished  # and waited for the main one
