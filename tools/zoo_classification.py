# -*- coding: utf-8 -*-
"""
The classification experiments (see tools/generate_configs.py): ImageNet-LT (ResNet and ResNeXt
50/101/152, 90 epochs), iNaturalist 2018 (ResNet 50/101/152, 90 and 200 epochs) and Places-LT
(ResNet 50/101/152 from ImageNet-pretrained trunks, 30 epochs), each as ``*_baseline``,
``*_cosine`` (Baseline*), ``*_disalign`` and ``*_disalign_cosine`` (DisAlign*, stage 2). The
ablations of the paper's Tables 2 and 3 are ImageNet-LT variants in ``ablations/``.

Epochs become iterations at 256 images per batch: ceil(training images / 256) per epoch.
"""

import math
from typing import Dict, List

from zoo_common import HEADER, indent, train_and_eval_commands

IMAGES_PER_BATCH = 256
DATASETS = {
    "ImageNet-LT": {
        "title": "ImageNet-LT",
        "train": "imagenet_lt_train",
        "test": "imagenet_lt_test",
        "classes": 1000,
        "train_images": 115846,
        "epochs": (90,),
        "stage2_epochs": 10,
        "backbones": ("R_50", "X_50_32x4d", "R_101", "X_101_32x4d", "R_152", "X_152_32x4d"),
    },
    "iNaturalist-2018": {
        "title": "iNaturalist 2018",
        "train": "inaturalist2018_train",
        "test": "inaturalist2018_val",
        "classes": 8142,
        "train_images": 437513,
        "epochs": (90, 200),
        "stage2_epochs": 30,
        "backbones": ("R_50", "R_101", "R_152"),
    },
    "Places-LT": {
        "title": "Places-LT",
        "train": "places_lt_train",
        "test": "places_lt_test",
        "classes": 365,
        "train_images": 62500,
        "epochs": (30,),
        "stage2_epochs": 10,
        "backbones": ("R_50", "R_101", "R_152"),
        "pretrained": True,  # ImageNet-pretrained trunk, stage 1 trains only res5
    },
}
FOLDERS = [f"configs/{folder}" for folder in DATASETS]
BACKBONE_TITLES = {
    "R_50": "ResNet-50",
    "R_101": "ResNet-101",
    "R_152": "ResNet-152",
    "X_50_32x4d": "ResNeXt-50 32x4d",
    "X_101_32x4d": "ResNeXt-101 32x4d",
    "X_152_32x4d": "ResNeXt-152 32x4d",
}
# (method suffix, its name in the paper, stage-1 suffix if it is a stage 2, GRW rho)
METHODS = [
    ("baseline", "Baseline", None, None),
    ("disalign", "DisAlign", "baseline", 1.2),
    ("cosine", "Baseline*", None, None),
    ("disalign_cosine", "DisAlign*", "cosine", 1.5),
]
# Paper (supplementary Tables 1, 4, 5): top-1 accuracy Average, Many, Medium, Few.
PAPER = {
    ("ImageNet-LT", "R_50", 90): {
        "baseline": (41.6, 64.0, 33.8, 5.8),
        "cosine": (48.4, 68.4, 41.7, 15.2),
        "disalign": (51.3, 59.9, 49.9, 31.8),
        "disalign_cosine": (52.9, 61.3, 52.2, 31.4),
    },
    ("ImageNet-LT", "X_50_32x4d", 90): {
        "baseline": (44.4, 65.9, 37.5, 7.7),
        "cosine": (49.2, 68.9, 42.8, 15.6),
        "disalign": (52.6, 61.5, 50.7, 33.1),
        "disalign_cosine": (53.4, 62.7, 52.1, 31.4),
    },
    ("ImageNet-LT", "R_101", 90): {
        "baseline": (44.2, 66.6, 36.8, 7.1),
        "cosine": (49.5, 69.3, 43.1, 15.9),
        "disalign": (52.7, 61.7, 51.1, 32.4),
        "disalign_cosine": (54.1, 63.2, 53.1, 31.9),
    },
    ("ImageNet-LT", "X_101_32x4d", 90): {
        "baseline": (44.8, 66.2, 37.8, 8.6),
        "cosine": (50.0, 69.9, 43.7, 15.9),
        "disalign": (53.6, 63.3, 51.2, 34.6),
        "disalign_cosine": (54.6, 64.7, 53.0, 31.7),
    },
    ("ImageNet-LT", "R_152", 90): {
        "baseline": (44.9, 66.9, 37.7, 7.7),
        "cosine": (50.2, 70.1, 43.9, 16.1),
        "disalign": (53.7, 62.8, 51.9, 34.2),
        "disalign_cosine": (54.8, 63.9, 53.9, 32.5),
    },
    ("ImageNet-LT", "X_152_32x4d", 90): {
        "baseline": (47.8, 69.1, 41.4, 10.4),
        "cosine": (50.5, 70.0, 44.4, 16.5),
        "disalign": (54.5, 64.5, 52.0, 34.7),
        "disalign_cosine": (55.0, 65.1, 53.3, 32.2),
    },
    ("iNaturalist-2018", "R_50", 90): {
        "baseline": (61.7, 72.2, 63.0, 57.2),
        "cosine": (64.8, 75.8, 66.6, 59.7),
        "disalign": (67.8, 64.1, 68.5, 67.9),
        "disalign_cosine": (69.5, 61.6, 70.8, 69.9),
    },
    ("iNaturalist-2018", "R_50", 200): {
        "baseline": (65.8, 75.7, 66.9, 61.7),
        "cosine": (66.2, 77.3, 68.3, 60.7),
        "disalign": (70.6, 69.0, 71.1, 70.2),
        "disalign_cosine": (70.2, 68.0, 71.3, 69.4),
    },
    ("iNaturalist-2018", "R_101", 90): {
        "baseline": (64.6, 75.9, 66.0, 59.9),
        "cosine": (66.4, 76.8, 68.5, 61.1),
        "disalign": (70.0, 68.3, 70.4, 69.9),
        "disalign_cosine": (70.8, 65.4, 72.2, 70.4),
    },
    ("iNaturalist-2018", "R_101", 200): {
        "baseline": (67.3, 75.5, 68.9, 63.2),
        "cosine": (68.0, 78.9, 69.7, 63.0),
        "disalign": (72.9, 73.0, 73.5, 72.1),
        "disalign_cosine": (71.9, 69.3, 72.6, 71.8),
    },
    ("iNaturalist-2018", "R_152", 90): {
        "baseline": (65.0, 75.2, 66.3, 60.7),
        "cosine": (67.3, 77.8, 69.4, 61.8),
        "disalign": (71.3, 70.7, 71.8, 70.8),
        "disalign_cosine": (71.7, 67.1, 73.0, 71.3),
    },
    ("iNaturalist-2018", "R_152", 200): {
        "baseline": (69.0, 78.2, 70.6, 64.7),
        "cosine": (69.0, 78.5, 71.0, 64.0),
        "disalign": (74.1, 74.9, 74.4, 73.5),
        "disalign_cosine": (72.8, 70.6, 73.6, 72.3),
    },
    ("Places-LT", "R_50", 30): {
        "baseline": (29.2, 45.3, 25.5, 8.0),
        "disalign": (37.8, 39.3, 40.7, 28.5),
    },
    ("Places-LT", "R_101", 30): {
        "baseline": (30.2, 46.1, 26.9, 8.4),
        "disalign": (38.5, 39.1, 42.0, 29.1),
    },
    ("Places-LT", "R_152", 30): {
        "baseline": (30.2, 45.7, 27.3, 8.2),
        "disalign": (39.3, 40.4, 42.4, 30.1),
    },
}
# ImageNet-LT ablations: (name, the stage-2 config they vary, MODEL.DISALIGN lines, description,
# paper average top-1). Table 2 is ResNeXt-50 with the cosine head; Table 3 ResNet-50 (its partial
# columns could not be matched to their rows reliably, so only its end points are quoted).
ABLATIONS = [
    (
        "X_50_32x4d_90e_classifier_retraining_cosine",
        "X_50_32x4d_90e_disalign_cosine",
        [
            "CALIBRATION: False",
            'ALIGNMENT_STAGE_TRAINABLE: "classifier"',
            "GRW:",
            "  ENABLED: False",
        ],
        "stage 2 re-trains the cosine classifier with cross-entropy (the paper's cRT* row, without "
        "class-balanced sampling)",
        49.7,
    ),
    (
        "X_50_32x4d_90e_grw_only_cosine",
        "X_50_32x4d_90e_disalign_cosine",
        ["CALIBRATION: False", 'ALIGNMENT_STAGE_TRAINABLE: "classifier"'],
        "stage 2 re-trains the cosine classifier with GRW, no calibration (Table 2)",
        51.9,
    ),
    (
        "R_50_90e_grw_only",
        "R_50_90e_disalign",
        ["CALIBRATION: False", 'ALIGNMENT_STAGE_TRAINABLE: "classifier"'],
        "stage 2 re-trains the classifier with GRW, no calibration (Table 3)",
        49.9,
    ),
    (
        "R_50_90e_no_grw",
        "R_50_90e_disalign",
        ["GRW:", "  ENABLED: False"],
        "calibration without GRW (Table 2's other half)",
        None,
    ),
    (
        "R_50_90e_no_confidence",
        "R_50_90e_disalign",
        ["CONFIDENCE: False"],
        "input-agnostic calibration, sigma = 1 (Table 3)",
        None,
    ),
    (
        "R_50_90e_magnitude_only",
        "R_50_90e_disalign",
        ["MARGIN: False"],
        "magnitude alpha only (Table 3)",
        None,
    ),
    (
        "R_50_90e_margin_only",
        "R_50_90e_disalign",
        ["MAGNITUDE: False"],
        "margin beta only (Table 3)",
        None,
    ),
    (
        "R_50_90e_magnitude_only_no_confidence",
        "R_50_90e_disalign",
        ["MARGIN: False", "CONFIDENCE: False"],
        "magnitude only, input-agnostic (Table 3)",
        None,
    ),
    (
        "R_50_90e_margin_only_no_confidence",
        "R_50_90e_disalign",
        ["MAGNITUDE: False", "CONFIDENCE: False"],
        "margin only, input-agnostic (Table 3)",
        None,
    ),
]


def _iterations(d, epochs):
    return math.ceil(d["train_images"] / IMAGES_PER_BATCH) * epochs


def name_of(backbone, epochs, method):
    return f"{backbone}_{epochs}e_{method}"


def _backbone_lines(backbone, pretrained):
    kind, depth = backbone.split("_")[0], int(backbone.split("_")[1])
    lines = []
    if pretrained:
        lines.append(f'WEIGHTS: "pretrained/torchvision-{backbone.replace("_", "-")}.pkl"')
    lines += ["RESNETS:", f"  DEPTH: {depth}"]
    if kind == "X":
        lines += ["  NUM_GROUPS: 32", "  WIDTH_PER_GROUP: 4"]
    return lines


def dataset_base(folder) -> str:
    d = DATASETS[folder]
    lines = [
        f"# {d['title']}: the dataset and its {d['classes']} classes.",
        '_BASE_: "../Base-DisAlign-Classifier.yaml"',
        "MODEL:",
        "  IMAGE_CLASSIFIER:",
        f"    NUM_CLASSES: {d['classes']}",
    ]
    if d.get("pretrained"):
        lines += [
            "  BACKBONE:",
            "    FREEZE_AT: 4  # stage 1 trains only res5 of the ImageNet-pretrained trunk",
        ]
    lines += ["DATASETS:", f'  TRAIN: ("{d["train"]}",)', f'  TEST: ("{d["test"]}",)']
    return HEADER + "\n".join(lines) + "\n"


def _stage2_lines(folder, stage1_name, rho, epochs_note):
    d = DATASETS[folder]
    return [
        f'  WEIGHTS: "output/{folder}/{stage1_name}/model_final.pth"',
        "  DISALIGN:",
        "    CALIBRATION: True",
        "    ALIGNMENT_STAGE: True",
        "    GRW:",
        "      ENABLED: True",
        f"      RHO: {rho}",
    ], [
        "SOLVER:",
        "  BASE_LR: 0.1  # restarted, cosine decay to 0",
        f"  MAX_ITER: {_iterations(d, d['stage2_epochs'])}  # {epochs_note}",
    ]


def experiment(folder, backbone, epochs, method, stage1, rho) -> str:
    d = DATASETS[folder]
    name = name_of(backbone, epochs, method)
    title = f"{d['title']}, {BACKBONE_TITLES[backbone]}, {epochs} epochs"
    output = f'OUTPUT_DIR: "output/{folder}/{name}"'
    if method == "baseline":
        lines = [f"# {title}: baseline, stage 1 of DisAlign.", f'_BASE_: "Base-{folder}.yaml"']
        lines.append("MODEL:")
        lines += indent(_backbone_lines(backbone, d.get("pretrained")), 2)
        lines += [
            "SOLVER:",
            f"  MAX_ITER: {_iterations(d, epochs)}  # {epochs} epochs at 256 images per batch",
            output,
        ]
    elif method == "cosine":
        lines = [
            f"# {title}: Baseline* (cosine head), stage 1 of DisAlign*.",
            f'_BASE_: "{name_of(backbone, epochs, "baseline")}.yaml"',
            "MODEL:",
            "  DISALIGN:",
            '    CLS_HEAD: "cosine"',
            output,
        ]
    else:
        stage1_name = name_of(backbone, epochs, stage1)
        star = "*" if method.endswith("cosine") else ""
        model, solver = _stage2_lines(folder, stage1_name, rho, f"{d['stage2_epochs']} epochs")
        lines = [
            f"# {title}: DisAlign{star}, stage 2. Trunk and classifier of {stage1_name}",
            f"# are frozen; alpha, beta and the confidence layer learn with GRW (rho {rho}).",
            f'_BASE_: "{stage1_name}.yaml"',
            "MODEL:",
            *model,
            *solver,
            output,
        ]
    return HEADER + "\n".join(lines) + "\n"


def ablation(name, stage2_name, disalign_lines, description) -> str:
    lines = [
        f"# ImageNet-LT ablation: {description}.",
        f'_BASE_: "../{stage2_name}.yaml"',
        "MODEL:",
        "  DISALIGN:",
        *indent(disalign_lines, 4),
        f'OUTPUT_DIR: "output/ImageNet-LT/ablations/{name}"',
    ]
    return HEADER + "\n".join(lines) + "\n"


def config_files() -> Dict[str, str]:
    """All generated classification configs: {path relative to the repository: text}."""
    files = {}
    for folder, d in DATASETS.items():
        files[f"configs/{folder}/Base-{folder}.yaml"] = dataset_base(folder)
        for backbone in d["backbones"]:
            for epochs in d["epochs"]:
                for method, _, stage1, rho in METHODS:
                    path = f"configs/{folder}/{name_of(backbone, epochs, method)}.yaml"
                    files[path] = experiment(folder, backbone, epochs, method, stage1, rho)
    for name, stage2_name, lines, description, _ in ABLATIONS:
        files[f"configs/ImageNet-LT/ablations/{name}.yaml"] = ablation(
            name, stage2_name, lines, description
        )
    return files


def model_zoo() -> str:
    """The classification model-zoo tables of projects/DisAlign/README.md."""
    out: List[str] = []
    for folder, d in DATASETS.items():
        out += [f"### {d['title']}", ""]
        for backbone in d["backbones"]:
            for epochs in d["epochs"]:
                paper = PAPER.get((folder, backbone, epochs), {})
                out += [f"#### {BACKBONE_TITLES[backbone]}, {epochs} epochs", ""]
                out += [
                    "| method | config | stage 1 | paper top-1 Average / Many / Medium / Few "
                    "| ours |",
                    "|---|---|---|---|---|",
                ]
                commands = []
                for method, title, stage1, _ in METHODS:
                    name = name_of(backbone, epochs, method)
                    stage1_name = name_of(backbone, epochs, stage1) if stage1 else None
                    numbers = paper.get(method)
                    accuracy = " / ".join(f"{v:.1f}" for v in numbers) if numbers else "-"
                    out.append(
                        f"| {title} | [{name}](../../configs/{folder}/{name}.yaml) | "
                        f"{stage1_name or '-'} | {accuracy} | not measured |"
                    )
                    commands += [f"# {title}"] + train_and_eval_commands(folder, name, stage1_name)
                out += ["", "```bash"] + commands + ["```", ""]
    out += [
        "### ImageNet-LT ablations",
        "",
        "| config | what | paper average top-1 |",
        "|---|---|---|",
    ]
    for name, _, _, description, paper in ABLATIONS:
        out.append(
            f"| [{name}](../../configs/ImageNet-LT/ablations/{name}.yaml) | {description} | "
            f"{paper if paper is not None else '-'} |"
        )
    return "\n".join(out) + "\n"
