"""
The helper scripts: the dataset check and the generated configs / model-zoo tables.
"""

import os
import subprocess
import sys

from conftest import REPO_ROOT


def _run(script, *args, env=None):
    return subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "tools", script), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
    )


def test_check_datasets_names_each_missing_file(tmp_path):
    (tmp_path / "lvis").mkdir()
    (tmp_path / "coco").mkdir()
    (tmp_path / "lvis" / "lvis_v1_val.json").write_text("{}")
    result = _run(
        "check_datasets.py",
        "lvis_v1_val",
        "lvis_v1_train",
        env={"DETECTRON2_DATASETS": str(tmp_path)},
    )
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "ok: lvis_v1_val",
        f"missing: dataset 'lvis_v1_train': annotation file '{tmp_path}/lvis/lvis_v1_train.json' "
        f"does not exist (datasets are read from DETECTRON2_DATASETS={tmp_path}; see "
        "datasets/README.md)",
    ]
    config = os.path.join(REPO_ROOT, "configs/LVIS-v1.0/mask_rcnn_R_50_FPN_1x_baseline.yaml")
    (tmp_path / "lvis" / "lvis_v1_train.json").write_text("{}")
    ok = _run(
        "check_datasets.py", "--config-file", config, env={"DETECTRON2_DATASETS": str(tmp_path)}
    )
    assert ok.returncode == 0 and ok.stdout.split() == [
        "ok:",
        "lvis_v1_train",
        "ok:",
        "lvis_v1_val",
    ]


def test_configs_and_model_zoo_are_generated_and_current():
    result = _run("generate_configs.py", "--check")
    assert result.returncode == 0, result.stdout
    with open(os.path.join(REPO_ROOT, "projects/DisAlign/README.md")) as f:
        zoo = f.read()
    # the paper's LVIS v0.5 Mask R-CNN R-50 rows and the exact commands of a stage 2
    assert "| DisAlign | [mask_rcnn_R_50_FPN_1x_disalign]" in zoo
    assert "23.9 / 7.5 / 25.0 / 29.1 | 24.2 / 8.5 / 26.2 / 28.0 | not measured |" in zoo
    assert (
        "python train_net.py --num-gpus 8 --config-file "
        "configs/LVIS-v1.0/cascade_mask_rcnn_X_101_32x8d_FPN_2x_disalign_cosine.yaml --eval-only "
        "MODEL.WEIGHTS output/LVIS-v1.0/cascade_mask_rcnn_X_101_32x8d_FPN_2x_disalign_cosine/"
        "model_final.pth"
    ) in zoo
    # the paper's ImageNet-LT ResNeXt-50 DisAlign* row (Table 1) and iNaturalist at 200 epochs
    assert "| DisAlign* | [X_50_32x4d_90e_disalign_cosine]" in zoo
    assert "| 53.4 / 62.7 / 52.1 / 31.4 | not measured |" in zoo
    assert "| DisAlign | [R_152_200e_disalign](../../configs/iNaturalist-2018/" in zoo
