# -*- coding: utf-8 -*-
"""
Fixed AP, Pooled AP and the standalone package ``lvis_fast`` against lvis-api itself.

The references: Fixed AP is lvis-api's ``LVISEval`` on the results cut to each category's K
top-scored (a stable sort, ties in file order) with ``LVISResults(max_dets=-1)`` and
``params.max_dets = -1``; Pooled AP is accumulated here, from lvis-api's own per-(image, category)
matching (``LVISEval.eval_imgs``), by the published definition (Dave et al. 2021): the entries of a
pool's categories concatenated image after image, sorted together by score (mergesort), and
precision / recall computed as for one category, area range "all".
"""

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.evaluation.lvis_evaluation import instances_to_coco_json
from lvis import LVIS, LVISEval, LVISResults

import disalign
import lvis_fast
from disalign.evaluation import build_evaluator
from disalign.evaluation.fast_lvis import evaluate_lvis
from disalign.evaluation.lvis import LVIS_METRICS

from test_fast_lvis import (  # noqa: F401 (a fixture)
    _model_outputs,
    federated_case,
    random_case,
    random_lvis_dataset,
    write_json,
)

TOLERANCE = 1e-6
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE_ROOT = os.path.join(REPO_ROOT, "projects", "DisAlign")


def top_per_category(results, k):
    """Each category's k top-scored results (ties: the earlier first), in file order."""
    if k is None:
        return list(results)
    kept = set()
    for category in {r["category_id"] for r in results}:
        indices = [i for i, r in enumerate(results) if r["category_id"] == category]
        indices = sorted(indices, key=lambda i: -results[i]["score"])[:k]  # stable
        kept.update(indices)
    return [r for i, r in enumerate(results) if i in kept]


def lvis_api_eval(gt_path, results, iou_type, max_dets, k=None):
    lvis_gt = LVIS(gt_path)
    kept = top_per_category(copy.deepcopy(results), k)
    lvis_eval = LVISEval(lvis_gt, LVISResults(lvis_gt, kept, max_dets=max_dets), iou_type)
    lvis_eval.params.max_dets = max_dets
    return lvis_eval


def pooled_reference(lvis_eval):
    """Pooled AP from lvis-api's per-(image, category) matching, by the published definition."""
    lvis_eval.evaluate()
    params = lvis_eval.params
    num_areas, num_images = len(params.area_rng), len(params.img_ids)
    frequency = {c["id"]: c["frequency"] for c in lvis_eval.lvis_gt.dataset["categories"]}
    metrics = {}
    for pool in ("all", "r", "c", "f"):
        members = [k for k, c in enumerate(params.cat_ids) if pool == "all" or frequency[c] == pool]
        entries = [
            lvis_eval.eval_imgs[k * num_areas * num_images + i]  # area range 0: "all"
            for i in range(num_images)
            for k in members
        ]
        entries = [e for e in entries if e is not None]
        num_gt = sum(int(np.count_nonzero(e["gt_ignore"] == 0)) for e in entries)
        if num_gt == 0:
            metrics[f"AP-pooled-{pool}"] = -1.0
            continue
        scores = np.concatenate([e["dt_scores"] for e in entries])
        order = np.argsort(-scores, kind="mergesort")
        matched = np.concatenate([e["dt_matches"] for e in entries], axis=1)[:, order] != 0
        ignored = np.concatenate([e["dt_ignore"] for e in entries], axis=1)[:, order] != 0
        values = []
        for t in range(len(params.iou_thrs)):
            tp = np.cumsum(matched[t] & ~ignored[t]).astype(float)
            fp = np.cumsum(~matched[t] & ~ignored[t]).astype(float)
            recall = tp / num_gt
            precision = (tp / (fp + tp + np.spacing(1))).tolist()
            for i in range(len(precision) - 1, 0, -1):  # the maximum at any higher recall
                precision[i - 1] = max(precision[i - 1], precision[i])
            at = np.searchsorted(recall, params.rec_thrs, side="left")
            values += [precision[i] if i < len(precision) else 0.0 for i in at]
        metrics[f"AP-pooled-{pool}"] = float(np.mean(values))
    return metrics


def assert_close(actual, expected):
    assert set(expected) <= set(actual)
    for name, value in expected.items():
        assert actual[name] == pytest.approx(value, abs=TOLERANCE), name


def with_ties_at_the_cut(results, k, rng):
    """Gives some categories' k-th and (k+1)-th results the same score."""
    results = copy.deepcopy(results)
    by_category = {}
    for r in results:
        by_category.setdefault(r["category_id"], []).append(r)
    for rows in by_category.values():
        if len(rows) > k and rng.random() < 0.7:
            rows = sorted(rows, key=lambda r: -r["score"])
            rows[k]["score"] = rows[k - 1]["score"]
    return results


@pytest.mark.parametrize("seed", [3, 8, 21, 40])
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_fixed_ap_matches_lvis_api_on_the_top_k_of_each_category(seed, iou_type, tmp_path):
    gt, bbox_results, segm_results, _ = random_case(seed)
    results = bbox_results if iou_type == "bbox" else segm_results
    rng = np.random.default_rng(seed)
    gt_path = write_json(tmp_path / "gt.json", gt)
    largest = max(np.unique([r["category_id"] for r in results], return_counts=True)[1])
    for k in (1, 3, int(largest) - 1, int(largest) + 5):  # the last: fewer than K everywhere
        k = max(k, 1)
        tied = with_ties_at_the_cut(results, k, rng)
        expected = lvis_api_eval(gt_path, tied, iou_type, -1, k)
        expected.run()
        assert "AR@-1" in expected.get_results()
        actual = evaluate_lvis(gt_path, tied, iou_type, max_dets=-1, dets_per_category=k)
        assert list(actual) == list(expected.get_results())
        assert_close(actual, expected.get_results())


@pytest.mark.parametrize("seed", [5, 13])
def test_per_category_then_per_image_limit_matches_lvis_api(seed, tmp_path):
    gt, bbox_results, _, _ = random_case(seed)
    gt_path = write_json(tmp_path / "gt.json", gt)
    for k, max_dets in ((2, 3), (4, 1), (6, 300)):
        expected = lvis_api_eval(gt_path, bbox_results, "bbox", max_dets, k)
        expected.run()
        actual = evaluate_lvis(gt_path, bbox_results, "bbox", max_dets, dets_per_category=k)
        assert_close(actual, expected.get_results())


@pytest.mark.parametrize("seed", [2, 8, 13, 21, 34])
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_pooled_ap_matches_the_definition_on_lvis_api_matching(seed, iou_type, tmp_path):
    gt, bbox_results, segm_results, max_dets = random_case(seed)
    results = bbox_results if iou_type == "bbox" else segm_results
    gt_path = write_json(tmp_path / "gt.json", gt)
    for k, cap in ((None, max_dets), (4, -1)):
        expected = pooled_reference(lvis_api_eval(gt_path, results, iou_type, cap, k))
        actual = evaluate_lvis(gt_path, results, iou_type, cap, dets_per_category=k, pooled=True)
        assert_close(actual, expected)
        assert list(actual)[-4:] == lvis_fast.pooled_metric_names()


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_pooled_ap_of_the_federated_case(iou_type, tmp_path):
    """Negative and not-exhaustive categories, and a category without ground truth anywhere."""
    gt, bbox_results, segm_results = federated_case()
    results = bbox_results if iou_type == "bbox" else segm_results
    gt_path = write_json(tmp_path / "gt.json", gt)
    expected = pooled_reference(lvis_api_eval(gt_path, results, iou_type, -1))
    actual = evaluate_lvis(gt_path, results, iou_type, max_dets=-1, pooled=True)
    assert_close(actual, expected)
    assert any(value > 0 for value in expected.values())


def test_pooled_ap_by_hand(tmp_path):
    """
    Two categories, one image each, one ground truth each. Category 1's detection scores 0.9 and
    matches; category 2's detection scores 0.8 and misses, and a second one (0.7) matches. Per
    category: AP 1 and 0.5 (precision 1/2 from recall 0 to 1). Pooled ("all", scores 0.9, 0.8,
    0.7: TP, FP, TP; 2 ground truth): precision 1 up to recall 1/2, then 2/3 up to recall 1:
    (51 * 1 + 50 * 2/3) / 101. "r" holds category 1 alone: 1; "c" category 2: 0.5; "f" none: -1.
    """
    gt = {
        "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
        "categories": [{"id": 1, "frequency": "r"}, {"id": 2, "frequency": "c"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100},
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [50, 50, 20, 20], "area": 400},
            # outside the area range "all" (> 1e10): ignored, in the pools too
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [80, 80, 10, 10], "area": 2e10},
        ],
    }
    results = [
        {"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [0, 0, 10, 10]},
        {"image_id": 2, "category_id": 2, "score": 0.8, "bbox": [0, 0, 10, 10]},
        {"image_id": 2, "category_id": 2, "score": 0.7, "bbox": [50, 50, 20, 20]},
    ]
    metrics = evaluate_lvis(gt, results, "bbox", max_dets=-1, pooled=True)
    assert metrics["AP-pooled-all"] == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-12)
    assert metrics["AP-pooled-r"] == pytest.approx(1.0)
    assert metrics["AP-pooled-c"] == pytest.approx(0.5, abs=1e-12)
    assert metrics["AP-pooled-f"] == -1.0
    assert metrics["AP"] == pytest.approx(0.75, abs=1e-12)
    # with one detection per category, category 2 keeps its 0.8 miss only
    fixed = evaluate_lvis(gt, results, "bbox", max_dets=-1, dets_per_category=1)
    assert fixed["APc"] == 0.0 and fixed["APr"] == pytest.approx(1.0)


def run_module(module, *arguments):
    env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT)
    command = [sys.executable, "-m", module, *arguments]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_command_line_fixed_and_pooled(tmp_path):
    gt, bbox_results, segm_results, _ = random_case(8)
    gt_path = write_json(tmp_path / "gt.json", gt)
    dt_path = write_json(tmp_path / "results.json", segm_results)
    options = ["--gt", gt_path, "--dt", dt_path, "--iou-type", "segm", "--max-dets", "-1"]
    run = run_module("lvis_fast", *options, "--dets-per-category", "3", "--pooled")
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    expected = lvis_api_eval(gt_path, segm_results, "segm", -1, 3)
    pooled = pooled_reference(expected)
    expected.run()
    assert list(printed) == list(expected.get_results()) + list(pooled)
    assert_close(printed, {**expected.get_results(), **pooled})
    # the project's module path takes the same options
    run = run_module("disalign.evaluation.fast_lvis", *options, "--dets-per-category", "3")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {k: printed[k] for k in expected.get_results()}


@pytest.mark.parametrize(
    "options, message",
    [
        (["--dets-per-category", "0"], "dets_per_category must be a positive integer"),
        (["--dets-per-category", "-3"], "dets_per_category must be a positive integer"),
        (["--max-dets", "0"], "max_dets must be a positive integer or -1 (no limit), not 0"),
        (["--max-dets", "-2"], "max_dets must be a positive integer or -1 (no limit), not -2"),
        (["--pooled", "--no-frequency"], "category 1 has frequency None, not one of r, c, f"),
    ],
)
def test_command_line_bad_input_is_one_line(options, message, tmp_path):
    gt, bbox_results, _ = copy.deepcopy(federated_case())
    if "--no-frequency" in options:
        options = [o for o in options if o != "--no-frequency"]
        for category in gt["categories"]:
            del category["frequency"]
    gt_path = write_json(tmp_path / "gt.json", gt)
    dt_path = write_json(tmp_path / "results.json", bbox_results)
    run = run_module("lvis_fast", "--gt", gt_path, "--dt", dt_path, *options)
    assert run.returncode == 1
    assert run.stdout == ""
    assert run.stderr.startswith(f"error: {message}")
    assert run.stderr.count("\n") == 1


def test_mask_areas_option_follows_detectron2_and_says_which_areas(tmp_path):
    """Mask results with boxes: lvis-api's areas are the boxes', detectron2's the masks'."""
    gt, bbox_results, segm_results, _ = random_case(13)
    for box_result, mask_result in zip(bbox_results, segm_results):
        mask_result["bbox"] = box_result["bbox"]
    gt_path = write_json(tmp_path / "gt.json", gt)
    dt_path = write_json(tmp_path / "results.json", segm_results)
    options = ["--gt", gt_path, "--dt", dt_path, "--iou-type", "segm"]
    boxes, masks = run_module("lvis_fast", *options), run_module(
        "lvis_fast", *options, "--mask-areas"
    )
    assert boxes.stderr == "area ranges from box areas (the results' 'bbox')\n"
    assert masks.stderr == "area ranges from mask areas\n"
    by_boxes = lvis_api_eval(gt_path, segm_results, "segm", 300)
    by_boxes.run()
    without_boxes = [{k: v for k, v in r.items() if k != "bbox"} for r in segm_results]
    by_masks = lvis_api_eval(gt_path, without_boxes, "segm", 300)
    by_masks.run()
    assert_close(json.loads(boxes.stdout), by_boxes.get_results())
    assert_close(json.loads(masks.stdout), by_masks.get_results())
    assert by_boxes.get_results()["APs"] != by_masks.get_results()["APs"]


def test_lvis_fast_imports_no_torch_detectron2_or_cv2():
    code = (
        "import sys, lvis_fast, lvis_fast.__main__; "
        "print(sorted(m for m in ('torch', 'detectron2', 'cv2', 'disalign') if m in sys.modules))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=PACKAGE_ROOT),
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


@pytest.mark.parametrize("seed", [8, 21])
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("given", ["path", "list", "LVISResults"])
def test_lvis_eval_is_a_drop_in_for_lvis_api(seed, iou_type, given, tmp_path, capsys):
    gt, bbox_results, segm_results, _ = random_case(seed)
    results = bbox_results if iou_type == "bbox" else segm_results
    gt_path = write_json(tmp_path / "gt.json", gt)
    dt_path = write_json(tmp_path / "results.json", results)
    lvis_gt = LVIS(gt_path)

    def results_as_given():
        if given == "path":
            return dt_path
        if given == "list":
            return copy.deepcopy(results)
        return LVISResults(lvis_gt, copy.deepcopy(results))

    expected = LVISEval(lvis_gt, results_as_given(), iou_type)
    expected.run()
    expected.print_results()
    expected_printed = capsys.readouterr().out
    ours = lvis_fast.LVISEval(lvis_gt if given != "path" else gt_path, results_as_given(), iou_type)
    ours.run()
    ours.print_results()
    assert capsys.readouterr().out == expected_printed
    assert list(ours.get_results()) == list(expected.get_results())
    assert_close(ours.get_results(), expected.get_results())
    for key in ("precision", "recall"):
        assert ours.eval[key].shape == expected.eval[key].shape
        np.testing.assert_allclose(ours.eval[key], expected.eval[key], atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("backend", ["fast", "lvis-api"])
def test_evaluator_reports_standard_fixed_and_pooled_ap_from_two_processes(
    random_lvis_dataset, backend, tmp_path  # noqa: F811 (the fixture)
):
    """
    The model keeps more detections per image than the standard budget; build_evaluator's
    evaluator caps the standard AP at TEST.DETECTIONS_PER_IMAGE, keeps a running top K per
    category (two "processes" here, each with half of the images), and reports Fixed AP and
    Pooled AP of the top K of all detections.
    """
    name, gt, bbox_results, segm_results = random_lvis_dataset
    inputs, outputs = _model_outputs(gt, bbox_results, segm_results)
    for output in outputs:  # a model's instances come sorted by decreasing score
        instances = output["instances"]
        output["instances"] = instances[torch.argsort(-instances.scores, stable=True)]
    cfg = get_cfg()
    disalign.add_disalign_config(cfg)
    cfg.TEST.LVIS_EVAL_BACKEND = backend
    cfg.TEST.DETECTIONS_PER_IMAGE = 4
    cfg.TEST.FIXED_AP.ENABLED = True
    cfg.TEST.FIXED_AP.DETS_PER_CATEGORY = k = 3
    evaluators = [build_evaluator(cfg, name, str(tmp_path / f"process{p}")) for p in (0, 1)]
    half = len(inputs) // 2
    for evaluator, part in zip(evaluators, (slice(0, half), slice(half, None))):
        evaluator.reset()
        for image_input, image_output in zip(inputs[part], outputs[part]):
            evaluator.process([image_input], [image_output])
    evaluators[0]._predictions += evaluators[1]._predictions  # what gathering does
    evaluators[0]._distributed = False
    results = evaluators[0].evaluate()

    # references: lvis-api on all of the model's detections
    everything = []
    for image_input, image_output in zip(inputs, outputs):
        everything += instances_to_coco_json(image_output["instances"], image_input["image_id"])
    for result in everything:
        result["category_id"] += 1
    written = json.loads((tmp_path / "process0" / "lvis_instances_results.json").read_text())
    assert len(written) < len(everything)  # the running top K left some out
    gt_path = MetadataCatalog.get(name).json_file
    for task in ("bbox", "segm"):
        task_results = everything
        if task == "segm":  # mask areas, as detectron2
            task_results = [{k: v for k, v in r.items() if k != "bbox"} for r in everything]
        standard = lvis_api_eval(gt_path, task_results, task, 4)
        standard.run()
        fixed = lvis_api_eval(gt_path, task_results, task, -1, k)
        pooled = pooled_reference(fixed)
        fixed.run()
        expected = {name: 100 * value for name, value in standard.get_results().items()}
        for metric in ("AP", "APr", "APc", "APf"):
            expected[f"{metric}-fixed"] = 100 * fixed.get_results()[metric]
        expected.update({name: 100 * value for name, value in pooled.items()})
        assert set(results[task]) == set(LVIS_METRICS) | {
            n for n in expected if "fixed" in n or "pooled" in n
        }
        for metric, value in results[task].items():
            assert value == pytest.approx(expected[metric], abs=100 * TOLERANCE), (task, metric)
        assert results[task]["AP-fixed"] != results[task]["AP"]
    per_category = json.loads((tmp_path / "process0" / "per_category_ap.json").read_text())
    assert per_category["tasks"] == ["bbox", "bbox-fixed", "segm", "segm-fixed"]


def test_evaluator_and_lvis_eval_refuse_bad_arguments_in_one_line(
    random_lvis_dataset,  # noqa: F811 (the fixture)
):
    from disalign.evaluation import LongTailLVISEvaluator

    name = random_lvis_dataset[0]
    message = "^backend must be one of fast, lvis-api, not 'lvis_api'$"
    with pytest.raises(ValueError, match=message):
        LongTailLVISEvaluator(name, backend="lvis_api")
    message = r"^dets_per_category must be a positive integer \(or None, no limit\), not 0$"
    with pytest.raises(ValueError, match=message):
        LongTailLVISEvaluator(name, fixed_ap_dets_per_category=0)
    gt, bbox_results, _ = copy.deepcopy(federated_case())
    with pytest.raises(ValueError, match="^iou_type: keypoints is not supported.$"):
        lvis_fast.LVISEval(gt, bbox_results, "keypoints")
