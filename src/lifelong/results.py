"""Results: what a run measured, as plain dataclasses, and their JSON/CSV files.

``results.json`` (schema 1) is the single source of truth for reports; see ``RunResults.to_dict``.
Every write of the library is atomic (:func:`atomic_write_bytes`: temporary file in the same
directory, then ``os.replace``), so an interrupted run never leaves a truncated file, and every
writer of a run folder holds its lock (:func:`run_lock`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lifelong import __version__, metrics
from lifelong.errors import DataError, FolderLockedError

SCHEMA = 1


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone gives 0o600
TEMP_SUFFIX = ".tmp"  # atomic writes: hidden ``.NAME.XXXX.tmp`` beside the target
PART_SUFFIX = ".part"  # downloads: hidden ``.NAME.XXXX.part`` beside the target


UNITS = "units"
"""The folder of a study's units (one run folder per candidate and seed)."""


def safe_filename(label: str) -> str:
    """A file name for a strategy label such as ``ewc:lambda=100`` (checkpoints, study units,
    loggers' folders); two labels of one run must not give the same name (RunConfig checks)."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", label)


def atomic_write_bytes(path: Path, data: bytes, *, suffix: str = TEMP_SUFFIX) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename.

    The one atomic-write helper of the library: the file appears whole or not at all, with the
    usual permissions (umask), and a full disk leaves neither a truncated nor an empty file.
    A temporary file left by a killed process is removed by :func:`remove_stale_temp_files`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)  # readable by colleagues on a shared filesystem, as usual
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temp_files(
    folder: Path, suffixes: tuple[str, ...] = (TEMP_SUFFIX,), depth: int = 1
) -> list[Path]:
    """Delete hidden temporary files (``.NAME.XXXX<suffix>``) a killed writer left in ``folder``
    and its subfolders down to ``depth``; call it only while holding the folder's lock."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink() and depth > 0:
            removed += remove_stale_temp_files(entry, suffixes, depth - 1)
        elif entry.name.startswith(".") and entry.name.endswith(suffixes) and entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


_held: dict[Path, tuple[int, int]] = {}  # folder -> (owning thread, depth): re-entrant in-process
_held_guard = threading.Lock()


@contextlib.contextmanager
def run_lock(run_dir: str | Path, what: str = "run folder") -> Iterator[Path]:
    """Hold an exclusive lock on the folder ``run_dir`` for the ``with`` block.

    The one lock helper of the library: ``lifelong run``, every unit of the engine and every sweep
    job write a run folder only inside it, so two processes never write one folder. A second
    process (or thread) is refused at once with :class:`~lifelong.errors.FolderLockedError`; the
    same thread may nest it (``run_experiment`` takes it again inside a caller's lock). It is a
    ``flock`` on the folder itself (no lock file), released when the block ends or the process
    dies, so a killed run never blocks its resume. On entry, temporary files a killed writer
    left behind (``.*.tmp``, ``.*.part``) are removed.
    """
    folder = Path(run_dir).resolve()
    me = threading.get_ident()
    with _held_guard:
        owner = _held.get(folder)
        if owner is not None and owner[0] != me:
            raise FolderLockedError(_locked_message(folder, what))
        if owner is not None:
            _held[folder] = (me, owner[1] + 1)
    if owner is not None:
        try:
            yield folder
        finally:
            with _held_guard:
                _held[folder] = (me, _held[folder][1] - 1)
        return
    folder.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise FolderLockedError(_locked_message(folder, what)) from None
        with _held_guard:
            _held[folder] = (me, 1)
        try:
            remove_stale_temp_files(folder, (TEMP_SUFFIX, PART_SUFFIX))
            yield folder
        finally:
            with _held_guard:
                del _held[folder]
    finally:
        os.close(descriptor)  # releases the flock


def _locked_message(folder: Path, what: str) -> str:
    return (
        f"another lifelong process is writing {what} {folder} (it holds its lock); wait for it "
        "to finish, or use another folder"
    )


def _finite(x: Any) -> Any:
    """JSON has no NaN/inf: store them as null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, list):
        return [_finite(v) for v in x]
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    return x


@dataclass
class StrategyResult:
    """Everything measured for one strategy label."""

    strategy: str
    params: dict[str, Any]
    train: dict[str, Any]
    seed: int | None = None  # the run seed (None: a results.json written before it was kept)
    accuracy_matrix: list[list[float]] = field(default_factory=list)
    validation_matrix: list[list[float]] = field(default_factory=list)  # --validation only
    status: str = "partial"  # complete | partial | failed
    error: str | None = None
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    peak_rss_mb: float | None = None
    peak_device_mb: float | None = None
    parameters: list[int] = field(default_factory=list)
    stored_examples: list[int] = field(default_factory=list)  # real examples kept, per task
    footprint: list[dict[str, int]] = field(default_factory=list)  # bytes kept by kind, per task
    model_bytes: int | None = None  # the model as built, before the strategy changed it
    not_applicable: dict[str, str] = field(default_factory=dict)  # metric -> why it is n/a
    curves: dict[str, list] = field(
        default_factory=lambda: {"step": [], "task": [], "accuracy": []}
    )
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tasks_done(self) -> int:
        return max(len(self.accuracy_matrix) - 1, 0)

    @property
    def examples(self) -> int | None:
        """Real training examples kept after the last task learned."""
        return self.stored_examples[-1] if self.stored_examples else None

    @property
    def extra_bytes(self) -> int | None:
        """Bytes kept after the last task learned beyond the model as built: copies of models,
        anchors, importances, buffers, generators, columns or parts the model grew."""
        if not self.footprint or self.model_bytes is None:
            return None
        return sum(self.footprint[-1].values()) - self.model_bytes

    def metrics(self) -> dict[str, float | None]:
        """ACC, BWT, FWT, forgetting, learning accuracy; ``None`` where undefined or where the
        strategy makes it true by construction (:attr:`not_applicable`, with the reason)."""
        if not self.accuracy_matrix:
            return dict.fromkeys(("acc", "bwt", "fwt", "forgetting", "learning_accuracy"))
        values = metrics.summarize(self.accuracy_matrix)
        return {k: None if k in self.not_applicable else v for k, v in values.items()}

    def to_dict(self) -> dict[str, Any]:
        return _finite(
            {
                "strategy": self.strategy,
                "params": self.params,
                "train": self.train,
                "seed": self.seed,
                "status": self.status,
                "error": self.error,
                "tasks_done": self.tasks_done,
                "accuracy_matrix": self.accuracy_matrix,
                "validation_matrix": self.validation_matrix,
                **self.metrics(),
                "train_seconds": self.train_seconds,
                "eval_seconds": self.eval_seconds,
                "peak_rss_mb": self.peak_rss_mb,
                "peak_device_mb": self.peak_device_mb,
                "parameters": self.parameters,
                "not_applicable": self.not_applicable,
                "examples": self.examples,
                "extra_bytes": self.extra_bytes,
                "stored_examples": self.stored_examples,
                "footprint": self.footprint,
                "model_bytes": self.model_bytes,
                "curves": self.curves,
                "extra": self.extra,
            }
        )

    def records(self, setting: str | None = None, seed: int | None = None) -> list[dict[str, Any]]:
        """Tidy rows of this result (see :func:`tidy_records`); ``seed`` defaults to the run's."""
        return _entry_records(
            self.to_dict(), setting or self.strategy, self.seed if seed is None else seed
        )

    def to_dataframe(self, setting: str | None = None, seed: int | None = None) -> Any:
        """:meth:`records` as a ``pandas.DataFrame`` (needs pandas)."""
        return _dataframe(self.records(setting, seed))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StrategyResult:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class RunResults:
    """All strategies of one run, with the configuration and stream description."""

    config: dict[str, Any]
    stream: dict[str, Any]
    strategies: dict[str, StrategyResult] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    environment: dict[str, Any] = field(default_factory=dict)  # device used, versions, host, commit

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "lifelong_version": __version__,
            "created": self.created,
            "environment": self.environment,
            "config": self.config,
            "stream": self.stream,
            "strategies": {label: r.to_dict() for label, r in self.strategies.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResults:
        if d.get("schema") != SCHEMA:
            raise DataError(
                f"results.json has schema {d.get('schema')!r}; this version reads {SCHEMA}"
            )
        return cls(
            config=d["config"],
            stream=d["stream"],
            strategies={k: StrategyResult.from_dict(v) for k, v in d["strategies"].items()},
            created=d.get("created", ""),
            environment=d.get("environment", {}),
        )

    def records(self) -> list[dict[str, Any]]:
        """Tidy rows of every strategy (see :func:`tidy_records`)."""
        return tidy_records(self.to_dict())

    def to_dataframe(self) -> Any:
        """:meth:`records` as a ``pandas.DataFrame`` (needs pandas)."""
        return _dataframe(self.records())

    def save(self, run_dir: Path) -> None:
        """Write results.json and metrics.csv atomically."""
        atomic_write_text(run_dir / "results.json", json.dumps(self.to_dict(), indent=1) + "\n")
        atomic_write_text(run_dir / "metrics.csv", self.metrics_csv())

    def metrics_csv(self) -> str:
        """One row per strategy label: status, metrics, time and memory."""
        columns = [
            "label", "strategy", "status", "tasks_done", "acc", "bwt", "fwt", "forgetting",
            "learning_accuracy", "train_seconds", "eval_seconds", "peak_rss_mb", "examples",
            "extra_bytes", "not_applicable",
        ]  # fmt: skip
        out = io.StringIO()
        writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for label, r in self.strategies.items():
            row = {"label": label, **r.to_dict()}
            row["not_applicable"] = "; ".join(f"{k}: {v}" for k, v in r.not_applicable.items())
            writer.writerow(row)
        return out.getvalue()


RECOVER_RESULTS = (
    "if it was written by `lifelong run`, delete it and resume: the checkpoints restore "
    "every strategy's finished tasks"
)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_numbers(v: Any) -> bool:
    """A number, null, or a (nested) list of them."""
    return v is None or _is_number(v) or (isinstance(v, list) and all(_is_numbers(x) for x in v))


def _list_of(check: Any) -> Any:
    return lambda v: isinstance(v, list) and all(check(x) for x in v)


def _table_of(check: Any) -> Any:
    return lambda v: isinstance(v, dict) and all(check(x) for x in v.values())


def _or_null(check: Any) -> Any:
    return lambda v: v is None or check(v)


def _is_table(v: Any) -> bool:
    return isinstance(v, dict)


def _is_text(v: Any) -> bool:
    return isinstance(v, str)


_NUMBER = (_or_null(_is_number), "a number or null")
_WHOLE = (_or_null(_is_whole), "a whole number or null")
_TABLE = (_is_table, "an object")
_TEXT = (_is_text, "text")
_MATRIX = (_list_of(_list_of(_or_null(_is_number))), "a list of rows of numbers")
_NUMBERS = (_list_of(_or_null(_is_number)), "a list of numbers")
_ENTRY_FIELDS: dict[str, tuple[Any, str]] = {
    "strategy": _TEXT,
    "params": _TABLE,
    "train": _TABLE,
    "seed": _WHOLE,
    "status": _TEXT,
    "error": (_or_null(_is_text), "text or null"),
    "tasks_done": _WHOLE,
    "accuracy_matrix": _MATRIX,
    "validation_matrix": _MATRIX,
    **dict.fromkeys(metrics.summarize([[0.0]]), _NUMBER),
    **dict.fromkeys(("train_seconds", "eval_seconds", "peak_rss_mb", "peak_device_mb"), _NUMBER),
    "parameters": _NUMBERS,
    "not_applicable": (_table_of(_is_text), "an object of metric: reason texts"),
    "examples": _NUMBER,  # a study's entry holds the mean over seeds
    "extra_bytes": _NUMBER,
    "stored_examples": _NUMBERS,
    "footprint": (_list_of(_table_of(_is_number)), "a list of objects of bytes by kind"),
    "model_bytes": _WHOLE,
    "curves": (_table_of(_or_null(_list_of(_is_numbers))), "an object of lists of numbers"),
    "extra": _TABLE,
}
_STUDY_FIELDS: dict[str, tuple[Any, str]] = {  # schema 2 (lifelong.study) entries, besides
    "mean": (_table_of(_or_null(_is_number)), "an object of numbers"),
    "std": (_table_of(_or_null(_is_number)), "an object of numbers"),
    "n": _WHOLE,
    "seeds": (_table_of(_is_table), "an object of per-seed results"),
    "chosen": (_or_null(_is_text), "text or null"),
    "chosen_values": (_or_null(_is_table), "an object or null"),
    "validation_score": _NUMBER,
    "candidates": (_list_of(_is_table), "a list of objects"),
    "units": (_table_of(_is_text), "an object of folder names"),
}


def check_results(data: dict[str, Any], path: Path, hint: str = "") -> dict[str, Any]:
    """``data``, a results.json object, when every field the library reads has its type (fields
    it lacks are left to the reader); otherwise one :class:`DataError` naming the file, the field
    and what it should be. Schema 2 (a study) entries are checked as schema 1 entries, their
    study fields and every per-seed entry. The one check of report, resume and loading."""
    hint = hint or RECOVER_RESULTS

    def check(value: Any, rule: tuple[Any, str], name: str) -> None:
        if not rule[0](value):
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise DataError(f"{path}: {name} should be {rule[1]}, got {shown}; {hint}")

    for key in ("config", "stream", "environment"):
        if key in data:
            check(data[key], _TABLE, key)
    check(data.get("strategies"), (_is_table, "an object of results by strategy"), "strategies")
    study = data.get("schema") == 2
    for label, entry in data["strategies"].items():
        entries = [(f"strategies.{label}", entry)]
        check(entry, _TABLE, entries[0][0])
        if study:
            for key, rule in _STUDY_FIELDS.items():
                if key in entry:
                    check(entry[key], rule, f"strategies.{label}.{key}")
            entries += [
                (f"strategies.{label}.seeds.{s}", e) for s, e in entry.get("seeds", {}).items()
            ]
        for name, item in entries:
            for key, rule in _ENTRY_FIELDS.items():
                if key in item:
                    check(item[key], rule, f"{name}.{key}")
            curves = item.get("curves") or {}
            if len({len(curves.get(k) or []) for k in ("step", "task", "accuracy")}) > 1:
                raise DataError(
                    f"{path}: {name}.curves should hold step, task and accuracy lists of one "
                    f"length; {hint}"
                )
    return data


def read_results_json(run_dir: str | Path) -> dict[str, Any]:
    """The JSON object in ``run_dir/results.json``, any schema (one clear error if it is missing,
    not JSON, not an object or mistyped: :func:`check_results`)."""
    path = Path(run_dir) / "results.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(
            f"no results.json in {run_dir}; give a run directory written by `lifelong run`"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        text = " ".join(str(err).split())[:120]
        raise DataError(f"{path} is not valid JSON ({text}); {RECOVER_RESULTS}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} is not a lifelong results file; {RECOVER_RESULTS}")
    return check_results(data, path)


def load_results(run_dir: str | Path) -> RunResults:
    """Read ``run_dir/results.json`` (one clear error if it is missing or not a results file)."""
    data = read_results_json(run_dir)
    try:
        return RunResults.from_dict(data)
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        path = Path(run_dir) / "results.json"
        raise DataError(f"{path} lacks or mistypes {err}; {RECOVER_RESULTS}") from None


RECORD_COLUMNS = ("strategy", "setting", "seed", "trained", "task", "metric", "value")
FINAL_METRICS = ("acc", "bwt", "fwt", "forgetting", "learning_accuracy")


def _entry_records(entry: dict[str, Any], setting: str, seed: int | None) -> list[dict[str, Any]]:
    rows = []
    base = {"strategy": entry.get("strategy"), "setting": setting, "seed": seed}
    for trained, row in enumerate(entry.get("accuracy_matrix") or []):
        for task, value in enumerate(row, start=1):
            rows.append(
                {**base, "trained": trained, "task": task, "metric": "accuracy", "value": value}
            )
    done = entry.get("tasks_done", 0)
    for metric in FINAL_METRICS:
        if entry.get(metric) is not None:
            rows.append(
                {**base, "trained": done, "task": None, "metric": metric, "value": entry[metric]}
            )
    return rows


def tidy_records(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per measured value of a results.json dict (schema 1, or schema 2 per seed):
    ``strategy, setting, seed, trained, task, metric, value``.

    ``setting`` is the strategy's label (``ewc:lambda=100``); ``trained`` the number of tasks
    learned when the value was measured; ``metric`` ``accuracy`` (on ``task``, 1-based) or one of
    the whole-stream metrics ``acc``, ``bwt``, ``fwt``, ``forgetting``, ``learning_accuracy``
    (``task`` empty)."""
    rows: list[dict[str, Any]] = []
    config_seed = (results.get("config") or {}).get("seed")
    for label, entry in results.get("strategies", {}).items():
        per_seed = entry.get("seeds") if isinstance(entry.get("seeds"), dict) else None
        if per_seed:
            for seed, seed_entry in per_seed.items():
                rows += _entry_records(seed_entry, label, int(seed))
        else:
            seed = entry.get("seed")
            rows += _entry_records(entry, label, config_seed if seed is None else seed)
    return rows


def _dataframe(records: list[dict[str, Any]]) -> Any:
    try:
        import pandas as pd
    except ImportError:
        raise DataError(
            "to_dataframe needs pandas; install it with: pip install pandas "
            "(or use .records(), the same rows as a list of dicts)"
        ) from None
    return pd.DataFrame.from_records(records, columns=list(RECORD_COLUMNS))


def load_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """Tidy rows of ``run_dir/results.json``, single run or study (schema 1 or 2)."""
    return tidy_records(read_results_json(run_dir))


def load_dataframe(run_dir: str | Path) -> Any:
    """:func:`load_records` as a ``pandas.DataFrame`` (needs pandas)."""
    return _dataframe(load_records(run_dir))
