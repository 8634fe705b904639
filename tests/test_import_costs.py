"""The fixed cost of a run: heavy optional modules are imported only by the code that needs them.

Importing what ``lifelong run`` uses must not import matplotlib (about a second), scipy,
scikit-learn or quadprog: only plotting, the embedded digits data and GEM's QP need them. And a
run that prints its table without a report (``--no-report``) must never import matplotlib.
Checked in a fresh interpreter (no timing involved). Moving ``from lifelong.report.plots import
...`` back to the top of ``lifelong/report/__init__.py`` makes this test fail (checked).
"""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("matplotlib", "scipy", "sklearn", "quadprog")


def test_the_run_path_imports_heavy_optional_modules_only_when_needed(tmp_path):
    script = f"""
import sys
from lifelong.cli import build_parser, main
build_parser()
from lifelong.experiment import run_experiment
from lifelong.report import format_table, read_results
import lifelong.strategies, lifelong.streams, lifelong.models
loaded = [m for m in {HEAVY!r} if m in sys.modules]
assert not loaded, f"imported by the run path: {{loaded}}"
code = main(["run", "--data", "digits", "--tasks", "2", "--strategy", "finetune",
             "--train-samples", "40", "--test-samples", "20",
             "--out", {str(tmp_path / "run")!r}, "--quiet", "--no-report"])
assert code == 0, code
assert "matplotlib" not in sys.modules, "a run without a report imported matplotlib"
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
