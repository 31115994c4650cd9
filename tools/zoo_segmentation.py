# -*- coding: utf-8 -*-
"""
The semantic segmentation experiments (see tools/generate_configs.py): ADE20K, FCN (dilated
ResNet, output stride 8) and DeepLabV3+ (output stride 16) with R-50 / R-101, 512x512 crops,
160K iterations at 32 images per batch and lr 0.01 (poly) for stage 1, as the paper;
``*_baseline`` and ``*_disalign`` (stage 2: 8K iterations, pixel GRW rho 0.3).
"""

from typing import Dict, List

from zoo_common import HEADER, indent, train_and_eval_commands

FOLDER = "ADE20K"
FOLDERS = [f"configs/{FOLDER}"]
HEADS = {
    "fcn": (
        "FCN",
        [
            "BACKBONE:",
            '  NAME: "build_resnet_deeplab_backbone"',
            "RESNETS:",
            "  RES4_DILATION: 2  # output stride 8",
            "  RES5_DILATION: 4",
            "  RES5_MULTI_GRID: [1, 1, 1]",
            '  OUT_FEATURES: ["res5"]',
            "SEM_SEG_HEAD:",
            '  NAME: "DisAlignFCNHead"',
            '  IN_FEATURES: ["res5"]',
            "  CONVS_DIM: 512",
        ],
    ),
    "deeplabv3plus": (
        "DeepLabV3+",
        [
            "BACKBONE:",
            '  NAME: "build_resnet_deeplab_backbone"',
            "RESNETS:",
            "  RES5_DILATION: 2  # output stride 16",
            "  RES5_MULTI_GRID: [1, 2, 4]",
            '  OUT_FEATURES: ["res2", "res5"]',
            "SEM_SEG_HEAD:",
            '  NAME: "DisAlignDeepLabV3PlusHead"',
            '  IN_FEATURES: ["res2", "res5"]',
            '  PROJECT_FEATURES: ["res2"]',
            "  PROJECT_CHANNELS: [48]",
            "  ASPP_CHANNELS: 256",
            "  ASPP_DILATIONS: [6, 12, 18]",
            "  CONVS_DIM: 256",
            "  COMMON_STRIDE: 4",
        ],
    ),
}
BACKBONES = {"R_50": ("R-50", 50), "R_101": ("R-101", 101)}
METHODS = [("baseline", "Baseline", None), ("disalign", "DisAlign", "baseline")]
# Paper (supplementary Table 6), ADE20K val: mIoU Average / Head / Body / Tail, then mAcc.
PAPER = {
    ("fcn", "R_50"): {
        "baseline": (36.1, 62.5, 38.1, 27.6, 45.4, 76.9, 48.8, 34.5),
        "disalign": (37.5, 62.6, 40.2, 28.8, 49.9, 76.7, 54.9, 39.0),
    },
    ("fcn", "R_101"): {  # the paper tests this row with multi-scale inference (not provided here)
        "baseline": (38.1, 64.6, 40.0, 29.6, 46.3, 78.6, 49.3, 35.4),
        "disalign": (40.1, 65.0, 42.8, 31.3, 51.4, 78.6, 56.1, 40.6),
    },
    ("deeplabv3plus", "R_50"): {
        "baseline": (41.4, 67.0, 43.3, 33.2, 50.2, 80.6, 52.9, 40.1),
        "disalign": (43.7, 67.4, 46.1, 35.7, 55.9, 80.6, 59.7, 46.4),
    },
    ("deeplabv3plus", "R_101"): {
        "baseline": (45.6, 66.6, 47.5, 38.6, 57.8, 78.8, 62.1, 48.9),
        "disalign": (46.2, 66.6, 48.0, 39.4, 60.3, 79.1, 64.9, 51.7),
    },
}


def name_of(head, backbone, method):
    return f"{head}_{backbone}_512x512_160k_{method}"


def dataset_base() -> str:
    lines = [
        "# ADE20K (detectron2's ade20k_sem_seg_train / val, 150 classes), the paper's training",
        "# recipe: 512x512 crops of images rescaled by 0.5-2.0, 160K iterations of 32 images at",
        "# lr 0.01 with the poly schedule. ImageNet-pretrained trunks (detectron2's MSRA weights).",
        '_BASE_: "../Base-DisAlign-SemSeg.yaml"',
        "MODEL:",
        "  BACKBONE:",
        "    FREEZE_AT: 0",
        "  RESNETS:",
        '    NORM: "SyncBN"',
        '    STEM_TYPE: "basic"',
        "    STRIDE_IN_1X1: True",
        "  SEM_SEG_HEAD:",
        "    NUM_CLASSES: 150",
        '    NORM: "SyncBN"',
        "DATASETS:",
        '  TRAIN: ("ade20k_sem_seg_train",)',
        '  TEST: ("ade20k_sem_seg_val",)',
        "INPUT:",
        f"  MIN_SIZE_TRAIN: ({', '.join(str(s) for s in range(256, 1025, 32))})",
        '  MIN_SIZE_TRAIN_SAMPLING: "choice"',
        "  MAX_SIZE_TRAIN: 4096",
        "  MIN_SIZE_TEST: 512",
        "  MAX_SIZE_TEST: 2048",
        "  CROP:",
        "    ENABLED: True",
        '    TYPE: "absolute"',
        "    SIZE: (512, 512)",
        "    SINGLE_CATEGORY_MAX_AREA: 0.75",
        "SOLVER:",
        "  IMS_PER_BATCH: 32",
        "  BASE_LR: 0.01",
        "  MAX_ITER: 160000",
    ]
    return HEADER + "\n".join(lines) + "\n"


def experiment(head, backbone, method, stage1) -> str:
    head_title, head_lines = HEADS[head]
    backbone_title, depth = BACKBONES[backbone]
    name = name_of(head, backbone, method)
    title = f"ADE20K, {head_title} {backbone_title}, 512x512, 160K iterations"
    output = f'OUTPUT_DIR: "output/{FOLDER}/{name}"'
    if method == "baseline":
        model = [f'WEIGHTS: "detectron2://ImageNetPretrained/MSRA/{backbone_title}.pkl"']
        model += head_lines
        model.insert(model.index("RESNETS:") + 1, f"  DEPTH: {depth}")
        lines = [f"# {title}: baseline, stage 1 of DisAlign.", f'_BASE_: "Base-{FOLDER}.yaml"']
        lines += ["MODEL:", *indent(model, 2), output]
    else:
        stage1_name = name_of(head, backbone, stage1)
        lines = [
            f"# {title}: DisAlign, stage 2. Everything of {stage1_name}",
            "# is frozen; alpha, beta and the per-pixel confidence learn with pixel GRW (rho 0.3),",
            "# 8K iterations, poly schedule.",
            f'_BASE_: "{stage1_name}.yaml"',
            "MODEL:",
            f'  WEIGHTS: "output/{FOLDER}/{stage1_name}/model_final.pth"',
            "  DISALIGN:",
            "    CALIBRATION: True",
            "    ALIGNMENT_STAGE: True",
            "    GRW:",
            "      ENABLED: True",
            '      COUNT_BY: "pixels"',
            "      RHO: 0.3",
            "SOLVER:",
            "  MAX_ITER: 8000",
            output,
        ]
    return HEADER + "\n".join(lines) + "\n"


def config_files() -> Dict[str, str]:
    """All generated segmentation configs: {path relative to the repository: text}."""
    files = {f"configs/{FOLDER}/Base-{FOLDER}.yaml": dataset_base()}
    for head in HEADS:
        for backbone in BACKBONES:
            for method, _, stage1 in METHODS:
                path = f"configs/{FOLDER}/{name_of(head, backbone, method)}.yaml"
                files[path] = experiment(head, backbone, method, stage1)
    return files


def model_zoo() -> str:
    """The segmentation model-zoo tables of projects/DisAlign/README.md."""
    out: List[str] = []
    for head, (head_title, _) in HEADS.items():
        for backbone, (backbone_title, _) in BACKBONES.items():
            paper = PAPER[(head, backbone)]
            out += [f"#### {head_title} {backbone_title}", ""]
            out += [
                "| method | config | paper mIoU Average / Head / Body / Tail "
                "| paper mAcc Average / Head / Body / Tail | ours |",
                "|---|---|---|---|---|",
            ]
            commands = []
            for method, title, stage1 in METHODS:
                name = name_of(head, backbone, method)
                stage1_name = name_of(head, backbone, stage1) if stage1 else None
                numbers = paper[method]
                miou = " / ".join(f"{v:.1f}" for v in numbers[:4])
                macc = " / ".join(f"{v:.1f}" for v in numbers[4:])
                out.append(
                    f"| {title} | [{name}](../../configs/{FOLDER}/{name}.yaml) | {miou} | {macc} "
                    "| not measured |"
                )
                commands += [f"# {title}"] + train_and_eval_commands(FOLDER, name, stage1_name)
            out += ["", "```bash"] + commands + ["```", ""]
    return "\n".join(out)
