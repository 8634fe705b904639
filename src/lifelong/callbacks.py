"""Callbacks: what a run reports while it trains, to a progress display and to loggers.

A callback overrides any of the :class:`Callback` methods; :func:`lifelong.runner.learn_stream`
(``callbacks=[...]``) and :func:`lifelong.experiment.run_experiment` call them for every
strategy run. Built in:

* :class:`ProgressBar`: per-step progress within each task (tqdm; off when stderr is no
  terminal, so CI logs stay readable);
* :class:`CSVLogger` (``--log csv``): one tidy row per value in ``log.csv``;
* :class:`TensorBoardLogger` (``--log tensorboard``): event files under ``tensorboard/LABEL``
  (needs ``pip install tensorboard``);
* :class:`WandbLogger` (``--log wandb``): a Weights & Biases run per strategy, offline unless
  ``WANDB_MODE`` says otherwise (needs ``pip install wandb``).

Each logger records the loss of every step (with strategy, seed and task), every task's accuracy
after each task, the final metrics and the run's settings.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifelong.errors import ConfigError, UnknownNameError
from lifelong.results import safe_filename

if TYPE_CHECKING:
    from lifelong.results import StrategyResult


@dataclass(frozen=True)
class RunInfo:
    """Which run a callback hears about.

    Attributes:
        label: the strategy's label (``ewc:lambda=100``). strategy: its registered name.
        seed: the run's seed. n_tasks: tasks in the stream.
        settings: strategy hyperparameters, training settings, stream and device.
    """

    label: str
    strategy: str
    seed: int
    n_tasks: int
    settings: dict[str, Any] = field(default_factory=dict)


class Callback:
    """Override the events you need; every method does nothing by default. ``task`` is the
    task's index in the stream (``task.id``, from 0)."""

    def run_start(self, run: RunInfo, first_task: int) -> None:
        """Before training (``first_task`` > 0 when a run resumes)."""

    def fit_start(self, run: RunInfo, task: int, steps: int) -> None:
        """A pass of ``steps`` optimizer steps over task ``task``'s training data begins."""

    def step(self, run: RunInfo, task: int, step: int, loss: float) -> None:
        """After optimizer step ``step`` (counted over the whole stream); on a GPU steps arrive
        in order at the loop's reads of its pending losses (:class:`~lifelong.train.Trainer`)."""

    def task_end(self, run: RunInfo, task: int, accuracies: list[float]) -> None:
        """After task ``task``: the accuracy on every task of the stream."""

    def run_end(self, run: RunInfo, result: StrategyResult) -> None:
        """After the last task, or when the run failed (``result.status``)."""

    def message(self, text: str) -> None:
        """A line for the user (printed above a progress display)."""


def write_message(callbacks: list[Callback] | tuple[Callback, ...], text: str) -> None:
    """Print ``text`` on stderr above any progress display."""
    for cb in callbacks:
        if isinstance(cb, ProgressBar):
            cb.message(text)
            return
    print(text, file=sys.stderr)


def format_loss(loss: float) -> str:
    """Four significant digits, exponent notation for very large or small values."""
    return f"{loss:.4g}"


class ProgressBar(Callback):
    """A tqdm bar per strategy that moves with every step of the current task.

    Shows ``LABEL seed S task i/T``, steps done of the task's steps, steps/s, the time left and
    the latest loss; a finished strategy leaves one line. ``disable=None`` (default): shown only
    when ``file`` is a terminal."""

    def __init__(self, file: Any = None, disable: bool | None = None) -> None:
        self.file = file or sys.stderr
        self.disable = disable
        self.bar: Any = None
        self._every = 1

    def run_start(self, run: RunInfo, first_task: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=0,
            desc=run.label,
            unit="step",
            file=self.file,
            disable=self.disable,
            dynamic_ncols=True,
            leave=False,
        )

    def fit_start(self, run: RunInfo, task: int, steps: int) -> None:
        if self.bar is None:
            return
        self.bar.set_description_str(
            f"{run.label} seed {run.seed} task {task + 1}/{run.n_tasks}", refresh=False
        )
        self.bar.set_postfix_str("", refresh=False)  # the last task's loss is not this one's
        self.bar.reset(total=steps)

    def step(self, run: RunInfo, task: int, step: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {format_loss(loss)}", refresh=False)
            self.bar.update()

    def run_end(self, run: RunInfo, result: StrategyResult) -> None:
        if self.bar is None:
            return
        disabled = self.bar.disable
        self.bar.close()
        self.bar = None
        if not disabled:
            acc = result.metrics().get("acc")
            summary = f"ACC {acc:.3f}" if isinstance(acc, float) else result.status
            print(f"{run.label} seed {run.seed}: {result.status}, {summary}", file=self.file)

    def message(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=self.file)


def _flat_settings(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out.update(_flat_settings(value, f"{prefix}{key}/"))
        else:
            out[prefix + key] = value if isinstance(value, int | float | str | bool) else str(value)
    return out


class CSVLogger(Callback):
    """Tidy rows ``label, strategy, seed, task, step, key, value`` in ``path``.

    ``key`` is ``loss`` (every step), ``accuracy/task_J`` (after each task; ``task`` is the task
    just learned), a final metric name (``acc``, ``bwt``, ...; task empty) or ``setting/NAME``.
    Rows are appended, so a resumed run continues the same file."""

    COLUMNS = ("label", "strategy", "seed", "task", "step", "key", "value")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: Any = None
        self._writer: Any = None
        self._step = 0

    def _row(self, run: RunInfo, task: Any, step: Any, key: str, value: Any) -> None:
        self._writer.writerow([run.label, run.strategy, run.seed, task, step, key, value])

    def run_start(self, run: RunInfo, first_task: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file = self.path.open("a", newline="")
        self._writer = csv.writer(self._file, lineterminator="\n")
        if new:
            self._writer.writerow(self.COLUMNS)
        for key, value in _flat_settings(run.settings).items():
            self._row(run, "", "", f"setting/{key}", value)

    def step(self, run: RunInfo, task: int, step: int, loss: float) -> None:
        self._step = step
        self._row(run, task + 1, step, "loss", f"{loss:.6g}")

    def task_end(self, run: RunInfo, task: int, accuracies: list[float]) -> None:
        for j, acc in enumerate(accuracies):
            self._row(run, task + 1, self._step, f"accuracy/task_{j + 1}", f"{acc:.6g}")
        self._file.flush()

    def run_end(self, run: RunInfo, result: StrategyResult) -> None:
        for key, value in result.metrics().items():
            self._row(run, "", self._step, key, "" if value is None else f"{value:.6g}")
        self._row(run, "", self._step, "status", result.status)
        self._file.close()


def _missing(package: str, logger: str) -> ConfigError:
    return ConfigError(
        f"--log {logger} needs the {package} package; install it with: pip install {package} "
        f"(or pip install 'lifelong[{logger}]')"
    )


class TensorBoardLogger(Callback):
    """Event files in ``root/LABEL/`` (one TensorBoard run per strategy label): scalars ``loss``
    (x: step), ``accuracy/task_J`` (x: tasks learned), ``final/METRIC`` and the settings as
    text. View with ``tensorboard --logdir root``."""

    def __init__(self, root: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise _missing("tensorboard", "tensorboard") from None
        self._writer_cls = SummaryWriter
        self.root = Path(root)
        self.writer: Any = None

    def run_start(self, run: RunInfo, first_task: int) -> None:
        self.writer = self._writer_cls(log_dir=str(self.root / safe_filename(run.label)))
        text = json.dumps(run.settings, indent=1, default=str)
        self.writer.add_text("settings", f"```\n{text}\n```")

    def step(self, run: RunInfo, task: int, step: int, loss: float) -> None:
        self.writer.add_scalar("loss", loss, step)

    def task_end(self, run: RunInfo, task: int, accuracies: list[float]) -> None:
        for j, acc in enumerate(accuracies):
            self.writer.add_scalar(f"accuracy/task_{j + 1}", acc, task + 1)
        self.writer.flush()

    def run_end(self, run: RunInfo, result: StrategyResult) -> None:
        for key, value in result.metrics().items():
            if value is not None:
                self.writer.add_scalar(f"final/{key}", value, result.tasks_done)
        self.writer.close()


class WandbLogger(Callback):
    """A Weights & Biases run per strategy label, offline by default (``WANDB_MODE=online`` to
    upload; ``wandb sync DIR`` later): ``loss``, ``task``, ``accuracy/task_J``, the final metrics
    in the summary and the settings as the run's config."""

    def __init__(self, root: str | Path, project: str = "lifelong") -> None:
        try:
            import wandb
        except ImportError:
            raise _missing("wandb", "wandb") from None
        self.wandb = wandb
        self.root, self.project = Path(root), project
        self.run: Any = None

    def run_start(self, run: RunInfo, first_task: int) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.run = self.wandb.init(
            project=self.project,
            name=f"{run.label} seed {run.seed}",
            config=run.settings,
            dir=str(self.root),
            mode=os.environ.get("WANDB_MODE", "offline"),
            reinit="finish_previous",
        )

    def step(self, run: RunInfo, task: int, step: int, loss: float) -> None:
        self.run.log({"loss": loss, "task": task + 1}, step=step)

    def task_end(self, run: RunInfo, task: int, accuracies: list[float]) -> None:
        self.run.log({f"accuracy/task_{j + 1}": a for j, a in enumerate(accuracies)})

    def run_end(self, run: RunInfo, result: StrategyResult) -> None:
        for key, value in result.metrics().items():
            self.run.summary[key] = value
        self.run.summary["status"] = result.status
        self.run.finish()


LOG_OUTPUTS = {"csv": "log.csv", "tensorboard": "tensorboard", "wandb": "wandb"}
"""What each ``--log`` logger writes in the run directory (``--overwrite`` deletes them)."""
LOGGERS = {
    "csv": lambda run_dir: CSVLogger(Path(run_dir) / LOG_OUTPUTS["csv"]),
    "tensorboard": lambda run_dir: TensorBoardLogger(Path(run_dir) / LOG_OUTPUTS["tensorboard"]),
    "wandb": lambda run_dir: WandbLogger(Path(run_dir) / LOG_OUTPUTS["wandb"]),
}


def make_loggers(names: list[str] | tuple[str, ...], run_dir: str | Path) -> list[Callback]:
    """The loggers of ``--log NAME ...`` writing into ``run_dir``."""
    for name in names:
        if name not in LOGGERS:
            raise UnknownNameError("logger", name, list(LOGGERS))
    return [LOGGERS[name](run_dir) for name in dict.fromkeys(names)]
