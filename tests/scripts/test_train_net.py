"""
train_net.py itself, through both stages and evaluation, and its one-line errors on bad input.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import (
    FAST_DETECTION,
    MINIATURE_BASELINE,
    MINIATURE_DISALIGN,
    REPO_ROOT,
    ok,
    one_line_error,
    train_net,
)

LVIS_V05_BASELINE = os.path.join(REPO_ROOT, "configs/LVIS-v0.5/mask_rcnn_R_50_FPN_1x_baseline.yaml")
FAST = FAST_DETECTION  # a few iterations of small batches, few detections to evaluate
# what detectron2's LVISEvaluator reports per task
LVIS_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")
ALIGNMENT_KEYS = {
    "roi_heads.box_predictor.alignment.alpha",
    "roi_heads.box_predictor.alignment.beta",
    "roi_heads.box_predictor.alignment.confidence.weight",
    "roi_heads.box_predictor.alignment.confidence.bias",
}


@pytest.fixture(scope="module")
def stages(tmp_path_factory, miniature_stage1, small_lvis_val):
    # stage 1: the session's (FAST, 4 iterations, evaluated on the small val split)
    stage1, first = miniature_stage1
    stage2 = tmp_path_factory.mktemp("train_net") / "stage2"
    second = ok(
        train_net(
            "--config-file",
            MINIATURE_DISALIGN,
            *FAST,
            "SOLVER.MAX_ITER",
            4,
            "MODEL.WEIGHTS",
            stage1 / "model_final.pth",
            "OUTPUT_DIR",
            stage2,
            env=small_lvis_val[0],
        )
    )
    return stage1, stage2, first, second


def _model(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_both_stages_train_and_evaluate(stages, small_lvis_val):
    stage1, stage2, first, second = stages
    for directory, run in ((stage1, first), (stage2, second)):
        results = json.loads((directory / "eval_results.json").read_text())
        # the miniature's configs also report Fixed AP and Pooled AP (their own tests:
        # test_fixed_pooled_ap.py); the standard AP is lvis-api's of the saved predictions, capped
        # at TEST.DETECTIONS_PER_IMAGE though the model kept more of them per image
        extra = {f"{m}-fixed" for m in ("AP", "APr", "APc", "APf")}
        extra |= {f"AP-pooled-{pool}" for pool in ("all", "r", "c", "f")}
        for task in results:
            assert set(results[task]) == set(LVIS_METRICS) | extra
            results[task] = {k: v for k, v in results[task].items() if k in LVIS_METRICS}
        assert results == _lvis_api_metrics(directory, small_lvis_val[1])
        assert "eta:" in run.stdout  # detectron2's progress lines
    # stage 2 trains the classification loss only
    assert "loss_cls" in first.stdout and "loss_mask" in first.stdout
    stage2_metrics = [
        json.loads(line) for line in (stage2 / "metrics.json").read_text().splitlines()
    ]
    trained = [m for m in stage2_metrics if "total_loss" in m]
    assert trained and not any("loss_mask" in m or "loss_rpn_cls" in m for m in trained)


def _lvis_api_metrics(run_dir, json_file):
    """lvis-api's AP on the predictions a run saved, as detectron2 reports them (0-100)."""
    from lvis import LVIS, LVISEval, LVISResults

    gt = LVIS(str(json_file))  # the val split the runs were evaluated on
    saved = run_dir / "inference" / "miniature_lvis_val" / "lvis_instances_results.json"
    predictions = json.loads(saved.read_text())
    metrics = {}
    for task in ("bbox", "segm"):
        # as detectron2: mask areas decide the size ranges of segm
        results = [
            {k: v for k, v in p.items() if task == "bbox" or k != "bbox"} for p in predictions
        ]
        evaluation = LVISEval(gt, LVISResults(gt, results, max_dets=5), task)
        evaluation.run()
        metrics[task] = {
            k: pytest.approx(100.0 * evaluation.results[k], abs=1e-9) for k in LVIS_METRICS
        }
    return metrics


def test_the_same_run_again_gives_the_same_numbers_evaluated_in_the_middle_too(
    stages, small_lvis_val, tmp_path
):
    # the stage-2 run again, this time also evaluated after iteration 2: evaluation in the middle
    # of training does not disturb the random stream (reseeded before every iteration)
    stage1, stage2, _, _ = stages
    again = ok(
        train_net(
            "--config-file", MINIATURE_DISALIGN, *FAST, "SOLVER.MAX_ITER", 4,
            "TEST.EVAL_PERIOD", 2,
            "MODEL.WEIGHTS", stage1 / "model_final.pth", "OUTPUT_DIR", tmp_path,
            env=small_lvis_val[0],
        )
    )  # fmt: skip
    assert again.stdout.count("Evaluation results for bbox:") + again.stderr.count(
        "Evaluation results for bbox:"
    ) == 2  # the standard AP's tables (Fixed AP's name their limits)
    first, again = _model(stage2 / "model_final.pth"), _model(tmp_path / "model_final.pth")
    assert all(torch.equal(first[k], again[k]) for k in ALIGNMENT_KEYS)
    assert json.loads((tmp_path / "eval_results.json").read_text()) == json.loads(
        (stage2 / "eval_results.json").read_text()
    )


def test_stage2_checkpoint_differs_from_stage1_only_in_alignment(stages):
    stage1, stage2, _, _ = stages
    before, after = _model(stage1 / "model_final.pth"), _model(stage2 / "model_final.pth")
    assert set(after) - set(before) == ALIGNMENT_KEYS
    assert set(before) <= set(after)
    for key, tensor in before.items():
        assert torch.equal(after[key], tensor), key
    assert not torch.equal(after["roi_heads.box_predictor.alignment.beta"], torch.zeros(36))


def test_eval_only_reproduces_the_training_evaluation(stages, small_lvis_val, tmp_path):
    _, stage2, _, _ = stages
    ok(
        train_net(
            "--config-file",
            MINIATURE_DISALIGN,
            "--eval-only",
            *FAST,
            "MODEL.WEIGHTS",
            stage2 / "model_final.pth",
            "OUTPUT_DIR",
            tmp_path,
            env=small_lvis_val[0],
        )
    )
    assert json.loads((tmp_path / "eval_results.json").read_text()) == json.loads(
        (stage2 / "eval_results.json").read_text()
    )


def test_missing_dataset_directory(tmp_path):
    result = train_net(
        "--config-file", MINIATURE_BASELINE, env={"DETECTRON2_DATASETS": str(tmp_path / "missing")}
    )
    one_line_error(result, f"DETECTRON2_DATASETS={tmp_path / 'missing'} is not a directory")


def test_missing_lvis_files(tmp_path):
    result = train_net(
        "--config-file",
        LVIS_V05_BASELINE,
        "MODEL.DEVICE",
        "cpu",  # the shipped LVIS configs ask for cuda, which has its own one-line error here
        "OUTPUT_DIR",
        tmp_path / "out",
        env={"DETECTRON2_DATASETS": str(tmp_path)},
    )
    one_line_error(result, f"dataset 'lvis_v0.5_val': annotation file '{tmp_path}/lvis/")
    assert not (tmp_path / "out").exists()  # nothing written


def test_missing_stage2_weights(tmp_path):
    result = train_net(
        "--config-file",
        MINIATURE_DISALIGN,
        "MODEL.WEIGHTS",
        tmp_path / "nothing.pth",
        "OUTPUT_DIR",
        tmp_path / "out",
    )
    one_line_error(result, f"checkpoint file '{tmp_path / 'nothing.pth'}' does not exist")
    assert not (tmp_path / "out").exists()


def test_class_count_mismatch_leaves_outputs_untouched(stages):
    stage1, stage2, _, _ = stages
    before = {p.name: p.read_bytes() for p in stage2.iterdir() if p.is_file()}
    result = train_net(
        "--config-file",
        MINIATURE_DISALIGN,
        "MODEL.ROI_HEADS.NUM_CLASSES",
        20,
        "MODEL.WEIGHTS",
        stage1 / "model_final.pth",
        "OUTPUT_DIR",
        stage2,
    )
    one_line_error(
        result,
        "does not fit the model's classes: its 'roi_heads.box_predictor.cls_score.weight' has "
        "shape (37, 256), the model's 'roi_heads.box_predictor.cls_score.weight' (21, 256)",
    )
    assert {p.name: p.read_bytes() for p in stage2.iterdir() if p.is_file()} == before


def test_unknown_config_key_on_the_command_line():
    result = train_net("--config-file", MINIATURE_BASELINE, "MODEL.DISALIGN.RH0", 0.8)
    one_line_error(result, "Non-existent key: MODEL.DISALIGN.RH0")


def test_unknown_config_key_in_a_file(tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text(f'_BASE_: "{MINIATURE_DISALIGN}"\nMODEL:\n  DISALIGN:\n    RH0: 0.8\n')
    result = train_net("--config-file", config)
    one_line_error(result, f"{config}: Non-existent config key: MODEL.DISALIGN.RH0")


def test_missing_config_file(tmp_path):
    result = train_net("--config-file", tmp_path / "nothing.yaml")
    one_line_error(result, f"config file '{tmp_path / 'nothing.yaml'}' does not exist")


def test_real_lvis_layout_is_read_through_detectron2_builtin_names(tmp_path):
    (tmp_path / "lvis").mkdir()
    (tmp_path / "coco" / "val2017").mkdir(parents=True)
    (tmp_path / "coco" / "val2017" / "000000000001.jpg").write_bytes(b"")
    image = {
        "id": 1,
        "width": 64,
        "height": 48,
        "neg_category_ids": [],
        "not_exhaustive_category_ids": [],
        "coco_url": "http://images.cocodataset.org/val2017/000000000001.jpg",
    }
    annotation = {
        "id": 1,
        "image_id": 1,
        "category_id": 7,
        "bbox": [1, 2, 10, 20],
        "area": 200,
        "segmentation": [[1, 2, 11, 2, 11, 22, 1, 22]],
    }
    categories = [{"id": i, "name": f"c{i}", "frequency": "r"} for i in range(1, 1231)]
    gt = {"images": [image], "annotations": [annotation], "categories": categories}
    (tmp_path / "lvis" / "lvis_v0.5_val.json").write_text(json.dumps(gt))
    script = (
        "import disalign\n"
        "from detectron2.data import DatasetCatalog\n"
        "(record,) = DatasetCatalog.get('lvis_v0.5_val')\n"
        "print(record['file_name'], [a['category_id'] for a in record['annotations']])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "DETECTRON2_DATASETS": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [f"{tmp_path}/coco/val2017/000000000001.jpg", "[6]"]


@pytest.mark.parametrize(
    "opts, expected",
    [
        (["MODEL.DISALIGN.CLS_HEAD", "cos"], "MODEL.DISALIGN.CLS_HEAD must be one of"),
        (["MODEL.DISALIGN.GRW.COUNT_BY", "pixel"], "MODEL.DISALIGN.GRW.COUNT_BY must be one of"),
        (
            ["MODEL.DISALIGN.GRW.COUNT_BY", "pixels"],
            "COUNT_BY 'pixels' is for semantic segmentation",
        ),
        (["MODEL.DISALIGN.CALIBRATION", False], "ALIGNMENT_STAGE has nothing to train"),
    ],
)
def test_bad_disalign_values(opts, expected):
    one_line_error(train_net("--config-file", MINIATURE_DISALIGN, *opts), expected)


def _logged_table(text, task):
    """The metrics of the AP table logged for ``task``: {metric: value}."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if f"Evaluation results for {task}:" in line)
    header, values = lines[start + 1], lines[start + 3]  # | AP | AP50 | ..., |:--|, values
    names = [c.strip() for c in header.strip("|").split("|")]
    return dict(zip(names, (float(c) for c in values.strip("|").split("|"))))


def test_the_project_logs_reach_log_txt_and_the_console(stages):
    _, stage2, _, second = stages
    log = (stage2 / "log.txt").read_text()
    # GRW's class-count summary: images per class of the miniature's training set
    counts = "GRW class counts by images over ('miniature_lvis_train',)"
    assert f"disalign.data.class_counts INFO: {counts}" in log
    assert "GRW class counts by images" in second.stdout
    # the fast LVIS evaluator's tables, as detectron2's LVISEvaluator prints them, with the
    # numbers of eval_results.json
    results = json.loads((stage2 / "eval_results.json").read_text())
    assert "disalign.evaluation.lvis INFO: Evaluation results for bbox:" in log
    for task in ("bbox", "segm"):
        table = _logged_table(log, task)
        assert list(table) == ["AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"]
        expected = {metric: results[task][metric] for metric in table}  # NaN: no such objects
        assert table == pytest.approx(expected, abs=5e-4, nan_ok=True), task
        assert _logged_table(second.stdout, task) == pytest.approx(table, nan_ok=True)


def test_negative_seed_is_warned_in_log_txt(stages, tmp_path):
    stage1, _, _, _ = stages
    run = ok(
        train_net(
            "--config-file",
            MINIATURE_DISALIGN,
            *FAST,
            "SOLVER.MAX_ITER",
            1,
            "SEED",
            -1,
            "DATASETS.TEST",
            "()",
            "MODEL.WEIGHTS",
            stage1 / "model_final.pth",
            "OUTPUT_DIR",
            tmp_path,
        )
    )
    warning = "SEED is negative: the training stream is random"
    assert "disalign.data.resumable WARNING: " + warning in (tmp_path / "log.txt").read_text()
    assert warning in run.stdout


def test_post_hoc_detector_evaluates_the_stage1_checkpoint(
    miniature_stage1, small_lvis_val, tmp_path
):
    # logit adjustment with tau 0 is stage 1 itself: the same numbers through the post-hoc path
    stage1, _ = miniature_stage1
    config = os.path.join(
        REPO_ROOT, "configs/Miniature-LVIS/mask_rcnn_R_18_FPN_logit_adjustment.yaml"
    )
    result = ok(
        train_net(
            "--config-file", config, "--eval-only", *FAST, "MODEL.DECOUPLED.TAU", "0.0",
            "MODEL.WEIGHTS", stage1 / "model_final.pth", "OUTPUT_DIR", tmp_path,
            env=small_lvis_val[0],
        )
    )  # fmt: skip
    assert "(post_hoc): PostHocClassifier(method=logit_adjustment, tau=0.0)" in result.stdout
    assert json.loads((tmp_path / "eval_results.json").read_text()) == json.loads(
        (stage1 / "eval_results.json").read_text()
    )
