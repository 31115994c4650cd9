"""
The helper scripts: the dataset check and the model-zoo tables.
"""

import glob
import json
import os
import shutil
import subprocess

from conftest import REPO_ROOT, run_script


def _run(script, *args, env=None):
    return run_script(os.path.join(REPO_ROOT, "tools", script), *args, env=env)


def _lvis_json(path, files, split="val2017"):
    """A small valid LVIS v1 JSON naming ``files`` of COCO's ``split`` folder."""
    images = [
        {"id": i, "coco_url": f"http://images.cocodataset.org/{split}/{f}", "width": 4, "height": 4}
        for i, f in enumerate(files, 1)
    ]
    annotations = [
        {"id": i, "image_id": i, "category_id": 1, "bbox": [0, 0, 2, 2]} for i in (1, 1, 2)
    ]
    categories = [{"id": 1, "name": "a", "frequency": "r"}, {"id": 2, "name": "b"}]
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )


def test_check_datasets_names_each_missing_file(tmp_path):
    (tmp_path / "lvis").mkdir()
    (tmp_path / "coco" / "val2017").mkdir(parents=True)
    (tmp_path / "coco" / "val2017" / "000000000001.jpg").write_bytes(b"jpg")
    _lvis_json(tmp_path / "lvis" / "lvis_v1_val.json", ["000000000001.jpg"])
    result = _run(
        "check_datasets.py",
        "lvis_v1_val",
        "lvis_v1_train",
        env={"DETECTRON2_DATASETS": str(tmp_path)},
    )
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "ok: lvis_v1_val (1 images, 3 annotations, 2 categories)",
        f"missing: dataset 'lvis_v1_train': annotation file '{tmp_path}/lvis/lvis_v1_train.json' "
        f"does not exist (datasets are read from DETECTRON2_DATASETS={tmp_path}; see "
        "datasets/README.md)",
    ]
    config = os.path.join(REPO_ROOT, "configs/LVIS-v1.0/mask_rcnn_R_50_FPN_1x_baseline.yaml")
    (tmp_path / "coco" / "train2017").mkdir()
    (tmp_path / "coco" / "train2017" / "000000000002.jpg").write_bytes(b"jpg")
    _lvis_json(tmp_path / "lvis" / "lvis_v1_train.json", ["000000000002.jpg"], "train2017")
    ok = _run(
        "check_datasets.py", "--config-file", config, env={"DETECTRON2_DATASETS": str(tmp_path)}
    )
    assert ok.returncode == 0 and ok.stdout.splitlines() == [
        "ok: lvis_v1_train (1 images, 3 annotations, 2 categories)",
        "ok: lvis_v1_val (1 images, 3 annotations, 2 categories)",
    ]


def test_check_datasets_reads_the_files(tmp_path):
    (tmp_path / "lvis").mkdir()
    (tmp_path / "coco").mkdir()  # empty
    env = {"DETECTRON2_DATASETS": str(tmp_path)}
    val, train = tmp_path / "lvis" / "lvis_v1_val.json", tmp_path / "lvis" / "lvis_v1_train.json"
    val.write_text("{}")
    train.write_text('{"images": [')
    result = _run("check_datasets.py", "lvis_v1_val", "lvis_v1_train", env=env)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        f"bad: dataset 'lvis_v1_val': annotation file '{val}' has no 'images' list",
        f"bad: dataset 'lvis_v1_val': annotation file '{val}' has no 'annotations' list",
        f"bad: dataset 'lvis_v1_val': annotation file '{val}' has no 'categories' list",
        f"bad: dataset 'lvis_v1_val': image directory '{tmp_path}/coco/' is empty",
    ]
    assert lines[4].startswith(
        f"bad: dataset 'lvis_v1_train': annotation file '{train}' is not valid JSON ("
    )
    # a folder that does not hold the files the JSON names: the first few are looked for
    (tmp_path / "coco" / "val2017").mkdir()
    (tmp_path / "coco" / "val2017" / "000000000001.jpg").write_bytes(b"jpg")
    _lvis_json(val, ["000000000001.jpg", "000000000002.jpg"])
    result = _run("check_datasets.py", "lvis_v1_val", env=env)
    assert result.returncode == 1 and result.stdout.splitlines() == [
        f"bad: dataset 'lvis_v1_val': image '{tmp_path}/coco/val2017/000000000002.jpg' named by "
        f"'{val}' does not exist"
    ]


def test_check_datasets_reads_classification_split_files(tmp_path):
    (tmp_path / "ImageNet_LT").mkdir()
    (tmp_path / "imagenet" / "val" / "n01").mkdir(parents=True)
    (tmp_path / "imagenet" / "val" / "n01" / "a.JPEG").write_bytes(b"jpg")
    (tmp_path / "ImageNet_LT" / "ImageNet_LT_test.txt").write_text(
        "val/n01/a.JPEG 0\nval/n01/b.JPEG 7\n"
    )
    result = _run(
        "check_datasets.py", "imagenet_lt_test", env={"DETECTRON2_DATASETS": str(tmp_path)}
    )
    assert result.returncode == 1 and result.stdout.splitlines() == [
        f"bad: dataset 'imagenet_lt_test': image '{tmp_path}/imagenet/val/n01/b.JPEG' named by "
        f"'{tmp_path}/ImageNet_LT/ImageNet_LT_test.txt' does not exist"
    ]
    (tmp_path / "imagenet" / "val" / "n01" / "b.JPEG").write_bytes(b"jpg")
    result = _run(
        "check_datasets.py", "imagenet_lt_test", env={"DETECTRON2_DATASETS": str(tmp_path)}
    )
    assert result.returncode == 0
    assert result.stdout.splitlines() == ["ok: imagenet_lt_test (2 images, 2 classes)"]
    # a malformed line: the training reader's own message
    split = tmp_path / "ImageNet_LT" / "ImageNet_LT_test.txt"
    split.write_text("val/n01/a.JPEG 0\nval/n01/b.JPEG -7\n")
    result = _run(
        "check_datasets.py", "imagenet_lt_test", env={"DETECTRON2_DATASETS": str(tmp_path)}
    )
    assert result.returncode == 1 and result.stdout.splitlines() == [
        f"bad: dataset 'imagenet_lt_test': {split}:2: expected '<image path> <non-negative "
        "integer label>', got 'val/n01/b.JPEG -7'"
    ]


def test_model_zoo_tables_are_current():
    result = _run("model_zoo.py", "--check")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    with open(os.path.join(REPO_ROOT, "projects/DisAlign/README.md")) as f:
        zoo = f.read()
    # every experiment config has one row: all but the base configs and the miniatures
    configs = [
        os.path.relpath(p, REPO_ROOT)
        for p in glob.glob(os.path.join(REPO_ROOT, "configs", "**", "*.yaml"), recursive=True)
        if not os.path.basename(p).startswith(("Base-", "model_zoo.")) and "/Miniature-" not in p
    ]
    assert len(configs) >= 180
    assert all(zoo.count(f"](../../{path}) |") == 1 for path in configs)
    # the paper's LVIS v0.5 Mask R-CNN R-50 DisAlign row (supplementary Table 8); its stage 1, read
    # from the config's MODEL.WEIGHTS, and the exact commands of a stage 2
    assert (
        "| DisAlign | [mask_rcnn_R_50_FPN_1x_disalign](../../configs/LVIS-v0.5/"
        "mask_rcnn_R_50_FPN_1x_disalign.yaml) | mask_rcnn_R_50_FPN_1x_baseline | paper | "
        "S8: ResNet-50 DisAlign | 23.9 / 7.5 / 25.0 / 29.1 | 24.2 / 8.5 / 26.2 / 28.0 | "
        "not measured |"
    ) in zoo
    assert (
        "# needs output/LVIS-v1.0/cascade_mask_rcnn_X_101_32x8d_FPN_2x_cosine/model_final.pth "
        "from the stage-1 row\n"
        "python train_net.py --num-gpus 8 --config-file "
        "configs/LVIS-v1.0/cascade_mask_rcnn_X_101_32x8d_FPN_2x_disalign_cosine.yaml\n"
        "python train_net.py --num-gpus 8 --config-file "
        "configs/LVIS-v1.0/cascade_mask_rcnn_X_101_32x8d_FPN_2x_disalign_cosine.yaml --eval-only "
        "MODEL.WEIGHTS output/LVIS-v1.0/cascade_mask_rcnn_X_101_32x8d_FPN_2x_disalign_cosine/"
        "model_final.pth\n"
    ) in zoo
    # the paper's ImageNet-LT ResNeXt-50 DisAlign* row (Table 1) and iNaturalist at 200 epochs
    assert "| DisAlign* | [X_50_32x4d_90e_disalign_cosine]" in zoo
    assert "| S1: ResNeXt-50 DisAlign* | 53.4 / 62.7 / 52.1 / 31.4 | not measured |" in zoo
    assert "| S4: ResNet-152 DisAlign, 200 epochs | 74.1 / 74.9 / 74.4 / 73.5 |" in zoo


def _model_zoo_copy(tmp_path):
    """A copy of what tools/model_zoo.py reads and writes; returns its README."""
    shutil.copytree(os.path.join(REPO_ROOT, "configs"), tmp_path / "configs")
    (tmp_path / "tools").mkdir()
    shutil.copy(os.path.join(REPO_ROOT, "tools", "model_zoo.py"), tmp_path / "tools")
    readme = tmp_path / "projects" / "DisAlign" / "README.md"
    readme.parent.mkdir(parents=True)
    shutil.copy(os.path.join(REPO_ROOT, "projects", "DisAlign", "README.md"), readme)
    return readme


def _model_zoo(root, *args):
    script = os.path.join(root, "tools", "model_zoo.py")
    return run_script(script, *args)


def test_model_zoo_check_names_an_edited_table_and_the_script_restores_it(tmp_path):
    readme = _model_zoo_copy(tmp_path)
    original = readme.read_text()
    row = "| S1: ResNeXt-50 DisAlign* | 53.4 / 62.7 / 52.1 / 31.4 |"
    assert original.count(row) == 1
    readme.write_text(original.replace(row, row.replace("53.4", "54.3")))
    result = _model_zoo(tmp_path, "--check")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: the table 'ImageNet-LT / ResNeXt-50 32x4d, 90 epochs' of projects/DisAlign/"
        "README.md differs from the configs and configs/model_zoo.yaml (run python "
        "tools/model_zoo.py)"
    ]
    assert _model_zoo(tmp_path).returncode == 0
    assert readme.read_text() == original
    assert _model_zoo(tmp_path, "--check").returncode == 0


def test_model_zoo_check_names_a_missing_repeated_or_stale_entry(tmp_path):
    readme = _model_zoo_copy(tmp_path)
    original = readme.read_text()
    configs = tmp_path / "configs"
    # by rule, base configs and miniatures need no entry
    shutil.copy(configs / "LVIS-v1.0" / "Base-Mask-RCNN-FPN.yaml", configs / "Base-Other.yaml")
    shutil.copy(
        configs / "Miniature-LVIS" / "mask_rcnn_R_18_FPN_baseline.yaml",
        configs / "Miniature-LVIS" / "other.yaml",
    )
    assert _model_zoo(tmp_path, "--check").returncode == 0
    new = configs / "LVIS-v1.0" / "mask_rcnn_R_50_FPN_1x_other.yaml"
    shutil.copy(configs / "LVIS-v1.0" / "mask_rcnn_R_50_FPN_1x_baseline.yaml", new)
    for args in [("--check",), ()]:
        result = _model_zoo(tmp_path, *args)
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            "error: configs/model_zoo.yaml has no entry for "
            "LVIS-v1.0/mask_rcnn_R_50_FPN_1x_other.yaml"
        ]
    assert readme.read_text() == original
    # a config in two tables
    new.unlink()
    zoo = (configs / "model_zoo.yaml").read_text()
    entry = next(line for line in zoo.splitlines() if "fcn_R_50_512x512_160k_baseline.yaml" in line)
    (configs / "model_zoo.yaml").write_text(zoo.replace(entry, f"{entry}\n{entry}", 1))
    result = _model_zoo(tmp_path, "--check")
    assert result.returncode == 1 and result.stderr.splitlines() == [
        "error: configs/model_zoo.yaml is not laid out as its header says (ConstructorError: "
        "'ADE20K/fcn_R_50_512x512_160k_baseline.yaml' given twice in "
        # the table's mapping starts at its first entry, this one
        f'"{configs}/model_zoo.yaml", line {zoo.splitlines().index(entry) + 1}, column 9)'
    ]
    # and an entry whose config is gone
    (configs / "model_zoo.yaml").write_text(zoo)
    (configs / "ADE20K" / "fcn_R_50_512x512_160k_disalign.yaml").unlink()
    result = _model_zoo(tmp_path, "--check")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: configs/model_zoo.yaml lists ADE20K/fcn_R_50_512x512_160k_disalign.yaml, not "
        "found in configs/"
    ]


def test_check_datasets_reads_ade20k_folders(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    images, labels = root / "images" / "validation", root / "annotations_detectron2" / "validation"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    env = {"DETECTRON2_DATASETS": str(tmp_path)}
    result = _run("check_datasets.py", "ade20k_sem_seg_val", env=env)
    assert result.returncode == 1 and result.stdout.splitlines() == [
        f"bad: dataset 'ade20k_sem_seg_val': image directory '{images}' is empty",
        f"bad: dataset 'ade20k_sem_seg_val': label directory '{labels}' is empty",
    ]
    for stem in ("ADE_val_00000001", "ADE_val_00000002"):
        (images / f"{stem}.jpg").write_bytes(b"jpg")
    (labels / "ADE_val_00000001.png").write_bytes(b"png")
    result = _run("check_datasets.py", "ade20k_sem_seg_val", env=env)
    assert result.stdout.splitlines() == [
        f"bad: dataset 'ade20k_sem_seg_val': image '{images}/ADE_val_00000002.jpg' has no label "
        f"map in '{labels}'"
    ]
    (labels / "ADE_val_00000002.png").write_bytes(b"png")
    result = _run("check_datasets.py", "ade20k_sem_seg_val", env=env)
    assert result.returncode == 0
    assert result.stdout.splitlines() == ["ok: ade20k_sem_seg_val (2 images, 2 label maps)"]


def test_gpu_check_refuses_bad_arguments(tmp_path):
    script = os.path.join(REPO_ROOT, "tools", "gpu_check.sh")
    for args, expected in (
        (["--device", "tpu"], "error: --device must be cuda or cpu"),
        (["--fast"], "error: unknown argument '--fast' (see --help)"),
    ):
        result = subprocess.run(["bash", script, *args], capture_output=True, text=True)
        assert result.returncode == 2 and result.stderr.strip() == expected
