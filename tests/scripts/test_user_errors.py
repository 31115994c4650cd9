"""
What a new user meets on the command line: a mistyped override is blamed on the command line, not
on the config file, and a value of the wrong type is one line; eval_results.json is strict JSON
(null where a metric has nothing to measure); GRW's warning about classes without training data
only where GRW weighs the loss; no torch.jit deprecation noise from the installed versions; and the
documented dry run (docs/install.md) of an LVIS config on the miniature, which trains where the
bare config diverges.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from argparse import Namespace

import pytest

from conftest import (
    MINIATURE_BASELINE,
    MINIATURE_DISALIGN,
    REPO_ROOT,
    _miniature_copy,
    load_config,
    ok,
    one_line_error,
    train_net,
)

MINIATURE_LT_BASELINE = os.path.join(REPO_ROOT, "configs/Miniature-LT/resnet18_baseline.yaml")
MINIATURE_LT_DISALIGN = os.path.join(REPO_ROOT, "configs/Miniature-LT/resnet18_disalign.yaml")
GRW_WARNING = "they get the weight of a class seen once"
JIT_WARNING = "`torch.jit.script` is deprecated"
MANY = 100  # a "many" class has more than 100 training images (the long-tail convention)


def _last_line(result):
    return result.stderr.strip().splitlines()[-1]


def _config_value(config, key):
    node = load_config(config)
    for name in key.split("."):
        node = node[name]
    return node


# --- overrides on the command line ---------------------------------------------------------------


def test_a_mistyped_override_is_blamed_on_the_command_line_not_the_config_file():
    result = train_net("--config-file", MINIATURE_DISALIGN, "MODEL.DISALIGN.GRW.RH0", 0.9)
    one_line_error(result, "")
    assert _last_line(result) == (
        "error: command-line override: Non-existent key: MODEL.DISALIGN.GRW.RH0"
    )


@pytest.mark.parametrize(
    "key, value, wanted, given",
    [
        ("MODEL.DISALIGN.GRW.RHO", "abc", "a float", "a string"),
        ("SOLVER.MAX_ITER", "1e3", "an int", "a float"),
    ],
)
def test_an_override_of_the_wrong_type_is_one_line(key, value, wanted, given):
    current = _config_value(MINIATURE_DISALIGN, key)  # 0.8 and 1500 in the config files
    result = train_net("--config-file", MINIATURE_DISALIGN, key, value)
    one_line_error(result, "")
    assert _last_line(result) == (
        f"error: command-line override {key} {value}: {key} is {wanted} (here {current!r}), "
        f"'{value}' reads as {given}"
    )


def _build_config(config_file, *opts):
    from disalign.engine import build_config

    args = Namespace(config_file=str(config_file), opts=list(opts), eval_only=False, num_gpus=1)
    return build_config(args)


def test_an_override_without_its_value_and_a_type_error_in_a_file_are_input_errors(tmp_path):
    from disalign import InputError

    message = "command-line overrides are KEY VALUE pairs; 'MODEL.WEIGHTS' has no value"
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        _build_config(MINIATURE_BASELINE, "SOLVER.MAX_ITER", "10", "MODEL.WEIGHTS")
    # in a file, yacs' own message, blamed on the file
    config = tmp_path / "typo.yaml"
    config.write_text(f'_BASE_: "{MINIATURE_BASELINE}"\nSOLVER:\n  MAX_ITER: 1e3\n')
    with pytest.raises(InputError, match=f"^{re.escape(str(config))}: Type mismatch"):
        _build_config(config)
    # a right one still merges
    assert _build_config(MINIATURE_BASELINE, "SOLVER.MAX_ITER", "7").SOLVER.MAX_ITER == 7


# --- a classification run: strict eval_results.json, GRW's warning only with GRW ----------------


@pytest.fixture(scope="module")
def lt_runs(tmp_path_factory):
    """
    A classification miniature whose training split lacks every image of one class, and whose
    test split holds only classes of 100 training images or fewer (no "many" class: that group's
    accuracy is NaN). Stage 1 (no GRW) trains 1 iteration and is evaluated; stage 2 (GRW) trains
    1 iteration from it. Returns (stage-1 dir, stage-1 run, stage-2 dir, stage-2 run, the class
    left out, the test lines).
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    DatasetCatalog.get("miniature_lt_test")  # made on first use
    source = os.path.dirname(os.path.abspath(MetadataCatalog.get("miniature_lt_test").json_file))
    replaced = ("miniature_lt_train.txt", "miniature_lt_test.txt")  # written below
    root, target = _miniature_copy(tmp_path_factory, "miniature_lt", source, replaced)
    with open(os.path.join(source, "miniature_lt_train.txt")) as f:
        train = [line for line in f if line.strip()]
    counts = {}
    for line in train:
        label = int(line.split()[-1])
        counts[label] = counts.get(label, 0) + 1
    left_out = min(counts, key=lambda c: (counts[c], c))  # the rarest class
    (target / "miniature_lt_train.txt").write_text(
        "".join(line for line in train if int(line.split()[-1]) != left_out)
    )
    per_class, test = {}, []
    with open(os.path.join(source, "miniature_lt_test.txt")) as f:
        for line in f:
            label = int(line.split()[-1]) if line.strip() else None
            if label is None or counts[label] > MANY:
                continue
            per_class[label] = per_class.get(label, 0) + 1
            if per_class[label] <= 2:
                test.append(line)
    (target / "miniature_lt_test.txt").write_text("".join(test))
    env = {"DETECTRON2_DATASETS": str(root)}
    fast = ("SOLVER.MAX_ITER", 1, "SOLVER.IMS_PER_BATCH", 8, "DATALOADER.NUM_WORKERS", 0)
    stage1 = tmp_path_factory.mktemp("lt_stage1")
    first = ok(
        train_net("--config-file", MINIATURE_LT_BASELINE, *fast, "OUTPUT_DIR", stage1, env=env)
    )
    stage2 = tmp_path_factory.mktemp("lt_stage2")
    second = ok(
        train_net(
            *("--config-file", MINIATURE_LT_DISALIGN, *fast, "DATASETS.TEST", "()"),
            *("MODEL.WEIGHTS", stage1 / "model_final.pth", "OUTPUT_DIR", stage2),
            env=env,
        )
    )
    return stage1, first, stage2, second, left_out, test


def _strict_json(text):
    """json.loads that refuses NaN and Infinity, as strict parsers (JSON.parse, jq ...) do."""

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_eval_results_json_is_strict_json_with_null_for_an_empty_group(lt_runs):
    stage1, first, _, _, _, test = lt_runs
    results = _strict_json((stage1 / "eval_results.json").read_text())["classification"]
    assert results["many"] is None  # no test image of a "many" class
    saved = stage1 / "inference" / "miniature_lt_test" / "classification_predictions.json"
    predictions = json.loads(saved.read_text())
    assert len(predictions) == len(test)
    hits = [p["label"] == p["prediction"] for p in predictions]
    assert results["top1"] == pytest.approx(100.0 * sum(hits) / len(hits))
    assert isinstance(results["medium"], float) and isinstance(results["few"], float)
    # the results in memory keep their NaN: detectron2's copy-paste line prints it
    assert re.search(r"copypaste: [\d.]+,nan,[\d.]+,[\d.]+", first.stdout), first.stdout[-2000:]


def test_grw_warns_about_a_class_without_training_data_only_where_grw_is_used(lt_runs):
    from detectron2.data import MetadataCatalog

    stage1, first, stage2, second, left_out, _ = lt_runs
    # stage 1 counts the training images only for the evaluator's groups: no GRW, no warning
    assert GRW_WARNING not in first.stdout + first.stderr
    assert GRW_WARNING not in (stage1 / "log.txt").read_text()
    # stage 2 weighs its loss with GRW: the class without images is named, once
    warnings = [
        line for line in (stage2 / "log.txt").read_text().splitlines() if GRW_WARNING in line
    ]
    assert len(warnings) == 1, warnings
    name = MetadataCatalog.get("miniature_lt_train").thing_classes[left_out]
    assert warnings[0].endswith(
        f"GRW: 1 of 36 classes have no training images in ('miniature_lt_train',) ({name}); "
        f"{GRW_WARNING}."
    )


# --- torch.jit deprecation warnings ---------------------------------------------------------------


def test_the_entry_points_print_no_torch_jit_deprecation_warnings(tmp_path):
    # imported as a module, nothing is silenced: the installed versions do warn
    imported = subprocess.run(
        [sys.executable, "-c", "import train_net"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert imported.returncode == 0, imported.stderr[-2000:]
    if JIT_WARNING not in imported.stderr:
        pytest.skip("the installed torch does not deprecate torch.jit.script")
    missing = tmp_path / "missing.yaml"
    for script in ("train_net.py", "tools/plot_calibration.py"):
        result = subprocess.run(
            [sys.executable, script, "--config-file", str(missing)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            f"error: config file '{missing}' does not exist"
        ], script


# --- the documented dry run of an LVIS config ---------------------------------------------------


def _readme_dry_run():
    """The arguments of the documented dry-run command (after ``python train_net.py``)."""
    with open(os.path.join(REPO_ROOT, "docs", "install.md")) as f:
        text = f.read()
    start = text.index("```bash\n", text.index("## A dry run without LVIS or ImageNet weights"))
    block = text[start + len("```bash\n") : text.index("```", start + len("```bash\n"))]
    words = shlex.split(block.replace("\\\n", " "))
    assert words[:2] == ["python", "train_net.py"]
    return words[2:]


def _without(args, *keys):
    """``args`` (a --config-file and KEY VALUE pairs) without the pairs of ``keys``."""
    pairs = list(zip(args[2::2], args[3::2]))
    assert {k for k, _ in pairs} >= set(keys)
    return args[:2] + [w for k, v in pairs if k not in keys for w in (k, v)]


# the documented overrides that make an LVIS config train from random weights
DRY_RUN_FIXES = ("MODEL.RESNETS.NORM", "MODEL.BACKBONE.FREEZE_AT", "SOLVER.BASE_LR")
# what the tests add, for time: fewer proposals and ROI samples, no data worker
FASTER = [
    *("MODEL.RPN.POST_NMS_TOPK_TRAIN", 100, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32),
    *("DATALOADER.NUM_WORKERS", 0),
]


def test_an_lvis_config_without_imagenet_weights_diverges_in_one_line(tmp_path):
    args = _without(_readme_dry_run(), *DRY_RUN_FIXES)
    assert args[1] == "configs/LVIS-v0.5/mask_rcnn_R_50_FPN_1x_baseline.yaml"
    result = train_net(
        *args, *FASTER, "SOLVER.MAX_ITER", 8, "DATASETS.TEST", "()", "OUTPUT_DIR", tmp_path
    )
    one_line_error(result, "Training has diverged. (iteration=")
    assert not (tmp_path / "model_final.pth").exists()


def test_the_readme_dry_run_trains_and_evaluates_an_lvis_config(tmp_path, small_lvis_val):
    result = ok(
        train_net(
            *_readme_dry_run(), *FASTER, "SOLVER.MAX_ITER", 8, "OUTPUT_DIR", tmp_path,
            env=small_lvis_val[0],
        )
    )  # fmt: skip
    losses = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    losses = [m["total_loss"] for m in losses if "total_loss" in m]
    assert losses and all(0 < loss < 100 for loss in losses), losses
    assert (tmp_path / "model_final.pth").exists()
    # evaluated: strict JSON (8 iterations from random weights may detect nothing: all null)
    results = _strict_json((tmp_path / "eval_results.json").read_text())
    assert "bbox" in results and set(results) <= {"bbox", "segm"}
    assert all(v is None or isinstance(v, float) for r in results.values() for v in r.values())
    assert "copypaste: Task: bbox" in result.stdout
