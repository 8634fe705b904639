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


def test_a_run_freezes_its_imports_once_and_leaves_the_collector_on(tmp_path):
    """``lifelong run`` imports with the cyclic collector paused and then freezes what the imports
    left (so that no full collection, and not the interpreter's exit, walks it again): the
    collector is on again during the run, and a second run in the same process freezes nothing
    more (it would keep the first run's garbage for ever). A program calling ``main(argv)``
    is not frozen at all. Checked in a fresh interpreter. Caught (checked): dropping the
    ``gc.freeze()``, dropping the re-enabling, freezing on every call, and freezing for
    ``main(argv)``.
    """
    script = f"""
import gc, sys
from lifelong.cli import main
import lifelong.experiment

enabled = []
real_run = lifelong.experiment.run_experiment
def spy(*args, **kwargs):
    enabled.append(gc.isenabled())
    return real_run(*args, **kwargs)
lifelong.experiment.run_experiment = spy
flags = ["--data", "digits", "--tasks", "2", "--strategy", "finetune", "--train-samples", "40",
         "--test-samples", "20", "--quiet", "--no-report"]
assert main(["run", *flags, "--out", {str(tmp_path / "api")!r}]) == 0
assert gc.get_freeze_count() == 0, "a program calling main(argv) was frozen"
sys.argv = ["lifelong", "run", *flags, "--out", {str(tmp_path / "a")!r}]
assert main() == 0
frozen = gc.get_freeze_count()
assert frozen > 10_000, frozen
sys.argv = ["lifelong", "run", *flags, "--out", {str(tmp_path / "b")!r}]
assert main() == 0
assert gc.get_freeze_count() <= frozen, (gc.get_freeze_count(), frozen)  # frees may lower it
assert enabled == [True, True, True] and gc.isenabled(), enabled
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
