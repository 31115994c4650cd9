"""
tools/run_demo.py's fixed thread count and its spread over seeds and thread counts, and
tools/compare_methods.py's choice of stage-1 model, without training (the runs are replaced).
"""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.container import BarContainer

from conftest import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
import compare_methods  # noqa: E402
import run_demo  # noqa: E402


def test_a_stage_runs_with_the_asked_number_of_torch_threads(tmp_path, monkeypatch):
    calls = []

    def fake_run(command, cwd, check, env, stdout, stderr):
        calls.append((command, env))
        out = command[command.index("OUTPUT_DIR") + 1]
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "eval_results.json"), "w") as f:
            json.dump({"classification": {"top1": 1.0}}, f)

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    results, _ = run_demo.run_stage("s", "c.yaml", str(tmp_path / "out"), ["SEED", "3"], 4)
    assert results == {"classification": {"top1": 1.0}}
    command, env = calls[0]
    assert env["OMP_NUM_THREADS"] == "4" and env["MKL_NUM_THREADS"] == "4"
    assert command[1:] == ["train_net.py", "--config-file", "c.yaml", "SEED", "3"] + [
        "OUTPUT_DIR",
        str(tmp_path / "out"),
    ]


def test_spread_of_runs_by_hand():
    runs = {
        "a": {"baseline": {"top1": 60.0, "few": 10.0}, "disalign": {"top1": 70.0, "few": 40.0}},
        "b": {"baseline": {"top1": 62.0, "few": 14.0}, "disalign": {"top1": 71.0, "few": 35.0}},
        "c": {"baseline": {"top1": 64.0, "few": 12.0}, "disalign": {"top1": 75.0, "few": 45.0}},
    }
    table = run_demo.spread(runs)
    assert table["top1"]["baseline"] == {"mean": 62.0, "std": 2.0, "min": 60.0, "max": 64.0}
    # gains 30, 21, 33: mean 28, sample std sqrt((4 + 49 + 25) / 2)
    gain = table["few"]["gain"]
    assert gain["mean"] == pytest.approx(28.0) and gain["std"] == pytest.approx(np.sqrt(39.0))
    assert (gain["min"], gain["max"]) == (21.0, 33.0)
    one = run_demo.spread({"a": runs["a"]})
    assert one["top1"]["gain"] == {"mean": 10.0, "std": 0.0, "min": 10.0, "max": 10.0}
    assert "62.0 ± 2.0 [60.0, 64.0]" in run_demo.format_spread(table)


@pytest.mark.parametrize("jobs", [1, 2])
def test_the_spread_runs_seeds_at_the_first_thread_count_and_threads_at_seed_1(
    tmp_path, monkeypatch, jobs
):
    done = []

    def fake_demo(task, output_dir, num_gpus, threads, seed=None, log=None):
        done.append((seed, threads, output_dir, log is not None))
        top1 = 60.0 + seed + 10 * threads
        return {"baseline": {"top1": top1}, "disalign": {"top1": top1 + seed}}, 0.0, 0.0

    monkeypatch.setattr(run_demo, "run_demo", fake_demo)
    monkeypatch.setattr(run_demo, "REPO_ROOT", str(tmp_path))
    run_demo.run_spread(run_demo.TASKS["classification"], "out", 1, 3, [2, 1, 4], jobs)
    assert sorted(d[:2] for d in done) == [(1, 1), (1, 2), (1, 4), (2, 2), (3, 2)]
    assert all(d[2] == os.path.join("out", "spread", f"seed{d[0]}-threads{d[1]}") for d in done)
    assert all(d[3] == (jobs > 1) for d in done)  # several at a time: each to its run.log
    with open(tmp_path / "out" / "spread.json") as f:
        summary = json.load(f)
    seeds, threads, everything = summary["spread"].values()
    assert seeds["top1"]["baseline"]["mean"] == 82.0  # 81, 82, 83
    assert threads["top1"]["baseline"]["mean"] == pytest.approx((71 + 81 + 101) / 3)
    assert threads["top1"]["gain"] == {"mean": 1.0, "std": 0.0, "min": 1.0, "max": 1.0}
    assert everything["top1"]["gain"]["max"] == 3.0 and len(summary["runs"]) == 5


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
    summary = {}
    for offset, method in enumerate(["Joint (stage 1)", "DisAlign"]):
        entry = {"seeds": [1, 2]}
        for k, metric in enumerate(compare_methods.METRICS):
            entry[metric] = 10.0 * k + offset
            entry[f"{metric}_std"] = 0.5 + offset
        summary[method] = entry
    path = tmp_path / "groups.png"
    ax = compare_methods.plot_groups(summary, "title", str(path))
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
