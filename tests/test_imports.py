"""The package dependency rules hold (scripts/check_imports.py), and the checker finds what it should."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "check_imports.py"


def test_source_tree_has_no_package_cycle_and_leaves_stay_leaves():
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    graph = dict(line.split(" -> ") for line in (row.strip() for row in done.stdout.splitlines()))
    assert set(graph["plan"].split(", ")) <= {"errors", "formats", "layout", "rundir"}  # the planner starts no server


def test_checker_reports_a_cycle_hidden_in_a_function_local_import():
    checker = runpy.run_path(str(SCRIPT))
    assert checker["cycles"]({"plan": {"serve"}, "serve": {"plan"}, "formats": set()}) == [["plan", "serve"]]
    assert checker["cycles"]({"plan": {"formats"}, "serve": {"plan", "formats"}, "formats": set()}) == []


def test_function_local_imports_count(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from quantship.serve.target import from_variant\n")
    assert "quantship.serve.target" in runpy.run_path(str(SCRIPT))["imports_of"](module)
