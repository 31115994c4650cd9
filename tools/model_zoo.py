#!/usr/bin/env python
"""
Write the model-zoo tables of projects/DisAlign/README.md from the configs and their data file.

    python tools/model_zoo.py          # rewrite the tables
    python tools/model_zoo.py --check  # exit 1 with one line naming what differs

configs/model_zoo.yaml lists every experiment config (its path relative to configs/) with the
paper's table, row and numbers, and whether the config follows the paper's text or the authors'
released code. Every YAML file under configs/ needs an entry, except by rule the base configs
(Base-*.yaml) and the embedded miniatures (configs/Miniature-*/), which the repository README
documents. A config's stage 1 and its commands are read from the config itself (MODEL.WEIGHTS,
OUTPUT_DIR, following _BASE_).
"""

import argparse
import glob
import itertools
import os
import sys

import yaml
from fvcore.common.config import CfgNode

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO_ROOT, "configs")
ZOO = os.path.join(CONFIGS, "model_zoo.yaml")
README = os.path.join(REPO_ROOT, "projects", "DisAlign", "README.md")
FOLLOWS = ("paper", "official")


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml's SafeLoader, refusing a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        for key in keys:
            if keys.count(key) > 1:
                raise yaml.constructor.ConstructorError(
                    None, None, f"'{key}' given twice", node.start_mark
                )
        return super().construct_mapping(node, deep)


def experiment_configs():
    """The configs that need an entry: paths relative to configs/."""
    paths = glob.glob(os.path.join(CONFIGS, "**", "*.yaml"), recursive=True)
    paths = (os.path.relpath(p, CONFIGS) for p in paths if p != ZOO)
    return {
        p
        for p in paths
        if not os.path.basename(p).startswith("Base-") and not p.startswith("Miniature-")
    }


def _load(path):
    """OUTPUT_DIR and MODEL.WEIGHTS of a config (relative to configs/), _BASE_ chain included."""
    cfg = CfgNode.load_yaml_with_base(os.path.join(CONFIGS, path))
    return cfg.get("OUTPUT_DIR", "./output"), cfg.get("MODEL", {}).get("WEIGHTS", "")


def _post_hoc(path):
    """MODEL.DECOUPLED.POST_HOC of a config (relative to configs/): "" for a trained model."""
    cfg = CfgNode.load_yaml_with_base(os.path.join(CONFIGS, path))
    return cfg.get("MODEL", {}).get("DECOUPLED", {}).get("POST_HOC", "")


def _entries(zoo):
    for task, sections in zoo.items():
        for section, body in sections.items():
            for title, entries in body["tables"].items():
                for path, entry in entries.items():
                    yield (task, section, title), path, entry


def check_entries(zoo):
    """Raise SystemExit with one line unless the zoo lists exactly the experiment configs."""
    listed = [path for _, path, _ in _entries(zoo)]
    twice = sorted({path for path in listed if listed.count(path) > 1})
    if twice:
        sys.exit(f"error: configs/model_zoo.yaml lists {', '.join(twice)} in two tables")
    missing = sorted(experiment_configs() - set(listed))
    if missing:
        sys.exit(f"error: configs/model_zoo.yaml has no entry for {', '.join(missing)}")
    absent = sorted(p for p in listed if not os.path.isfile(os.path.join(CONFIGS, p)))
    if absent:
        sys.exit(f"error: configs/model_zoo.yaml lists {', '.join(absent)}, not found in configs/")
    for (task, section, _), path, entry in _entries(zoo):
        where = f"error: configs/model_zoo.yaml, {path}:"
        entry = entry if isinstance(entry, dict) else {}
        if "method" not in entry or entry.get("follows") not in FOLLOWS:
            sys.exit(f"{where} needs method and follows (paper or official)")
        size = sum(len(names) for names in zoo[task][section].get("metrics", {}).values())
        if "paper" in entry and (len(entry["paper"]) != size or not {"table", "row"} <= set(entry)):
            sys.exit(f"{where} paper needs {size} numbers (the metrics of {section}), table, row")


def tables(zoo):
    """{task: the Markdown between that task's README markers}."""
    runs = {}  # OUTPUT_DIR -> config name, to find each config's stage 1
    loaded = {}
    for _, path, _ in _entries(zoo):
        loaded[path] = _load(path)
        runs[os.path.normpath(loaded[path][0])] = os.path.splitext(os.path.basename(path))[0]
    out = {task: [] for task in zoo}
    for task, sections in zoo.items():
        for section, body in sections.items():
            metrics = body.get("metrics", {})
            header = ["method", "config", "stage 1", "follows", "paper row"]
            header += [f"paper {name} {' / '.join(names)}" for name, names in metrics.items()]
            out[task] += [f"### {section}", ""]
            for title, entries in body["tables"].items():
                lines = [f"#### {title}", "", "| " + " | ".join(header + ["ours"]) + " |"]
                lines.append("|" + "---|" * (len(header) + 1))
                commands = []
                for path, entry in entries.items():
                    output_dir, weights = loaded[path]
                    name = os.path.splitext(os.path.basename(path))[0]
                    stage1 = runs.get(os.path.normpath(os.path.dirname(weights)))
                    row = f"{entry['table']}: {entry['row']}" if "row" in entry else "-"
                    cells = [f"[{name}](../../configs/{path})", stage1 or "-", entry["follows"]]
                    lines.append(
                        f"| {entry['method']} | "
                        + " | ".join(cells + [row] + paper_cells(entry, metrics))
                        + f" | {entry.get('ours', 'not measured')} |"
                    )
                    config = f"python train_net.py --num-gpus 8 --config-file configs/{path}"
                    commands.append(f"# {entry['method']}")
                    if stage1:
                        commands.append(f"# needs {weights} from the stage-1 row")
                    if _post_hoc(path):  # evaluates the stage-1 model; nothing to train
                        commands.append(f"{config} --eval-only")
                        continue
                    commands += [
                        config,
                        f"{config} --eval-only MODEL.WEIGHTS {output_dir}/model_final.pth",
                    ]
                out[task] += lines + ["", "```bash", *commands, "```", ""]
    return {task: "\n".join(lines) for task, lines in out.items()}


def paper_cells(entry, metrics):
    """The paper's numbers of one entry, one ' / '-joined cell per metric group."""
    numbers, cells = list(entry.get("paper", [])), []
    for names in metrics.values():
        group, numbers = numbers[: len(names)], numbers[len(names) :]
        cells.append(" / ".join(f"{v:.1f}" for v in group) or "-")
    return cells


def markers(task):
    begin = f"<!-- {task} model zoo: written by tools/model_zoo.py, do not edit -->"
    return begin, f"<!-- end of {task} model zoo -->"


def readme_with_zoo(readme, zoo):
    for task, text in tables(zoo).items():
        begin, end = markers(task)
        if begin not in readme or end not in readme:
            sys.exit(f"error: {os.path.relpath(README, REPO_ROOT)} lacks the line '{begin}'")
        i, j = readme.index(begin), readme.index(end)
        readme = readme[:i] + f"{begin}\n\n{text}\n{end}" + readme[j + len(end) :]
    return readme


def first_difference(old, new):
    """'section / table' of the first README table where ``old`` and ``new`` differ."""
    headings = []
    for a, b in itertools.zip_longest(old.splitlines(), new.splitlines()):
        if a != b:
            break
        if a.startswith("### "):
            headings = [a[4:]]
        elif a.startswith("#### "):
            headings = headings[:1] + [a[5:]]
    return " / ".join(headings) or "model zoo"


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the README")
    args = parser.parse_args()
    try:
        with open(ZOO) as f:
            zoo = yaml.load(f, Loader=_UniqueKeyLoader)
        check_entries(zoo)
    except (yaml.YAMLError, AttributeError, KeyError, TypeError) as e:
        what = f"{type(e).__name__}: {' '.join(str(e).split())}"
        sys.exit(f"error: configs/model_zoo.yaml is not laid out as its header says ({what})")
    with open(README) as f:
        old = f.read()
    new = readme_with_zoo(old, zoo)
    readme = os.path.relpath(README, REPO_ROOT)
    if args.check:
        if new != old:
            sys.exit(
                f"error: the table '{first_difference(old, new)}' of {readme} differs from the "
                "configs and configs/model_zoo.yaml (run python tools/model_zoo.py)"
            )
        return
    if new != old:
        with open(README, "w") as f:
            f.write(new)
    print(f"{readme}: {'rewritten' if new != old else 'already current'}")


if __name__ == "__main__":
    main()
