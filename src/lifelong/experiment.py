"""An experiment: every strategy of a RunConfig through one stream, saved after each task.

The run directory holds ``config.json`` (the resolved settings, for ``--resume``),
``results.json`` and ``metrics.csv`` (rewritten after every task), and ``checkpoints/LABEL.pt``
(model, strategy state, optimizer, random-number-generator states and results so far, written
atomically after every task). Loggers add ``log.csv``, ``tensorboard/`` or ``wandb/``; reports add
``report.html`` and ``plots/``; ``--overwrite`` deletes all of these (:func:`clear_run`) and nothing
else.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from lifelong.callbacks import LOG_OUTPUTS, Callback, make_loggers, write_message
from lifelong.config import RunConfig
from lifelong.errors import ConfigError, LifelongError, RunInterrupted, TrainingDivergedError
from lifelong.models import check_model
from lifelong.plugins import check_named
from lifelong.resources import run_environment
from lifelong.results import (
    UNITS,
    RunResults,
    StrategyResult,
    atomic_write_text,
    load_results,
    run_lock,
    safe_filename,
)
from lifelong.runner import learn_stream, resolve_device
from lifelong.streams import build_stream
from lifelong.streams.base import Stream
from lifelong.train import EVALUATION_KEYS

if TYPE_CHECKING:
    import torch


def new_run_dir(root: Path = Path("runs")) -> Path:
    """A fresh directory ``runs/YYYYmmdd-HHMMSS[-N]``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = root / stamp, 1
    while path.exists():
        n += 1
        path = root / f"{stamp}-{n}"
    return path


def config_json(config: RunConfig) -> str:
    """The text of ``config.json``: every setting, strategies as full specs."""
    raw = config.to_dict()
    # Full specs, not labels: a label chosen in a config file ({name=..., label=...}) is no spec.
    raw["strategies"] = [
        {"name": s.name, "label": s.label, **s.params, **s.train_overrides}
        for s in config.strategies
    ]
    return json.dumps(raw, indent=1) + "\n"


def save_config(config: RunConfig, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.json", config_json(config))


def build_run_stream(config: RunConfig) -> Stream:
    """The stream of a run: built from the seed, with the ``--validation`` split held out of
    every task's training data, restricted to ``task_range`` when set."""
    stream = build_stream(config.stream, **config.stream_kwargs())
    if config.validation:
        stream = stream.hold_out(config.validation, config.seed)
        empty = next((t for t in stream.tasks if t.valid is None or not len(t.valid)), None)
        if empty is not None:
            raise ConfigError(
                f"--validation {config.validation} holds out nothing of task {empty.id + 1}: its "
                f"{len(empty.train)} training samples have no class with 2 or more; give more "
                "--train-samples (2 or more per class) or drop --validation"
            )
    if config.task_range is not None:
        start, stop = config.task_range
        if stop > len(stream):
            raise ConfigError(
                f"task_range {start}..{stop} exceeds the stream's {len(stream)} tasks"
            )
        stream = stream.select(start, stop)
    return stream


def checked_stream(config: RunConfig) -> Stream:
    """The run's stream (:func:`build_run_stream`) with its model checked against it: what a run
    refuses before it writes anything (the device aside, which may differ where units run)."""
    stream = build_run_stream(config)
    check_model(config.model, stream, config.hidden)
    return stream


def load_run_config(run_dir: Path) -> RunConfig:
    path = run_dir / "config.json"
    if not path.exists():
        raise ConfigError(
            f"{run_dir} has no config.json; --resume takes a directory written by lifelong run"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(
            f"{path} is not readable JSON ({_first_line(err)}); restore it, or start the run "
            "again into a new folder"
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} does not hold a table of settings; restore it or start again")
    named = raw.get("plugins") or []
    check_named([named] if isinstance(named, str) else named, str(path))
    try:
        return RunConfig.from_dict(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0]


RUN_FILES = ("config.json", "results.json", "metrics.csv")


def holds_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` already holds (part of) a run or study: its settings, results,
    checkpoints or a study's unit folders."""
    return (
        any((run_dir / name).exists() for name in RUN_FILES)
        or any((run_dir / "checkpoints").glob("*.pt"))
        or any((run_dir / UNITS).glob("*"))
    )


def clear_run(run_dir: Path) -> None:
    """Delete every file the library writes in a run or study folder, before ``--overwrite``:
    settings, results, checkpoints, logs (``log.csv``, ``tensorboard/``, ``wandb/``),
    ``report.html``, ``plots/*.png``, a unit's ``unit-error.txt`` and a study's unit folders
    (each cleared the same way). Files the user put there stay, and so do their folders."""
    from lifelong.engine import ERROR_FILE
    from lifelong.report import PLOTS_FOLDER, REPORT_FILE

    for config in sorted((run_dir / UNITS).rglob("config.json")):
        clear_run(config.parent)
    for name in (*RUN_FILES, REPORT_FILE, ERROR_FILE, *LOG_OUTPUTS.values()):
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)  # a logger's own folder
        else:
            path.unlink(missing_ok=True)
    for path in [*(run_dir / "checkpoints").glob("*.pt"), *(run_dir / PLOTS_FOLDER).glob("*.png")]:
        path.unlink()
    folders = [run_dir / "checkpoints", run_dir / PLOTS_FOLDER, *(run_dir / UNITS).rglob("*")]
    folders.append(run_dir / UNITS)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):  # deepest first
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def claim_folder(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse a fresh run or study into a folder that holds one, unless ``overwrite`` (then clear
    it with :func:`clear_run`). Called with the folder's :func:`~lifelong.results.run_lock` held."""
    if resume or not holds_run(run_dir):
        return
    if not overwrite:
        what = "a study" if (run_dir / UNITS).exists() else "a run"
        raise ConfigError(
            f"{run_dir} already holds {what}; continue it with `lifelong run --resume "
            f"{run_dir}`, replace it with --overwrite, or choose another --out"
        )
    clear_run(run_dir)


RESUME_FREE = ("data_dir", "device", *EVALUATION_KEYS, "plugins", "log")
"""Settings a resume may change in config.json: where and how a run is done, not its results."""


def check_resume_config(config: RunConfig, recorded: dict) -> None:
    """Refuse to resume when config.json's settings differ from those in results.json (an edited
    config.json would run the remaining strategies with other settings)."""
    current = config.to_dict()
    with contextlib.suppress(LifelongError, TypeError, ValueError):  # as written, if not a config
        # an older version's defaults settled as today's; its plugins are not imported (free)
        recorded = RunConfig.from_dict(
            {k: v for k, v in recorded.items() if k != "plugins"}
        ).to_dict()
    differ = [
        key
        for key, value in recorded.items()
        if key in current and key not in RESUME_FREE and current[key] != value
    ]
    if differ:
        shown = ", ".join(f"{k} {recorded[k]!r} -> {current[k]!r}" for k in differ)
        raise ConfigError(
            f"config.json differs from the settings the run started with ({shown}); restore "
            "config.json to resume, or start a new run into another --out"
        )


def run_experiment(
    config: RunConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: Sequence[Callback] = (),
) -> RunResults:
    """Run (or resume) every strategy of ``config``, saving into ``run_dir`` after each task.

    ``run_dir`` is locked while the run writes it (:func:`~lifelong.results.run_lock`): a second
    writer is refused. A fresh run (``resume`` false) into a folder that holds a run is refused
    unless ``overwrite``. ``callbacks`` (a progress display) hear of every step and task, as do
    the loggers named by ``config.log``. A strategy whose loss diverges is marked ``failed``
    (with the message) and the run goes on with the next one. Ctrl-C or SIGTERM saves what
    finished and raises :class:`RunInterrupted`.
    """
    if config.is_study:
        raise ConfigError(
            "several seeds or candidate settings make a study; run it with lifelong.study.run_study"
        )
    device = resolve_device(config.device)  # bad settings are refused before the folder is made
    for spec in config.strategies:
        config.train_config(spec).check_values(device)  # every optimizer, on the run's device
    stream = checked_stream(config)
    loggers = make_loggers(config.log, run_dir)  # an unknown logger; creating one writes nothing
    with run_lock(run_dir):
        claim_folder(run_dir, resume=resume, overwrite=overwrite)
        with _stop_on_signals():
            return _run_locked(
                config, run_dir, stream, device, resume=resume, callbacks=[*callbacks, *loggers]
            )


_signals_received: list[signal.Signals] = []


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Ctrl-C and SIGTERM stop the run as Ctrl-C does (finished tasks kept, exit status 130).

    The handler records the signal and raises ``KeyboardInterrupt``; should that be swallowed
    (raised inside a finalizer, where Python only prints it), the run stops after the current
    task, when the record is checked. Only in the main thread, where handlers can be set.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        _signals_received.append(signal.Signals(signum))
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    _signals_received.clear()
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_locked(
    config: RunConfig,
    run_dir: Path,
    stream: Stream,
    device: torch.device,
    *,
    resume: bool,
    callbacks: Sequence[Callback],
) -> RunResults:
    if resume and (run_dir / "results.json").exists():
        results = load_results(run_dir)
        check_resume_config(config, results.config)
    else:
        results = RunResults(config=config.to_dict(), stream=stream.describe())
    results.environment = run_environment(device)
    save_config(config, run_dir)
    results.save(run_dir)
    for spec in config.strategies:
        done = results.strategies.get(spec.label)
        if done is not None and done.status in ("complete", "failed") and resume:
            continue
        checkpoint = run_dir / "checkpoints" / f"{safe_filename(spec.label)}.pt"
        if not resume:
            checkpoint.unlink(missing_ok=True)

        def on_task(result: StrategyResult, label: str = spec.label) -> None:
            results.strategies[label] = result
            results.save(run_dir)
            if _signals_received:  # a KeyboardInterrupt swallowed by a finalizer stops here
                raise KeyboardInterrupt

        from lifelong.strategies import create_strategy

        strategy = create_strategy(spec.name, spec.params, memory=config.memory, tasks=len(stream))
        try:
            result = learn_stream(
                stream,
                strategy,
                model=config.model,
                hidden=list(config.hidden) if config.hidden is not None else None,
                train=config.train_config(spec),
                seed=config.seed,
                device=config.device,
                label=spec.label,
                checkpoint=checkpoint,
                on_task=on_task,
                callbacks=callbacks,
            )
        except TrainingDivergedError as err:
            write_message(callbacks, f"lifelong: {err}")
            result = results.strategies[spec.label]
        except KeyboardInterrupt:
            by = f" by {_signals_received[0].name}" if _signals_received else ""
            raise RunInterrupted(
                f"interrupted{by}; results of finished tasks are in {run_dir}; "
                f"continue with: lifelong run --resume {run_dir}"
            ) from None
        results.strategies[spec.label] = result
        results.save(run_dir)
    return results
