"""An experiment: every strategy of a RunConfig through one stream, saved after each task.

The run directory holds ``config.json`` (the resolved settings, for ``--resume``),
``results.json`` and ``metrics.csv`` (rewritten after every task), and ``checkpoints/LABEL.pt``
(model, strategy state, optimizer, random-number-generator states and results so far, written
atomically after every task).
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

from lifelong.callbacks import Callback, make_loggers, write_message
from lifelong.config import RunConfig
from lifelong.errors import ConfigError, RunInterrupted, TrainingDivergedError
from lifelong.models import check_model
from lifelong.resources import run_environment
from lifelong.results import (
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
    if config.task_range is not None:
        start, stop = config.task_range
        if stop > len(stream):
            raise ConfigError(
                f"task_range {start}..{stop} exceeds the stream's {len(stream)} tasks"
            )
        stream = stream.select(start, stop)
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
    try:
        return RunConfig.from_dict(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0]


RUN_FILES = ("config.json", "results.json", "metrics.csv")


def holds_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` already holds (part of) a run: its settings, results or checkpoints."""
    return any((run_dir / name).exists() for name in RUN_FILES) or any(
        (run_dir / "checkpoints").glob("*.pt")
    )


def clear_run(run_dir: Path) -> None:
    """Delete a run's own files (settings, results, checkpoints) before ``--overwrite``."""
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for checkpoint in (run_dir / "checkpoints").glob("*.pt"):
        checkpoint.unlink()


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
    with run_lock(run_dir):
        if not resume and holds_run(run_dir):
            if not overwrite:
                raise ConfigError(
                    f"{run_dir} already holds a run; continue it with `lifelong run --resume "
                    f"{run_dir}`, replace it with --overwrite, or choose another --out"
                )
            clear_run(run_dir)
        with _stop_on_signals():
            return _run_locked(config, run_dir, resume=resume, callbacks=callbacks)


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
    config: RunConfig, run_dir: Path, *, resume: bool, callbacks: Sequence[Callback]
) -> RunResults:
    device = resolve_device(config.device)  # fail early on a bad device
    callbacks = [*callbacks, *make_loggers(config.log, run_dir)]
    stream = build_run_stream(config)
    check_model(config.model, stream, config.hidden)  # before anything is written
    if resume and (run_dir / "results.json").exists():
        results = load_results(run_dir)
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
