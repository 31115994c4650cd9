# -*- coding: utf-8 -*-
"""
tools/mutation.py without mutmut: its table of core modules names files that exist, and its
Markdown report shows the numbers it is given.
"""

import os
import sys

from conftest import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
import mutation  # noqa: E402


def test_every_core_module_and_test_selection_exists():
    for module, selection, _ in mutation.CORE_MODULES:
        assert os.path.isfile(os.path.join(REPO_ROOT, module)), module
        for entry in selection:
            test_file = entry[0] if isinstance(entry, tuple) else entry
            assert os.path.isfile(os.path.join(REPO_ROOT, test_file)), test_file


def test_markdown_report_has_each_module_the_total_and_the_survivors():
    reports = [
        {
            "module": "a.py",
            "mutants": 8,
            "killed": 6,
            "survived": 2,
            "statuses": {"killed": 5, "timeout": 1, "survived": 2},
            "seconds": 30,
            "tests": 4,
            "survivors": {"a.x__mutmut_3": "[survived]\n- y = 1\n+ y = 2\n"},
        },
        {
            "module": "b.py",
            "mutants": 2,
            "killed": 2,
            "survived": 0,
            "statuses": {"killed": 2},
            "seconds": 5,
            "tests": 1,
            "survivors": {},
        },
    ]
    report = mutation.markdown_report(reports, ["--modules", "a", "b"])
    lines = report.splitlines()
    assert "`python tools/mutation.py --modules a b`" in report
    assert "| `a.py` | 8 | 6 | 1 | 2 | 75.0% | 30 s |" in lines
    assert "| `b.py` | 2 | 2 | 0 | 0 | 100.0% | 5 s |" in lines
    assert "| all | 10 | 8 | | 2 | 80.0% | 35 s |" in lines
    assert "## Survivors in `a.py`" in lines and "## Survivors in `b.py`" not in lines
    start = lines.index("`a.x__mutmut_3`")
    assert lines[start + 2 : start + 7] == ["```diff", "[survived]", "- y = 1", "+ y = 2", "```"]
