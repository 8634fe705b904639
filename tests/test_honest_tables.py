"""Honest tables: unfinished strategies are never ranked with finished ones, and metrics that are
undefined or true by construction are n/a with the reason (table, metrics.csv, results.json, HTML).

Watched failing: with ``StrategyResult.metrics`` ignoring ``not_applicable`` joint's BWT shows
as +0.00 and the n/a test fails; with ``summary_rows`` keeping results.json order the diverged
strategy is ranked above the finished one and the ranking test fails; with the comparison figure
drawing every strategy the diverged one gets bars again.
"""

from __future__ import annotations

import csv
import json
import math

import pytest

from lifelong.cli import main
from lifelong.report import comparison_figure

RUN = ["run", "--data", "digits", "--stream", "split", "--tasks", "3", "--train-samples", "40"]
RUN += ["--test-samples", "20", "--hidden", "16", "--quiet"]


def test_metrics_true_by_construction_are_na_with_the_reason(tmp_path, capsys):
    out = tmp_path / "run"
    args = [*RUN, "--scenario", "class", "--out", str(out), "--strategy", "finetune", "joint"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())["strategies"]
    joint, finetune = results["joint"], results["finetune"]
    assert joint["bwt"] is joint["fwt"] is joint["forgetting"] is None
    assert set(joint["not_applicable"]) == {"bwt", "fwt", "forgetting"}
    assert "at once" in joint["not_applicable"]["bwt"]
    assert finetune["fwt"] is None and "class scenario" in finetune["not_applicable"]["fwt"]
    assert finetune["bwt"] is not None and finetune["acc"] is not None
    row = next(line for line in printed.splitlines() if line.startswith("joint"))
    assert row.count("n/a") == 3
    assert "n/a (finetune FWT, joint FWT)" not in printed  # one reason per line, named
    assert any(
        line.startswith("n/a (joint BWT, joint FORGETTING)") for line in printed.splitlines()
    )
    with (out / "metrics.csv").open() as f:
        rows = {r["label"]: r for r in csv.DictReader(f)}
    assert rows["joint"]["bwt"] == "" and "at once" in rows["joint"]["not_applicable"]
    html = (out / "report.html").read_text()
    assert "n/a" in html and "class scenario" in html


def test_an_unfinished_strategy_is_not_ranked_or_compared(tmp_path, capsys):
    out = tmp_path / "run"
    args = [*RUN, "--scenario", "task", "--out", str(out), "--no-report", "--strategy"]
    main([*args, "ewc:lambda=1e30", "finetune"])  # ewc diverges in the second task
    lines = capsys.readouterr().out.splitlines()
    results = json.loads((out / "results.json").read_text())
    assert results["strategies"]["ewc:lambda=1e30"]["status"] == "failed"
    table = [line for line in lines if line.startswith(("finetune", "ewc", "not finished"))]
    assert table[0].startswith("finetune ") and table[0].rstrip().endswith("complete")
    assert table[1].startswith("not finished")
    assert table[2].startswith("ewc:lambda=1e30") and "ACC over 1/3 tasks" in table[2]
    figure = comparison_figure(results)
    labels = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert labels == ["finetune"]


def test_average_accuracy_so_far_has_a_band_over_seeds_only():
    """Watched failing with the band drawn from one seed (a zero-width PolyCollection) and with
    the curve averaged over all T tasks instead of the tasks seen so far."""
    from matplotlib.collections import PolyCollection

    from lifelong.report.plots import average_accuracy_curves, average_accuracy_figure

    first = [[0.1, 0.1, 0.1], [0.9, 0.2, 0.1], [0.5, 0.8, 0.0], [0.4, 0.6, 0.9]]
    second = [[0.1, 0.1, 0.1], [0.7, 0.2, 0.1], [0.3, 0.8, 0.0]]  # stopped after task 2
    curves = average_accuracy_curves([first, second])
    assert curves.shape == (2, 3)
    assert curves[0].tolist() == pytest.approx([0.9, 0.65, (0.4 + 0.6 + 0.9) / 3])
    assert curves[1][:2].tolist() == pytest.approx([0.7, 0.55]) and math.isnan(curves[1][2])
    banded = average_accuracy_figure({"a": [first, second]}).axes[0]
    assert sum(isinstance(c, PolyCollection) for c in banded.collections) == 1
    line = banded.get_lines()[0]
    assert line.get_ydata().tolist() == pytest.approx([80.0, 60.0, 190.0 / 3])
    single = average_accuracy_figure({"a": [first]}).axes[0]
    assert not any(isinstance(c, PolyCollection) for c in single.collections)


def test_the_report_has_the_footprint_and_average_accuracy_plots(tmp_path):
    out = tmp_path / "run"
    args = [*RUN, "--scenario", "task", "--out", str(out), "--strategy", "finetune", "independent"]
    assert main(args) == 0
    plots = out / "plots"
    assert (plots / "footprint.png").is_file() and (plots / "average_accuracy.png").is_file()
    assert not (plots / "parameters.png").exists()
    from lifelong.report.plots import footprint_figure

    results = json.loads((out / "results.json").read_text())
    lines = {line.get_label(): line.get_ydata() for line in footprint_figure(results).axes[0].lines}
    assert len(set(lines["finetune"])) == 1  # the model alone, every task
    assert (
        list(lines["independent"]) == sorted(lines["independent"])
        and len(set(lines["independent"])) == 3
    )  # one more copy per task
    html = (out / "report.html").read_text()
    assert "footprint against tasks learned" in html and "average accuracy so far" in html
