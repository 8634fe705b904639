"""Studies: every strategy setting on every seed, hyperparameters chosen on held-out data.

``lifelong run --seeds 0 1 2 --validation 0.1 --strategy finetune ewc:lambda=[1,10,100]`` is a
study. It expands into *units*, one per candidate setting and seed, each an ordinary run folder
(what ``lifelong run --seed S --strategy ewc:lambda=10`` writes), runs them with
:func:`lifelong.engine.run_units`, chooses one setting per strategy and aggregates. The study
directory holds::

    config.json                     the study's settings (seeds, candidate lists, ...)
    units/<setting>/seed=<S>/       one run folder per candidate setting and seed
    units/tune/<setting>/seed=<S>/  with --tune-tasks: the candidates on the first K tasks
    units/report/<setting>/seed=<S>/  with --tune-tasks: the chosen setting on the other tasks
    results.json, metrics.csv       schema 2: per seed, mean, sample std and n per strategy

**Choice.** A strategy spec with lists (``ewc:lambda=[1,10],lr=[0.01,0.1]``) has one candidate
per combination (the cartesian product). The chosen candidate has the highest *validation
score*, the mean over seeds of its final average validation accuracy (the mean of the last row
of its accuracy matrix measured on the ``--validation`` split); ties go to the candidate listed
first. Test data never enter the choice. With ``--tune-tasks K`` (Chaudhry et al. 2019, "Efficient
Lifelong Learning with A-GEM", Sec. 5) the candidates learn only the first K tasks and the score
is their final average accuracy on those K tasks (on the validation split when ``--validation``
is given, else on the K tasks' test data, which are never reported); the chosen setting then
learns the remaining tasks from scratch and only those are reported. A candidate that failed or
did not finish on some seed is not chosen.

**Results** (``results.json`` schema 2): ``strategies[label]`` holds ``chosen`` (the winning
candidate's label), ``candidates`` (every candidate with its per-seed and mean validation scores
and ``chosen`` true/false), ``seeds`` (the chosen setting's full result per seed, as in schema 1),
``mean``, ``std`` (sample standard deviation, ddof 1; null for one seed) and ``n`` (seeds that
finished) of every metric. The metric keys at the top level of an entry (``acc``, ``bwt``, ...)
and ``accuracy_matrix`` are the means over seeds, so readers of schema 1 show the means.
:func:`load_study` reads schema 1 files as studies of one seed.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from lifelong import __version__
from lifelong.config import RunConfig, StrategySpec, format_value
from lifelong.engine import Unit, run_units
from lifelong.errors import ConfigError, DataError, RunInterrupted
from lifelong.results import (
    UNITS,
    StrategyResult,
    atomic_write_text,
    load_results,
    read_results_json,
    safe_filename,
)

SCHEMA = 2
CRITERION = "highest mean over seeds of the final average validation accuracy (ties: first listed)"
CRITERION_TUNE = (
    "highest mean over seeds of the final average accuracy on the first {k} tasks "
    "({split}; ties: first listed); reported: tasks {k1}..{t}"
)
METRICS = (
    "acc", "bwt", "fwt", "forgetting", "learning_accuracy", "train_seconds", "eval_seconds",
    "peak_rss_mb", "examples", "extra_bytes",
)  # fmt: skip


@dataclasses.dataclass
class Entry:
    """One ``--strategy`` entry of the study: its candidates and their units."""

    spec: StrategySpec
    candidates: list[StrategySpec]
    select_units: dict[str, dict[int, Unit]]  # candidate label -> seed -> unit (choice)
    report_units: dict[int, Unit] | None = None  # seed -> unit of the chosen setting


@dataclasses.dataclass
class Study:
    """The expanded study of a config: its seeds, entries and the unit folders they use."""

    config: RunConfig
    run_dir: Path
    seeds: tuple[int, ...]
    entries: list[Entry]
    tasks: int | None = None  # the stream's length (needed for --tune-tasks)
    failures: dict[Path, str] = dataclasses.field(default_factory=dict)  # units that raised

    @property
    def select_units(self) -> list[Unit]:
        seen: dict[Path, Unit] = {}
        for entry in self.entries:
            for by_seed in entry.select_units.values():
                for unit in by_seed.values():
                    seen.setdefault(unit.run_dir, unit)
        return list(seen.values())


def seeds_of(config: RunConfig) -> tuple[int, ...]:
    return config.seeds if config.seeds is not None else (config.seed,)


def unit_config(
    config: RunConfig, spec: StrategySpec, seed: int, task_range: tuple[int, int] | None
) -> RunConfig:
    """The settings of one unit: the study's, with one strategy setting and one seed."""
    return dataclasses.replace(
        config, strategies=(spec,), seed=seed, seeds=None, tune_tasks=0, task_range=task_range
    )


def _prepare_unit(config: RunConfig, run_dir: Path, name: str) -> Unit:
    """Write the unit's config.json unless the same one is there; a different one is an error."""
    from lifelong.experiment import load_run_config, save_config

    if (run_dir / "config.json").exists():
        if load_run_config(run_dir) != config:
            raise ConfigError(
                f"{run_dir} holds a run with other settings; give the study a new --out"
            )
    else:
        save_config(config, run_dir)
    return Unit(run_dir=run_dir, name=name)


def check_study(config: RunConfig) -> int:
    """What the study refuses before it writes anything; returns the stream's number of tasks.

    Every seed's stream is built and checked as a single run checks it (stream options, data
    files, the ``--validation`` split, the model), and ``--tune-tasks`` must leave tasks to report.
    """
    from lifelong.experiment import checked_stream

    first = config.strategies[0].candidates()[0]  # candidates differ in training, not in streams
    tasks = min(len(checked_stream(unit_config(config, first, s, None))) for s in seeds_of(config))
    tune = config.tune_tasks
    if tune and tune >= tasks:
        raise ConfigError(
            f"--tune-tasks {tune} leaves no task to report on in a stream of {tasks} tasks; "
            f"choose K < {tasks}"
        )
    return tasks


def plan_study(config: RunConfig, run_dir: Path, tasks: int | None = None) -> Study:
    """Expand ``config`` into units (writing their config.json) for the choice phase; ``tasks``
    (the stream's length) is what :func:`check_study` returned, found by it when not given."""
    seeds = seeds_of(config)
    tune = config.tune_tasks
    if tasks is None:
        tasks = check_study(config)
    entries = []
    for spec in config.strategies:
        candidates = spec.candidates()
        select: dict[str, dict[int, Unit]] = {}
        if not tune or len(candidates) > 1:
            folder = run_dir / UNITS / ("tune" if tune else "")
            task_range = (0, tune) if tune else None
            for cand in candidates:
                select[cand.label] = {
                    seed: _prepare_unit(
                        unit_config(config, cand, seed, task_range),
                        folder / safe_filename(cand.label) / f"seed={seed}",
                        f"{cand.label} seed={seed}" + (f" tasks 1..{tune}" if tune else ""),
                    )
                    for seed in seeds
                }
        entries.append(Entry(spec, candidates, select))
    return Study(config, run_dir, seeds, entries, tasks if tune else None)


def _unit_result(unit: Unit) -> StrategyResult | None:
    if not (unit.run_dir / "results.json").is_file():
        return None
    results = load_results(unit.run_dir)
    return next(iter(results.strategies.values()), None)


def selection_score(result: StrategyResult, on_test: bool) -> float | None:
    """Final average validation accuracy (mean of the validation matrix's last row); with
    ``on_test`` (the tuning tasks of --tune-tasks without a validation split), the final
    average accuracy on those tasks' test data."""
    if result.status != "complete":
        return None
    matrix = result.accuracy_matrix if on_test else result.validation_matrix
    if len(matrix) < 2:
        return None
    last = matrix[-1]
    return sum(last) / len(last)


def _stats(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _candidate_record(study: Study, entry: Entry, cand: StrategySpec) -> dict[str, Any]:
    on_test = bool(study.config.tune_tasks) and not study.config.validation
    scores: dict[str, float | None] = {}
    statuses = []
    for seed, unit in entry.select_units.get(cand.label, {}).items():
        result = _unit_result(unit)
        scores[str(seed)] = selection_score(result, on_test) if result else None
        failed = unit.run_dir in study.failures
        statuses.append(result.status if result else "failed" if failed else "pending")
    finished = [v for v in scores.values() if v is not None]
    mean, std = _stats(finished)
    eligible = bool(scores) and len(finished) == len(scores)
    if eligible:
        status = "complete"
    elif not scores:
        status = "not tuned (one setting)"
    else:
        status = next((s for s in ("failed", "partial", "pending") if s in statuses), "complete")
    return {
        "label": cand.label,
        "values": {k: cand.options[k] for k in entry.spec.varied},
        "validation_scores": scores,
        "validation_score": mean if eligible else None,
        "validation_std": std if eligible else None,
        "n": len(finished),
        "status": status,
        "chosen": False,
    }


def choose(candidates: list[dict[str, Any]]) -> int | None:
    """Index of the candidate with the highest validation score (first on ties); ``None`` when
    no candidate finished on every seed. Only ``validation_score`` is read."""
    best = None
    for i, cand in enumerate(candidates):
        score = cand["validation_score"]
        if score is not None and (best is None or score > candidates[best]["validation_score"]):
            best = i
    return best


def _mean_matrix(matrices: list[list[list[float]]]) -> list[list[float]]:
    if not matrices or len({(len(m), *map(len, m)) for m in matrices}) != 1:
        return matrices[0] if matrices else []
    return [
        [statistics.fmean(m[i][j] for m in matrices) for j in range(len(matrices[0][i]))]
        for i in range(len(matrices[0]))
    ]


def _aggregate(per_seed: dict[str, StrategyResult | None], spec: StrategySpec) -> dict[str, Any]:
    """Mean, sample std and n over the seeds that finished; the per-seed results kept."""
    results = {s: r for s, r in per_seed.items() if r is not None}
    done = {s: r for s, r in results.items() if r.status == "complete"}
    dicts = {s: r.to_dict() for s, r in results.items()}
    mean, std = {}, {}
    for key in METRICS:
        values = [dicts[s][key] for s in done if dicts[s].get(key) is not None]
        mean[key], std[key] = _stats(values)
    statuses = [r.status for r in results.values()]
    if "failed" in statuses:
        status = "failed"
    elif len(done) == len(per_seed) and per_seed:
        status = "complete"
    else:
        status = "partial"
    first = next(iter(results.values()), None)
    errors = [f"seed {s}: {r.error}" for s, r in results.items() if r.error]
    return {
        "strategy": spec.name,
        "params": first.params if first else dict(spec.params),
        "train": first.train if first else {},
        "status": status,
        "error": "; ".join(errors) or None,
        "tasks_done": min((r.tasks_done for r in results.values()), default=0),
        "accuracy_matrix": _mean_matrix([r.accuracy_matrix for r in done.values()]),
        **mean,
        "parameters": first.parameters if first else [],
        "curves": {"step": [], "task": [], "accuracy": []},
        "extra": first.extra if first else {},
        "not_applicable": first.not_applicable if first else {},
        "mean": mean,
        "std": std,
        "n": len(done),
        "seeds": dicts,
    }


def aggregate(study: Study) -> dict[str, Any]:
    """The schema-2 results of the study from its unit folders (units not run yet: pending)."""
    config, strategies = study.config, {}
    stream: dict[str, Any] = {}
    for entry in study.entries:
        records = [_candidate_record(study, entry, c) for c in entry.candidates]
        if len(entry.candidates) == 1 and not config.tune_tasks:
            best: int | None = 0
        elif len(entry.candidates) == 1:
            best = 0  # nothing to choose: the one setting runs on the reported tasks only
        else:
            best = choose(records)
        chosen = entry.candidates[best] if best is not None else None
        if best is not None:
            records[best]["chosen"] = True
        if chosen is None:
            units: dict[int, Unit] = {}
        elif entry.report_units is not None:
            units = entry.report_units
        else:
            units = entry.select_units.get(chosen.label, {})
        per_seed = {str(seed): _unit_result(u) for seed, u in units.items()}
        if chosen is None:
            per_seed = {str(seed): None for seed in study.seeds}
        record = _aggregate(per_seed, chosen or entry.spec)
        raised = [f"seed {s}: {study.failures[u.run_dir]}" for s, u in units.items()
                  if u.run_dir in study.failures]  # fmt: skip
        if raised:
            record["status"] = "failed"
            record["error"] = "; ".join(filter(None, [record["error"], *raised]))
        if chosen is None and any(r["status"] != "pending" for r in records):
            record["status"] = "failed"
            record["error"] = "no candidate finished on every seed"
        record.update(
            chosen=chosen.label if chosen else None,
            chosen_values=records[best]["values"] if best is not None else None,
            validation_score=records[best]["validation_score"] if best is not None else None,
            candidates=records,
            units={str(s): str(u.run_dir.relative_to(study.run_dir)) for s, u in units.items()},
        )
        strategies[entry.spec.label] = record
        for unit in units.values():
            if not stream and (unit.run_dir / "results.json").is_file():
                stream = load_results(unit.run_dir).stream
    tune = config.tune_tasks
    split = "validation split" if config.validation else "their test data, never reported"
    return {
        "schema": SCHEMA,
        "lifelong_version": __version__,
        "created": _now(),
        "config": config.to_dict(),
        "stream": stream,
        "seeds": list(study.seeds),
        "selection": {
            "validation": config.validation,
            "tune_tasks": tune,
            "criterion": (
                CRITERION_TUNE.format(k=tune, k1=tune + 1, t=study.tasks, split=split)
                if tune
                else CRITERION
            ),
        },
        "strategies": strategies,
    }


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds")


def _plan_report(study: Study) -> list[Unit]:
    """With --tune-tasks: the chosen setting of every strategy on the remaining tasks."""
    config, units = study.config, []
    partial = aggregate(study)
    for entry in study.entries:
        chosen_label = partial["strategies"][entry.spec.label]["chosen"]
        if chosen_label is None:
            continue
        chosen = next(c for c in entry.candidates if c.label == chosen_label)
        folder = study.run_dir / UNITS / "report" / safe_filename(chosen.label)
        entry.report_units = {
            seed: _prepare_unit(
                unit_config(config, chosen, seed, (config.tune_tasks, study.tasks)),
                folder / f"seed={seed}",
                f"{chosen.label} seed={seed} tasks {config.tune_tasks + 1}..{study.tasks}",
            )
            for seed in study.seeds
        }
        units.extend(entry.report_units.values())
    return units


def save_study(results: dict[str, Any], run_dir: Path) -> None:
    """Write results.json (schema 2) and metrics.csv atomically."""
    atomic_write_text(run_dir / "results.json", json.dumps(results, indent=1) + "\n")
    atomic_write_text(run_dir / "metrics.csv", metrics_csv(results))


def run_study(
    config: RunConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = True,
    **engine: Any,
) -> dict[str, Any]:
    """Run (or resume) the study of ``config`` in ``run_dir``; return its schema-2 results.

    Like :func:`lifelong.experiment.run_experiment`: bad settings are refused before anything is
    written (:func:`check_study`), ``run_dir`` is locked while the study runs, and a fresh study
    into a folder that holds a run or study is refused unless ``overwrite`` (which deletes the
    library's files there, unit folders included). ``engine`` passes on to
    :func:`lifelong.engine.run_units` (``jobs``, ``address``, ...). Ctrl-C keeps every finished
    task in the unit folders and raises :class:`RunInterrupted`.
    """
    from lifelong.experiment import claim_folder, resolve_device, save_config
    from lifelong.results import run_lock

    resolve_device(config.device)
    tasks = check_study(config)
    with run_lock(run_dir):
        claim_folder(run_dir, resume=resume, overwrite=overwrite)
        save_config(config, run_dir)
        study = plan_study(config, run_dir, tasks)
        try:
            statuses = run_units(study.select_units, quiet=quiet, **engine)
            if config.tune_tasks:
                statuses += run_units(_plan_report(study), quiet=quiet, **engine)
        except (KeyboardInterrupt, RunInterrupted):  # the engine stops every unit first
            save_study(aggregate(study), run_dir)
            raise RunInterrupted(
                f"interrupted; finished tasks are kept in {run_dir / UNITS}; "
                f"continue with: lifelong run --resume {run_dir}"
            ) from None
        for status in statuses:
            if status.status == "failed" and _unit_result(status.unit) is None:
                # a unit that stopped before it recorded anything (a diverged one records itself)
                study.failures[status.unit.run_dir] = status.reason or "failed"
                print(f"lifelong: {status.unit.name}: {status.reason}", file=sys.stderr)
        results = aggregate(study)
        save_study(results, run_dir)
    return results


# ---- reading -----------------------------------------------------------------------------------


def study_from_run(results: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 results dict (one run, one seed) in the shape of schema 2 (n = 1)."""
    seed = (results.get("config") or {}).get("seed", 0)
    out = {**results, "schema": SCHEMA, "seeds": [seed], "selection": None, "strategies": {}}
    for label, entry in results["strategies"].items():
        mean = {k: entry.get(k) for k in METRICS}
        done = entry.get("status") == "complete"
        out["strategies"][label] = {
            **entry,
            "mean": mean,
            "std": dict.fromkeys(METRICS),
            "n": 1 if done else 0,
            "seeds": {str(seed): entry},
            "chosen": label,
            "chosen_values": {},
            "validation_score": None,
            "candidates": [],
            "units": {},
        }
    return out


def load_study(run_dir: str | Path) -> dict[str, Any]:
    """The results of a study (schema 2) or of a single run (schema 1, read as n = 1)."""
    path = Path(run_dir) / "results.json"
    data = read_results_json(run_dir)
    schema = data.get("schema")
    if schema == SCHEMA:
        return data
    if schema == 1:
        return study_from_run(load_results(run_dir).to_dict())
    raise DataError(f"{path} has results schema {schema!r}; this version reads 1 and {SCHEMA}")


# ---- tables ------------------------------------------------------------------------------------


def mean_std(
    mean: float | None, std: float | None, signed: bool = False, scale: float = 100.0
) -> str:
    """``80.12 ± 1.30`` (percent); ``—`` when undefined; no ``±`` part for one seed."""
    if mean is None:
        return "—"
    text = f"{scale * mean:+.2f}" if signed else f"{scale * mean:.2f}"
    return text + (f" ± {scale * std:.2f}" if std is not None else "")


TABLE = (("acc", "ACC %", False), ("bwt", "BWT %", True), ("fwt", "FWT %", True),
         ("forgetting", "Forget %", False))  # fmt: skip
# What each strategy keeps (issue 11 item 4): real examples, and bytes beyond the model as built.
KEPT = (("examples", "examples"), ("extra_bytes", "extra"))


def _kept_text(key: str, value: float | None) -> str:
    from lifelong.report.table import format_bytes

    if value is None:
        return "—"
    return format_bytes(value) if key == "extra_bytes" else f"{value:.0f}"


def values_text(values: dict[str, Any] | None) -> str:
    if not values:
        return "—"
    return ",".join(f"{k}={format_value(v)}" for k, v in values.items())


def format_study_table(results: dict[str, Any]) -> str:
    """Mean ± sample std over seeds per strategy, the chosen values, then every candidate."""
    headers = ("strategy", "chosen", *(h for _, h, _ in TABLE), *(h for _, h in KEPT),
               "val ACC %", "n", "status")  # fmt: skip
    body = []
    for label, e in results["strategies"].items():
        na = e.get("not_applicable") or {}
        cells = [
            "n/a" if k in na else mean_std(e["mean"].get(k), e["std"].get(k), signed)
            for k, _, signed in TABLE
        ]
        cells += [_kept_text(k, e["mean"].get(k)) for k, _ in KEPT]
        val = e.get("validation_score")
        chosen_cand = next((c for c in e.get("candidates", []) if c.get("chosen")), None)
        val_text = mean_std(val, chosen_cand.get("validation_std")) if val is not None else "—"
        body.append((label, values_text(e.get("chosen_values")), *cells, val_text,
                     str(e["n"]), e["status"]))  # fmt: skip
    widths = [max(len(r[i]) for r in [headers, *body]) for i in range(len(headers))]

    def render(row: tuple[str, ...]) -> str:
        left = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        mid = [c.rjust(w) for c, w in zip(row[2:-1], widths[2:-1], strict=True)]
        return "  ".join([*left, *mid, row[-1]]).rstrip()

    lines = [render(headers), "  ".join("-" * w for w in widths), *map(render, body)]
    seeds = results.get("seeds") or []
    lines.append(f"mean ± sample std over seeds {', '.join(map(str, seeds))}")
    from lifelong.report.table import not_applicable_notes

    lines += not_applicable_notes(results)
    selection = results.get("selection") or {}
    choices = [
        (lb, e) for lb, e in results["strategies"].items() if len(e.get("candidates", [])) > 1
    ]
    if choices:
        lines.append(f"candidates (chosen: {selection.get('criterion', CRITERION)}):")
        for label, e in choices:
            lines.append(f"  {label}")
            for c in e["candidates"]:
                mark = "*" if c["chosen"] else " "
                score = mean_std(c["validation_score"], c["validation_std"])
                lines.append(
                    f"    {mark} {values_text(c['values']):<24} val {score}  ({c['status']})"
                )
    return "\n".join(lines)


def metrics_csv(results: dict[str, Any]) -> str:
    """One row per strategy: chosen setting, status, n, and mean and std of every metric."""
    columns = ["label", "strategy", "chosen", "status", "n", "validation_score"]
    columns += [f"{k}_{s}" for k in METRICS for s in ("mean", "std")]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    for label, e in results["strategies"].items():
        row = {"label": label, "strategy": e["strategy"], "chosen": e.get("chosen"),
               "status": e["status"], "n": e["n"], "validation_score": e.get("validation_score")}  # fmt: skip
        for k in METRICS:
            row[f"{k}_mean"], row[f"{k}_std"] = e["mean"].get(k), e["std"].get(k)
        writer.writerow(row)
    return out.getvalue()
