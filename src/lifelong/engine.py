"""The engine: every multi-run workload (a sweep's grid, a study's seeds and candidates) as units.

A *unit* is an ordinary run folder whose ``config.json`` is written before it runs; running it
means starting or continuing that folder exactly as ``lifelong run --resume DIR`` does.
:func:`run_units` runs a list of units:

* ``jobs == 1`` and no ``address``: one after another in this process (no start-up cost);
* otherwise as Ray tasks (https://docs.ray.io): on a local Ray started for the call
  (``jobs`` units at a time, ``threads`` torch threads each, default 1), or on an existing
  cluster (``address="HOST:PORT"`` or the ``RAY_ADDRESS`` environment variable), each unit asking
  for ``threads`` CPUs and ``gpus_per_unit`` GPUs.

In both cases complete units (and units whose strategy diverged) are skipped, interrupted ones
continue from their last finished task, a unit that raises is recorded with its reason while the
others finish, every unit folder is locked while it runs (a relaunch never runs a unit twice at
once), and Ctrl-C or SIGTERM stops every unit (each keeps its finished tasks) and ends the Ray
workers of the call before :class:`~lifelong.errors.RunInterrupted` is raised. Plugins (module
names) are imported in this process and in every worker; those that are not installed packages
travel to the cluster with the job (``runtime_env`` ``py_modules``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lifelong.errors import ConfigError, FolderLockedError, LifelongError, RunInterrupted

STATUSES = ("complete", "failed", "interrupted", "skipped")
DONE = ("complete", "failed")
"""Folder states that running the unit again would not change."""
ERROR_FILE = "unit-error.txt"
"""The traceback of a unit that raised, in its folder (the one-line reason is returned)."""
STOP_GRACE_SECONDS = 30.0
"""How long stopped Ray units get to save their finished tasks before they are killed."""


@dataclass(frozen=True)
class Unit:
    """One run folder to start or continue."""

    run_dir: Path  # holds config.json (written before execution)
    name: str  # shown in messages and the study report


@dataclass
class UnitStatus:
    """What became of a unit: ``complete``, ``failed``, ``interrupted`` or ``skipped``."""

    unit: Unit
    status: str
    reason: str | None = None
    seconds: float | None = None


def folder_state(run_dir: Path) -> str:
    """``pending`` (no results yet), ``partial``, ``complete`` (every strategy) or ``failed``.

    ``failed``: every strategy finished or diverged and at least one diverged; running the unit
    again would give the same result. The strategies are those of the folder's config.json.
    """
    try:
        labels = [
            _label(s) for s in json.loads((run_dir / "config.json").read_text())["strategies"]
        ]
    except (OSError, ValueError, KeyError, TypeError):
        labels = None
    try:
        strategies = json.loads((run_dir / "results.json").read_text()).get("strategies") or {}
    except FileNotFoundError:
        return "pending"
    except (OSError, ValueError, AttributeError):
        return "partial"
    if labels is None:
        labels = list(strategies)
    states = [(strategies.get(label) or {}).get("status") for label in labels]
    if states and all(s == "complete" for s in states):
        return "complete"
    if states and all(s in DONE for s in states):
        return "failed"
    return "partial"


def _label(spec: Any) -> str:
    return spec["label"] if isinstance(spec, dict) else str(spec)


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


def run_unit(
    run_dir: str | Path,
    threads: int | None = None,
    plugins: Sequence[str] = (),
    report: bool = True,
    progress: bool = False,
) -> tuple[str, str | None]:
    """Start or continue one unit in this process; return ``(status, reason)``.

    A complete unit also gets its own ``report.html`` (plots) unless ``report`` is false;
    ``progress`` shows the per-step progress display (on a terminal).

    Never raises for what happens inside the unit: a user mistake, a diverged strategy or any
    exception becomes ``("failed", reason)`` (the traceback goes to ``unit-error.txt`` in the
    folder); Ctrl-C becomes ``("interrupted", ...)`` after the finished tasks are saved.
    """
    run_dir = Path(run_dir)
    state = folder_state(run_dir)
    if state in DONE:
        return "skipped", f"already {state}"
    try:
        from lifelong.plugins import load_plugins

        load_plugins(plugins, "--plugin")
        if threads:
            import torch

            torch.set_num_threads(threads)
        from lifelong.experiment import load_run_config, run_experiment

        config = load_run_config(run_dir)  # its plugins: imported above (`plugins`)
        from lifelong.callbacks import ProgressBar

        display = [ProgressBar()] if progress else []  # moves at every step on a terminal
        results = run_experiment(config, run_dir, resume=True, callbacks=display)
    except FolderLockedError as err:
        return "skipped", str(err)
    except (RunInterrupted, KeyboardInterrupt):
        return "interrupted", "stopped; its finished tasks are saved"
    except LifelongError as err:
        return "failed", _one_line(str(err))
    except Exception as err:
        from lifelong.results import atomic_write_text

        with contextlib.suppress(OSError):
            atomic_write_text(run_dir / ERROR_FILE, traceback.format_exc())
        return "failed", f"{type(err).__name__}: {_one_line(str(err))} (see {run_dir / ERROR_FILE})"
    failed = [(k, r.error) for k, r in results.strategies.items() if r.status == "failed"]
    if failed:
        label, error = failed[0]
        return "failed", f"{label}: {_one_line(error or 'failed')}"
    if report:
        with contextlib.suppress(Exception):  # a convenience; results.json is the result
            from lifelong.report import build_report

            build_report(run_dir)
    return "complete", None


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _catch_sigterm() -> None:
    """SIGTERM raises KeyboardInterrupt in the main thread (so both stop units the same way)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """:func:`_catch_sigterm` for the duration of the block, the previous handler after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    _catch_sigterm()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def run_units(
    units: Sequence[Unit],
    *,
    jobs: int = 1,
    address: str | None = None,
    threads: int | None = None,
    gpus_per_unit: float = 0.0,
    plugins: Sequence[str] = (),
    quiet: bool = True,
    reports: bool = True,
    echo: Callable[[str], None] = print,
) -> list[UnitStatus]:
    """Run every unit (see the module docstring); statuses in the order of ``units``.

    Units already done are ``skipped`` without starting anything. Ctrl-C or SIGTERM stops the
    running units (their finished tasks are saved) and raises :class:`RunInterrupted`.
    ``quiet=False`` prints one line per unit as it ends (and, in-process, the per-step progress
    display); ``reports=False`` skips each complete unit's own report.html (about 3 s of
    plotting per unit on a loaded 2-core machine).
    """
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    address = address or os.environ.get("RAY_ADDRESS") or None
    statuses: dict[int, UnitStatus] = {}
    todo = []
    for index, unit in enumerate(units):
        state = folder_state(unit.run_dir)
        if state in DONE:
            statuses[index] = UnitStatus(unit, "skipped", f"already {state}")
        else:
            todo.append(index)

    def report(index: int, status: str, reason: str | None, seconds: float | None) -> None:
        statuses[index] = UnitStatus(units[index], status, reason, seconds)
        if not quiet:
            done = sum(1 for i in todo if i in statuses)
            text = f"[{done}/{len(todo)}] {units[index].name}: {status}"
            text += f" ({seconds:.1f} s)" if seconds is not None else ""
            echo(text + (f": {reason}" if reason and status != "complete" else ""))

    if todo:
        with _sigterm_as_interrupt():
            if jobs == 1 and not address:
                _run_serial(units, todo, threads, plugins, reports, not quiet, report)
            else:
                _run_ray(
                    units, todo, jobs, address, threads, gpus_per_unit, plugins, reports, report
                )
    return [statuses[i] for i in range(len(units))]


def _interrupted() -> RunInterrupted:
    return RunInterrupted(
        "interrupted; finished tasks of every unit are saved; run the same command again to "
        "continue"
    )


def _run_serial(
    units: Sequence[Unit],
    todo: Sequence[int],
    threads: int | None,
    plugins: Sequence[str],
    reports: bool,
    progress: bool,
    report: Callable[[int, str, str | None, float | None], None],
) -> None:
    for index in todo:
        start = time.perf_counter()
        status, reason = run_unit(units[index].run_dir, threads, plugins, reports, progress)
        report(index, status, reason, time.perf_counter() - start)
        if status == "interrupted":
            raise _interrupted()


def import_ray() -> Any:
    """The ``ray`` module, or one line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "running units in parallel or on a cluster needs Ray: pip install 'ray>=2.40' "
            "(or run with --jobs 1 and no --address)"
        ) from None
    return ray


def _ray_unit(
    run_dir: str, threads: int, plugins: list[str], report: bool
) -> tuple[str, str | None, float]:
    """The Ray task: one unit in a worker process."""
    start = time.perf_counter()
    status, reason = run_unit(run_dir, threads, plugins, report)
    return status, reason, time.perf_counter() - start


REACH_SECONDS = 10.0
"""How long a cluster's HOST:PORT may take to accept a connection before the run is refused."""


def _check_reachable(address: str) -> None:
    """Refuse in one line a ``HOST:PORT`` (or ``ray://HOST:PORT``) where nothing accepts a
    connection: ``ray.init`` has no timeout and retries such an address for minutes. Other
    forms (``auto``) are left to Ray."""
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not colon or not host or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_SECONDS):
            pass
    except (OSError, OverflowError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ConfigError(
            f"cannot reach a Ray cluster at {address}: {_one_line(reason)}; start one with "
            "`ray start --head` or give its HOST:PORT"
        ) from None


def _run_ray(
    units: Sequence[Unit],
    todo: Sequence[int],
    jobs: int,
    address: str | None,
    threads: int | None,
    gpus_per_unit: float,
    plugins: Sequence[str],
    reports: bool,
    report: Callable[[int, str, str | None, float | None], None],
) -> None:
    if address:
        _use_token_if_present()  # before Ray reads its settings, on import
    ray = import_ray()
    from lifelong.plugins import check_named, load_plugins, modules_to_ship

    load_plugins(plugins, "--plugin")  # a wrong name fails here, before Ray starts
    config_plugins: list[str] = []
    for index in todo:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            raw = json.loads((units[index].run_dir / "config.json").read_text())
            config_plugins += [p for p in raw.get("plugins") or () if p not in config_plugins]
    check_named(config_plugins, "a unit's config.json")  # imported by this driver's own config
    plugins = [*plugins, *(p for p in config_plugins if p not in plugins)]  # the workers import
    shipped = modules_to_ship(plugins)
    threads = threads or 1
    options: dict[str, Any] = {
        "runtime_env": {"py_modules": shipped} if shipped else None,
        "log_to_driver": False,
        "configure_logging": False,
    }
    if address:
        options["address"] = address
    else:
        options.update(address="local", num_cpus=jobs * threads, include_dashboard=False)
        if gpus_per_unit:
            options["num_gpus"] = max(1, int(jobs * gpus_per_unit + 0.999))
    import logging

    logging.getLogger("ray").setLevel(logging.ERROR)  # no start-up chatter; errors still show
    if address:
        _check_reachable(address)
    try:
        ray.init(**options)
    except ConnectionError as err:
        raise ConfigError(
            f"cannot reach a Ray cluster at {address}: {_one_line(str(err))}; start one with "
            "`ray start --head` or give its HOST:PORT"
        ) from None
    except ValueError as err:  # Ray's "Invalid address format"
        if not address:
            raise
        raise ConfigError(
            f"--address {address!r} is not a Ray address ({_one_line(str(err))}); give the "
            "HOST:PORT of a running cluster (`ray start --head` prints it)"
        ) from None
    _catch_sigterm()  # again: ray.init installs its own handler, which aborts the driver
    task = ray.remote(_ray_unit).options(
        num_cpus=threads, num_gpus=gpus_per_unit, max_retries=1, name="lifelong-unit"
    )
    limit = jobs if not address or jobs > 1 else len(todo)
    waiting = list(todo)
    running: dict[Any, int] = {}
    try:
        while waiting or running:
            while waiting and len(running) < limit:
                index = waiting.pop(0)
                run_dir = str(units[index].run_dir.resolve())
                ref = task.remote(run_dir, threads, list(plugins), reports)
                running[ref] = index
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                index = running.pop(ref)
                try:
                    status, reason, seconds = ray.get(ref)
                except Exception as err:  # the worker died (killed, out of memory, node lost)
                    status, reason, seconds = "interrupted", _one_line(str(err)), None
                report(index, status, reason, seconds)
    except KeyboardInterrupt:
        _stop(ray, running)
        raise _interrupted() from None
    finally:
        ray.shutdown()


def _use_token_if_present() -> None:
    """Send this user's Ray token to a cluster (Ray >= 2.5x asks for it by default).

    ``ray start --head`` enables token authentication when ``~/.ray/auth_token`` exists, but a
    driver joining with an address sends the token only when ``RAY_AUTH_MODE=token``; an
    explicit ``RAY_AUTH_MODE`` is left as it is.
    """
    has_token = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
    if "RAY_AUTH_MODE" not in os.environ and (
        has_token or (Path.home() / ".ray" / "auth_token").is_file()
    ):
        os.environ["RAY_AUTH_MODE"] = "token"


def _stop(ray: Any, running: dict[Any, int]) -> None:
    """Interrupt the running units (they save their finished tasks), then kill what remains."""
    refs = list(running)
    for ref in refs:
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=False)
    with contextlib.suppress(Exception):
        _, refs = ray.wait(refs, num_returns=len(refs), timeout=STOP_GRACE_SECONDS)
    for ref in refs:
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=True)


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _fraction_or_count(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number such as 1 or 0.5, got {text!r}"
        ) from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def add_engine_flags(parser: Any, jobs_help: str = "") -> None:
    """``--jobs``, ``--address``, ``--threads``, ``--gpus-per-unit``: how :func:`run_units` runs."""
    parser.add_argument(
        "--jobs",
        type=_positive_int,
        help="units at a time (default 1: one after another in this process; more: a local Ray)"
        + jobs_help,
    )
    parser.add_argument(
        "--address",
        metavar="HOST:PORT",
        help="run the units on the Ray cluster at HOST:PORT (default: $RAY_ADDRESS if set)",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        help="torch threads per unit; on Ray also its CPUs (default 1 on Ray)",
    )
    parser.add_argument(
        "--gpus-per-unit",
        type=_fraction_or_count,
        default=0.0,
        metavar="N",
        help="GPUs each unit asks Ray for, e.g. 1 or 0.5 (default 0)",
    )
