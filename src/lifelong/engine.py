"""The engine: runs units of work, each an ordinary run folder.

A *unit* is one strategy setting x one seed: a run directory holding ``config.json`` (written
before execution) with one strategy and one seed. Running a unit starts that run folder or
resumes it, exactly what ``lifelong run --resume DIR`` does. Complete units are skipped,
interrupted ones resume from their last finished task, and a unit that fails is recorded with
its reason while the others run.

This body runs the units one after another in this process (``jobs == 1``, no ``address``).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lifelong.errors import ConfigError, LifelongError, RunInterrupted

DONE = ("complete", "failed")
"""Strategy statuses that running the unit again would not change."""


@dataclass(frozen=True)
class Unit:
    """One unit of work: its run folder (holding ``config.json``) and a name for messages."""

    run_dir: Path
    name: str


@dataclass
class UnitStatus:
    """How a unit ended: ``complete``, ``failed``, ``interrupted`` or ``skipped`` (was complete)."""

    unit: Unit
    status: str
    reason: str | None = None


def unit_done(run_dir: Path) -> bool:
    """Whether every strategy of the run folder is complete or failed (nothing left to run)."""
    from lifelong.results import load_results

    if not (run_dir / "results.json").is_file():
        return False
    try:
        results = load_results(run_dir)
    except LifelongError:
        return False
    statuses = [r.status for r in results.strategies.values()]
    return bool(statuses) and all(s in DONE for s in statuses)


def _failure(run_dir: Path) -> str | None:
    from lifelong.results import load_results

    failed = [r for r in load_results(run_dir).strategies.values() if r.status == "failed"]
    return failed[0].error or "failed" if failed else None


def run_units(
    units: Sequence[Unit],
    *,
    jobs: int = 1,
    address: str | None = None,
    threads: int | None = None,
    gpus_per_unit: float = 0.0,
    plugins: Sequence[str] = (),
    quiet: bool = True,
) -> list[UnitStatus]:
    """Run (or resume) every unit; return one status per unit, in order.

    Ctrl-C stops at once (``KeyboardInterrupt`` propagates, finished tasks are saved in each
    unit's folder); running the same units again continues where they stopped.
    """
    if jobs != 1 or address is not None:
        raise ConfigError("this engine runs units one at a time in-process; use jobs=1")
    for module in plugins:
        importlib.import_module(module)
    from lifelong.callbacks import ProgressBar
    from lifelong.experiment import load_run_config, run_experiment

    statuses = []
    for unit in units:
        if unit_done(unit.run_dir):
            statuses.append(UnitStatus(unit, "skipped"))
            continue
        if not quiet:
            print(f"unit {unit.name}", flush=True)
        try:
            config = load_run_config(unit.run_dir)
            display = [] if quiet else [ProgressBar()]  # moves at every step on a terminal
            run_experiment(config, unit.run_dir, resume=True, callbacks=display)
        except RunInterrupted as err:
            raise KeyboardInterrupt from err
        except Exception as err:  # recorded; the other units still run
            reason = str(err) if isinstance(err, LifelongError) else f"{type(err).__name__}: {err}"
            statuses.append(UnitStatus(unit, "failed", reason))
            continue
        reason = _failure(unit.run_dir)
        statuses.append(UnitStatus(unit, "failed" if reason else "complete", reason))
    return statuses
