"""The fixed cost of a run: heavy optional modules are imported only by the code that needs them.

Importing what ``lifelong run`` uses must not import matplotlib (about a second), scipy,
scikit-learn or quadprog: only plotting, the embedded digits data and GEM's QP need them. And a
run that prints its table without a report (``--no-report``) must never import matplotlib, and
GEM's memory gradients and EWC's Fisher on an MLP must not use ``torch.func`` (its first
``grad`` imports ``torch._dynamo``: about 90 MB of resident memory and seconds of imports).
Checked in a fresh interpreter (no timing involved). Moving ``from lifelong.report.plots import
...`` back to the top of ``lifelong/report/__init__.py`` makes this test fail, and so does sending EWC's Fisher down the ``vmap`` route (both checked).
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
code = main(["run", "--data", "digits", "--tasks", "2", "--strategy", "finetune", "gem", "ewc",
             "--train-samples", "40", "--test-samples", "20",
             "--out", {str(tmp_path / "run")!r}, "--quiet", "--no-report"])
assert code == 0, code
assert "matplotlib" not in sys.modules, "a run without a report imported matplotlib"
assert "torch._dynamo" not in sys.modules, "torch.func was used for an MLP"
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
