# -*- coding: utf-8 -*-
"""
The LVIS experiments (see tools/generate_configs.py): LVIS v0.5 and v1.0, Mask R-CNN and Cascade
Mask R-CNN, R-50/R-101/X-101-32x8d FPN, 1x and 2x: ``*_baseline`` (stage 1 of DisAlign),
``*_cosine`` (cosine-head baseline, stage 1 of DisAlign*), ``*_disalign`` and
``*_disalign_cosine`` (their stage 2). The ablations of the paper (and repeat-factor sampling)
are variants of LVIS v0.5 Mask R-CNN R-50-FPN 1x in ``ablations/``.
"""

from typing import Dict, List, Tuple

from zoo_common import HEADER, indent, train_and_eval_commands

FOLDERS = ["configs/LVIS-v0.5", "configs/LVIS-v1.0"]
DATASETS = {
    "LVIS-v0.5": {
        "title": "LVIS v0.5",
        "train": "lvis_v0.5_train",
        "test": "lvis_v0.5_val",
        "classes": 1230,
    },
    "LVIS-v1.0": {
        "title": "LVIS v1.0",
        "train": "lvis_v1_train",
        "test": "lvis_v1_val",
        "classes": 1203,
    },
}
ARCHITECTURES = {"mask_rcnn": "Mask R-CNN", "cascade_mask_rcnn": "Cascade Mask R-CNN"}
BACKBONES = {  # detectron2's ImageNet-pretrained backbones
    "R_50": (
        "R-50",
        ['WEIGHTS: "detectron2://ImageNetPretrained/MSRA/R-50.pkl"', "RESNETS:", "  DEPTH: 50"],
    ),
    "R_101": (
        "R-101",
        ['WEIGHTS: "detectron2://ImageNetPretrained/MSRA/R-101.pkl"', "RESNETS:", "  DEPTH: 101"],
    ),
    "X_101_32x8d": (
        "X-101-32x8d",
        [
            'WEIGHTS: "detectron2://ImageNetPretrained/FAIR/X-101-32x8d.pkl"',
            "PIXEL_STD: [57.375, 57.120, 58.395]",
            "RESNETS:",
            "  DEPTH: 101",
            "  STRIDE_IN_1X1: False",
            "  NUM_GROUPS: 32",
            "  WIDTH_PER_GROUP: 8",
        ],
    ),
}
SCHEDULES = {"1x": ((60000, 80000), 90000), "2x": ((120000, 160000), 180000)}
STAGE2_SCHEDULE = ((6000, 8000), 9000)  # the paper: 9K iterations at lr 0.02, 16 images
# (method suffix, its name in the paper, stage-1 suffix if it is a stage 2)
METHODS = [
    ("baseline", "Baseline", None),
    ("disalign", "DisAlign", "baseline"),
    ("cosine", "Baseline*", None),
    ("disalign_cosine", "DisAlign*", "cosine"),
]
# Paper, LVIS v0.5 val (Tables 8 and 9; the paper's ResNeXt-101 is listed as X-101-32x8d):
# bbox AP, APr, APc, APf, then mask AP, APr, APc, APf.
PAPER = {
    ("mask_rcnn", "R_50"): {
        "baseline": (20.8, 3.3, 19.5, 29.4, 21.2, 3.7, 21.6, 28.4),
        "disalign": (23.9, 7.5, 25.0, 29.1, 24.2, 8.5, 26.2, 28.0),
        "cosine": (22.8, 10.3, 21.1, 30.1, 23.8, 11.5, 23.7, 28.9),
        "disalign_cosine": (25.6, 13.7, 25.6, 30.5, 26.3, 14.9, 27.6, 29.2),
    },
    ("mask_rcnn", "R_101"): {
        "baseline": (22.2, 2.6, 21.1, 31.6, 22.6, 2.7, 22.8, 30.2),
        "disalign": (25.6, 9.0, 26.5, 30.9, 25.8, 10.3, 27.6, 29.6),
        "cosine": (24.5, 10.1, 23.2, 31.8, 25.1, 11.2, 25.2, 30.4),
        "disalign_cosine": (27.5, 15.9, 27.6, 32.0, 28.2, 17.8, 29.7, 30.5),
    },
    ("mask_rcnn", "X_101_32x8d"): {
        "baseline": (24.5, 3.9, 24.1, 33.1, 25.0, 4.2, 26.3, 31.8),
        "disalign": (26.8, 8.8, 27.6, 33.0, 27.4, 11.0, 29.3, 31.6),
        "cosine": (26.9, 12.1, 26.1, 33.8, 27.7, 15.2, 28.2, 32.2),
        "disalign_cosine": (29.5, 17.7, 29.5, 33.8, 30.0, 19.6, 31.5, 32.3),
    },
    ("cascade_mask_rcnn", "R_50"): {
        "baseline": (25.2, 3.7, 24.3, 34.8, 23.0, 3.5, 23.0, 30.8),
        "disalign": (28.7, 9.0, 30.2, 34.6, 26.1, 8.4, 28.1, 30.7),
        "cosine": (28.8, 15.4, 28.2, 34.9, 26.2, 13.6, 26.3, 31.1),
        "disalign_cosine": (32.2, 21.6, 33.3, 35.2, 29.4, 19.4, 30.9, 31.4),
    },
    ("cascade_mask_rcnn", "R_101"): {
        "baseline": (26.1, 3.4, 25.4, 35.9, 24.0, 3.3, 24.2, 32.0),
        "disalign": (29.7, 8.1, 31.7, 35.8, 27.3, 7.8, 29.7, 32.0),
        "cosine": (30.4, 15.5, 30.3, 36.5, 28.1, 13.9, 29.2, 32.4),
        "disalign_cosine": (33.7, 22.1, 34.9, 36.9, 30.9, 19.0, 33.2, 32.8),
    },
    ("cascade_mask_rcnn", "X_101_32x8d"): {
        "baseline": (28.4, 4.6, 28.6, 37.5, 26.1, 4.6, 27.2, 33.4),
        "disalign": (31.3, 9.5, 33.2, 37.7, 28.7, 9.0, 31.1, 33.6),
        "cosine": (32.6, 18.5, 32.8, 37.9, 29.8, 16.9, 30.9, 33.7),
        "disalign_cosine": (34.7, 24.6, 35.3, 38.1, 31.8, 22.0, 33.2, 33.9),
    },
}
ABLATION_BASE = "mask_rcnn_R_50_FPN_1x"
# (name, base suffix, what it changes, MODEL.DISALIGN lines or other top-level lines)
ABLATIONS = [
    (
        "disalign_no_grw",
        "disalign",
        "calibration without GRW (plain cross-entropy)",
        {"MODEL.DISALIGN": ["GRW:", "  ENABLED: False"]},
    ),
    (
        "disalign_no_calibration",
        "disalign",
        "GRW without calibration: stage 2 re-trains the base classifier",
        {"MODEL.DISALIGN": ["CALIBRATION: False", 'ALIGNMENT_STAGE_TRAINABLE: "classifier"']},
    ),
    (
        "classifier_retraining",
        "disalign",
        "neither: stage 2 re-trains the base classifier with cross-entropy",
        {
            "MODEL.DISALIGN": [
                "CALIBRATION: False",
                'ALIGNMENT_STAGE_TRAINABLE: "classifier"',
                "GRW:",
                "  ENABLED: False",
            ]
        },
    ),
    (
        "disalign_no_confidence",
        "disalign",
        "input-agnostic calibration (sigma = 1)",
        {"MODEL.DISALIGN": ["CONFIDENCE: False"]},
    ),
    (
        "disalign_magnitude_only",
        "disalign",
        "magnitude alpha only (beta = 0)",
        {"MODEL.DISALIGN": ["MARGIN: False"]},
    ),
    (
        "disalign_margin_only",
        "disalign",
        "margin beta only (alpha = 1)",
        {"MODEL.DISALIGN": ["MAGNITUDE: False"]},
    ),
    (
        "disalign_magnitude_only_no_confidence",
        "disalign",
        "magnitude only, input-agnostic",
        {"MODEL.DISALIGN": ["MARGIN: False", "CONFIDENCE: False"]},
    ),
    (
        "disalign_margin_only_no_confidence",
        "disalign",
        "margin only, input-agnostic",
        {"MODEL.DISALIGN": ["MAGNITUDE: False", "CONFIDENCE: False"]},
    ),
    (
        "disalign_rho_0.4",
        "disalign",
        "GRW scale rho 0.4",
        {"MODEL.DISALIGN": ["GRW:", "  RHO: 0.4"]},
    ),
    (
        "disalign_rho_1.2",
        "disalign",
        "GRW scale rho 1.2",
        {"MODEL.DISALIGN": ["GRW:", "  RHO: 1.2"]},
    ),
    (
        "disalign_rho_1.6",
        "disalign",
        "GRW scale rho 1.6",
        {"MODEL.DISALIGN": ["GRW:", "  RHO: 1.6"]},
    ),
    (
        "disalign_grw_instances",
        "disalign",
        "GRW frequencies from instance counts",
        {"MODEL.DISALIGN": ["GRW:", '  COUNT_BY: "instances"']},
    ),
    (
        "baseline_rfs",
        "baseline",
        "stage 1 with repeat-factor sampling (threshold 0.001)",
        {"DATALOADER": ['SAMPLER_TRAIN: "RepeatFactorTrainingSampler"', "REPEAT_THRESHOLD: 0.001"]},
    ),
]


def _solver(steps_iters) -> List[str]:
    steps, max_iter = steps_iters
    return ["SOLVER:", f"  STEPS: ({steps[0]}, {steps[1]})", f"  MAX_ITER: {max_iter}"]


def name_of(arch, backbone, schedule, method):
    return f"{arch}_{backbone}_FPN_{schedule}_{method}"


def dataset_base(folder: str, arch: str) -> Tuple[str, str]:
    d = DATASETS[folder]
    if arch == "mask_rcnn":
        body = [
            f"# {d['title']}: the dataset, its {d['classes']} classes, LVIS' evaluation settings.",
            '_BASE_: "../Base-DisAlign-RCNN-FPN.yaml"',
            "MODEL:",
            "  ROI_HEADS:",
            f"    NUM_CLASSES: {d['classes']}",
            "    SCORE_THRESH_TEST: 0.0001",
            "DATASETS:",
            f'  TRAIN: ("{d["train"]}",)',
            f'  TEST: ("{d["test"]}",)',
            "TEST:",
            "  DETECTIONS_PER_IMAGE: 300  # LVIS evaluates up to 300 detections per image",
            "DATALOADER:",
            '  SAMPLER_TRAIN: "TrainingSampler"  # uniform, as the paper\'s baselines',
        ]
        return "Base-Mask-RCNN-FPN.yaml", "\n".join(body) + "\n"
    body = [
        f"# {d['title']}: Cascade Mask R-CNN, the DisAlign predictor at each of its three stages.",
        '_BASE_: "Base-Mask-RCNN-FPN.yaml"',
        "MODEL:",
        "  RPN:",
        "    POST_NMS_TOPK_TRAIN: 2000",
        "  ROI_HEADS:",
        '    NAME: "DisAlignCascadeROIHeads"',
        "  ROI_BOX_HEAD:",
        "    CLS_AGNOSTIC_BBOX_REG: True",
    ]
    return "Base-Cascade-Mask-RCNN-FPN.yaml", "\n".join(body) + "\n"


def experiment(folder, arch, backbone, schedule, method, stage1) -> str:
    d = DATASETS[folder]
    name = name_of(arch, backbone, schedule, method)
    title = f"{d['title']}, {ARCHITECTURES[arch]} {BACKBONES[backbone][0]}-FPN, {schedule}"
    output = f'OUTPUT_DIR: "output/{folder}/{name}"'
    if method == "baseline":
        base = (
            "Base-Mask-RCNN-FPN.yaml" if arch == "mask_rcnn" else "Base-Cascade-Mask-RCNN-FPN.yaml"
        )
        lines = [
            f"# {title}: baseline, stage 1 of DisAlign.",
            f'_BASE_: "{base}"',
            "MODEL:",
        ] + indent(BACKBONES[backbone][1], 2)
        lines += _solver(SCHEDULES[schedule]) + [output]
    elif method == "cosine":
        lines = [
            f"# {title}: Baseline* (cosine head), stage 1 of DisAlign*.",
            f'_BASE_: "{name_of(arch, backbone, schedule, "baseline")}.yaml"',
            "MODEL:",
            "  DISALIGN:",
            '    CLS_HEAD: "cosine"',
            output,
        ]
    else:
        stage1_name = name_of(arch, backbone, schedule, stage1)
        star = "*" if method.endswith("cosine") else ""
        lines = (
            [
                f"# {title}: DisAlign{star}, stage 2.",
                f"# Everything of the stage-1 model {stage1_name} is frozen;",
                "# alpha, beta and the confidence layer learn with GRW (rho 0.8), 9K iterations",
                "# at lr 0.02, 16 images per batch.",
                f'_BASE_: "{stage1_name}.yaml"',
                "MODEL:",
                f'  WEIGHTS: "output/{folder}/{stage1_name}/model_final.pth"',
                "  DISALIGN:",
                "    CALIBRATION: True",
                "    ALIGNMENT_STAGE: True",
                "    GRW:",
                "      ENABLED: True",
                "      RHO: 0.8",
            ]
            + _solver(STAGE2_SCHEDULE)
            + [output]
        )
    return HEADER + "\n".join(lines) + "\n"


def ablation(name, base_method, description, changes: Dict[str, List[str]]) -> str:
    lines = [
        f"# LVIS v0.5, Mask R-CNN R-50-FPN 1x, ablation: {description}.",
        f'_BASE_: "../{ABLATION_BASE}_{base_method}.yaml"',
    ]
    for key, values in changes.items():
        if key == "MODEL.DISALIGN":
            lines += ["MODEL:", "  DISALIGN:"] + indent(values, 4)
        else:
            lines += [f"{key}:"] + indent(values, 2)
    lines.append(f'OUTPUT_DIR: "output/LVIS-v0.5/ablations/{ABLATION_BASE}_{name}"')
    return HEADER + "\n".join(lines) + "\n"


def config_files() -> Dict[str, str]:
    """All generated configs: {path relative to the repository: text}."""
    files = {}
    for folder in DATASETS:
        for arch in ARCHITECTURES:
            base_name, text = dataset_base(folder, arch)
            files[f"configs/{folder}/{base_name}"] = HEADER + text
            for backbone in BACKBONES:
                for schedule in SCHEDULES:
                    for method, _, stage1 in METHODS:
                        path = f"configs/{folder}/{name_of(arch, backbone, schedule, method)}.yaml"
                        files[path] = experiment(folder, arch, backbone, schedule, method, stage1)
    for name, base_method, description, changes in ABLATIONS:
        path = f"configs/LVIS-v0.5/ablations/{ABLATION_BASE}_{name}.yaml"
        files[path] = ablation(name, base_method, description, changes)
    return files


def model_zoo() -> str:
    """The LVIS model-zoo tables of projects/DisAlign/README.md."""
    out = []
    for folder, d in DATASETS.items():
        out += [f"### {d['title']}", ""]
        for arch, arch_title in ARCHITECTURES.items():
            for backbone, (backbone_title, _) in BACKBONES.items():
                for schedule in SCHEDULES:
                    paper = PAPER.get((arch, backbone), {}) if folder == "LVIS-v0.5" else {}
                    paper = paper if schedule == "1x" else {}
                    out += [f"#### {arch_title} {backbone_title}-FPN {schedule}", ""]
                    out += [
                        "| method | config | stage 1 | paper bbox AP / APr / APc / APf "
                        "| paper mask AP / APr / APc / APf | ours |",
                        "|---|---|---|---|---|---|",
                    ]
                    commands = []
                    for method, title, stage1 in METHODS:
                        name = name_of(arch, backbone, schedule, method)
                        stage1_name = name_of(arch, backbone, schedule, stage1) if stage1 else None
                        numbers = paper.get(method)
                        bbox = " / ".join(f"{v:.1f}" for v in numbers[:4]) if numbers else "-"
                        mask = " / ".join(f"{v:.1f}" for v in numbers[4:]) if numbers else "-"
                        out.append(
                            f"| {title} | [{name}](../../configs/{folder}/{name}.yaml) | "
                            f"{stage1_name or '-'} | {bbox} | {mask} | not measured |"
                        )
                        commands += [f"# {title}"] + train_and_eval_commands(
                            folder, name, stage1_name
                        )
                    out += ["", "```bash"] + commands + ["```", ""]
    return "\n".join(out)
