"""
tools/plot_calibration.py: a valid PNG from a DisAlign checkpoint, and the numbers it plots are the
model's own (alpha, beta in training-frequency order; sigma(w . x + b) of the validation proposals).
"""

import json
import os
import sys

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from PIL import Image

from disalign.data.class_counts import training_class_counts

from conftest import MINIATURE_DISALIGN, REPO_ROOT, load_config, run_script

sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
import plot_calibration  # noqa: E402

NUM_IMAGES = 2


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A stage-2 miniature model with distinct alpha, beta and confidence weights, saved."""
    cfg = load_config(MINIATURE_DISALIGN, "MODEL.WEIGHTS", "")
    torch.manual_seed(0)
    model = build_model(cfg)
    alignment = model.roi_heads.box_predictor.alignment
    with torch.no_grad():
        alignment.alpha.copy_(torch.rand(36) + 0.5)
        alignment.beta.copy_(torch.randn(36))
        alignment.confidence.weight.normal_(std=0.05)
    directory = tmp_path_factory.mktemp("model")
    DetectionCheckpointer(model, save_dir=str(directory)).save("model_final")
    return (
        str(directory / "model_final.pth"),
        alignment.alpha.detach().clone(),
        alignment.beta.detach().clone(),
    )


def test_writes_a_png(checkpoint, tmp_path):
    weights = checkpoint[0]
    output = tmp_path / "plots" / "calibration.png"
    # as the README writes it: the options after the config overrides
    result = run_script(
        os.path.join(REPO_ROOT, "tools", "plot_calibration.py"),
        *("--config-file", MINIATURE_DISALIGN, "MODEL.WEIGHTS", weights, "OUTPUT_DIR", tmp_path),
        *("--output", output, "--max-images", NUM_IMAGES),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"wrote {output}: alpha and beta of 36 classes" in result.stdout
    assert f"on {NUM_IMAGES} images of miniature_lvis_val" in result.stdout
    with open(output, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with Image.open(output) as image:
        image.verify()
    with Image.open(output) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert 600 <= width <= 3000 and 500 <= height <= 1500
        # not a blank canvas: the curves and the shaded bands
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 50
    assert os.path.getsize(output) > 20_000


def test_the_plotted_numbers_are_the_models(checkpoint, tmp_path):
    weights, alpha, beta = checkpoint
    cfg = load_config(MINIATURE_DISALIGN, "MODEL.WEIGHTS", weights)
    model = build_model(cfg)
    DetectionCheckpointer(model).load(weights)
    predictor = model.roi_heads.box_predictor
    features = []  # the box features the confidence layer reads, (R, D) per image
    handle = predictor.register_forward_pre_hook(lambda m, inputs: features.append(inputs[0]))
    data = plot_calibration.gather(cfg, model, max_images=NUM_IMAGES)
    handle.remove()

    # classes by decreasing training count, with their names, counts and LVIS frequency
    counts = np.asarray(training_class_counts(cfg.DATASETS.TRAIN, 36, "images"))
    order = data.order
    assert sorted(order) == list(range(36))
    assert np.all(np.diff(counts[order]) <= 0)
    np.testing.assert_array_equal(data.counts, counts[order])
    meta = MetadataCatalog.get("miniature_lvis_train")
    assert data.class_names == [meta.thing_classes[i] for i in order]
    with open(meta.json_file) as f:
        categories = sorted(json.load(f)["categories"], key=lambda c: c["id"])
    assert data.bands == [categories[i]["frequency"] for i in order]
    assert data.bands[0] == "f" and data.bands[-1] == "r"

    # alpha and beta: the checkpoint's, in that order
    name = "roi_heads.box_predictor.alignment"
    assert list(data.alpha) == [name] and data.learned[name] == (True, True, True)
    np.testing.assert_allclose(data.alpha[name], alpha.numpy()[order], rtol=1e-6)
    np.testing.assert_allclose(data.beta[name], beta.numpy()[order], rtol=1e-6)

    # sigma: one value per validation proposal, exactly sigmoid(w . x + b) of its features
    assert data.num_images == NUM_IMAGES and data.dataset == "miniature_lvis_val"
    assert len(features) == NUM_IMAGES
    with torch.no_grad():
        expected = torch.cat(
            [torch.sigmoid(predictor.alignment.confidence(x)).flatten() for x in features]
        )
    assert len(data.confidence[name]) == len(expected) > 100
    np.testing.assert_allclose(data.confidence[name], expected.numpy(), rtol=1e-5, atol=1e-7)
    assert data.confidence[name].std() > 0.01  # the distinct confidence weights show

    # the same data, plotted in-process
    output = tmp_path / "direct.png"
    plot_calibration.plot(data, str(output))
    with Image.open(output) as image:
        assert image.format == "PNG"


def test_a_model_without_alignment_is_refused():
    cfg = load_config(MINIATURE_DISALIGN, "MODEL.WEIGHTS", "", "MODEL.DISALIGN.CALIBRATION", False)
    cfg.MODEL.DISALIGN.ALIGNMENT_STAGE = False
    with pytest.raises(ValueError, match="no DistributionAlignment"):
        plot_calibration.gather(cfg, build_model(cfg), max_images=1)


def test_default_output_is_in_output_dir_and_images_are_limited(checkpoint, tmp_path):
    assert plot_calibration.parse_args(["--config-file", "c.yaml"]).max_images == 300
    data = plot_calibration.main(
        [
            *("--config-file", MINIATURE_DISALIGN, "--max-images", "1"),
            *("MODEL.WEIGHTS", checkpoint[0], "OUTPUT_DIR", str(tmp_path / "run")),
        ]
    )
    assert data.num_images == 1
    with Image.open(tmp_path / "run" / "calibration.png") as image:
        assert image.format == "PNG"
    assert not os.path.exists(os.path.join(REPO_ROOT, "calibration.png"))


def test_options_anywhere_and_errors_blamed_on_what_is_wrong(tmp_path):
    args = plot_calibration.parse_args(
        ["A", "1", "--output", "p.png", "B", "-2.5", "--max-images", "3", "--config-file", "c"]
    )
    assert (args.opts, args.output, args.max_images, args.config_file) == (
        ["A", "1", "B", "-2.5"],
        "p.png",
        3,
        "c",
    )
    # a mistyped option: argparse's one line, not a config key
    script = os.path.join(REPO_ROOT, "tools", "plot_calibration.py")
    result = run_script(
        script, "--config-file", MINIATURE_DISALIGN, "MODEL.WEIGHTS", "w", "--outptu", "p"
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "plot_calibration.py: error: unrecognized arguments: --outptu p"
    )
    # a mistyped key after the options: a command-line override, not the config file's
    result = run_script(
        script, "--config-file", MINIATURE_DISALIGN, "--max-images", 1, "MODEL.DISALIGN.RH0", 1
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: command-line override: Non-existent key: MODEL.DISALIGN.RH0"
    ]
