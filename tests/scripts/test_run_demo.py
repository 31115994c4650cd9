"""
tools/run_demo.py's fixed thread count and its spread over seeds and thread counts, without
training (the runs are replaced).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
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
