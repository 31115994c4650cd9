import os
import subprocess
import sys

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.engine import SimpleTrainer

import disalign

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINIATURE_BASELINE = os.path.join(
    REPO_ROOT, "configs/Miniature-LVIS/mask_rcnn_R_18_FPN_baseline.yaml"
)
MINIATURE_DISALIGN = os.path.join(
    REPO_ROOT, "configs/Miniature-LVIS/mask_rcnn_R_18_FPN_disalign.yaml"
)

torch.set_num_threads(min(2, torch.get_num_threads()))


def load_config(path, *opts):
    cfg = get_cfg()
    disalign.add_disalign_config(cfg)
    cfg.merge_from_file(path)
    cfg.merge_from_list(list(opts))
    return cfg


@pytest.fixture
def miniature_cfg():
    """The stage-2 miniature config, shrunk for fast tests."""
    return load_config(
        MINIATURE_DISALIGN,
        "MODEL.WEIGHTS",
        "",
        "SOLVER.IMS_PER_BATCH",
        2,
        "DATALOADER.NUM_WORKERS",
        0,
    )


class RecordingTrainer(SimpleTrainer):
    """detectron2's SimpleTrainer, keeping the loss names of each step."""

    def __init__(self, *args):
        super().__init__(*args)
        self.loss_names = []

    def run_step(self):
        data = next(self._data_loader_iter)
        loss_dict = self.model(data)
        self.loss_names.append(sorted(loss_dict))
        losses = sum(loss_dict.values())
        self.optimizer.zero_grad()
        losses.backward()
        self.optimizer.step()


def train_net(*args, env=None):
    """Run train_net.py in a subprocess with ``args`` (turned into strings)."""
    return subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "train_net.py"), *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def ok(result):
    """Assert that a train_net.py run succeeded."""
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def one_line_error(result, expected):
    """Assert that a train_net.py run failed with one ``error: ...`` line holding ``expected``."""
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and expected in lines[-1], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def hand_grw_weights(counts, rho):
    """
    GRW weights by the paper's formula, in plain Python (float64), independent of the project's
    code: counts below 1 raised to 1, r_j = n_j / sum n, w_j = r_j^-rho normalised to sum K.
    """
    counts = [max(float(n), 1.0) for n in counts]
    raw = [(n / sum(counts)) ** -rho for n in counts]
    return [len(raw) * w / sum(raw) for w in raw]


def json_class_counts(json_file, count_by):
    """
    Images (``count_by="images"``) or instances per category, read directly from an LVIS / COCO
    style json whose category ids are 1..K; a list of K counts.
    """
    import json

    with open(json_file) as f:
        data = json.load(f)
    num_classes = len(data["categories"])
    images = [set() for _ in range(num_classes)]
    instances = [0] * num_classes
    for ann in data["annotations"]:
        images[ann["category_id"] - 1].add(ann["image_id"])
        instances[ann["category_id"] - 1] += 1
    return [len(s) for s in images] if count_by == "images" else instances


def split_file_class_counts(split_file, num_classes):
    """Images per class of a ``<path> <label>`` split file, read directly."""
    counts = [0] * num_classes
    with open(split_file) as f:
        for line in f:
            if line.strip():
                counts[int(line.split()[-1])] += 1
    return counts
