#!/usr/bin/env python
# -*- coding: utf-8 -*-
"""
Mutation testing of DisAlign's core modules with mutmut 3 (``make mutation``; not part of
``make test`` or CI).

Each module of :data:`CORE_MODULES` is mutated on its own and checked by its own fast test
selection; the script prints, per module, the mutants, how many the tests killed, how many
survived, and the score (killed / mutants; a timeout counts as killed), then each survivor's diff.

mutmut mutates the files it copies, so everything happens in a scratch copy of the tracked files
(under a temporary folder, removed at the end unless ``--keep``): the checkout itself is never
modified. The scratch copy exposes the package as ``src/<package>`` (a link), so that mutmut's
module names (``disalign.modeling.layers`` ...) are the ones the tests import.

    python tools/mutation.py                       # every module
    python tools/mutation.py --modules grw layers  # those whose path contains "grw" or "layers"
    python tools/mutation.py --keep                # keep the scratch copy, for `mutmut show NAME`
    python tools/mutation.py --report docs/mutation.md   # also write the report in Markdown
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the lvis-api comparisons of lvis_fast, without its command line and the detectron2 evaluator
LVIS_FAST_TESTS = [
    ("tests/evaluation/test_fast_lvis.py", "not command_line and not detectron2 and not backend"),
    ("tests/evaluation/test_fixed_pooled_ap.py", "not command_line and not evaluator"),
]

# The core modules, by path: the fast test selection of each (a test file, or a pair of a test
# file and a pytest -k expression), and the functions whose mutants count (None: the whole
# module). Tests that start train_net.py subprocesses are left out: they are slow and the
# mutated package is imported only in the test process.
CORE_MODULES = [
    (
        "projects/DisAlign/disalign/modeling/layers.py",
        [
            "tests/modeling/test_layers.py",
            "tests/modeling/test_fast_rcnn.py",
            ("tests/modeling/test_method_invariants.py", "foreground"),
            ("tests/modeling/test_segmentation.py", "head"),
            ("tests/modeling/test_classifier.py", "formula"),
        ],
        None,
    ),
    (
        "projects/DisAlign/disalign/modeling/grw.py",
        [
            "tests/modeling/test_grw.py",
            "tests/modeling/test_fast_rcnn.py",
            ("tests/modeling/test_method_invariants.py", "count_by"),
        ],
        None,
    ),
    (
        # the counts of images, instances and pixels per class, and their cache
        "projects/DisAlign/disalign/data/class_counts.py",
        [
            "tests/data/test_class_counts.py",
            ("tests/modeling/test_method_invariants.py", "count_by"),
        ],
        None,
    ),
    (
        # the unit tests on a tiny model, and the miniature detector built for stage 1 and 2
        # (not trained: test_alignment_stage's training iterations are left out)
        "projects/DisAlign/disalign/modeling/alignment.py",
        [
            "tests/modeling/test_alignment.py",
            ("tests/modeling/test_alignment_stage.py", "not trains"),
            "tests/modeling/test_fast_rcnn.py",
        ],
        None,
    ),
    (
        "projects/DisAlign/disalign/modeling/fast_rcnn.py",
        [
            "tests/modeling/test_fast_rcnn.py",
            ("tests/modeling/test_method_invariants.py", "foreground or count_by"),
            ("tests/modeling/test_layers.py", "config"),
            ("tests/modeling/test_grw.py", "from_the_config"),
        ],
        None,
    ),
    (
        # the per-category and per-image selection, the candidate pairs, their IoUs and the greedy
        # matching; reading results and ground truth and the command line are not mutated
        "projects/DisAlign/lvis_fast/matching.py",
        LVIS_FAST_TESTS,
        ("top_per_group", "_bbox_iou", "candidate_pairs", "_expand_pairs", "match"),
    ),
    (
        # the accumulation (precision / recall), standard and pooled
        "projects/DisAlign/lvis_fast/accumulation.py",
        LVIS_FAST_TESTS,
        (
            "_recall_cutoffs",
            "accumulate",
            "_laid_out_precision_recall",
            "accumulate_pooled",
            "_precision_recall",
        ),
    ),
]

MUTMUT_VERSION = "3.8.1"
# mutmut stops a mutant's tests after (estimate + timeout_constant) * 15 seconds of wall-clock time
# (a timer sends SIGXCPU; the CPU-time limit is twice that) and records a timeout, which counts as
# killed. The estimate is the sum of the call phases of the tests that reach the mutated function
# in its first, clean run: it leaves out what every mutant's run costs on top (pytest's start in
# the forked process, collection, fixtures: 0.5-3 s for these selections on an idle machine).
# With mutmut's default of 1 s, the budget of a function reached by fast tests is 15-45 s, which a
# run under `nice` on a loaded machine exceeds although its test fails in a second (50 of
# grw.py's 344 mutants); 10 s gives those runs at least 150 s.
MUTMUT_TIMEOUT_CONSTANT = 10.0
# mutmut's exit codes of a mutant's test run that mean the mutant was detected
KILLED_STATUSES = ("killed", "timeout", "segfault", "caught by type check")


def _package_root(module_path):
    """The folder holding the module's top-level package, and the module's path from there."""
    folder = os.path.dirname(module_path)
    while os.path.exists(os.path.join(REPO_ROOT, os.path.dirname(folder), "__init__.py")):
        folder = os.path.dirname(folder)
    root = os.path.dirname(folder)
    return root, os.path.relpath(module_path, root)


def _copy_tracked_files(destination):
    """The tracked files of the checkout, as they are in the working tree."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout.decode()
    for path in filter(None, listed.split("\0")):
        source = os.path.join(REPO_ROOT, path)
        if os.path.isfile(source):
            os.makedirs(os.path.dirname(os.path.join(destination, path)), exist_ok=True)
            shutil.copy2(source, os.path.join(destination, path))


def _collect_tests(tree, selection, env):
    """The pytest node ids of a selection (entries with a -k expression resolved in one run)."""
    node_ids, to_collect = [], []
    for entry in selection:
        if isinstance(entry, str):
            node_ids.append(entry)
        else:
            to_collect.append(entry)
    if to_collect:
        code = (
            "import sys, pytest\n"
            "class Ids:\n"
            "    def pytest_collection_finish(self, session):\n"
            "        print('\\n'.join('NODE ' + i.nodeid for i in session.items))\n"
            "for path, expr in %r:\n"
            "    args = ['--collect-only', '-q', '-p', 'no:cacheprovider', path, '-k', expr]\n"
            "    if pytest.main(args, plugins=[Ids()]) not in (0, 5):\n"
            "        sys.exit(1)\n"
        ) % (to_collect,)
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True
        )
        if out.returncode != 0:
            sys.exit(f"error: collecting the tests {to_collect} failed:\n{out.stdout[-2000:]}")
        found = [line[5:] for line in out.stdout.splitlines() if line.startswith("NODE ")]
        if not found:
            sys.exit(f"error: the test selection {to_collect} selects no test")
        node_ids += found
    return node_ids


def _mutmut_config(package_dir, module, tests):
    """The [tool.mutmut] section of pyproject.toml for one module."""

    def toml_list(values):
        return "[" + ", ".join(json.dumps(v) for v in values) + "]"

    return (
        "\n[tool.mutmut]\n"
        f"source_paths = {toml_list([package_dir])}\n"
        f"only_mutate = {toml_list([module])}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(tests)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider"]\n'
        f"also_copy = {toml_list(['configs', 'tools', 'train_net.py'])}\n"
        'process_isolation = "forkserver"\n'
        "use_git_change_detection = false\n"
        "track_dependencies = false\n"
        f"timeout_constant = {MUTMUT_TIMEOUT_CONSTANT}\n"
    )


def _mutant_results(tree, module):
    """{mutant name: status} from mutmut's record of the module."""
    from mutmut.stats import status_by_exit_code

    with open(os.path.join(tree, "mutants", module + ".meta")) as f:
        exit_codes = json.load(f)["exit_code_by_key"]
    return {name: status_by_exit_code[code] for name, code in exit_codes.items()}


def _diff(tree, module, mutant_name):
    """The diff of a mutant against the original function."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    cwd = os.getcwd()
    os.chdir(tree)
    try:
        return get_diff_for_mutant(mutant_name, path=module)
    finally:
        os.chdir(cwd)


def _function_of(mutant_name):
    """The function (or method) a mutant changes: 'x_f__mutmut_3' -> 'f', 'xǁCǁm__mutmut_1' ->
    'C.m'."""
    mangled = mutant_name.rpartition(".")[2].partition("__mutmut_")[0]
    if mangled.startswith("x_"):
        return mangled[2:]
    return mangled[2:].replace("ǁ", ".")


def run_module(tree, module_path, selection, functions, env, max_children, verbose):
    root, relative = _package_root(module_path)
    package = relative.split(os.sep)[0]
    link = os.path.join(tree, "src")
    if os.path.lexists(link):
        os.remove(link)
    os.symlink(root or ".", link)
    shutil.rmtree(os.path.join(tree, "mutants"), ignore_errors=True)
    shutil.copy2(os.path.join(REPO_ROOT, "pyproject.toml"), os.path.join(tree, "pyproject.toml"))
    module = os.path.join("src", relative)
    tests = _collect_tests(tree, selection, env)
    with open(os.path.join(tree, "pyproject.toml"), "a") as f:
        f.write(_mutmut_config(os.path.join("src", package), module, tests))

    module_name = os.path.splitext(relative)[0].replace(os.sep, ".")
    names = [f"{module_name}.x_{fn}__mutmut_*" for fn in functions] if functions else []
    mutmut = [os.path.join(os.path.dirname(sys.executable), "mutmut")]
    start = time.time()
    run = subprocess.run(
        ["nice", "-n", "5", *mutmut, "run", "--max-children", str(max_children), *names],
        cwd=tree,
        env=env,
        capture_output=not verbose,
        text=True,
    )
    elapsed = time.time() - start
    if run.returncode != 0:
        output = "" if verbose else (run.stdout + run.stderr)[-4000:]
        sys.exit(f"{output}\nerror: mutmut failed on {module_path} (exit status {run.returncode})")
    results = _mutant_results(tree, module)
    if functions:
        results = {n: s for n, s in results.items() if _function_of(n) in functions}
    statuses = Counter(results.values())
    killed = sum(statuses[s] for s in KILLED_STATUSES)
    survivors = sorted(n for n, s in results.items() if s not in KILLED_STATUSES)
    diffs = {name: f"[{results[name]}]\n" + _diff(tree, module, name) for name in survivors}
    return {
        "module": module_path,
        "mutants": len(results),
        "killed": killed,
        "survived": len(results) - killed,
        "statuses": dict(statuses),
        "seconds": round(elapsed),
        "tests": len(tests),
        "survivors": diffs,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--modules", nargs="+", help="only the core modules whose path contains one of these"
    )
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy")
    parser.add_argument("--verbose", action="store_true", help="show mutmut's own output")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument(
        "--report", help="also write the results and every survivor's diff to this Markdown file"
    )
    args = parser.parse_args(argv)

    try:
        import mutmut
    except ImportError:
        mutmut = None
    if getattr(mutmut, "__version__", None) != MUTMUT_VERSION:
        sys.exit(
            f"error: mutmut {MUTMUT_VERSION} is needed: "
            f"{sys.executable} -m pip install mutmut=={MUTMUT_VERSION}"
        )
    modules = [
        m for m in CORE_MODULES if not args.modules or any(s in m[0] for s in args.modules)
    ]
    if not modules:
        sys.exit(f"error: no core module matches {args.modules}")
    for path, _, _ in modules:
        if not os.path.isfile(os.path.join(REPO_ROOT, path)):
            sys.exit(f"error: the core module {path} does not exist (update CORE_MODULES)")

    tree = tempfile.mkdtemp(prefix="disalign-mutation-")
    env = dict(os.environ)
    env.setdefault("DETECTRON2_DATASETS", os.path.join(REPO_ROOT, "datasets"))
    env.pop("PYTHONPATH", None)
    reports = []
    try:
        _copy_tracked_files(tree)
        for path, selection, functions in modules:
            print(f"mutating {path} ...", flush=True)
            report = run_module(
                tree, path, selection, functions, env, args.max_children, args.verbose
            )
            reports.append(report)
            for name, diff in report["survivors"].items():
                print(f"\nsurvivor {name} {diff}\n")
            timeouts = report["statuses"].get("timeout", 0)
            seconds = report["seconds"]
            print(_summary_line(report), f"({seconds} s, {timeouts} timeouts)\n", flush=True)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(reports, f, indent=1)
            if args.report:
                with open(args.report, "w") as f:
                    f.write(markdown_report(reports, argv))
    finally:
        if args.keep:
            print(f"scratch copy kept in {tree} (cd there; mutmut show NAME)")
        else:
            shutil.rmtree(tree, ignore_errors=True)

    print(f"\n{'module':<54} {'mutants':>7} {'killed':>7} {'survived':>8} {'score':>7}")
    for r in reports:
        print(_summary_line(r))
    total = {"module": "all", **{k: sum(r[k] for r in reports) for k in ("mutants", "killed")}}
    print(_summary_line(dict(total, survived=total["mutants"] - total["killed"])))
    return 0


def markdown_report(reports, argv=None):
    """
    The results of ``run_module`` (one per module) as a Markdown page: the command, a table of
    mutants, killed (timeouts included), survived and score per module and in all, then the diff
    of each survivor, to be read (an equivalent mutant, or a missing test).
    """
    command = " ".join(["python tools/mutation.py", *(argv if argv is not None else sys.argv[1:])])
    lines = [
        "# Mutation testing report",
        "",
        f"Written by `{command}` (mutmut {MUTMUT_VERSION}); a timeout counts as killed.",
        "",
        "| Module | Mutants | Killed | Timeouts | Survived | Score | Time |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        score = 100.0 * r["killed"] / max(r["mutants"], 1)
        timeouts = r["statuses"].get("timeout", 0)
        lines.append(
            f"| `{r['module']}` | {r['mutants']} | {r['killed']} | {timeouts} | {r['survived']} "
            f"| {score:.1f}% | {r['seconds']} s |"
        )
    mutants = sum(r["mutants"] for r in reports)
    killed = sum(r["killed"] for r in reports)
    score = 100.0 * killed / max(mutants, 1)
    seconds = sum(r["seconds"] for r in reports)
    lines.append(
        f"| all | {mutants} | {killed} | | {mutants - killed} | {score:.1f}% | {seconds} s |"
    )
    for r in reports:
        if r["survivors"]:
            lines += ["", f"## Survivors in `{r['module']}`", ""]
            for name, diff in r["survivors"].items():
                lines += [f"`{name}`", "", "```diff", diff.rstrip("\n"), "```", ""]
    return "\n".join(lines) + "\n"


def _summary_line(r):
    score = 100.0 * r["killed"] / max(r["mutants"], 1)
    return f"{r['module']:<54} {r['mutants']:>7} {r['killed']:>7} {r['survived']:>8} {score:>6.1f}%"


if __name__ == "__main__":
    sys.exit(main())
