"""The lecture's first example: learning a second, similar task makes the network forget the first.

The lecture (a 3-layer MLP on MNIST): after task 1 (noisy digits) the network scores 90 % on task
1 and 96 % on task 2 (clean digits); after it learns task 2, task 1 falls to 80 % while task 2
rises to 97 %; the same network trained on both at once scores 89 % and 98 %. So the network
*could* do both: the drop is forgetting, not a lack of capacity.

On the embedded 8x8 digits Gaussian pixel noise does not show this (clean training never lowered
the noisy task's accuracy at any level we measured, see benchmarks/RESULTS.md); an occlusion does:
task 1 hides a random 4x4 square (a quarter) of every image, task 2 is the clean images. The
setting below was chosen by measuring candidates over five seeds each
(``benchmarks/first_example.py``), and every number reported here is a mean ± sample standard
deviation over ``seeds`` runs of ``lifelong run`` with that setting.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lifelong.config import RunConfig
from lifelong.report.plots import _new_figure, save_figure

LECTURE = {"after task 1": (0.90, 0.96), "after task 2": (0.80, 0.97), "joint": (0.89, 0.98)}
"""The lecture's numbers: accuracy on (task 1, task 2) at each stage."""

FIRST_EXAMPLE: dict[str, Any] = {
    "data": "digits",
    "stream": "noisy:occlusion=[4,0]",
    "hidden": [100, 100],
    "epochs": 20,
    "batch_size": 32,
    "lr": 0.1,
}
"""The demo's setting (``lifelong run`` flags): occluded then clean digits, a 64-100-100-10 MLP."""

SEEDS = (0, 1, 2, 3, 4)

STAGES = ("after task 1", "after task 2", "joint")


def command(seeds: Sequence[int] = SEEDS) -> str:
    """The ``lifelong run`` command that reproduces the first example (a study over seeds)."""
    c = FIRST_EXAMPLE
    return (
        f"lifelong run --data {c['data']} --stream '{c['stream']}' --hidden "
        f"{' '.join(map(str, c['hidden']))} --epochs {c['epochs']} --batch-size "
        f"{c['batch_size']} --lr {c['lr']} --seeds {' '.join(map(str, seeds))} "
        "--strategy finetune joint"
    )


@dataclass
class FirstExample:
    """Accuracy on (task 1, task 2) at each stage, one row per seed.

    Attributes:
        seeds: the seeds run.
        stages: ``{stage: [seeds, 2] array}`` for ``after task 1``, ``after task 2`` (fine-tuning)
            and ``joint`` (the multitask model).
        bwt: fine-tuning's BWT per seed (R[2, 1] − R[1, 1]).
        acc: ``{"finetune": [...], "joint": [...]}`` ACC per seed.
        run_dirs: the fine-tuning run folder of each seed.
    """

    seeds: list[int]
    stages: dict[str, np.ndarray]
    bwt: np.ndarray
    acc: dict[str, np.ndarray]
    run_dirs: list[Path]

    def mean_std(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        std = values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros_like(values[0])
        return values.mean(axis=0), std

    def to_dict(self) -> dict[str, Any]:
        def summary(values: np.ndarray) -> dict[str, Any]:
            mean, std = self.mean_std(values)
            return {"mean": mean.tolist(), "std": std.tolist(), "per_seed": values.tolist()}

        return {
            "setting": FIRST_EXAMPLE,
            "seeds": self.seeds,
            "lecture": LECTURE,
            "stages": {k: summary(v) for k, v in self.stages.items()},
            "bwt": summary(self.bwt),
            "acc": {k: summary(v) for k, v in self.acc.items()},
        }


def run_first_example(out: str | Path, seeds: Sequence[int] = SEEDS) -> FirstExample:
    """Run the first example as a study (``lifelong run --seeds ...``: one ordinary run folder
    per strategy and seed under ``out/units``, the aggregate in ``out/results.json``) and collect
    the numbers. ``out`` is this function's own folder: a previous first example there is
    replaced."""
    from lifelong.study import run_study

    out = Path(out)
    if (out / "results.json").exists() or (out / "units").exists():
        shutil.rmtree(out)  # the first example's own folder, rebuilt on every call
    config = RunConfig.from_dict(
        {**FIRST_EXAMPLE, "seeds": list(seeds), "strategies": ["finetune", "joint"]}
    )
    return collect(run_study(config, out), out)


def collect(study: dict[str, Any], out: Path | None = None) -> FirstExample:
    """The first example's numbers from a study's results (schema 2) with ``finetune`` and
    ``joint`` run on the same seeds."""
    rows: dict[str, list] = {stage: [] for stage in STAGES}
    bwt, acc = [], {"finetune": [], "joint": []}
    fine, joint = study["strategies"]["finetune"], study["strategies"]["joint"]
    seeds = [int(s) for s in fine["seeds"]]
    for seed in map(str, seeds):
        r = fine["seeds"][seed]["accuracy_matrix"]
        j = joint["seeds"][seed]["accuracy_matrix"]
        rows["after task 1"].append(r[1][:2])
        rows["after task 2"].append(r[2][:2])
        rows["joint"].append(j[2][:2])
        bwt.append(fine["seeds"][seed]["bwt"])
        acc["finetune"].append(fine["seeds"][seed]["acc"])
        acc["joint"].append(joint["seeds"][seed]["acc"])
    base = Path(out) if out is not None else Path()
    return FirstExample(
        seeds=seeds,
        stages={k: np.array(v, dtype=float) for k, v in rows.items()},
        bwt=np.array(bwt, dtype=float),
        acc={k: np.array(v, dtype=float) for k, v in acc.items()},
        run_dirs=[base / fine["units"][str(s)] for s in seeds],
    )


def summary_line(data: FirstExample) -> str:
    """One sentence with the measured numbers (mean ± std over seeds) beside the lecture's."""

    def pct(stage: str, task: int) -> str:
        mean, std = data.mean_std(data.stages[stage])
        return f"{100 * mean[task]:.0f} ± {100 * std[task]:.0f} %"

    bwt_mean, bwt_std = data.mean_std(data.bwt)
    return (
        f"over {len(data.seeds)} seeds, task 1 (occluded digits) is at {pct('after task 1', 0)} "
        f"after task 1 and falls to {pct('after task 2', 0)} after task 2 (clean digits) is "
        f"learned (BWT {100 * bwt_mean:+.1f} ± {100 * bwt_std:.1f} points), while the joint model "
        f"keeps {pct('joint', 0)} and {pct('joint', 1)}; the lecture: 90 % → 80 % on task 1, "
        "joint 89 % and 98 %"
    )


def table_rows(data: FirstExample) -> list[tuple[str, str, str, str, str]]:
    """(stage, our task 1, our task 2, lecture task 1, lecture task 2) as printable strings."""
    out = []
    for stage in STAGES:
        mean, std = data.mean_std(data.stages[stage])
        ours = [f"{100 * m:.1f} ± {100 * s:.1f}" for m, s in zip(mean, std, strict=True)]
        lecture = [f"{100 * v:.0f}" for v in LECTURE[stage]]
        out.append((stage, *ours, *lecture))
    return out


def draw(data: FirstExample, path: str | Path) -> Path:
    """Grouped bars: accuracy on task 1 and task 2 at each stage, ours (mean ± std) and the
    lecture's, side by side."""
    figure = _new_figure(7.5, 4.4)
    axes = figure.subplots()
    width = 0.2
    x = np.arange(len(STAGES))
    colours = {"task 1": "#1f77b4", "task 2": "#ff7f0e"}
    for k, task in enumerate(("task 1", "task 2")):
        mean = np.array([data.mean_std(data.stages[s])[0][k] for s in STAGES])
        std = np.array([data.mean_std(data.stages[s])[1][k] for s in STAGES])
        lecture = np.array([LECTURE[s][k] for s in STAGES])
        ours_x = x + (2 * k - 1.5) * width
        bars = axes.bar(
            ours_x,
            100 * mean,
            width,
            yerr=100 * std,
            capsize=3,
            color=colours[task],
            label=f"{task}, ours (mean ± std, {len(data.seeds)} seeds)",
        )
        axes.bar_label(bars, [f"{100 * m:.0f}" for m in mean], fontsize=8, padding=2)
        bars = axes.bar(
            ours_x + width,
            100 * lecture,
            width,
            color=colours[task],
            alpha=0.35,
            hatch="//",
            label=f"{task}, lecture",
        )
        axes.bar_label(bars, [f"{100 * v:.0f}" for v in lecture], fontsize=8, padding=2)
    axes.set_xticks(x, ["after task 1", "after task 2\n(fine-tuning)", "joint (both at once)"])
    axes.set_ylabel("test accuracy (%)")
    axes.set_ylim(0, 112)
    axes.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    axes.set_title(
        "task 1: occluded digits, task 2: clean digits (lecture: noisy, then clean MNIST)",
        fontsize=9,
    )
    return save_figure(figure, path)
