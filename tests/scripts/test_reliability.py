"""
Reliability: exact resumption after a SIGKILL, atomic checkpoints, checkpoints that would run
code, and bad inputs (one-line errors, non-zero exit, nothing already written lost).
The cases and their guarantees are listed in tests/README.md.
"""

import io
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from PIL import Image

from disalign.engine.checkpoint import SafeDetectionCheckpointer, UnsafeCheckpointError

from conftest import (
    MINIATURE_BASELINE,
    MINIATURE_DISALIGN,
    REPO_ROOT,
    load_config,
    ok,
    one_line_error,
    train_net,
)

# fmt: off
FAST = [
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.WARMUP_ITERS", "2",
    "SOLVER.STEPS", "(3,)",
    "DATALOADER.NUM_WORKERS", "1",
    "TEST.EVAL_PERIOD", "0",
    "DATASETS.TEST", "()",
    "SOLVER.MAX_ITER", "6",
    "SOLVER.CHECKPOINT_PERIOD", "2",
]
# fmt: on


def _command(*args):
    return [sys.executable, os.path.join(REPO_ROOT, "train_net.py"), *map(str, args)]


def _train_killed_after_first_checkpoint(args, output_dir):
    """Start train_net.py, SIGKILL it as soon as its first checkpoint is tagged."""
    process = subprocess.Popen(
        _command(*args, "OUTPUT_DIR", output_dir),
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    tag = output_dir / "last_checkpoint"
    while not tag.exists() and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL  # killed mid-way, not finished
    assert not (output_dir / "model_final.pth").exists()
    return tag.read_text()


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _assert_resumed_run_is_exact(args, uninterrupted_dir, tmp_path):
    last = _train_killed_after_first_checkpoint(args, tmp_path / "killed")
    assert last.startswith("model_0")  # resumed from a periodic checkpoint
    run = ok(train_net("--resume", *args, "OUTPUT_DIR", tmp_path / "killed"))
    # the training set is read once, for the loader that continues the stream
    loads = re.findall(r"Loaded \d+ images in the LVIS format from \S+_train\.json", run.stdout)
    assert len(loads) == 1, run.stdout[-3000:]
    expected = _weights(uninterrupted_dir / "model_final.pth")
    resumed = _weights(tmp_path / "killed" / "model_final.pth")
    assert expected.keys() == resumed.keys()
    differing = [k for k in expected if not torch.equal(expected[k], resumed[k])]
    assert differing == []


STAGE1 = ["--config-file", MINIATURE_BASELINE, *FAST]


@pytest.fixture(scope="module")
def uninterrupted_stage1(tmp_path_factory):
    out = tmp_path_factory.mktemp("stage1")
    ok(train_net(*STAGE1, "OUTPUT_DIR", out))
    return out


def test_stage1_resumed_after_sigkill_ends_with_the_same_weights(tmp_path, uninterrupted_stage1):
    _assert_resumed_run_is_exact(STAGE1, uninterrupted_stage1, tmp_path)


def test_stage2_resumed_after_sigkill_ends_with_the_same_weights(tmp_path, uninterrupted_stage1):
    weights = uninterrupted_stage1 / "model_final.pth"
    args = ["--config-file", MINIATURE_DISALIGN, *FAST, "MODEL.WEIGHTS", weights]
    ok(train_net(*args, "OUTPUT_DIR", tmp_path / "uninterrupted"))
    _assert_resumed_run_is_exact(args, tmp_path / "uninterrupted", tmp_path)


def _small_model():
    cfg = load_config(MINIATURE_DISALIGN, "MODEL.WEIGHTS", "")
    return build_model(cfg)


def test_interrupted_checkpoint_write_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    checkpointer = SafeDetectionCheckpointer(_small_model(), save_dir=str(tmp_path))
    checkpointer.save("model_0000001")
    good = (tmp_path / "model_0000001.pth").read_bytes()

    def crash_half_way(data, f):
        f.write(b"\x80\x02half a checkpoint")
        raise KeyboardInterrupt  # e.g. the job is stopped while writing

    monkeypatch.setattr(torch, "save", crash_half_way)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save("model_0000002")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000001.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert (tmp_path / "model_0000001.pth").read_bytes() == good
    # a SIGKILL gives no chance to clean up: the partial file keeps its temporary name
    (tmp_path / "model_0000002.pth.incomplete").write_bytes(b"\x80\x02half")
    assert checkpointer.get_checkpoint_file() == str(tmp_path / "model_0000001.pth")
    monkeypatch.undo()
    # the weights move on after the save; resuming brings back those of model_0000001.pth
    saved = _weights(tmp_path / "model_0000001.pth")
    with torch.no_grad():
        for value in checkpointer.model.state_dict().values():
            value += 1
    model = checkpointer.model.state_dict()
    assert saved.keys() == model.keys()
    assert all(not torch.equal(model[k], v) for k, v in saved.items())
    checkpointer.resume_or_load("", resume=True)
    model = checkpointer.model.state_dict()
    assert [k for k, v in saved.items() if not torch.equal(model[k], v)] == []


class _RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoints_that_would_run_code_are_refused(tmp_path):
    marker = tmp_path / "code_ran"
    pth = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": _RunsCode(marker)}, pth)
    pkl = tmp_path / "evil.pkl"
    pkl.write_bytes(pickle.dumps({"model": {"w": np.zeros(1)}, "payload": _RunsCode(marker)}))
    checkpointer = SafeDetectionCheckpointer(_small_model())
    for path in (pth, pkl):
        with pytest.raises(UnsafeCheckpointError, match="refusing to load checkpoint"):
            checkpointer.load(str(path))
    result = train_net("--config-file", MINIATURE_DISALIGN, "MODEL.WEIGHTS", pth)
    one_line_error(result, f"refusing to load checkpoint '{pth}'")
    assert not marker.exists()


def test_model_zoo_pickles_of_plain_arrays_still_load(tmp_path):
    model = _small_model()
    weights = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    weights["roi_heads.box_predictor.alignment.beta"] += 0.5
    path = tmp_path / "zoo.pkl"
    path.write_bytes(pickle.dumps({"model": weights, "__author__": "someone"}))
    SafeDetectionCheckpointer(model).load(str(path))
    beta = model.roi_heads.box_predictor.alignment.beta
    torch.testing.assert_close(beta, torch.full_like(beta, 0.5))


# --- bad inputs ---------------------------------------------------------------------------------


def _lvis_v1_layout(root, *, annotation_category=7, image_bytes=None, json_text=None):
    """DETECTRON2_DATASETS layout of a one-image lvis_v1_train."""
    (root / "lvis").mkdir(parents=True)
    images = root / "coco" / "train2017"
    images.mkdir(parents=True)
    if image_bytes is not None:
        (images / "000000000001.jpg").write_bytes(image_bytes)
    gt = {
        "images": [
            {
                "id": 1,
                "width": 64,
                "height": 48,
                "neg_category_ids": [],
                "not_exhaustive_category_ids": [],
                "coco_url": "http://images.cocodataset.org/train2017/000000000001.jpg",
            }
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": annotation_category,
                "bbox": [1, 2, 10, 20],
                "area": 200,
                "segmentation": [[1, 2, 11, 2, 11, 22, 1, 22]],
            }
        ],
        "categories": [{"id": i, "name": f"c{i}", "frequency": "r"} for i in range(1, 1204)],
    }
    (root / "lvis" / "lvis_v1_train.json").write_text(json_text or json.dumps(gt))
    return {"DETECTRON2_DATASETS": str(root)}


def _jpeg():
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 30, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def earlier_run(tmp_path):
    """An output directory holding the files of an earlier run."""
    out = tmp_path / "out"
    out.mkdir()
    for name, data in (
        ("config.yaml", b"MODEL: {}\n"),
        ("eval_results.json", b'{"bbox": {"AP": 12.5}}'),
        ("model_final.pth", b"earlier weights"),
        ("last_checkpoint", b"model_final.pth"),
    ):
        (out / name).write_bytes(data)
    return out


def _files(directory):
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def _assert_untouched(directory, before):
    """Every file of the earlier run has its earlier contents (logs are appended to)."""
    after = _files(directory)
    assert {k: after.get(k) for k in before if k != "log.txt"} == {
        k: v for k, v in before.items() if k != "log.txt"
    }


LVIS_TRAIN = ["DATASETS.TRAIN", "('lvis_v1_train',)", "MODEL.ROI_HEADS.NUM_CLASSES", 1203]


@pytest.mark.parametrize(
    "layout, expected, before_training",
    [
        (dict(json_text="{not json"), "lvis_v1_train.json' is not valid JSON", True),
        (dict(image_bytes=None), "train2017/000000000001.jpg' does not exist", True),
        (dict(image_bytes=b"not a jpeg"), "cannot read image '", False),
        (dict(annotation_category=5000), "invalid category_id=4999", True),
    ],
    ids=["corrupt-json", "missing-image", "unreadable-image", "unknown-category"],
)
def test_bad_training_data(tmp_path, earlier_run, layout, expected, before_training):
    env = _lvis_v1_layout(tmp_path / "datasets", **{"image_bytes": _jpeg(), **layout})
    before = _files(earlier_run)
    args = [*FAST, *LVIS_TRAIN, "DATALOADER.NUM_WORKERS", 0, "OUTPUT_DIR", earlier_run]
    result = train_net("--config-file", MINIATURE_BASELINE, *args, env=env)
    one_line_error(result, expected)
    _assert_untouched(earlier_run, before)
    log = (earlier_run / "log.txt").read_text() if (earlier_run / "log.txt").exists() else ""
    started = "Starting training" in result.stdout + result.stderr + log
    if before_training:  # refused before the first iteration: no training logged, no checkpoint
        assert not started
        written = set(_files(earlier_run)) - set(before)
        assert [name for name in written if ".pth" in name or "checkpoint" in name] == []
    else:  # the image is read by the first iteration (and the log says when training starts)
        assert started


def test_non_finite_loss_names_the_iteration(tmp_path, earlier_run):
    before = _files(earlier_run)
    args = [*FAST, "SOLVER.BASE_LR", 1e30, "SOLVER.WARMUP_ITERS", 0, "OUTPUT_DIR", earlier_run]
    result = train_net("--config-file", MINIATURE_BASELINE, *args)
    one_line_error(result, "iteration=1")  # the first step's update makes the weights inf
    assert "NaN" in result.stderr.strip().splitlines()[-1]
    _assert_untouched(earlier_run, before)


def test_output_directory_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = train_net("--config-file", MINIATURE_BASELINE, "OUTPUT_DIR", blocker / "out")
    one_line_error(result, f"OUTPUT_DIR '{blocker / 'out'}' cannot be created")


def test_negative_rho():
    result = train_net("--config-file", MINIATURE_DISALIGN, "MODEL.DISALIGN.GRW.RHO", -0.5)
    one_line_error(result, "MODEL.DISALIGN.GRW.RHO must be >= 0, got -0.5")
