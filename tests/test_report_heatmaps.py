"""The report's comparison figure: the accuracy matrices of all strategies on one colour scale."""

from __future__ import annotations

import base64
import copy
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from lifelong.report import build_report
from lifelong.report.plots import accuracy_matrices_figure, save_plots
from test_report import (
    EWC_R,
    FINETUNE_R,
    MALICIOUS,
    PARTIAL_R,
    PNG_SIGNATURE,
    _one_task_results,
    _strategy,
    _stream,
    _three_task_results,
    _write,
)

MATRICES_FILE = "accuracy_matrices.png"


def _panels(figure: Figure) -> list:
    """The heatmap panels (axes holding an image), in drawing order."""
    return [axes for axes in figure.axes if axes.get_images()]


def _cell_texts(axes) -> list[str]:
    """The value annotations of a panel (numbers only; "not reached" is not a cell)."""
    return [text.get_text() for text in axes.texts if re.fullmatch(r"\d\.\d\d", text.get_text())]


def _twenty_task_results(num_strategies: int) -> dict:
    rng = np.random.default_rng(0)
    strategies = {
        f"strategy {k}": _strategy("finetune", rng.uniform(0.0, 1.0, (21, 20)).tolist())
        for k in range(num_strategies)
    }
    return {"schema": 1, "config": {}, "stream": _stream(20), "strategies": strategies}


def test_one_panel_per_strategy_in_results_order_on_one_colour_scale() -> None:
    results = _three_task_results()
    figure = accuracy_matrices_figure(results)
    assert figure is not None
    panels = _panels(figure)
    assert [axes.get_title() for axes in panels] == [
        "finetune",
        "ewc:lambda=100",
        f"{MALICIOUS} [partial]",
    ]
    for axes, expected in zip(panels[:2], (FINETUNE_R, EWC_R), strict=True):
        np.testing.assert_allclose(axes.get_images()[0].get_array(), expected)
    for index, axes in enumerate(panels):
        image = axes.get_images()[0]
        assert image.get_clim() == (0.0, 1.0)
        assert image.get_cmap().name == panels[0].get_images()[0].get_cmap().name
        assert [tick.get_text() for tick in axes.get_xticklabels()] == ["1", "2", "3"]
        rows = [tick.get_text() for tick in axes.get_yticklabels()]
        assert rows == (["untrained", "1", "2", "3"] if index == 0 else [])  # left panel only
        assert axes.get_ylim() == pytest.approx((3.5, -0.5))  # rows 0..T, untrained on top
    others = [axes for axes in figure.axes if axes not in panels]
    assert len(others) == 1  # a single colour bar shared by all panels
    assert others[0].get_ylim() == pytest.approx((0.0, 1.0))
    assert len(_cell_texts(panels[0])) == 12 and "0.92" in _cell_texts(panels[0])


def test_fewer_than_two_matrices_draw_no_comparison(tmp_path: Path) -> None:
    assert accuracy_matrices_figure(_one_task_results()) is None
    results = _three_task_results()
    del results["strategies"]["finetune"]
    results["strategies"][MALICIOUS]["accuracy_matrix"] = []  # failed before recording anything
    assert accuracy_matrices_figure(results) is None
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / MATRICES_FILE).write_bytes(b"stale")
    files = save_plots(results, plots)
    assert files.accuracy_matrices is None
    assert not (plots / MATRICES_FILE).exists()  # a stale figure of an earlier build is removed


def test_partial_strategy_draws_reached_rows_and_blank_rest() -> None:
    figure = accuracy_matrices_figure(_three_task_results())
    assert figure is not None
    partial = _panels(figure)[2]
    drawn = partial.get_images()[0].get_array()
    assert drawn.shape == (4, 3)
    np.testing.assert_allclose(drawn[:2], PARTIAL_R)
    assert not np.ma.getmaskarray(drawn[:2]).any()
    assert np.ma.getmaskarray(drawn[2:]).all()
    assert len(_cell_texts(partial)) == 6
    assert "not reached" in [text.get_text() for text in partial.texts]


def test_twenty_tasks_label_every_fifth_task_without_cell_values() -> None:
    results = _twenty_task_results(5)
    figure = accuracy_matrices_figure(results)
    assert figure is not None
    panels = _panels(figure)
    assert len(panels) == 5
    for axes, entry in zip(panels, results["strategies"].values(), strict=True):
        np.testing.assert_allclose(axes.get_images()[0].get_array(), entry["accuracy_matrix"])
        assert [tick.get_text() for tick in axes.get_xticklabels()] == ["1", "5", "10", "15", "20"]
        assert list(axes.get_yticks()) == [0, 1, 5, 10, 15, 20]
        assert _cell_texts(axes) == []
    png = figure.canvas.print_to_buffer()
    width, height = png[1]
    assert width <= 15 * figure.dpi and height > 300


def test_saved_and_embedded_after_the_comparison(tmp_path: Path) -> None:
    results = _three_task_results()
    run_dir = _write(tmp_path / "run", results)
    report = build_report(run_dir)
    path = run_dir / "plots" / MATRICES_FILE
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    text = report.read_text(encoding="utf-8")
    embedded = f'src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}"'
    assert text.count(embedded) == 1
    position = text.index(embedded)
    caption = text.index("all strategies on one colour scale", position)
    assert text.index('id="summary"') < text.index("hatched bars") < position
    assert caption < text.index('id="stream"')
    assert save_plots(copy.deepcopy(results), tmp_path / "again").accuracy_matrices == (
        tmp_path / "again" / MATRICES_FILE
    )
