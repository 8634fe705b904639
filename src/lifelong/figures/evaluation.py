"""The evaluation picture: the accuracy matrix R of a real run, with ACC, BWT and FWT read off it.

The lecture (after Lopez-Paz & Ranzato 2017, Sec. 2): R[i, j] is the accuracy on task j after
learning tasks 1..i (row 0: the untrained model). ACC averages the last row; BWT averages, over
every task but the last, the last row minus the diagonal (how much learning later tasks changed
a task); FWT averages, over every task but the first, the entry just above the diagonal minus the
untrained model's (how much earlier tasks helped before the task was seen).

:func:`metric_cells` says which cells each metric uses; :func:`values_from_cells` computes the
metrics from those cells alone, and the figure marks exactly those cells, so the test can check
the marks against :mod:`lifelong.metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.patches import Rectangle

from lifelong.report.plots import _new_figure, save_figure
from lifelong.runner import learn_stream
from lifelong.streams import build_stream
from lifelong.train import TrainConfig

Cell = tuple[int, int]


@dataclass
class MetricCells:
    """The cells (row, column; 0-based, row 0 = untrained) each metric reads.

    Attributes:
        acc: the cells averaged. bwt, fwt: ``(later, earlier)`` pairs whose differences are
            averaged.
    """

    acc: list[Cell]
    bwt: list[tuple[Cell, Cell]]
    fwt: list[tuple[Cell, Cell]]


def metric_cells(tasks: int) -> MetricCells:
    """The cells of a full (T+1) x T matrix that ACC, BWT and FWT use (GEM, Sec. 2)."""
    t = tasks
    return MetricCells(
        acc=[(t, j) for j in range(t)],
        bwt=[((t, j), (j + 1, j)) for j in range(t - 1)],
        fwt=[((j, j), (0, j)) for j in range(1, t)],
    )


def values_from_cells(matrix: np.ndarray, cells: MetricCells) -> dict[str, float]:
    """ACC, BWT and FWT computed from the marked cells alone."""
    r = np.asarray(matrix, dtype=float)
    return {
        "acc": float(np.mean([r[c] for c in cells.acc])),
        "bwt": float(np.mean([r[a] - r[b] for a, b in cells.bwt])),
        "fwt": float(np.mean([r[a] - r[b] for a, b in cells.fwt])),
    }


@dataclass
class EvaluationPicture:
    matrix: np.ndarray
    cells: MetricCells
    values: dict[str, float]
    title: str


def compute(seed: int = 0, tasks: int = 4, epochs: int = 2) -> tuple[EvaluationPicture, Any]:
    """Fine-tune through a rotated-digits stream (similar tasks: forward transfer is visible);
    return the picture and the run's :class:`~lifelong.results.StrategyResult`."""
    stream = build_stream(
        "rotated", "digits", tasks=tasks, seed=seed, angles=[30.0 * t for t in range(tasks)]
    )
    result = learn_stream(
        stream, "finetune", train=TrainConfig(epochs=epochs, batch_size=10, lr=0.05), seed=seed
    )
    matrix = np.array(result.accuracy_matrix)
    cells = metric_cells(tasks)
    title = f"fine-tuning on {tasks} rotated-digit tasks (0°, 30°, …), seed {seed}"
    return EvaluationPicture(matrix, cells, values_from_cells(matrix, cells), title), result


COLOURS = {"acc": "#2ca02c", "bwt": "#d62728", "fwt": "#9467bd"}


def draw(data: EvaluationPicture, path: str | Path) -> Path:
    """R as a heatmap with its values; ACC's cells boxed, BWT's and FWT's pairs as arrows."""
    r = data.matrix
    rows, cols = r.shape
    figure = _new_figure(2.2 + 1.25 * cols, 1.6 + 1.0 * rows)
    axes = figure.subplots()
    axes.imshow(r, cmap="Greys", vmin=0, vmax=1.6, aspect="equal")
    for (i, j), value in np.ndenumerate(r):
        axes.text(j, i, f"{100 * value:.0f}", ha="center", va="center", fontsize=10)
    for i, j in data.cells.acc:
        axes.add_patch(
            Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False, ec=COLOURS["acc"], lw=2.5)
        )

    def arrows(pairs, colour, offset):
        for (i1, j1), (i0, j0) in pairs:
            axes.annotate(
                "",
                xy=(j1 + offset, i1 - 0.25 * np.sign(i1 - i0)),
                xytext=(j0 + offset, i0 + 0.25 * np.sign(i1 - i0)),
                arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 1.8},
            )
            for i, j in ((i1, j1), (i0, j0)):
                axes.add_patch(
                    Rectangle((j - 0.4, i - 0.4), 0.8, 0.8, fill=False, ec=colour, lw=1.2, ls="--")
                )

    arrows(data.cells.bwt, COLOURS["bwt"], 0.3)
    arrows(data.cells.fwt, COLOURS["fwt"], -0.3)
    axes.set_xticks(range(cols), [f"task {j + 1}" for j in range(cols)])
    axes.set_yticks(range(rows), ["untrained"] + [f"after task {i}" for i in range(1, rows)])
    axes.xaxis.tick_top()
    v = data.values
    axes.set_xlabel(
        f"ACC = mean of the green cells = {100 * v['acc']:.1f} %\n"
        f"BWT = mean of the red arrows (end − start) = {100 * v['bwt']:+.1f} points\n"
        f"FWT = mean of the purple arrows (end − start) = {100 * v['fwt']:+.1f} points\n"
        f"{data.title}",
        fontsize=9,
    )
    return save_figure(figure, path)
