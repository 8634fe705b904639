"""Figures of a run, drawn from the results.json dict alone.

Every function builds a :class:`matplotlib.figure.Figure` directly (no ``pyplot``), so nothing here
selects a backend, keeps figures alive in a global registry or touches another thread's state; PNGs
are written by the Agg canvas. :func:`save_plots` writes all figures of a report under one folder
with stable names.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image

from lifelong.errors import ConfigError
from lifelong.report.table import number_of_tasks
from lifelong.results import atomic_write_bytes

DPI = 90
"""Resolution of saved PNGs; modest so that a 20-task report with many strategies stays small."""

PALETTE_COLOURS = 256
"""Saved PNGs are quantised to this many colours (see :func:`save_figure`)."""

ANNOTATE_MAX_TASKS = 12
"""Heatmap cells are annotated with their value when the stream has at most this many tasks."""

LEGEND_MAX_TASKS = 12
"""Per-task curve plots get a legend entry per task up to this many tasks, else a colour bar."""

MISSING_COLOUR = "#e0e0e0"
"""Heatmap colour of rows that were never reached (partial or failed strategies)."""

MATRICES_ANNOTATE_MAX_TASKS = 10
"""Panels of :func:`accuracy_matrices_figure` show cell values up to this many tasks."""

MATRICES_PANELS_PER_ROW = 4
"""Panels side by side in :func:`accuracy_matrices_figure` before it wraps to another row."""

MATRICES_TICK_EVERY = 5
"""Beyond :data:`MATRICES_ANNOTATE_MAX_TASKS` tasks the panels label task 1 and every 5th task."""

_OWN_PATTERNS = (
    "accuracy_matrix_*.png",
    "accuracy_matrices.png",
    "task_accuracy_*.png",
    "comparison.png",
    "parameters.png",
    "footprint.png",
    "average_accuracy.png",
    "plasticity.png",
)


def _plain(text: Any) -> str:
    """Text that matplotlib shows literally: a pair of ``$`` would otherwise start mathtext."""
    return str(text).replace("$", r"\$")


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _strategy_colour(index: int) -> tuple[float, ...]:
    palette = matplotlib.colormaps["tab10" if index < 10 else "tab20"]
    return palette(index % palette.N)


def _task_colours(num_tasks: int) -> list[tuple[float, ...]]:
    if num_tasks <= 10:
        return [matplotlib.colormaps["tab10"](j) for j in range(num_tasks)]
    return [matplotlib.colormaps["viridis"](j / max(num_tasks - 1, 1)) for j in range(num_tasks)]


def _status_suffix(entry: Mapping[str, Any]) -> str:
    status = entry.get("status") or "unknown"
    return "" if status == "complete" else f" [{status}]"


def _strategy(results: Mapping[str, Any], label: str) -> Mapping[str, Any]:
    strategies = results.get("strategies") or {}
    if label not in strategies:
        raise ConfigError(f"no strategy {label!r} in results; known: {', '.join(strategies)}")
    return strategies[label]


def accuracy_array(entry: Mapping[str, Any], num_tasks: int) -> np.ndarray:
    """R as a ``(num_tasks + 1, num_tasks)`` float array; rows not reached are NaN."""
    matrix = np.full((num_tasks + 1, num_tasks), np.nan)
    for i, row in enumerate((entry.get("accuracy_matrix") or [])[: num_tasks + 1]):
        values = np.asarray(row, dtype=float)[:num_tasks]
        matrix[i, : len(values)] = values
    return matrix


def rows_recorded(entry: Mapping[str, Any]) -> int:
    """Number of accuracy-matrix rows present (1 + tasks finished, or 0 when nothing ran)."""
    return len(entry.get("accuracy_matrix") or [])


@dataclass(frozen=True)
class Curves:
    """Accuracy on every task during training: ``accuracy[k, j]`` at global step ``step[k]``."""

    step: np.ndarray
    task: np.ndarray
    accuracy: np.ndarray

    def boundaries(self) -> list[float]:
        """Steps where training moves to the next task: the last step recorded for each task."""
        changes = np.flatnonzero(np.diff(self.task) != 0)
        return [float(self.step[k]) for k in changes]


def curves_of(entry: Mapping[str, Any], num_tasks: int) -> Curves | None:
    """The strategy's curves as arrays, or ``None`` when it has none (``--eval-every 0``)."""
    raw = entry.get("curves") or {}
    steps = raw.get("step") or []
    if len(steps) == 0:
        return None
    accuracy = np.full((len(steps), num_tasks), np.nan)
    for k, row in enumerate(raw.get("accuracy") or []):
        values = np.asarray(row, dtype=float)[:num_tasks]
        accuracy[k, : len(values)] = values
    return Curves(
        step=np.asarray(steps, dtype=float),
        task=np.asarray(raw.get("task") or [0] * len(steps), dtype=int),
        accuracy=accuracy,
    )


def accuracy_matrix_figure(results: Mapping[str, Any], label: str) -> Figure:
    """Heatmap of R for one strategy: rows "untrained", "after task 1..T"; columns tasks; 0..1."""
    entry = _strategy(results, label)
    num_tasks = number_of_tasks(results)
    matrix = accuracy_array(entry, num_tasks)
    size = 0.45 * num_tasks
    figure = _new_figure(min(3.6 + size, 9.0), min(2.6 + size, 8.0))
    axes = figure.add_subplot()
    image = _draw_accuracy(axes, matrix)
    figure.colorbar(image, ax=axes, label="test accuracy", shrink=0.9)
    tick_step = 1 if num_tasks <= 20 else int(np.ceil(num_tasks / 20))
    columns = list(range(0, num_tasks, tick_step))
    axes.set_xticks(columns, [str(j + 1) for j in columns])
    rows = [0, *range(1, num_tasks + 1, tick_step)]
    axes.set_yticks(rows, ["untrained" if i == 0 else f"after task {i}" for i in rows])
    axes.set_xlabel("evaluated on task")
    axes.set_title(_plain(f"{label}{_status_suffix(entry)}: accuracy matrix R"), fontsize=10)
    if num_tasks <= ANNOTATE_MAX_TASKS:
        _annotate_cells(axes, matrix, fontsize=7)
    _mark_not_reached(axes, entry, num_tasks, fontsize=9)
    return figure


def _draw_accuracy(axes: Any, matrix: np.ndarray) -> Any:
    """Draw R as a heatmap on the fixed scale 0..1; missing rows (NaN) grey."""
    colour_map = matplotlib.colormaps["viridis"].with_extremes(bad=MISSING_COLOUR)
    return axes.imshow(
        np.ma.masked_invalid(matrix), cmap=colour_map, vmin=0.0, vmax=1.0, aspect="auto"
    )


def _annotate_cells(axes: Any, matrix: np.ndarray, fontsize: float) -> None:
    """Write each finite cell's value in it (dark text on light cells)."""
    for (i, j), value in np.ndenumerate(matrix):
        if np.isfinite(value):
            colour = "black" if value > 0.6 else "white"
            axes.text(
                j, i, f"{value:.2f}", ha="center", va="center", fontsize=fontsize, color=colour
            )


def _mark_not_reached(axes: Any, entry: Mapping[str, Any], num_tasks: int, fontsize: float) -> None:
    """Label the rows of an accuracy matrix that an interrupted strategy never recorded."""
    reached = rows_recorded(entry)
    if reached < num_tasks + 1:
        axes.text(
            0.5,
            (reached + num_tasks) / 2,
            "not reached",
            ha="center",
            va="center",
            fontsize=fontsize,
            color="#555555",
            transform=axes.get_yaxis_transform(),
        )


def _panel_ticks(num_tasks: int) -> list[int]:
    """0-based task ids labelled in small heatmap panels: all up to 10 tasks, else 1, 5, 10, ..."""
    if num_tasks <= MATRICES_ANNOTATE_MAX_TASKS:
        return list(range(num_tasks))
    return [0, *range(MATRICES_TICK_EVERY - 1, num_tasks, MATRICES_TICK_EVERY)]


def accuracy_matrices_figure(results: Mapping[str, Any]) -> Figure | None:
    """The accuracy matrices R of all strategies side by side, on one colour scale 0..1.

    One panel per strategy that recorded at least one row of R, in results order (in balanced rows
    of at most :data:`MATRICES_PANELS_PER_ROW` panels); rows are "untrained" and "after learning
    task i", columns the task evaluated on, one shared colour bar. Rows never reached by partial
    or failed strategies are grey. Cells show their value up to
    :data:`MATRICES_ANNOTATE_MAX_TASKS` tasks.
    ``None`` when fewer than two strategies have an accuracy matrix (nothing to compare).
    """
    num_tasks = number_of_tasks(results)
    drawn = [
        (label, entry)
        for label, entry in (results.get("strategies") or {}).items()
        if rows_recorded(entry) > 0
    ]
    if len(drawn) < 2 or num_tasks < 1:
        return None
    rows = -(-len(drawn) // MATRICES_PANELS_PER_ROW)
    columns = -(-len(drawn) // rows)  # balanced rows: 5 panels as 3 + 2, not 4 + 1
    panel = float(np.clip(1.6 + 0.1 * num_tasks, 2.3, 3.4))
    figure = _new_figure(min(1.6 + columns * panel, 15.0), 0.9 + rows * (panel + 0.3))
    grid = figure.subplots(rows, columns, squeeze=False)
    annotate = num_tasks <= MATRICES_ANNOTATE_MAX_TASKS
    ticks = _panel_ticks(num_tasks)
    row_ticks = [0, *(j + 1 for j in ticks)]
    font = 7 if num_tasks <= 5 else 6
    panels = list(grid.flat[: len(drawn)])
    for unused in grid.flat[len(drawn) :]:
        unused.remove()
    image = None
    for index, (axes, (label, entry)) in enumerate(zip(panels, drawn, strict=True)):
        matrix = accuracy_array(entry, num_tasks)
        image = _draw_accuracy(axes, matrix)
        axes.set_xticks(ticks, [str(j + 1) for j in ticks], fontsize=font)
        axes.set_yticks(row_ticks, ["untrained" if i == 0 else str(i) for i in row_ticks])
        axes.tick_params(axis="y", labelsize=font, labelleft=index % columns == 0)
        axes.set_xlabel("evaluated on task", fontsize=8)
        if index % columns == 0:
            axes.set_ylabel("after learning task", fontsize=8)
        axes.set_title(_plain(f"{label}{_status_suffix(entry)}"), fontsize=9)
        if annotate:
            _annotate_cells(axes, matrix, fontsize=font - 1)
        _mark_not_reached(axes, entry, num_tasks, fontsize=8)
    figure.colorbar(image, ax=panels, label="test accuracy", shrink=0.9)
    figure.suptitle("accuracy matrices R, all strategies on one colour scale", fontsize=10)
    return figure


def _draw_boundaries(axes: Any, boundaries: Sequence[float], colour: Any = "#888888") -> None:
    for step in boundaries:
        axes.axvline(step, color=colour, linestyle="--", linewidth=0.8, alpha=0.7)


def _task_legend_or_colourbar(figure: Figure, axes: Any, num_tasks: int) -> None:
    if num_tasks <= LEGEND_MAX_TASKS:
        axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        return
    mappable = ScalarMappable(norm=Normalize(1, num_tasks), cmap=matplotlib.colormaps["viridis"])
    figure.colorbar(mappable, ax=axes, label="task")


def _plot_task_line(
    axes: Any, x: np.ndarray, y: np.ndarray, start: int, colour: Any, label: str, **style: Any
) -> None:
    """One task's accuracy: faded before its training starts (index ``start``), solid after."""
    if start > 0:
        axes.plot(x[:start], y[:start], color=colour, lw=0.8, alpha=0.35, **style)
    solid = slice(max(start - 1, 0), None)
    axes.plot(x[solid], y[solid], color=colour, lw=1.3, label=label, **style)


def task_accuracy_figure(results: Mapping[str, Any], label: str) -> Figure | None:
    """Each task's accuracy over the stream for one strategy, one line per task.

    Uses the strategy's ``curves`` when recorded (x = global training step, dashed lines at task
    boundaries); otherwise the rows of R (x = number of tasks learned). A task's line is faded
    until its own training starts. ``None`` when the strategy recorded no accuracy at all.
    """
    entry = _strategy(results, label)
    num_tasks = number_of_tasks(results)
    colours = _task_colours(num_tasks)
    curves = curves_of(entry, num_tasks)
    if curves is None and rows_recorded(entry) == 0:
        return None
    figure = _new_figure(7.5, 3.6)
    axes = figure.add_subplot()
    if curves is not None:
        for j in range(num_tasks):
            trained = np.flatnonzero(curves.task >= j)
            start = int(trained[0]) if len(trained) else len(curves.step)
            _plot_task_line(
                axes, curves.step, curves.accuracy[:, j], start, colours[j], f"task {j + 1}"
            )
        _draw_boundaries(axes, curves.boundaries())
        axes.set_xlabel("training step (dashed: task boundaries)")
    else:
        matrix = accuracy_array(entry, num_tasks)[: rows_recorded(entry)]
        learned = np.arange(len(matrix))
        for j in range(num_tasks):
            _plot_task_line(
                axes, learned, matrix[:, j], j + 1, colours[j], f"task {j + 1}", marker="o", ms=3
            )
        if num_tasks <= 20:
            axes.set_xticks(np.arange(num_tasks + 1))
        else:
            axes.xaxis.get_major_locator().set_params(integer=True)
        axes.set_xlim(-0.2, num_tasks + 0.2)
        axes.set_xlabel("tasks learned")
    axes.set_ylim(-0.02, 1.02)
    axes.set_ylabel("test accuracy")
    axes.grid(alpha=0.3)
    axes.set_title(_plain(f"{label}{_status_suffix(entry)}: accuracy per task"), fontsize=10)
    _task_legend_or_colourbar(figure, axes, num_tasks)
    return figure


COMPARISON_METRICS: tuple[tuple[str, str], ...] = (
    ("acc", "ACC"),
    ("bwt", "BWT"),
    ("fwt", "FWT"),
    ("forgetting", "forgetting"),
)
"""Metrics compared across strategies in :func:`comparison_figure` (key, axis label)."""


def comparison_figure(results: Mapping[str, Any]) -> Figure | None:
    """Grouped bars of ACC, BWT, FWT and forgetting in percent, one bar per strategy in each group.

    Undefined metrics (null) leave a gap marked "n/a". Only strategies that learned the whole
    stream are compared: partial and failed ones are left out (their metrics cover fewer tasks)
    and named under the axis. ``None`` when no strategy finished.
    """
    every = list((results.get("strategies") or {}).items())
    strategies = [(label, e) for label, e in every if e.get("status") == "complete"]
    left_out = [label for label, e in every if e.get("status") != "complete"]
    if not strategies:
        return None
    width = 0.8 / len(strategies)
    figure = _new_figure(min(6.0 + 0.35 * len(strategies), 14.0), 4.0)
    axes = figure.add_subplot()
    groups = np.arange(len(COMPARISON_METRICS))
    for index, (label, entry) in enumerate(strategies):
        values = [entry.get(key) for key, _ in COMPARISON_METRICS]
        heights = [np.nan if value is None else 100.0 * float(value) for value in values]
        offsets = groups - 0.4 + width * (index + 0.5)
        complete = entry.get("status") == "complete"
        axes.bar(
            offsets,
            heights,
            width=width * 0.95,
            color=_strategy_colour(index),
            hatch=None if complete else "//",
            edgecolor="white" if complete else "black",
            label=_plain(f"{label}{_status_suffix(entry)}"),
        )
        for offset, height in zip(offsets, heights, strict=True):
            if not np.isfinite(height):
                axes.text(offset, 0.0, "n/a", ha="center", va="bottom", fontsize=6, rotation=90)
    axes.axhline(0.0, color="black", linewidth=0.8)
    axes.set_xticks(groups, [name for _, name in COMPARISON_METRICS])
    axes.set_ylabel("percent (BWT, FWT: points)")
    axes.grid(axis="y", alpha=0.3)
    axes.set_title("strategies compared (finished runs only)", fontsize=10)
    if left_out:
        axes.set_xlabel(_plain("not finished, left out: " + ", ".join(left_out)), fontsize=7)
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return figure


def _per_seed(entry: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The per-seed results of a strategy: a study's ``seeds`` (schema 2), else the entry."""
    seeds = entry.get("seeds")
    return list(seeds.values()) if isinstance(seeds, dict) and seeds else [entry]


def footprint_figure(results: Mapping[str, Any]) -> Figure | None:
    """Everything each strategy keeps (model, copies of models, anchors, importances, buffers,
    generators; ``footprint`` in results.json) after each task, in bytes, one line per strategy
    (the first seed's, for a study). ``None`` when no strategy records a footprint."""
    lines = []
    for index, (label, entry) in enumerate((results.get("strategies") or {}).items()):
        footprint = _per_seed(entry)[0].get("footprint") or []
        if footprint:
            lines.append((index, label, entry, [sum(f.values()) for f in footprint]))
    if not lines:
        return None
    figure = _new_figure(7.0, 3.6)
    axes = figure.add_subplot()
    for index, label, entry, totals in lines:
        axes.plot(
            np.arange(1, len(totals) + 1),
            totals,
            marker="o",
            ms=3,
            color=_strategy_colour(index),
            label=_plain(f"{label}{_status_suffix(entry)}"),
        )
    axes.set_yscale("log")
    axes.set_xlabel("tasks learned")
    axes.set_ylabel("bytes kept")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.grid(alpha=0.3)
    axes.set_title("footprint: everything each strategy keeps", fontsize=10)
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return figure


def average_accuracy_curves(matrices: Sequence[Sequence[Sequence[float]]]) -> np.ndarray:
    """``[seeds, tasks]`` average accuracy over the tasks learned so far after each task
    (``mean_j<=i R[i, j]``), NaN where a seed stopped early."""
    width = max((len(m) - 1 for m in matrices), default=0)
    out = np.full((len(matrices), width), np.nan)
    for s, matrix in enumerate(matrices):
        for i in range(1, len(matrix)):
            out[s, i - 1] = float(np.mean(matrix[i][:i]))
    return out


def average_accuracy_figure(
    per_strategy: Mapping[str, Sequence[Sequence[Sequence[float]]]],
) -> Figure | None:
    """Average accuracy over the tasks seen so far after each task, per strategy: the mean over
    seeds (one accuracy matrix per seed) with a band of ± one sample standard deviation where
    two or more seeds reached that task (no band for one seed)."""
    per_strategy = {k: v for k, v in per_strategy.items() if any(len(m) > 1 for m in v)}
    if not per_strategy:
        return None
    figure = _new_figure(7.0, 3.6)
    axes = figure.add_subplot()
    for index, (label, matrices) in enumerate(per_strategy.items()):
        curves = 100.0 * average_accuracy_curves(matrices)
        counts = np.sum(np.isfinite(curves), axis=0)
        mean = np.nanmean(np.where(counts > 0, curves, 0.0), axis=0)
        tasks = np.arange(1, curves.shape[1] + 1)
        colour = _strategy_colour(index)
        seeds = f" (n={len(matrices)})" if len(matrices) > 1 else ""
        axes.plot(tasks, mean, marker="o", ms=3, color=colour, label=_plain(f"{label}{seeds}"))
        if (counts >= 2).any():
            filled = np.where(np.isfinite(curves), curves, np.nan)
            std = np.array(
                [
                    np.nanstd(filled[:, t], ddof=1) if counts[t] >= 2 else 0.0
                    for t in range(len(tasks))
                ]
            )
            axes.fill_between(tasks, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
    axes.set_xlabel("tasks learned")
    axes.set_ylabel("average accuracy so far (%)")
    axes.set_ylim(0, 100)
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.grid(alpha=0.3)
    axes.set_title("average accuracy over the tasks seen so far (± std over seeds)", fontsize=10)
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return figure


def matrices_by_strategy(results: Mapping[str, Any]) -> dict[str, list[list[list[float]]]]:
    """Every strategy's per-seed accuracy matrices (one for a single run)."""
    return {
        str(label): [e.get("accuracy_matrix") or [] for e in _per_seed(entry)]
        for label, entry in (results.get("strategies") or {}).items()
    }


def strategies_with_curves(results: Mapping[str, Any]) -> list[str]:
    """Labels of the strategies that recorded accuracy curves during training."""
    num_tasks = number_of_tasks(results)
    return [
        label
        for label, entry in (results.get("strategies") or {}).items()
        if curves_of(entry, num_tasks) is not None
    ]


def plasticity_figure(
    results: Mapping[str, Any],
    tasks: Sequence[int] = (0, 1, 2),
    path: str | Path | None = None,
) -> Figure:
    """Accuracy on a few tasks during sequential training, every strategy overlaid.

    One panel per task in ``tasks`` (0-based ids; ids beyond the stream are dropped), one line
    per strategy with curves, x = global training step; the layout of Kirkpatrick et al. 2017,
    "Overcoming catastrophic forgetting in neural networks", Fig. 2A (tasks A, B, C under SGD, L2
    and EWC). Task boundaries are dashed grey when all strategies share them, else dotted in each
    strategy's colour. Saved as PNG at ``path`` when given. Raises :class:`ConfigError` when no
    strategy has curves or no requested task exists.
    """
    num_tasks = number_of_tasks(results)
    shown = [task for task in tasks if 0 <= task < num_tasks]
    if not shown:
        raise ConfigError(
            f"tasks {list(tasks)} are not in this stream of {num_tasks} tasks; "
            f"pick ids from 0 to {num_tasks - 1}"
        )
    strategies = list((results.get("strategies") or {}).items())
    drawn = [
        (index, label, entry, curves)
        for index, (label, entry) in enumerate(strategies)
        if (curves := curves_of(entry, num_tasks)) is not None
    ]
    if not drawn:
        raise ConfigError("no strategy in these results has curves; run with --eval-every N > 0")
    figure = _new_figure(7.5, 1.2 + 1.9 * len(shown))
    panels = figure.subplots(len(shown), 1, sharex=True, squeeze=False)[:, 0]
    all_boundaries = [curves.boundaries() for _, _, _, curves in drawn]
    shared = all(boundaries == all_boundaries[0] for boundaries in all_boundaries)
    for axes, task in zip(panels, shown, strict=True):
        for index, label, entry, curves in drawn:
            axes.plot(
                curves.step,
                curves.accuracy[:, task],
                color=_strategy_colour(index),
                lw=1.2,
                label=_plain(f"{label}{_status_suffix(entry)}"),
            )
            if not shared:
                for step in curves.boundaries():
                    axes.axvline(step, color=_strategy_colour(index), ls=":", lw=0.8, alpha=0.6)
        if shared:
            _draw_boundaries(axes, all_boundaries[0])
        axes.set_ylim(-0.02, 1.02)
        axes.set_ylabel(f"task {task + 1}\naccuracy")
        axes.grid(alpha=0.3)
    panels[0].set_title("accuracy on the first tasks during sequential training", fontsize=10)
    panels[0].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    panels[-1].set_xlabel("training step")
    if path is not None:
        save_figure(figure, path)
    return figure


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` as a 256-colour PNG (parent folders created); returns the path.

    Plots are mostly flat colours, so a palette PNG looks the same at about a third of the size of
    the RGBA one, which keeps reports with many tasks and strategies small.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    buffer.seek(0)
    with Image.open(buffer) as image:
        palette = image.convert("RGB").quantize(
            PALETTE_COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
    encoded = io.BytesIO()
    palette.save(encoded, format="png", optimize=True)
    atomic_write_bytes(target, encoded.getvalue())  # a full disk leaves no empty PNG
    return target


def file_stem(index: int, label: str) -> str:
    """A stable, file-system-safe name part for a strategy: ``03_ewc-lambda-100``."""
    slug = re.sub(r"[^A-Za-z0-9._]+", "-", label).strip("-.")[:60] or "strategy"
    return f"{index:02d}_{slug}"


@dataclass
class PlotFiles:
    """Paths of the PNGs written by :func:`save_plots`; ``None``/absent where not drawn."""

    comparison: Path | None = None
    accuracy_matrices: Path | None = None
    parameters: Path | None = None  # no longer drawn: the footprint replaces it
    footprint: Path | None = None
    average_accuracy: Path | None = None
    plasticity: Path | None = None
    accuracy_matrix: dict[str, Path] = field(default_factory=dict)
    task_accuracy: dict[str, Path] = field(default_factory=dict)


def save_plots(results: Mapping[str, Any], folder: str | Path) -> PlotFiles:
    """(Re)draw every figure of a report into ``folder`` and return their paths.

    Names are stable: ``comparison.png``, ``accuracy_matrices.png``, ``footprint.png``,
    ``average_accuracy.png``,
    ``plasticity.png`` and, per strategy in results order, ``accuracy_matrix_NN_<label>.png`` and
    ``task_accuracy_NN_<label>.png``.
    PNGs of those names left by an earlier build are removed first, so none goes stale.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for pattern in _OWN_PATTERNS:
        for old in folder.glob(pattern):
            old.unlink()
    files = PlotFiles()
    if (figure := comparison_figure(results)) is not None:
        files.comparison = save_figure(figure, folder / "comparison.png")
    if (figure := accuracy_matrices_figure(results)) is not None:
        files.accuracy_matrices = save_figure(figure, folder / "accuracy_matrices.png")
    if (figure := footprint_figure(results)) is not None:
        files.footprint = save_figure(figure, folder / "footprint.png")
    if (figure := average_accuracy_figure(matrices_by_strategy(results))) is not None:
        files.average_accuracy = save_figure(figure, folder / "average_accuracy.png")
    if len(strategies_with_curves(results)) >= 2:
        files.plasticity = folder / "plasticity.png"
        plasticity_figure(results, path=files.plasticity)
    for index, (label, entry) in enumerate((results.get("strategies") or {}).items()):
        stem = file_stem(index, str(label))
        if rows_recorded(entry) > 0:
            files.accuracy_matrix[label] = save_figure(
                accuracy_matrix_figure(results, label), folder / f"accuracy_matrix_{stem}.png"
            )
        if (figure := task_accuracy_figure(results, label)) is not None:
            files.task_accuracy[label] = save_figure(figure, folder / f"task_accuracy_{stem}.png")
    return files
