"""Many experiments at once: a grid of run settings, run by the engine, here or on a cluster.

A sweep file (TOML or YAML) has two tables. ``base`` holds run settings with the keys of
``lifelong run --config``; ``grid`` holds settings with a list of values each. The cartesian
product of the grid gives the jobs; every job is one ``lifelong run`` (which compares its
strategies on one stream), in the run directory ``OUT/<key=value,...>`` named after its grid
values, e.g. ``OUT/seed=0,lr=0.1``::

    [base]
    data = "digits"
    tasks = 5
    strategy = ["finetune", "ewc:lambda=100"]   # compared inside every run

    [grid]
    seed = [0, 1, 2]
    lr = [0.1, 0.03]
    stream = ["permuted", "rotated"]
    # strategy = ["finetune", "ewc:lambda=100"]  # or a grid key: one run per strategy
    # hidden = [[100], [100, 100]]               # a list-valued setting: one list per value

Every job is validated before anything runs (its settings, and its stream built and its model
checked as ``lifelong run`` does); all problems are reported at once, one line each. A job is
one run: seeds and candidate lists (a study) go in the grid, one value per job.
The sweep writes ``OUT/<job>/config.json`` for each job, ``OUT/jobs.txt`` (the run directories,
one a line, in grid order) and ``OUT/sweep.json`` (the jobs, their grid values and status).
A job is a unit of :mod:`lifelong.engine`: running it starts its run directory when nothing is
there yet and continues it from the last finished task otherwise (exactly ``lifelong run --resume
OUT/<job>``), so running a sweep again is always safe.

Locally::

    lifelong sweep sweep.toml --out runs/sweep              # one job after another, in-process
    lifelong sweep sweep.toml --out runs/sweep --jobs 4     # 4 at a time on a local Ray
    lifelong summarize runs/sweep                           # mean ± std over seeds, report.html

On a Ray cluster (``ray start --head`` on one node, ``ray start --address HEAD:6379`` on the
others; the output directory on a filesystem every node sees)::

    lifelong sweep sweep.toml --out /shared/sweep --address HEAD:6379 --threads 4

Every job is a Ray task asking for ``--threads`` CPUs (and ``--gpus-per-unit`` GPUs); see
:func:`lifelong.engine.run_units` for what happens on failure, Ctrl-C and SIGTERM. Complete jobs
are skipped, interrupted ones resumed; one failing job does not stop the others, and the exit
status is 0 only when every job is complete. ``OUT/sweep.json`` records each job's state and the
outcome of the last launch (with the reason of a failure). Plugins (``plugins = [...]`` in the
file, or ``--plugin MODULE``) are stored in every job's ``config.json`` and named on every
command that runs a job (a run folder never imports code by itself).

Without Ray, on any scheduler that takes shell commands, with the output directory and the
Python environment visible from every node:

* GNU parallel or similar::

      lifelong sweep sweep.toml --out /shared/sweep --emit commands --threads 4 > jobs.sh
      parallel -j 8 < jobs.sh                  # or: one line per job of your scheduler

  prints one command per job that is not complete yet (nothing runs).
* SLURM::

      lifelong sweep sweep.toml --out /shared/sweep --emit slurm --threads 4 \\
          --sbatch=--time=02:00:00 --sbatch=--partition=cpu [--jobs 20]
      sbatch /shared/sweep/sweep.sbatch

  writes ``OUT/sweep.sbatch``, an array job with one index per job that is not complete yet
  (index i runs the run directory on line i+1 of ``OUT/jobs.txt``; ``--jobs N`` limits the array
  to N tasks at a time, ``--threads`` sets ``--cpus-per-task``, each ``--sbatch=ARG`` adds an
  ``#SBATCH ARG`` line, e.g. ``--sbatch=--gres=gpu:1``). Logs go to ``OUT/logs/``. SLURM limits
  an array's size (MaxArraySize, often 1001); split larger sweeps into several files.

Re-submitting is safe: when some jobs were cut off (time limit, pre-emption), emit again and
submit again; complete jobs are left out and cut-off ones resume from their last finished task;
a job already running elsewhere holds its folder's lock and is not run twice.
Commands use the absolute path of the Python that ran ``lifelong sweep`` (``--python`` to name
another) and absolute run directories, so they work from any working directory. A job whose
strategy diverged (status ``failed``) is not re-run: its result would be the same; delete its
run directory to retry it. Changing the sweep file and re-running with the same ``--out`` is
fine when only new jobs appear; a job whose settings changed under the same name is an error.

``lifelong summarize DIR`` reads every ``results.json`` under DIR (a sweep's runs, or any run
directories), groups complete strategy results by their setting (every run setting except the
seed and the ones that do not change results: ``data_dir``, ``device``, ``eval_every``,
``eval_batch_size``, ``plugins``), and prints the mean ± sample standard deviation (ddof = 1) over seeds of
ACC, BWT, FWT and forgetting per strategy label and setting, with n (the number of seeds); it
writes ``DIR/summary.csv``, ``DIR/summary.json`` (fractions, not percent, as in
results.json) and ``DIR/report.html``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import itertools
import json
import re
import shlex
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifelong.errors import ConfigError, DataError, LifelongError

if TYPE_CHECKING:
    from lifelong.config import RunConfig

# torch-importing modules (config, results, experiment, report) are imported inside functions, so
# that adding these commands to the CLI's parser costs nothing at start-up.

SWEEP_FILE = "sweep.json"
JOBS_FILE = "jobs.txt"
SBATCH_FILE = "sweep.sbatch"
SUMMARY_CSV = "summary.csv"
SUMMARY_JSON = "summary.json"


NOT_A_SETTING = (
    "seed", "strategies", "data_dir", "device", "eval_every", "eval_batch_size", "plugins"
)  # fmt: skip
"""Config keys that do not define a setting of the summary (seeds are averaged over)."""

SUMMARY_METRICS = ("acc", "bwt", "fwt", "forgetting", "learning_accuracy")
TABLE_METRICS = (("acc", "ACC %", False), ("bwt", "BWT %", True), ("fwt", "FWT %", True),
                 ("forgetting", "Forget %", False))  # fmt: skip
"""(results.json key, header, signed) of the metrics in the printed summary table."""

_MAX_NAME = 150  # characters of a run-directory name before it is shortened with a hash


# --------------------------------------------------------------------------------------------
# The sweep file and its jobs


@dataclass(frozen=True)
class Job:
    """One point of the grid: its run-directory name, its grid values and its validated config."""

    name: str
    values: dict[str, Any]
    config: RunConfig


@dataclass(frozen=True)
class Sweep:
    """A validated sweep: the file's ``base`` and ``grid`` tables and every job, in grid order."""

    base: dict[str, Any]
    grid: dict[str, list[Any]]
    jobs: tuple[Job, ...]
    source: str = ""


def _canonical_key(key: str) -> str:
    key = key.replace("-", "_")
    return "strategies" if key == "strategy" else key


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def read_sweep_file(path: str | Path) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """The ``base`` and ``grid`` tables of a TOML or YAML sweep file, checked for shape.

    A top-level ``plugins = [...]`` joins the ``base`` settings (every job imports them).
    """
    from lifelong.config import load_config_file

    raw = load_config_file(path)
    unknown = sorted(set(raw) - {"base", "grid", "plugins"})
    if unknown:
        raise ConfigError(
            f"sweep file {path}: unknown top-level key(s) {', '.join(unknown)}; put run settings "
            "in a [base] table and the settings to vary in a [grid] table"
        )
    base, grid = raw.get("base", {}), raw.get("grid", {})
    for name, table in (("base", base), ("grid", grid)):
        if not isinstance(table, dict):
            raise ConfigError(f"sweep file {path}: {name} must be a table of settings")
    if "plugins" in raw:
        base = _with_plugins(base, raw["plugins"])
    return base, grid


def _with_plugins(base: dict[str, Any], plugins: Any) -> dict[str, Any]:
    """``base`` with more plugin modules (after those it names already, each once)."""
    extra = [plugins] if isinstance(plugins, str) else list(plugins or ())
    have = base.get("plugins") or []
    have = [have] if isinstance(have, str) else list(have)
    merged = have + [m for m in extra if m not in have]
    return {**base, "plugins": merged} if merged else base


def _name_part(value: Any) -> str:
    """A readable text for one grid value (before file-name sanitising)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    if isinstance(value, list | tuple):
        return "+".join(_name_part(v) for v in value)
    if isinstance(value, dict):
        if "label" in value:
            return _name_part(value["label"])
        options = ",".join(f"{k}={_name_part(v)}" for k, v in value.items() if k != "name")
        name = _name_part(value.get("name", ""))
        return f"{name}:{options}" if name and options else name or options
    return str(value)


def job_name(values: dict[str, Any]) -> str:
    """``seed=0,lr=0.1``: the run-directory name of a job from its grid values, in grid order.

    Characters other than letters, digits and ``. _ = + -`` in a value become ``_`` (``,``
    separates the pairs); a name longer than 150 characters is cut and ends in a hash of the
    values, so it stays unique and stable.
    """
    if not values:
        return "run"
    parts = [
        re.sub(r"[^A-Za-z0-9._=+-]+", "_", f"{key}={_name_part(value)}")
        for key, value in values.items()
    ]
    name = ",".join(parts)
    if len(name) > _MAX_NAME:
        name = name[: _MAX_NAME - 9] + "-" + _short_hash(values)
    return name


def _short_hash(values: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical_json(values).encode()).hexdigest()[:8]


def expand_grid(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of the grid, the first key varying slowest (like nested loops)."""
    for key, values in grid.items():
        if not isinstance(values, list):
            raise ConfigError(
                f"grid key {key!r} must be a list of values, e.g. {key} = [{_toml(values)}]"
            )
        if not values:
            raise ConfigError(f"grid key {key!r} has an empty list; give at least one value")
        seen: set[str] = set()
        for value in values:
            text = _canonical_json(value)
            if text in seen:
                raise ConfigError(f"grid key {key!r} lists {_toml(value)} twice; list it once")
            seen.add(text)
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def _toml(value: Any) -> str:
    return json.dumps(value, default=str)


def _absolute_data_dir(raw: dict[str, Any]) -> dict[str, Any]:
    """A relative ``data_dir`` made absolute (jobs run from other directories and machines)."""
    out = {}
    for key, value in raw.items():
        if _canonical_key(key) == "data_dir" and isinstance(value, str) and value:
            value = str(Path(value).expanduser().resolve())
        out[key] = value
    return out


def build_sweep(base: dict[str, Any], grid: dict[str, list[Any]], source: str | Path = "") -> Sweep:
    """Expand and validate every job; raise one :class:`ConfigError` listing all problems.

    The error's first line says how many jobs are invalid; each further line is one problem
    with the jobs it concerns (a mistake in ``base`` is reported once, not once per job).
    """
    from lifelong.config import RunConfig

    where = f"sweep file {source}" if source else "sweep"
    base_keys = {_canonical_key(k) for k in base}
    grid_keys = [_canonical_key(k) for k in grid]
    both = sorted(base_keys & set(grid_keys))
    if both:
        raise ConfigError(f"{where}: {', '.join(both)} is in both base and grid; keep it in one")
    if len(set(grid_keys)) != len(grid_keys):
        raise ConfigError(f"{where}: a grid key is given twice ({', '.join(grid)})")
    try:
        points = expand_grid(grid)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    names = [job_name(values) for values in points]
    repeated = {n for n in names if names.count(n) > 1}
    names = [
        f"{n}-{_short_hash(v)}" if n in repeated else n for n, v in zip(names, points, strict=True)
    ]
    base = _absolute_data_dir(base)
    jobs: list[Job] = []
    problems: dict[str, list[str]] = {}
    checked: dict[str, str | None] = {}  # stream settings -> problem (each stream built once)
    for name, values in zip(names, points, strict=True):
        try:
            config = RunConfig.from_dict({**base, **values})  # validates every combination
            if config.is_study:
                raise ConfigError(STUDY_JOB)
            _check_stream(config, checked)
        except LifelongError as err:
            problems.setdefault(str(err).splitlines()[0], []).append(name)
            continue
        jobs.append(Job(name, values, config))
    if problems:
        bad = sum(len(v) for v in problems.values())
        lines = [f"{where}: {bad} of {len(points)} jobs are invalid; nothing was run"]
        for message, which in problems.items():
            jobs_text = "every job" if len(which) == len(points) > 1 else _some(which)
            lines.append(f"  {message} [{jobs_text}]")
        raise ConfigError("\n".join(lines))
    return Sweep(base=base, grid=grid, jobs=tuple(jobs), source=str(source))


STUDY_JOB = (
    "seeds or candidate lists (ewc:lambda=[1,10]) make a job a study, which a sweep does not run; "
    'put seed = [...] and one value per candidate (strategy = ["ewc:lambda=1", '
    '"ewc:lambda=10"]) in [grid], or run the study with lifelong run --seeds'
)


def _check_stream(config: RunConfig, checked: dict[str, str | None]) -> None:
    """Build the job's stream and check its model, as a single run does before it writes
    anything (the device is checked where the job runs); settings already built are not built
    again."""
    from lifelong.experiment import checked_stream

    raw = config.to_dict()
    keys = ("stream", "stream_options", "data", "data_dir", "tasks", "train_samples",
            "test_samples", "scenario", "seed", "validation", "task_range", "model", "hidden")  # fmt: skip
    key = json.dumps({k: raw.get(k) for k in keys}, sort_keys=True, default=str)
    if key not in checked:
        checked[key] = None
        try:
            checked_stream(config)
        except LifelongError as err:
            checked[key] = str(err)
    if checked[key] is not None:
        raise ConfigError(checked[key])


def _some(names: list[str], shown: int = 3) -> str:
    text = ", ".join(names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")


def load_sweep(path: str | Path, plugins: Sequence[str] = ()) -> Sweep:
    """Read and validate a sweep file (see the module docstring); ``plugins`` join its own."""
    base, grid = read_sweep_file(path)
    return build_sweep(_with_plugins(base, plugins), grid, source=path)


# --------------------------------------------------------------------------------------------
# Run directories and job status


def atomic_write_text(path: Path, text: str) -> None:
    """results.atomic_write_text, imported when first needed."""
    from lifelong.results import atomic_write_text as write

    write(path, text)


def prepare_run_dirs(sweep: Sweep, out: Path) -> None:
    """Write ``config.json`` into each job's run directory (checked against one already there).

    All mismatches are reported in one :class:`ConfigError` before anything is written.
    """
    from lifelong.experiment import load_run_config, save_config

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a directory")
    new, clashes = [], []
    for job in sweep.jobs:
        run_dir = out / job.name
        if not (run_dir / "config.json").exists():
            new.append(job)
            continue
        try:
            same = load_run_config(run_dir) == job.config
        except (LifelongError, ValueError, TypeError):
            same = False
        if not same:
            clashes.append(job.name)
    if clashes:
        raise ConfigError(
            f"{len(clashes)} run dir(s) in {out} hold other settings than the sweep file gives "
            f"them ({_some(clashes)}); use another --out or delete those directories"
        )
    for job in new:
        save_config(job.config, out / job.name)


@dataclass
class JobState:
    """What ``sweep.json`` records for one job: its folder's state and this launch's outcome."""

    name: str
    values: dict[str, Any]
    status: str  # the folder: pending | partial | complete | failed
    outcome: str | None = None  # this launch: complete | failed | interrupted | skipped
    reason: str | None = None
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "run_dir": self.name,
            "grid": self.values,
            "status": self.status,
            "outcome": self.outcome,
            "reason": self.reason,
            "seconds": self.seconds,
        }


def job_states(sweep: Sweep, out: Path) -> list[JobState]:
    from lifelong.engine import folder_state

    return [JobState(job.name, job.values, folder_state(out / job.name)) for job in sweep.jobs]


def write_sweep_json(sweep: Sweep, out: Path, states: Sequence[JobState]) -> None:
    counts: dict[str, int] = {}
    for state in states:
        counts[state.status] = counts.get(state.status, 0) + 1
    record = {
        "sweep_file": str(Path(sweep.source).resolve()) if sweep.source else None,
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        "base": sweep.base,
        "grid": sweep.grid,
        "counts": counts,
        "jobs": [s.to_dict() for s in states],
    }
    atomic_write_text(out / SWEEP_FILE, json.dumps(record, indent=1, default=str) + "\n")


def sweep_plugins(sweep: Sweep) -> list[str]:
    """The plugins the sweep's jobs import (the same for every job: the file's and --plugin)."""
    return list(dict.fromkeys(p for job in sweep.jobs for p in job.config.plugins))


def write_jobs_file(sweep: Sweep, out: Path) -> Path:
    """``OUT/jobs.txt``: every job's absolute run directory, one a line, in grid order."""
    path = out / JOBS_FILE
    atomic_write_text(path, "".join(f"{(out / j.name).resolve()}\n" for j in sweep.jobs))
    return path


def job_command(
    run_dir: Path, python: str = sys.executable, plugins: Sequence[str] = ()
) -> list[str]:
    """The command that starts or resumes one job (idempotent); ``plugins``: the sweep's, named
    again because a run folder never imports code by itself."""
    return [
        python, "-m", "lifelong.cli", "run", "--resume", str(run_dir), "--quiet", "--no-report",
        *(arg for name in plugins for arg in ("--plugin", name)),
    ]  # fmt: skip


# --------------------------------------------------------------------------------------------
# Cluster: commands and SLURM


def emit_commands(sweep: Sweep, out: Path, threads: int, python: str = sys.executable) -> list[str]:
    """One shell command per job not done yet (absolute paths; thread counts as env prefix)."""
    states = job_states(sweep, out)
    write_sweep_json(sweep, out, states)
    write_jobs_file(sweep, out)
    env = f"OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} "
    return [
        env + shlex.join(job_command((out / s.name).resolve(), python, sweep_plugins(sweep)))
        for s in states
        if s.status not in ("complete", "failed")
    ]


def _array_spec(indices: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``0-2,5,7-8`` (SLURM --array syntax)."""
    parts = []
    for _, group in itertools.groupby(enumerate(indices), lambda p: p[1] - p[0]):
        run = [i for _, i in group]
        parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(parts)


def write_slurm(
    sweep: Sweep,
    out: Path,
    *,
    threads: int = 1,
    max_running: int | None = None,
    sbatch_lines: Sequence[str] = (),
    python: str = sys.executable,
) -> tuple[Path | None, int]:
    """Write ``OUT/jobs.txt`` and ``OUT/sweep.sbatch`` (array over the jobs not done yet).

    Returns (script path or None when every job is done, number of array tasks).
    """
    states = job_states(sweep, out)
    write_sweep_json(sweep, out, states)
    jobs_file = write_jobs_file(sweep, out).resolve()
    pending = [i for i, s in enumerate(states) if s.status not in ("complete", "failed")]
    script = out / SBATCH_FILE
    if not pending:
        script.unlink(missing_ok=True)
        return None, 0
    logs = (out / "logs").resolve()
    logs.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(sweep.source).stem) if sweep.source else "sweep"
    array = _array_spec(pending) + (f"%{max_running}" if max_running else "")
    run = shlex.join([python, "-m", "lifelong.cli", "run", "--resume"])
    lines = [
        "#!/bin/bash",
        "# Written by `lifelong sweep --emit slurm`: one array task per job that was not done;",
        f"# task i runs the run directory on line i+1 of {jobs_file}.",
        "# Submit with: sbatch " + shlex.quote(str(script.resolve())),
        f"#SBATCH --job-name=lifelong-{stem}",
        f"#SBATCH --array={array}",
        f"#SBATCH --cpus-per-task={threads}",
        f"#SBATCH --output={logs}/%x-%A_%a.out",
        *(f"#SBATCH {line}" for line in sbatch_lines),
        "set -euo pipefail",
        'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}" MKL_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"',
        f'run_dir="$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(str(jobs_file))})"',
        'if [ -z "$run_dir" ]; then',
        '  echo "no job number $SLURM_ARRAY_TASK_ID in the jobs file" >&2',
        "  exit 1",
        "fi",
        f'exec {run} "$run_dir" --quiet --no-report'
        + "".join(f" --plugin {shlex.quote(name)}" for name in sweep_plugins(sweep)),
    ]
    atomic_write_text(script, "\n".join(lines) + "\n")
    script.chmod(0o755)
    return script, len(pending)


# --------------------------------------------------------------------------------------------
# Summaries over seeds


@dataclass
class SummaryGroup:
    """One strategy label in one setting, with its per-seed values and their statistics."""

    setting: dict[str, Any]
    strategy: str
    params: dict[str, Any]
    seeds: list[int] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.runs)

    def stats(self, metric: str) -> tuple[float | None, float | None]:
        """(mean, sample std with ddof=1) over the seeds that define it; std None when n < 2."""
        values = self.values.get(metric) or []
        if not values:
            return None, None
        std = statistics.stdev(values) if len(values) > 1 else None
        return statistics.fmean(values), std


@dataclass
class Summary:
    root: Path
    groups: list[SummaryGroup]
    varying: list[str]
    incomplete: list[str]
    skipped: list[str]

    def to_dict(self) -> dict[str, Any]:
        groups = []
        for g in self.groups:
            stats = {}
            for metric in SUMMARY_METRICS:
                mean, std = g.stats(metric)
                stats[metric] = {"mean": mean, "std": std, "n": len(g.values.get(metric) or [])}
            groups.append({
                "setting": g.setting, "strategy": g.strategy, "params": g.params, "n": g.n,
                "seeds": g.seeds, "runs": g.runs, "metrics": stats,
            })  # fmt: skip
        return {
            "root": str(self.root),
            "varying": self.varying,
            "groups": groups,
            "incomplete": self.incomplete,
            "skipped": self.skipped,
        }

    def to_csv(self) -> str:
        columns = [*self.varying, "strategy", "n", "seeds"]
        columns += [f"{m}_{s}" for m in SUMMARY_METRICS for s in ("mean", "std")]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for g in self.groups:
            row = [_setting_text(g.setting.get(k)) for k in self.varying]
            row += [g.strategy, g.n, ";".join(map(str, g.seeds))]
            for metric in SUMMARY_METRICS:
                row += ["" if v is None else repr(v) for v in g.stats(metric)]
            writer.writerow(row)
        return buffer.getvalue()


def _setting_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def summarize(root: str | Path) -> Summary:
    """Group every ``results.json`` under ``root`` by setting and strategy label.

    Only strategies with status ``complete`` enter the statistics; others are listed in
    ``incomplete``. Files that are not valid results are listed in ``skipped``.
    """
    from lifelong.report import read_results

    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a directory; give a sweep's --out or a runs folder")
    paths = sorted(root.rglob("results.json"))
    groups: dict[str, SummaryGroup] = {}
    incomplete, skipped = [], []
    for path in paths:
        where = str(path.parent.relative_to(root)) if path.parent != root else "."
        try:
            results = read_results(path)
        except DataError as err:
            skipped.append(f"{where}: {err}")
            continue
        if results.get("schema") == 2:
            continue  # a study's aggregate: its units' own results.json are read instead
        config = results.get("config") or {}
        setting = {k: v for k, v in config.items() if k not in NOT_A_SETTING}
        for label, entry in results["strategies"].items():
            if entry.get("status") != "complete":
                incomplete.append(f"{where}: {label} {entry.get('status')}")
                continue
            params = entry.get("params") or {}
            key = _canonical_json([setting, label, params])
            group = groups.setdefault(key, SummaryGroup(setting, label, params))
            group.seeds.append(config.get("seed"))
            group.runs.append(where)
            for metric in SUMMARY_METRICS:
                value = entry.get(metric)
                if value is not None:
                    group.values.setdefault(metric, []).append(float(value))
    if not groups and not incomplete:
        raise DataError(f"no results.json under {root}; give a sweep's --out or a run directory")
    keys: list[str] = []
    for g in groups.values():
        keys += [k for k in g.setting if k not in keys]
    varying = [
        k for k in keys if len({_canonical_json(g.setting.get(k)) for g in groups.values()}) > 1
    ]
    return Summary(root, list(groups.values()), varying, incomplete, skipped)


def _cell(mean: float | None, std: float | None, signed: bool) -> str:
    if mean is None:
        return "—"
    text = f"{100 * mean:+.2f}" if signed else f"{100 * mean:.2f}"
    return text if std is None else f"{text} ± {100 * std:.2f}"


def format_summary(summary: Summary) -> str:
    """A fixed-width table: varying settings, strategy, n, and mean ± std of each metric (%)."""
    headers = [*summary.varying, "strategy", "n", *(h for _, h, _ in TABLE_METRICS)]
    body = []
    for g in summary.groups:
        row = [_setting_text(g.setting.get(k)) or "—" for k in summary.varying]
        row += [g.strategy, str(g.n)]
        row += [_cell(*g.stats(key), signed) for key, _, signed in TABLE_METRICS]
        body.append(row)
    widths = [max(len(r[i]) for r in [headers, *body]) for i in range(len(headers))]
    n_text = len(summary.varying) + 1  # left-aligned columns: settings and strategy

    def render(row: list[str]) -> str:
        cells = [c.ljust(w) if i < n_text else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]  # fmt: skip
        return "  ".join(cells).rstrip()

    lines = [render(headers), "  ".join("-" * w for w in widths), *map(render, body)]
    if not body:
        lines.append("(no complete results)")
    for g in summary.groups:
        repeated = sorted({s for s in g.seeds if g.seeds.count(s) > 1}, key=str)
        if repeated:
            lines.append(
                f"note: {g.strategy} has seed(s) {', '.join(map(str, repeated))} more than once "
                f"in one setting ({_some(g.runs)}); each copy counts in n"
            )
    if summary.incomplete:
        lines.append(
            f"not included: {len(summary.incomplete)} incomplete result(s) "
            f"({_some(summary.incomplete)})"
        )
    return "\n".join(lines)


def write_summary(summary: Summary) -> tuple[Path, Path, Path]:
    """Write ``summary.csv``, ``summary.json`` and the report page into the summary's root."""
    from lifelong.report.summary import build_summary_report

    csv_path, json_path = summary.root / SUMMARY_CSV, summary.root / SUMMARY_JSON
    record = summary.to_dict()
    atomic_write_text(csv_path, summary.to_csv())
    atomic_write_text(json_path, json.dumps(record, indent=1, default=str) + "\n")
    return csv_path, json_path, build_summary_report(record, summary.root)


# --------------------------------------------------------------------------------------------
# Command line


def add_sweep_parsers(subparsers: Any) -> None:
    """Add ``sweep`` and ``summarize`` to the CLI's subparsers (handlers via ``handler``)."""
    from lifelong.engine import add_engine_flags

    sweep = subparsers.add_parser(
        "sweep",
        help="run a grid of settings x seeds, locally in parallel or on a Ray cluster",
        description="Expand a sweep file's [grid] over its [base] settings and run every job "
        "(complete ones are skipped, interrupted ones resumed), or emit them for SLURM.",
    )
    sweep.add_argument("file", help="TOML or YAML file with a [base] and a [grid] table")
    sweep.add_argument("--out", required=True, help="directory of the sweep's run directories")
    add_engine_flags(sweep, jobs_help="; with --emit slurm, the array's limit (default none)")
    sweep.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this module first in every process (your strategies, streams, models)",
    )
    sweep.add_argument(
        "--no-report",
        action="store_true",
        help="skip each run's own report.html (plots); the study's report is still written",
    )
    sweep.add_argument(
        "--emit",
        choices=("commands", "slurm"),
        help="run nothing: print one shell command per pending job, or write OUT/sweep.sbatch",
    )
    sweep.add_argument(
        "--sbatch",
        action="append",
        default=[],
        metavar="ARG",
        help="extra #SBATCH line for --emit slurm, e.g. --sbatch=--time=02:00:00 (repeatable)",
    )
    sweep.add_argument(
        "--python",
        default=sys.executable,
        help="with --emit: the Python that runs each job (default: this one, %(default)s)",
    )
    sweep.set_defaults(handler=cmd_sweep)

    summ = subparsers.add_parser(
        "summarize",
        help="mean ± std over seeds of every results.json under DIR, and a report",
        description="Group every results.json under DIR by setting (all but the seed) and "
        "strategy; print mean ± std of ACC, BWT, FWT and forgetting; write DIR/summary.csv, "
        "DIR/summary.json and DIR/report.html.",
    )
    summ.add_argument("dir", help="a sweep's --out, or any folder of run directories")
    summ.set_defaults(handler=cmd_summarize)


def cmd_sweep(args: argparse.Namespace) -> int:
    """``lifelong sweep``: validate every job, prepare run dirs, then run them or emit them."""
    from lifelong.engine import Unit, run_units
    from lifelong.results import run_lock

    if args.sbatch and args.emit != "slurm":
        raise ConfigError("--sbatch only goes with --emit slurm")
    if args.emit and (args.address or args.gpus_per_unit):
        raise ConfigError("--address and --gpus-per-unit run units on Ray; drop them with --emit")
    sweep = load_sweep(args.file, plugins=args.plugin)
    out = Path(args.out)
    prepare_run_dirs(sweep, out)
    if args.emit == "commands":
        commands = emit_commands(sweep, out, args.threads or 1, args.python)
        for command in commands:
            print(command)
        print(
            f"sweep: {len(commands)} of {len(sweep.jobs)} jobs to run; the others are done",
            file=sys.stderr,
        )
        return 0
    if args.emit == "slurm":
        script, count = write_slurm(
            sweep,
            out,
            threads=args.threads or 1,
            max_running=args.jobs,
            sbatch_lines=args.sbatch,
            python=args.python,
        )
        if script is None:
            print(f"sweep: all {len(sweep.jobs)} jobs are done; nothing to submit")
        else:
            print(f"sweep: {count} of {len(sweep.jobs)} jobs in {script}; submit: sbatch {script}")
        return 0
    with run_lock(out, "sweep"):
        states = job_states(sweep, out)
        done = sum(s.status in ("complete", "failed") for s in states)
        where = (
            f"on the Ray cluster at {args.address}"
            if args.address
            else f"{args.jobs or 1} at a time"
        )
        print(f"sweep: {len(states)} jobs, {done} already done, running {len(states) - done} ({where}) into {out}")  # fmt: skip
        write_sweep_json(sweep, out, states)
        units = [Unit(out / job.name, job.name) for job in sweep.jobs]
        try:
            outcomes = run_units(
                units,
                jobs=args.jobs or 1,
                address=args.address,
                threads=args.threads,
                gpus_per_unit=args.gpus_per_unit,
                plugins=sweep_plugins(sweep),
                quiet=False,
                reports=not args.no_report,
            )
        finally:
            states = job_states(sweep, out)
            write_sweep_json(sweep, out, states)
        for state, outcome in zip(states, outcomes, strict=True):
            state.outcome, state.reason, state.seconds = (
                outcome.status,
                outcome.reason,
                outcome.seconds,
            )
        write_sweep_json(sweep, out, states)
    _print_summary(out)
    not_complete = [s for s in states if s.status != "complete"]
    if not_complete:
        print(
            f"lifelong: {len(not_complete)} of {len(states)} jobs not complete "
            f"({_some([f'{s.name} {s.status}' for s in not_complete])}); see {out / SWEEP_FILE}",
            file=sys.stderr,
        )
        return 1
    return 0


def _print_summary(out: Path) -> None:
    try:
        summary = summarize(out)
    except DataError:  # no job wrote results: the lines above say why
        return
    print(format_summary(summary))
    csv_path, _, report = write_summary(summary)
    print(f"summary: {csv_path}\nreport:  {report}")


def cmd_summarize(args: argparse.Namespace) -> int:
    """``lifelong summarize DIR``."""
    summary = summarize(args.dir)
    for line in summary.skipped:
        print(f"lifelong: skipped {line}", file=sys.stderr)
    print(format_summary(summary))
    csv_path, json_path, report = write_summary(summary)
    print(f"summary: {csv_path} {json_path}\nreport:  {report}")
    return 0
