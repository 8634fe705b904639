"""The reporting layer: terminal table, plots and offline HTML report, from results.json alone."""

from __future__ import annotations

import base64
import copy
import io
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from lifelong.errors import ConfigError, DataError, LifelongError
from lifelong.report import (
    build_report,
    format_table,
    plasticity_figure,
    read_results,
    task_accuracy_figure,
)
from lifelong.report.plots import accuracy_array, curves_of, save_plots
from lifelong.report.table import UNDEFINED

METRICS = ("acc", "bwt", "fwt", "forgetting", "learning_accuracy")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MALICIOUS = "<script>alert('x')</script>"


def _metrics(matrix: list[list[float]]) -> dict[str, float | None]:
    """GEM / RWalk metrics of a full (T+1) x T matrix, written out independently for test data."""
    r = np.asarray(matrix)
    t = r.shape[1]
    return {
        "acc": float(r[t].mean()),
        "bwt": float(np.mean([r[t, j] - r[j + 1, j] for j in range(t - 1)])) if t > 1 else None,
        "fwt": float(np.mean([r[j, j] - r[0, j] for j in range(1, t)])) if t > 1 else None,
        "forgetting": (
            float(np.mean([r[1:t, j].max() - r[t, j] for j in range(t - 1)])) if t > 1 else None
        ),
        "learning_accuracy": float(np.mean([r[j + 1, j] for j in range(t)])),
    }


def _curves(rows: list[list[float]], steps_per_task: int, every: int) -> dict[str, list]:
    """Curves that interpolate linearly between consecutive rows of R, one point every `every`."""
    step, task, accuracy = [], [], []
    for k in range(len(rows) - 1):
        for s in range(0 if k == 0 else every, steps_per_task + 1, every):
            frac = s / steps_per_task
            step.append(k * steps_per_task + s)
            task.append(k)
            pairs = zip(rows[k], rows[k + 1], strict=True)
            accuracy.append([(1 - frac) * a + frac * b for a, b in pairs])
    return {"step": step, "task": task, "accuracy": accuracy}


def _strategy(name: str, matrix: list[list[float]], **fields) -> dict:
    tasks_done = len(matrix) - 1
    entry = {
        "strategy": name,
        "params": {},
        "train": {"lr": 0.1, "epochs": 1, "batch_size": 32},
        "status": "complete",
        "error": None,
        "tasks_done": tasks_done,
        "accuracy_matrix": matrix,
        **(_metrics(matrix) if len(matrix) == len(matrix[0]) + 1 else dict.fromkeys(METRICS)),
        "train_seconds": 1.25,
        "eval_seconds": 0.5,
        "peak_rss_mb": 250.0,
        "parameters": [],
        "curves": {"step": [], "task": [], "accuracy": []},
        "extra": {},
    }
    entry.update(fields)
    return entry


def _stream(num_tasks: int) -> dict:
    return {
        "name": "permuted",
        "scenario": "domain",
        "data": "digits",
        "tasks": [
            {
                "id": j,
                "name": f"permutation {j + 1}",
                "classes": list(range(10)),
                "train_samples": 1000,
                "test_samples": 300,
            }
            for j in range(num_tasks)
        ],
    }


def _config(num_tasks: int) -> dict:
    return {
        "data": "digits",
        "stream": "permuted",
        "scenario": "domain",
        "tasks": num_tasks,
        "model": "mlp",
        "hidden": [100, 100],
        "epochs": 1,
        "lr": 0.1,
        "seed": 0,
        "eval_every": 10,
    }


FINETUNE_R = [[0.1, 0.12, 0.09], [0.9, 0.2, 0.1], [0.6, 0.92, 0.15], [0.4, 0.7, 0.95]]
EWC_R = [[0.1, 0.12, 0.09], [0.9, 0.2, 0.1], [0.85, 0.9, 0.15], [0.8, 0.85, 0.9]]
PARTIAL_R = [[0.1, 0.12, 0.09], [0.88, 0.2, 0.11]]


def _three_task_results() -> dict:
    partial = _strategy(
        "pnn",
        PARTIAL_R,
        status="partial",
        error="loss became NaN on task 2; <b>lower the learning rate</b>",
        learning_accuracy=0.88,
        parameters=[89_610],
        extra={"columns": 1, "note": "<img src=x onerror=alert(1)>"},
    )
    return {
        "schema": 1,
        "lifelong_version": "0.1.0",
        "created": "2026-11-23T02:00:00Z",
        "config": _config(3),
        "stream": _stream(3),
        "strategies": {
            "finetune": _strategy(
                "finetune", FINETUNE_R, curves=_curves(FINETUNE_R, 30, 10), parameters=[89_610] * 3
            ),
            "ewc:lambda=100": _strategy(
                "ewc",
                EWC_R,
                params={"lambda": 100.0},
                curves=_curves(EWC_R, 30, 10),
                extra={"fisher_samples": 200},
            ),
            MALICIOUS: partial,
        },
    }


def _one_task_results() -> dict:
    matrix = [[0.1], [0.93]]
    return {
        "schema": 1,
        "lifelong_version": "0.1.0",
        "created": "2026-11-23T02:00:00Z",
        "config": _config(1),
        "stream": _stream(1),
        "strategies": {"finetune": _strategy("finetune", matrix)},
    }


def _write(run_dir: Path, results: dict) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.json").write_text(json.dumps(results), encoding="utf-8")
    return run_dir


@pytest.fixture(scope="module")
def three_task_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    run_dir = _write(tmp_path_factory.mktemp("run3"), _three_task_results())
    report = build_report(run_dir)
    return report, report.read_text(encoding="utf-8")


def _embedded_pngs(text: str) -> list[bytes]:
    return [
        base64.b64decode(data, validate=True)
        for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    ]


def test_report_is_written_next_to_results(three_task_report: tuple[Path, str]) -> None:
    report, text = three_task_report
    assert report.name == "report.html" and report.is_file()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")


def test_report_loads_no_external_resources(three_task_report: tuple[Path, str]) -> None:
    _, text = three_task_report
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text.lower() and "<link" not in text.lower()
    assert "@import" not in text and "url(" not in text
    for target in re.findall(r'(?:src|href)="([^"]*)"', text):
        assert target.startswith(("data:image/png;base64,", "#")), target


def test_report_embeds_decodable_pngs(three_task_report: tuple[Path, str]) -> None:
    _, text = three_task_report
    images = _embedded_pngs(text)
    # comparison, accuracy matrices, plasticity, parameters + (heatmap, curves) per strategy
    assert len(images) == 10
    for data in images:
        assert data.startswith(PNG_SIGNATURE)
        pixels = matplotlib.image.imread(io.BytesIO(data), format="png")
        assert pixels.ndim == 3 and min(pixels.shape[:2]) > 50
        assert pixels.std() > 0  # not a blank canvas


def test_report_escapes_text_from_results(three_task_report: tuple[Path, str]) -> None:
    _, text = three_task_report
    assert MALICIOUS not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "<b>lower the learning rate</b>" not in text
    assert "&lt;b&gt;lower the learning rate&lt;/b&gt;" in text
    assert "<img src=x" not in text


def test_report_has_sections_metrics_and_marks_partial(
    three_task_report: tuple[Path, str],
) -> None:
    _, text = three_task_report
    words = " ".join(text.split())
    for needle in (
        "Gradient Episodic Memory for Continual Learning",
        "Riemannian Walk",
        "Lopez-Paz",
        "Chaudhry",
        "permutation 3",
        "fisher_samples",
        "ewc:lambda=100",
        "eval_every",
    ):
        assert needle in words, needle
    assert text.count('class="badge partial"') >= 2  # summary table and strategy section
    assert "PARTIAL" in text and "stopped after 1 of 3 tasks" in text
    assert "91.00" not in text  # no value invented: the summary shows what results.json holds
    assert f"{100 * _metrics(EWC_R)['acc']:.2f}" in text


def test_plots_have_stable_names_and_stale_ones_are_removed(tmp_path: Path) -> None:
    results = _three_task_results()
    run_dir = _write(tmp_path / "run", _one_task_results())
    plots = run_dir / "plots"
    plots.mkdir()
    (plots / "accuracy_matrix_07_gone.png").write_bytes(b"stale")
    (plots / "notes.txt").write_text("kept")
    build_report(run_dir)
    names = sorted(p.name for p in plots.iterdir())
    assert names == [
        "accuracy_matrix_00_finetune.png",
        "average_accuracy.png",
        "comparison.png",
        "notes.txt",
        "task_accuracy_00_finetune.png",
    ]
    files = save_plots(results, plots)
    assert files.plasticity == plots / "plasticity.png" and files.average_accuracy is not None
    assert files.accuracy_matrix["ewc:lambda=100"].name == "accuracy_matrix_01_ewc-lambda-100.png"
    assert files.task_accuracy[MALICIOUS].name.startswith("task_accuracy_02_script-alert-x")
    assert all(p.read_bytes().startswith(PNG_SIGNATURE) for p in plots.glob("*.png"))


def test_single_task_report_and_table_show_undefined(tmp_path: Path) -> None:
    results = _one_task_results()
    report = build_report(_write(tmp_path / "run1", results))
    text = report.read_text(encoding="utf-8")
    # comparison, heatmap, per-task accuracy, average accuracy so far
    assert len(_embedded_pngs(text)) == 4
    assert not (report.parent / "plots" / "plasticity.png").exists()
    assert not (report.parent / "plots" / "parameters.png").exists()
    assert UNDEFINED in text
    table = format_table(results)
    row = next(line for line in table.splitlines() if line.startswith("finetune"))
    assert row.split()[1] == "93.00"  # ACC
    assert row.split()[2:5] == [UNDEFINED] * 3  # BWT, FWT, forgetting undefined for T = 1


def test_format_table_lists_every_strategy_in_fixed_width() -> None:
    results = _three_task_results()
    table = format_table(results)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["strategy", "ACC", "%"]
    assert set(lines[1]) <= {"-", " "}
    # the unfinished strategy comes last, under a line saying it is not ranked
    assert len(lines) == 3 + len(results["strategies"])
    assert lines[4].startswith("not finished")
    rows = lines[2:4] + lines[5:]
    for label, line in zip(results["strategies"], rows, strict=True):
        assert line.startswith(label)
    status_column = lines[0].index("status")
    assert [line[status_column:].split()[0] for line in rows] == [
        "complete",
        "complete",
        "partial:",
    ]
    partial = rows[2]
    # ACC, BWT, FWT, forgetting, examples and extra memory (not recorded in this file)
    assert "partial: ACC over 1/3 tasks" in partial and partial.count(UNDEFINED) == 6
    ewc = _metrics(EWC_R)
    assert f"{100 * ewc['bwt']:+.2f}" in lines[3] and f"{100 * ewc['acc']:.2f}" in lines[3]
    assert "1.25" in lines[2] and "250.0" in lines[2]


def test_format_table_keeps_one_line_per_strategy_with_control_characters() -> None:
    results = _one_task_results()
    results["strategies"]["bad\nlabel"] = results["strategies"]["finetune"]
    assert len(format_table(results).splitlines()) == 4


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found"),
        ("{not json", "not readable JSON"),
        (json.dumps({"schema": 1}), "no 'strategies'"),
        (json.dumps({"schema": 99, "strategies": {}}), "schema 99"),
    ],
)
def test_missing_or_invalid_results_raise_one_line_errors(
    tmp_path: Path, content: str | None, message: str
) -> None:
    if content is not None:
        (tmp_path / "results.json").write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as caught:
        build_report(tmp_path)
    text = str(caught.value)
    assert isinstance(caught.value, LifelongError)
    assert "\n" not in text and message in text and "results.json" in text
    if content is None or "strategies" in message:
        assert "lifelong run" in text
    assert not (tmp_path / "report.html").exists()


def test_read_results_accepts_the_file_itself(tmp_path: Path) -> None:
    run_dir = _write(tmp_path, _one_task_results())
    assert read_results(run_dir / "results.json") == read_results(run_dir)


def test_plasticity_figure_overlays_strategies_per_task(tmp_path: Path) -> None:
    results = _three_task_results()
    path = tmp_path / "nested" / "plasticity.png"
    figure = plasticity_figure(results, tasks=(0, 1, 2, 7), path=path)
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    panels = figure.axes
    assert len(panels) == 3  # task 8 does not exist and is dropped
    expected = _curves(EWC_R, 30, 10)
    for task, axes in enumerate(panels):
        lines = axes.get_lines()
        plotted = [line for line in lines if line.get_label() == "ewc:lambda=100"]
        assert len(plotted) == 1
        np.testing.assert_allclose(plotted[0].get_xdata(), expected["step"])
        np.testing.assert_allclose(
            plotted[0].get_ydata(), [row[task] for row in expected["accuracy"]]
        )
        # the partial strategy has no curves, so only two strategies are drawn
        assert {line.get_label() for line in lines if not line.get_label().startswith("_")} == {
            "finetune",
            "ewc:lambda=100",
        }


def test_plasticity_figure_without_curves_or_tasks_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="eval-every"):
        plasticity_figure(_one_task_results(), tasks=(0,))
    with pytest.raises(ConfigError, match="not in this stream"):
        plasticity_figure(_three_task_results(), tasks=(5,))


def test_task_accuracy_uses_curves_else_matrix_rows() -> None:
    results = _three_task_results()
    with_curves = task_accuracy_figure(results, "finetune").axes[0]
    steps = _curves(FINETUNE_R, 30, 10)["step"]
    data_lines = [line for line in with_curves.get_lines() if line.get_label().startswith("task")]
    assert len(data_lines) == 3
    np.testing.assert_allclose(data_lines[0].get_xdata(), steps)
    boundaries = sorted(
        line.get_xdata()[0] for line in with_curves.get_lines() if line.get_linestyle() == "--"
    )
    assert boundaries == [30, 60]
    from_matrix = task_accuracy_figure(results, MALICIOUS).axes[0]
    first = next(line for line in from_matrix.get_lines() if line.get_label() == "task 1")
    np.testing.assert_allclose(first.get_xdata(), [0, 1])
    np.testing.assert_allclose(first.get_ydata(), [PARTIAL_R[0][0], PARTIAL_R[1][0]])


def test_partial_matrix_pads_unreached_rows_and_curves_are_optional(tmp_path: Path) -> None:
    entry = _three_task_results()["strategies"][MALICIOUS]
    matrix = accuracy_array(entry, 3)
    assert matrix.shape == (4, 3)
    np.testing.assert_allclose(matrix[:2], PARTIAL_R)
    assert np.isnan(matrix[2:]).all()
    assert curves_of(entry, 3) is None
    broken = copy.deepcopy(entry)
    broken["curves"] = {"step": [0, 1], "task": [0], "accuracy": [[0.1, 0.1, 0.1]]}
    results = _one_task_results()
    results["strategies"]["broken"] = broken
    with pytest.raises(DataError, match="curves should hold step, task and accuracy lists"):
        read_results(_write(tmp_path, results))


def test_building_reports_never_imports_pyplot(tmp_path: Path) -> None:
    run_dir = _write(tmp_path / "run", _one_task_results())
    script = (
        "import sys; from lifelong.report import build_report; "
        f"build_report({str(run_dir)!r}); "
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


def test_reports_can_be_built_from_threads(tmp_path: Path) -> None:
    run_dirs = [_write(tmp_path / f"run{i}", _three_task_results()) for i in range(2)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        reports = list(pool.map(build_report, run_dirs))
    texts = [report.read_text(encoding="utf-8") for report in reports]
    assert all(len(_embedded_pngs(text)) == 10 for text in texts)


def test_labels_with_dollar_signs_are_drawn_literally(tmp_path: Path) -> None:
    results = _one_task_results()
    label = "ewc:note=$\\frac{$"  # invalid mathtext: rendering would raise if it were parsed
    results["strategies"] = {label: results["strategies"]["finetune"]}
    files = save_plots(results, tmp_path)
    assert files.accuracy_matrix[label].read_bytes().startswith(PNG_SIGNATURE)
    assert "$" in format_table(results)
