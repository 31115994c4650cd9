"""
tools/compare_methods.py without training (the runs are replaced): the choice of stage-1 model,
the choice of tau on the held-out split only (with fake evaluations of hand-made scores), the
detection table, the plot, and the reuse of the box features while tuning (equal to full
inference). The classification-specific tuning is checked in tests/modeling/test_decoupled.py.
"""

import json
import os
import sys
from types import SimpleNamespace

import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.data import detection_utils as utils
from detectron2.modeling import build_model
from matplotlib.container import BarContainer

from conftest import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
import compare_methods  # noqa: E402

TAU_NORM = "configs/Miniature-LVIS/mask_rcnn_R_18_FPN_tau_norm.yaml"
GRID = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]


def _cfg(*opts):
    return compare_methods.load_config(TAU_NORM, ["MODEL.WEIGHTS", "", *opts])


def test_detector_configs_tune_on_the_held_out_split_over_a_short_grid():
    for config in (TAU_NORM, "configs/Miniature-LVIS/mask_rcnn_R_18_FPN_logit_adjustment.yaml"):
        d = compare_methods.load_config(config).MODEL.DECOUPLED
        assert (d.TUNE_DATASET, list(d.TAU_GRID)) == ("miniature_lvis_heldout", GRID)


def test_tau_with_the_best_held_out_metric_ties_to_the_first_of_the_grid():
    cfg = _cfg()
    # hand-made held-out AP per tau: 0.75 and 1.25 tie for the best
    scores = {0.0: 20.0, 0.25: 21.0, 0.5: 22.0, 0.75: 25.0, 1.0: 24.0, 1.25: 25.0}
    modules = [SimpleNamespace(tau=1.0), SimpleNamespace(tau=1.0)]  # e.g. a cascade's
    asked = []

    def evaluate(name):
        assert modules[0].tau == modules[1].tau
        asked.append((name, modules[0].tau))
        return scores.get(modules[0].tau, 10.0)

    tau, held_out = compare_methods.choose_tau(cfg, modules, evaluate)
    assert tau == 0.75 and [m.tau for m in modules] == [0.75, 0.75]
    assert asked == [("miniature_lvis_heldout", t) for t in GRID]
    assert held_out == {t: scores.get(t, 10.0) for t in GRID}


@pytest.mark.parametrize("tune", ["miniature_lvis_val", "miniature_lvis_train", ""])
def test_a_reported_training_or_missing_tuning_split_is_refused(tune):
    cfg = _cfg("MODEL.DECOUPLED.TUNE_DATASET", tune)
    evaluated = []
    with pytest.raises(ValueError, match="TUNE_DATASET") as error:
        compare_methods.choose_tau(cfg, [SimpleNamespace(tau=1.0)], evaluated.append)
    assert evaluated == [] and "\n" not in str(error.value)


def test_a_model_without_a_tunable_post_hoc_classifier_is_refused():
    from disalign.modeling.decoupled import PostHocClassifier

    # no post-hoc module at all, and NCM (no tau): each refused in one line, nothing evaluated
    with pytest.raises(ValueError, match=r"^MODEL.DECOUPLED.POST_HOC has no tau to choose$"):
        compare_methods.post_hoc_modules(torch.nn.Linear(4, 3))
    ncm = torch.nn.Sequential(PostHocClassifier("ncm", num_classes=3, in_features=4))
    with pytest.raises(ValueError, match=r"^MODEL.DECOUPLED.POST_HOC has no tau to choose$"):
        compare_methods.post_hoc_modules(ncm)
    evaluated = []
    with pytest.raises(ValueError, match=r"^the model has no post-hoc classifier"):
        compare_methods.choose_tau(_cfg(), [], evaluated.append)
    assert evaluated == []


def test_post_hoc_detector_is_tuned_on_held_out_then_evaluated_once_on_test(monkeypatch, tmp_path):
    modules = [SimpleNamespace(tau=1.0)]
    model = SimpleNamespace(roi_heads=SimpleNamespace(mask_on=True))
    evaluated = []
    # hand-made held-out AP, best at tau 0.5
    held_out_ap = {t: 30.0 - abs(t - 0.5) for t in GRID}

    def evaluation_on(cfg, evaluated_model, select):
        assert evaluated_model is model

        def evaluate(name, output_folder=None):
            masks = model.roi_heads.mask_on
            evaluated.append((name, modules[0].tau, output_folder is not None, masks))
            ap = held_out_ap[modules[0].tau] if name == "miniature_lvis_heldout" else 40.0
            return select({"bbox": {"AP": ap, "APr": 1.0}})

        return evaluate

    monkeypatch.setattr(compare_methods, "evaluation_on", evaluation_on)
    monkeypatch.setattr(compare_methods, "load_post_hoc_model", lambda cfg: (model, modules))
    # no reuse of box features: the model is not built here
    task = {k: v for k, v in compare_methods.TASKS["detection"].items() if k != "reuse_in_tuning"}
    weights = tmp_path / "model_final.pth"
    torch.save({"model": {}}, weights)  # read by the config checks
    result = compare_methods.inference_post_hoc_results(task, TAU_NORM, str(weights), 1, "out")
    # every evaluation without masks (the table is box AP), held-out first, test once
    assert evaluated == [("miniature_lvis_heldout", t, False, False) for t in GRID] + [
        ("miniature_lvis_val", 0.5, True, False)
    ]
    assert model.roi_heads.mask_on  # restored
    assert result == {"AP": 40.0, "APr": 1.0, "tau": 0.5, "held_out_AP": held_out_ap}


def test_detection_table_by_hand():
    task = compare_methods.TASKS["detection"]
    metrics = list(task["metrics"])
    assert metrics == ["AP", "APr", "APc", "APf", "AP-fixed", "AP-pooled-all"]
    per_seed = [
        {
            "Joint (stage 1)": dict(zip(metrics, [30.0, 5.0, 28.0, 45.0, 31.0, 35.0])),
            "tau-norm": {**dict(zip(metrics, [32.0, 9.0, 30.0, 44.0, 33.0, 36.0])), "tau": 0.5},
        },
        {
            "Joint (stage 1)": dict(zip(metrics, [32.0, 7.0, 30.0, 47.0, 33.0, 37.0])),
            "tau-norm": {**dict(zip(metrics, [34.0, 11.0, 31.0, 45.0, 35.0, 38.0])), "tau": 1.25},
        },
    ]
    summary = compare_methods.summarize(per_seed, [1, 2], metrics)
    assert summary["tau-norm"]["tau_per_seed"] == [0.5, 1.25]
    assert summary["Joint (stage 1)"]["APr_per_seed"] == [5.0, 7.0]
    # two seeds: mean, sample std |a - b| / sqrt(2) = 1.4 for a difference of 2
    lines = compare_methods.format_table(summary, task, 2).splitlines()
    assert lines[0].split() == [
        "AP", "APr", "APc", "APf", "Fixed", "AP", "Pooled", "AP", "tau", "(held-out)"
    ]  # fmt: skip
    assert lines[2].split() == ["Joint", "(stage", "1)"] + "31.0 +- 1.4 6.0 +- 1.4 29.0 +- 1.4 "\
        "46.0 +- 1.4 32.0 +- 1.4 36.0 +- 1.4".split()  # fmt: skip
    assert lines[3].split() == ["tau-norm"] + "33.0 +- 1.4 10.0 +- 1.4 30.5 +- 0.7 44.5 +- 0.7 "\
        "34.0 +- 1.4 37.0 +- 1.4 0.5, 1.25".split()  # fmt: skip
    one = compare_methods.summarize(per_seed[:1], [1], metrics)
    assert compare_methods.format_table(one, task, 1).splitlines()[3].split() == [
        "tau-norm", "32.0", "9.0", "30.0", "44.0", "33.0", "36.0", "0.5"
    ]  # fmt: skip


def test_reused_box_features_give_the_detections_of_full_inference():
    cfg = _cfg(
        "MODEL.DECOUPLED.TAU", "0.0", "TEST.DETECTIONS_PER_IMAGE", "5",
        "TEST.FIXED_AP.ENABLED", "False", "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():  # biases off zero, so that tau changes the detections
        model.roi_heads.box_predictor.cls_score.bias.normal_()
    (post_hoc,) = compare_methods.post_hoc_modules(model)
    inputs = []
    for record in DatasetCatalog.get("miniature_lvis_heldout")[:1]:
        image = utils.read_image(record["file_name"], format=cfg.INPUT.FORMAT)
        image = torch.as_tensor(image.transpose(2, 0, 1).copy())
        inputs.append([dict(record, image=image)])
    calls = []
    model.backbone.bottom_up.register_forward_hook(lambda *args: calls.append("backbone"))

    def detections(outputs):
        return [
            (o["instances"].pred_boxes.tensor, o["instances"].scores, o["instances"].pred_classes)
            for o in outputs
        ]

    with torch.no_grad():
        full = {}
        for tau in (0.0, 1.0):
            post_hoc.tau = tau
            full[tau] = [model(batch) for batch in inputs]
        assert all(o["instances"].has("pred_masks") for batch in full[1.0] for o in batch)
        calls.clear()
        with compare_methods.boxes_only(model), compare_methods.reused_box_features(model):
            reused = {}
            for tau in (0.0, 1.0, 0.0):
                post_hoc.tau = tau
                reused[tau] = [model(batch) for batch in inputs]
        assert calls == ["backbone"]  # the first pass only
        after = model(inputs[0])  # restored: masks again
    for tau in (0.0, 1.0):
        for a, b in zip(full[tau], reused[tau]):
            for x, y in zip(detections(a), detections(b)):
                for u, v in zip(x, y):
                    assert torch.equal(u, v)
    assert not torch.equal(detections(full[0.0][0])[0][1], detections(full[1.0][0])[0][1])
    assert not any(o["instances"].has("pred_masks") for batch in reused[1.0] for o in batch)
    assert after[0]["instances"].has("pred_masks")


def _stage1(folder, top1):
    os.makedirs(folder)
    open(os.path.join(folder, "model_final.pth"), "w").close()
    with open(os.path.join(folder, "eval_results.json"), "w") as f:
        json.dump({"classification": {"top1": top1}}, f)


def test_compare_methods_takes_the_demos_stage1_models_of_each_seed(tmp_path, monkeypatch):
    seed = compare_methods.load_config(compare_methods.TASKS["classification"]["stage1"]).SEED
    assert seed == 1  # the demo's config
    monkeypatch.setattr(compare_methods, "REPO_ROOT", str(tmp_path))
    monkeypatch.setattr(
        compare_methods, "load_config", lambda config, opts=(): SimpleNamespace(SEED=1)
    )
    monkeypatch.setattr(compare_methods, "changed_keys", lambda dumped, expected: [])
    trained = []
    monkeypatch.setattr(
        compare_methods,
        "run_train_net",
        lambda name, config, out, opts, threads: trained.append((out, opts, threads)) or {},
    )
    task = compare_methods.TASKS["classification"]
    demo = task["demo"]["output"]
    _stage1(tmp_path / demo / "stage1", 1.0)
    _stage1(tmp_path / demo / "spread" / "seed2-threads2" / "stage1", 2.0)
    assert compare_methods.stage1_model(task, 1, "cmp", [], 2) == (
        os.path.join(demo, "stage1", "model_final.pth"),
        {"classification": {"top1": 1.0}},
    )
    weights, results = compare_methods.stage1_model(task, 2, "cmp", [], 2)
    assert weights == os.path.join(demo, "spread", "seed2-threads2", "stage1", "model_final.pth")
    assert results == {"classification": {"top1": 2.0}} and trained == []
    # another seed or thread count, or overrides: trained under the comparison's own folder
    compare_methods.stage1_model(task, 3, "cmp", [], 2)
    compare_methods.stage1_model(task, 2, "cmp", [], 1)
    compare_methods.stage1_model(task, 1, "cmp", ["SOLVER.MAX_ITER", "2"], 2)
    assert [t[0] for t in trained] == [os.path.join("cmp", f"seed{s}", "stage1") for s in (3, 2, 1)]
    assert [t[2] for t in trained] == [2, 1, 2]
    assert trained[2][1] == ["--num-gpus", "1", "SEED", "1", "SOLVER.MAX_ITER", "2"]


def test_compare_methods_reuses_no_stage1_trained_with_another_config(tmp_path, monkeypatch):
    task = compare_methods.TASKS["classification"]
    expected = compare_methods.load_config(task["stage1"], ["SEED", "2"])
    dumped = tmp_path / "config.yaml"
    same = expected.clone()
    same.OUTPUT_DIR = "elsewhere"
    dumped.write_text(same.dump())
    assert compare_methods.changed_keys(str(dumped), expected) == []
    other = same.clone()
    other.SOLVER.WARMUP_ITERS = expected.SOLVER.WARMUP_ITERS + 1
    other.SEED = 3
    dumped.write_text(other.dump())
    assert compare_methods.changed_keys(str(dumped), expected) == ["SEED", "SOLVER.WARMUP_ITERS"]
    assert compare_methods.changed_keys(str(tmp_path / "none.yaml"), expected) != []

    # the spread's model of seed 2, trained with another config: trained again, in the
    # comparison's own folder
    monkeypatch.setattr(compare_methods, "REPO_ROOT", str(tmp_path))
    read = compare_methods.load_config
    monkeypatch.setattr(
        compare_methods,
        "load_config",
        lambda config, opts=(): expected if config == task["stage1"] else read(config, opts),
    )
    spread = tmp_path / task["demo"]["output"] / "spread" / "seed2-threads2" / "stage1"
    _stage1(spread, 2.0)
    (spread / "config.yaml").write_text(other.dump())
    trained = []
    monkeypatch.setattr(
        compare_methods,
        "run_train_net",
        lambda name, config, out, opts, threads: trained.append(out) or {},
    )
    weights, _ = compare_methods.stage1_model(task, 2, "cmp", [], 2)
    assert trained == [os.path.join("cmp", "seed2", "stage1")]
    assert weights == os.path.join("cmp", "seed2", "stage1", "model_final.pth")


def test_compare_methods_plots_each_methods_mean_and_std_per_group(tmp_path):
    task = compare_methods.TASKS["classification"]
    summary = {}
    for offset, method in enumerate(["Joint (stage 1)", "DisAlign"]):
        entry = {"seeds": [1, 2]}
        for k, metric in enumerate(task["metrics"]):
            entry[metric] = 10.0 * k + offset
            entry[f"{metric}_std"] = 0.5 + offset
        summary[method] = entry
    path = tmp_path / "groups.png"
    ax = compare_methods.plot_groups(summary, task, str(path))
    assert path.stat().st_size > 0
    heights = [bar.get_height() for bar in ax.patches]
    assert heights == [0.0, 10.0, 20.0, 30.0, 1.0, 11.0, 21.0, 31.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["top-1", "Many", "Medium", "Few"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(summary)
    # the error bars: one segment per bar, from mean - std to mean + std
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    segments = [seg for c in bars for seg in c.errorbar.lines[2][0].get_segments()]
    assert [tuple(s[:, 1]) for s in segments] == [
        (m - 0.5 - o, m + 0.5 + o) for o in (0, 1) for m in (0.0 + o, 10.0 + o, 20.0 + o, 30.0 + o)
    ]


def test_reused_pixel_features_give_the_segmentation_of_full_inference():
    cfg = compare_methods.load_config(
        "configs/Miniature-Seg/deeplabv3plus_R_18_tau_norm.yaml", ["MODEL.WEIGHTS", ""]
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():  # biases off zero, so that tau changes the logits
        model.sem_seg_head.cls_score.bias.normal_()
    (post_hoc,) = compare_methods.post_hoc_modules(model)
    record = DatasetCatalog.get("miniature_seg_heldout")[0]
    image = utils.read_image(record["file_name"], format=cfg.INPUT.FORMAT)
    inputs = [dict(record, image=torch.as_tensor(image.transpose(2, 0, 1).copy()))]
    calls = []
    model.backbone.stem.register_forward_hook(lambda *args: calls.append("backbone"))
    with torch.no_grad():
        full = {}
        for tau in (0.0, 1.0):
            post_hoc.tau = tau
            full[tau] = model(inputs)[0]["sem_seg"]
        calls.clear()
        with compare_methods.reused_pixel_features(model):
            reused = {}
            for tau in (0.0, 1.0, 0.0):
                post_hoc.tau = tau
                reused[tau] = model(inputs)[0]["sem_seg"]
        assert calls == ["backbone"]  # the first pass only
        assert "layers" not in vars(model.sem_seg_head)  # restored
    for tau in (0.0, 1.0):
        assert torch.equal(full[tau], reused[tau])
    assert not torch.equal(full[0.0], full[1.0])
