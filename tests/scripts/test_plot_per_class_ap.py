"""
tools/plot_per_class_ap.py on per_category_ap.json files written here by hand: the binned means it
plots, the band means it prints and the PNG, against a hand computation.
"""

import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT, run_script

sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
import plot_per_class_ap  # noqa: E402

# (id, training image count, frequency, bbox AP, segm AP); None: no training count / no GT
CATEGORIES = [
    (1, 1, "r", 0.0, 5.0),
    (2, 4, "r", 10.0, 15.0),
    (3, 10, "r", 30.0, 25.0),
    (4, 20, "c", 40.0, 35.0),
    (5, 50, "c", None, None),  # no ground truth in the evaluated set
    (6, 200, "f", 60.0, 55.0),
    (7, 1000, "f", 80.0, 75.0),
    (8, None, "f", 90.0, 90.0),  # no training count: left out
]


def _write_run(run_dir, shift=0.0, table=CATEGORIES):
    categories = [
        {
            "id": i,
            "name": f"c{i}",
            "frequency": freq,
            "train_image_count": count,
            "gt_instances": 0 if bbox is None else 3,
            "AP": {
                "bbox": None if bbox is None else bbox + shift,
                "segm": None if segm is None else segm + shift,
            },
        }
        for i, count, freq, bbox, segm in table
    ]
    path = run_dir / "inference" / "miniature_lvis_val" / "per_category_ap.json"
    path.parent.mkdir(parents=True)
    data = {"dataset": "miniature_lvis_val", "tasks": ["bbox", "segm"], "categories": categories}
    path.write_text(json.dumps(data))


@pytest.fixture
def runs(tmp_path):
    _write_run(tmp_path / "stage1")
    _write_run(tmp_path / "stage2", shift=2.0)
    return tmp_path


def test_plotted_bins_are_the_mean_ap_per_log_bin(runs, tmp_path):
    output = tmp_path / "plot.png"
    loaded = plot_per_class_ap.main(
        [str(runs / "stage1"), str(runs / "stage2"), "--bins", "3", "--output", str(output)]
    )
    # 3 bins of log10(count) over [1, 1000]: edges 1, 10, 100, 1000; a count on an inner edge
    # (10) goes up. bin 1: counts 1, 4; bin 2: 10, 20 (50 has no AP); bin 3: 200, 1000
    edges = plot_per_class_ap.bin_edges(loaded, 3)
    np.testing.assert_allclose(edges, [1, 10, 100, 1000])
    centres = [10**0.5, 10**1.5, 10**2.5]
    expected = {
        "bbox": [(0 + 10) / 2, (30 + 40) / 2, (60 + 80) / 2],
        "segm": [(5 + 15) / 2, (25 + 35) / 2, (55 + 75) / 2],
    }
    assert [r.left_out for r in loaded] == [1, 1]
    fig = plot_per_class_ap.plot(loaded, edges, str(output))
    for ax, task in zip(fig.axes, ("bbox", "segm")):
        lines = ax.get_lines()  # one curve per run, in order
        assert len(lines) == 2
        for line, shift in zip(lines, (0.0, 2.0)):
            np.testing.assert_allclose(line.get_xdata(), centres)
            np.testing.assert_allclose(line.get_ydata(), np.array(expected[task]) + shift)


def test_a_bin_without_measured_categories_is_not_drawn():
    counts = np.array([1.0, 50.0, 1000.0])
    ap = np.array([20.0, np.nan, 60.0])
    centres, means, sizes = plot_per_class_ap.binned_ap(counts, ap, np.array([1, 10, 100, 1000.0]))
    np.testing.assert_allclose(means, [20.0, np.nan, 60.0])
    assert sizes.tolist() == [1, 0, 1]


def test_command_line_writes_the_png_beside_the_runs_and_prints_band_means(runs):
    result = run_script(
        os.path.join(REPO_ROOT, "tools", "plot_per_class_ap.py"),
        *(runs / "stage1", runs / "stage2", "--labels", "Baseline", "DisAlign"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # rare (1-10 images): (0 + 10 + 30) / 3; common: 40 (category 5 unmeasured); frequent: 70
    assert (
        "Baseline bbox: mean per-category AP rare 13.3, common 40.0, frequent 70.0 "
        "(7 categories, 1 without training images left out)"
    ) in result.stdout
    assert (
        "DisAlign segm: mean per-category AP rare 17.0, common 37.0, frequent 67.0" in result.stdout
    )
    output = runs / "per_class_ap.png"
    assert f"wrote {output}" in result.stdout
    with Image.open(output) as image:
        assert image.format == "PNG" and image.size[0] >= 1000
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 50


def test_a_run_without_results_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_script(
        os.path.join(REPO_ROOT, "tools", "plot_per_class_ap.py"), tmp_path / "empty"
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: '{tmp_path / 'empty'}' has no inference/.../per_category_ap.json: evaluate the "
        "run on an LVIS dataset with train_net.py first"
    ]


def test_the_demo_draws_its_two_stages(runs, tmp_path):
    import run_demo

    assert run_demo.TASKS["detection"]["per_class_plot"] == "per_class_ap.png"
    output = tmp_path / "demo" / "per_class_ap.png"
    run_demo.draw_per_class_ap(str(runs / "stage1"), str(runs / "stage2"), str(output))
    with Image.open(output) as image:
        assert image.format == "PNG"


def test_a_band_without_categories_reads_n_a_and_has_no_legend_entry(tmp_path):
    # rare: two measured categories; common: one, without ground truth; frequent: none
    table = [(1, 2, "r", 10.0, 12.0), (2, 5, "r", 30.0, 20.0), (3, 40, "c", None, None)]
    _write_run(tmp_path / "run", table=table)
    result = run_script(os.path.join(REPO_ROOT, "tools", "plot_per_class_ap.py"), tmp_path / "run")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        "run bbox: mean per-category AP rare 20.0, common n/a (no category with ground truth), "
        "frequent n/a (no category) (3 categories)"
    ) in result.stdout
    assert "nan" not in result.stdout
    assert "Warning" not in result.stderr

    (run,) = plot_per_class_ap.main([str(tmp_path / "run"), "--output", str(tmp_path / "p.png")])
    fig = plot_per_class_ap.plot([run], plot_per_class_ap.bin_edges([run], 2), str(tmp_path / "q"))
    for ax, mean in zip(fig.axes, ("20.0", "16.0")):  # bbox (10 + 30) / 2, segm (12 + 20) / 2
        labels = [text.get_text() for text in ax.get_legend().get_texts()]
        assert labels == [f"run (mean {mean})", "rare", "common"]
        # the shaded bands: rare's and common's colours
        shaded = sorted(tuple(round(255 * v) for v in p.get_facecolor()[:3]) for p in ax.patches)
        assert shaded == sorted([(0xF4, 0xC7, 0xC3), (0xFC, 0xE8, 0xB2)])
