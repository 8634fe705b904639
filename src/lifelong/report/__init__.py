"""Reports of a run, built from its results.json alone (training is never re-run).

:func:`build_report` writes ``plots/*.png`` and a self-contained, offline ``report.html`` into the
run directory; :func:`format_table` gives the terminal summary; :func:`plasticity_figure` draws the
accuracy of the first tasks during sequential training for every strategy (Kirkpatrick et al.
2017, Fig. 2A).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lifelong.errors import DataError
from lifelong.report.table import format_table
from lifelong.results import atomic_write_text, check_results

# The plotting names come from lifelong.report.plots on first use (PEP 562): importing
# matplotlib costs about a second, which a run that only prints its table never pays.
_PLOT_NAMES = {
    "PlotFiles",
    "accuracy_matrices_figure",
    "accuracy_matrix_figure",
    "comparison_figure",
    "plasticity_figure",
    "save_plots",
    "task_accuracy_figure",
}


def __getattr__(name: str) -> Any:
    if name in _PLOT_NAMES:
        from lifelong.report import plots

        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


RESULTS_FILE = "results.json"
REPORT_FILE = "report.html"
PLOTS_FOLDER = "plots"
SUPPORTED_SCHEMA = (1, 2)  # 2: a study (lifelong.study), whose entries hold the means

__all__ = [
    "PlotFiles",
    "accuracy_matrices_figure",
    "accuracy_matrix_figure",
    "build_report",
    "comparison_figure",
    "format_table",
    "plasticity_figure",
    "read_results",
    "save_plots",
    "task_accuracy_figure",
]


def _results_path(run_dir: str | os.PathLike[str]) -> Path:
    path = Path(run_dir)
    return path if path.name == RESULTS_FILE and not path.is_dir() else path / RESULTS_FILE


def read_results(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The results.json dict of a run directory (or of the results.json path itself), checked.

    Raises :class:`DataError` with one line naming the file when it is missing, not JSON, of an
    unknown schema, or shaped unlike the output of ``lifelong run``
    (:func:`lifelong.results.check_results`).
    """
    path = _results_path(run_dir)
    hint = "pass a run directory written by `lifelong run`"
    if not path.is_file():
        raise DataError(f"{path} not found; {hint}")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path} is not readable JSON ({error}); {hint}") from None
    if not isinstance(results, dict) or not isinstance(results.get("strategies"), dict):
        raise DataError(f"{path} has no 'strategies' object; {hint}")
    schema = results.get("schema")
    if schema not in SUPPORTED_SCHEMA:
        raise DataError(
            f"{path} has results schema {schema!r}, this lifelong reads schemas "
            f"{', '.join(map(str, SUPPORTED_SCHEMA))}; rebuild the report with the lifelong "
            "version that wrote it"
        )
    return check_results(results, path, hint)


def build_report(run_dir: str | os.PathLike[str]) -> Path:
    """(Re)create ``run_dir/plots/*.png`` and ``run_dir/report.html`` from ``run_dir/results.json``.

    The HTML is self-contained (inline CSS, images as base64 data URIs, no scripts) so it opens
    offline and can be mailed as one file. Returns the path of report.html. Raises
    :class:`DataError` when results.json is missing or invalid.
    """
    from lifelong.report.html import render_html
    from lifelong.report.plots import save_plots

    results_path = _results_path(run_dir)
    results = read_results(results_path)
    folder = results_path.parent
    plots = save_plots(results, folder / PLOTS_FOLDER)
    report = folder / REPORT_FILE
    atomic_write_text(report, render_html(results, plots))
    return report
