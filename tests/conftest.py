import multiprocessing
import os
import subprocess
import sys
import tempfile

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.engine import SimpleTrainer

import disalign

from forked_main import run_as_main

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINIATURE_BASELINE = os.path.join(
    REPO_ROOT, "configs/Miniature-LVIS/mask_rcnn_R_18_FPN_baseline.yaml"
)
MINIATURE_DISALIGN = os.path.join(
    REPO_ROOT, "configs/Miniature-LVIS/mask_rcnn_R_18_FPN_disalign.yaml"
)

torch.set_num_threads(min(2, torch.get_num_threads()))
# train_net.py and the tools run in subprocesses with one torch thread each: on a 2-core machine
# their default two threads contend with each other and with this process (a stage-2 run of
# test_train_net took 3x longer with two). A value set by the caller is kept.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# class counts are cached (disalign.data.class_counts): in a folder of this run, not the user's
_CACHE = tempfile.TemporaryDirectory(prefix="disalign-test-cache-")
os.environ.setdefault("DISALIGN_CACHE", _CACHE.name)


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


# fmt: off
FAST_DETECTION = [  # a few iterations of small batches, few detections to evaluate
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.WARMUP_ITERS", "2",
    "SOLVER.STEPS", "(3,)",
    "DATALOADER.NUM_WORKERS", "0",
    "TEST.DETECTIONS_PER_IMAGE", "5",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
    # Fixed AP's per-image cap (100 in the miniature's configs): masks of 10 detections per image,
    # not 100 (an evaluation 5x faster)
    "TEST.FIXED_AP.DETS_PER_IMAGE", "10",
]
# fmt: on


def _miniature_copy(tmp_path_factory, folder, source, replaced):
    """
    A new DETECTRON2_DATASETS folder holding ``folder`` (a miniature's name) with links to every
    entry of its generated copy in ``source`` but ``replaced`` (which the caller writes), so that
    the copy keeps every split the miniature's currency check reads. Returns (the root, the
    folder).
    """
    root = tmp_path_factory.mktemp("datasets")
    target = root / folder
    target.mkdir()
    for name in sorted(set(os.listdir(source)) - set(replaced)):
        (target / name).symlink_to(os.path.join(source, name))
        assert (target / name).exists()
    return root, target


def _greedy_cover(classes):
    """
    The keys of ``classes`` (key -> set of classes) whose sets cover the union of all, chosen
    greedily (each time the one adding the most classes not yet covered; ties: the first key in
    sorted order).
    """
    everything, covered, chosen = set().union(*classes.values()), set(), []
    while covered != everything:
        best = max(sorted(classes), key=lambda key: len(classes[key] - covered))
        chosen.append(best)
        covered |= classes[best]
    return chosen


@pytest.fixture(scope="session")
def small_lvis_val(tmp_path_factory):
    """
    A DETECTRON2_DATASETS folder whose miniature LVIS has the whole training split and a val
    split of the fewest val images that hold every class (16 of 145, all 36 classes, small and
    medium objects, every frequency group): evaluations of train_net.py runs on it cost a ninth.
    Returns (the folder's environment for train_net.py, the val json).
    """
    import json

    from detectron2.data import DatasetCatalog, MetadataCatalog

    from disalign.data.miniature_lvis import ensure_miniature_lvis

    DatasetCatalog.get("miniature_lvis_val")  # made on first use
    source = MetadataCatalog.get("miniature_lvis_val").json_file
    source = os.path.dirname(os.path.abspath(source))
    root, target = _miniature_copy(
        tmp_path_factory, "miniature_lvis", source, ("miniature_lvis_val.json",)
    )
    with open(os.path.join(source, "miniature_lvis_val.json")) as f:
        val = json.load(f)
    classes = {}
    for a in val["annotations"]:
        classes.setdefault(a["image_id"], set()).add(a["category_id"])
    assert len(set().union(*classes.values())) == len(val["categories"])
    kept = set(_greedy_cover(classes))
    val["images"] = [image for image in val["images"] if image["id"] in kept]
    val["annotations"] = [a for a in val["annotations"] if a["image_id"] in kept]
    json_file = target / "miniature_lvis_val.json"
    json_file.write_text(json.dumps(val))
    # the copy must count as up to date, or the runs' first load regenerates the whole val split
    # into it
    ensure_miniature_lvis(str(root))
    assert len(json.loads(json_file.read_text())["images"]) == len(kept)
    return {"DETECTRON2_DATASETS": str(root)}, json_file


@pytest.fixture(scope="session")
def small_lt_test(tmp_path_factory):
    """
    A DETECTRON2_DATASETS folder whose classification miniature has the whole training split and
    a test split of the first 4 test images of each class (144 of 720, every class): evaluations
    of train_net.py runs on it cost a fifth. Returns the folder's environment for train_net.py.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    DatasetCatalog.get("miniature_lt_test")  # made on first use
    source = MetadataCatalog.get("miniature_lt_test").json_file
    source = os.path.dirname(os.path.abspath(source))
    root, target = _miniature_copy(
        tmp_path_factory, "miniature_lt", source, ("miniature_lt_test.txt",)
    )
    per_class, lines = {}, []
    with open(os.path.join(source, "miniature_lt_test.txt")) as f:
        for line in f:
            if line.strip():
                label = int(line.split()[-1])
                per_class[label] = per_class.get(label, 0) + 1
                if per_class[label] <= 4:
                    lines.append(line)
    (target / "miniature_lt_test.txt").write_text("".join(lines))
    return {"DETECTRON2_DATASETS": str(root)}


@pytest.fixture(scope="session")
def small_seg_val(tmp_path_factory):
    """
    A DETECTRON2_DATASETS folder whose segmentation miniature has the whole training split and a
    val split of the fewest val images whose labels hold every class (5 of 56, all 20 classes):
    evaluations of train_net.py runs on it cost a tenth. Returns the folder's environment for
    train_net.py (with its own DISALIGN_CACHE for the pixel counts of these paths).
    """
    import numpy as np
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from PIL import Image

    DatasetCatalog.get("miniature_seg_val")  # made on first use
    meta = MetadataCatalog.get("miniature_seg_val")
    source = os.path.dirname(os.path.dirname(os.path.abspath(meta.sem_seg_root)))
    root, target = _miniature_copy(
        tmp_path_factory, "miniature_seg", source, ("images", "labels")
    )
    for kind in ("images", "labels"):
        (target / kind).mkdir()
        (target / kind / "train").symlink_to(os.path.join(source, kind, "train"))
        (target / kind / "val").mkdir()
        assert (target / kind / "train").exists()
    labels = os.path.join(source, "labels", "val")
    classes = {}
    for name in sorted(os.listdir(labels)):
        present = set(np.unique(np.asarray(Image.open(os.path.join(labels, name)))).tolist())
        classes[name] = present - {meta.ignore_label}
    assert len(set().union(*classes.values())) == len(meta.stuff_classes)
    for name in _greedy_cover(classes):
        for kind in ("images", "labels"):
            (target / kind / "val" / name).symlink_to(os.path.join(source, kind, "val", name))
    return {"DETECTRON2_DATASETS": str(root), "DISALIGN_CACHE": str(root / "cache")}


# The scripts' subprocesses are forked from a server that has imported these once: torch,
# torchvision and the parts of detectron2 that read no environment variable when imported (3-4 s
# of CPU of each run's 5-7 s here). The rest (detectron2.data, which registers the datasets under
# DETECTRON2_DATASETS, the project) each run imports itself, in its own environment.
_FORK_SERVER = multiprocessing.get_context("forkserver")
_FORK_SERVER.set_forkserver_preload(
    ["torch", "torchvision", "detectron2.layers", "detectron2.structures", "detectron2.config",
     "detectron2.checkpoint", "detectron2.solver", "pycocotools.mask"]
)  # fmt: skip


def run_script(path, *args, env=None):
    """
    ``python path *args`` (args turned into strings) in a new process, with ``env`` added to this
    process's environment, from REPO_ROOT: a subprocess.CompletedProcess with its exit status and
    its stdout and stderr as text. The process is forked from the fork server above and runs the
    script as ``__main__`` (see tests/forked_main.py).
    """
    args = [str(a) for a in args]
    with tempfile.TemporaryDirectory() as folder:
        out, err = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
        for name in (out, err):
            open(name, "w").close()
        environment = {**os.environ, **(env or {})}
        process = _FORK_SERVER.Process(
            target=run_as_main, args=(path, args, environment, REPO_ROOT, out, err)
        )
        process.start()
        process.join()
        with open(out) as stdout, open(err) as stderr:
            return subprocess.CompletedProcess(
                [sys.executable, path, *args], process.exitcode, stdout.read(), stderr.read()
            )


def train_net(*args, env=None):
    """Run train_net.py in a new process with ``args`` (see :func:`run_script`)."""
    return run_script(os.path.join(REPO_ROOT, "train_net.py"), *args, env=env)


def train_two_stages(baseline, disalign, output_dir, *opts, env=None):
    """
    Stage 1 with the config ``baseline`` into ``output_dir``/s1, then stage 2 with ``disalign``
    from its model_final.pth into ``output_dir``/s2; both with ``opts``. Asserts both succeed.
    """
    ok(train_net("--config-file", baseline, *opts, "OUTPUT_DIR", output_dir / "s1", env=env))
    weights = output_dir / "s1" / "model_final.pth"
    stage2 = ("--config-file", disalign, *opts, "MODEL.WEIGHTS", weights)
    ok(train_net(*stage2, "OUTPUT_DIR", output_dir / "s2", env=env))


@pytest.fixture(scope="session")
def miniature_stage1(tmp_path_factory, small_lvis_val):
    """
    A stage-1 miniature detector, trained once for every test that needs one: 4 iterations of
    FAST_DETECTION, then evaluated on the small val split. Returns (its OUTPUT_DIR, the run).
    """
    env, _ = small_lvis_val
    out = tmp_path_factory.mktemp("stage1")
    run = train_net(
        "--config-file", MINIATURE_BASELINE, *FAST_DETECTION, "SOLVER.MAX_ITER", 4,
        "OUTPUT_DIR", out, env=env,
    )  # fmt: skip
    return out, ok(run)


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
