"""The lecture's 20 question-answering tasks: each one forgotten as the next is learned.

The lecture shows the 20 bAbI tasks (Weston et al. 2015) learned one after another: each task's
accuracy rises while it is trained and falls once the next begins, whereas the same model
trained on all 20 at once (multitask) answers most of them. So the model can hold them all; the
sequential training forgets.

The figure is drawn from a results.json holding a sequential strategy (``finetune``) and the
multitask one (``joint``), from any run; :data:`RUN` is the real 20-task setting of
benchmarks/RESULTS.md, section 5 (memory network, 20 epochs per task, Adam 0.01, batch 32).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lifelong.errors import ConfigError
from lifelong.report.plots import _new_figure, accuracy_array, save_figure
from lifelong.report.table import number_of_tasks

RUN: dict[str, Any] = {
    "data": "babi",
    "stream": "babi",
    "epochs": 20,
    "batch_size": 32,
    "optimizer": "adam",
    "lr": 0.01,
    "strategies": ["finetune", "joint"],
}
"""``lifelong run`` settings of the figure's own run (memnet, the default model for bAbI)."""


@dataclass
class QaPicture:
    """What the figure draws.

    Attributes:
        tasks: task names. sequential: R of the sequential strategy, ``(T+1) x T``.
        just_learned: R[j, j], each task right after it was learned. after_all: the last row.
        multitask: the multitask model's accuracy on every task (its last row).
        labels: (sequential label, multitask label) in the results.
    """

    tasks: list[str]
    sequential: np.ndarray
    just_learned: np.ndarray
    after_all: np.ndarray
    multitask: np.ndarray
    labels: tuple[str, str]
    description: str


def _find(results: Mapping[str, Any], name: str, given: str | None) -> str:
    strategies = results.get("strategies") or {}
    if given is not None:
        if given not in strategies:
            raise ConfigError(
                f"no strategy {given!r} in the results; known: {', '.join(strategies)}"
            )
        return given
    for label, entry in strategies.items():
        if entry.get("strategy") == name and entry.get("status") == "complete":
            return label
    raise ConfigError(
        f"the results have no complete {name!r} strategy; run it, e.g. "
        "lifelong run --data babi --stream babi --strategy finetune joint"
    )


def compute(
    results: Mapping[str, Any], sequential: str | None = None, multitask: str | None = None
) -> QaPicture:
    """The picture's data from a results.json dict (``finetune`` and ``joint`` by default)."""
    seq_label = _find(results, "finetune", sequential)
    multi_label = _find(results, "joint", multitask)
    t = number_of_tasks(results)
    r = accuracy_array(results["strategies"][seq_label], t)
    j = accuracy_array(results["strategies"][multi_label], t)
    names = [task.get("name", f"task {k + 1}") for k, task in enumerate(results["stream"]["tasks"])]
    stream = results.get("stream") or {}
    description = f"{stream.get('name', '?')} stream on {stream.get('data', '?')}, {t} tasks, {stream.get('scenario', '?')} scenario"
    return QaPicture(
        tasks=names,
        sequential=r,
        just_learned=np.array([r[k + 1, k] for k in range(t)]),
        after_all=r[t],
        multitask=j[t],
        labels=(seq_label, multi_label),
        description=description,
    )


def draw(data: QaPicture, path: str | Path) -> Path:
    """Left: R of the sequential run (bright diagonal, dark after). Right: per task, accuracy
    just after learning it, after all tasks, and of the multitask model."""
    t = len(data.tasks)
    figure = _new_figure(12.0, 5.2)
    left, right = figure.subplots(1, 2, width_ratios=(1.0, 1.4))
    image = left.imshow(data.sequential[1:], cmap="viridis", vmin=0, vmax=1, aspect="auto")
    left.set_xlabel("accuracy on task")
    left.set_ylabel("after learning task")
    ticks = list(range(0, t, 1 if t <= 20 else 5))
    left.set_xticks(ticks, [str(k + 1) for k in ticks], fontsize=7)
    left.set_yticks(ticks, [str(k + 1) for k in ticks], fontsize=7)
    left.set_title(f"sequential ({data.labels[0]}): each task after each task", fontsize=9)
    figure.colorbar(image, ax=left, shrink=0.8, label="accuracy")
    x = np.arange(t)
    right.bar(
        x - 0.27, 100 * data.just_learned, 0.27, color="#9ecae1", label="sequential, just learned"
    )
    right.bar(
        x, 100 * data.after_all, 0.27, color="#d62728", label=f"sequential, after all {t} tasks"
    )
    right.bar(
        x + 0.27, 100 * data.multitask, 0.27, color="#2ca02c", label=f"multitask ({data.labels[1]})"
    )
    right.set_xticks(x, [str(k + 1) for k in x], fontsize=7)
    right.set_xlabel("task")
    right.set_ylabel("test accuracy (%)")
    right.set_ylim(0, 105)
    right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, frameon=False)
    right.set_title(
        f"mean: just learned {100 * np.nanmean(data.just_learned):.0f} %, after all "
        f"{100 * np.nanmean(data.after_all):.0f} %, multitask {100 * np.nanmean(data.multitask):.0f} %",
        fontsize=9,
    )
    figure.suptitle(data.description, fontsize=9)
    return save_figure(figure, path)
