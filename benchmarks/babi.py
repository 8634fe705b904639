"""The 20 bAbI QA tasks one after another: finetune vs joint (memnet, lm) and LAMOL (lm).

Runs ``lifelong.experiment.run_experiment`` (what ``lifelong run`` does) for groups of runs and
prints the Markdown tables of ``benchmarks/RESULTS.md`` (section 5):

* ``memnet``: the end-to-end memory network (the default text model) with finetune and joint;
  its joint accuracy per task is compared with MemN2N's published 1k results.
* ``lm``: the GRU language model with finetune, joint and lamol; its joint accuracy per task is
  compared with the LSTM baseline of Weston et al. (2015).
* ``lm-domain``, ``memnet-domain``: the same in the domain scenario (one answer vocabulary for
  all tasks, no task id when answering: LAMOL's own setting).

Each group writes ``OUT/<group>_seed<k>/`` (results.json, metrics.csv, report.html with the
accuracy-matrix heatmaps); ``--resume`` continues interrupted runs, ``--tables`` only prints the
tables of finished runs. With ``--jobs N`` each strategy is one unit of the engine (a local Ray)
in ``OUT/parts/<group>_seed<k>/`` (rerunning skips finished ones and continues the others). Usage::

    .venv/bin/python benchmarks/babi.py                      # every group, seed 0
    .venv/bin/python benchmarks/babi.py --groups memnet --threads 2
    .venv/bin/python benchmarks/babi.py --jobs 2             # strategies in parallel
    .venv/bin/python benchmarks/babi.py --tables             # tables from existing results

Data: ``$LIFELONG_DATA`` or ``$LIFELONG_SHARED_DATA`` (``babi/en`` inside it).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT_DIR, data_dir, machine
from lifelong.config import RunConfig
from lifelong.engine import Unit, run_units
from lifelong.experiment import run_experiment
from lifelong.report import build_report
from lifelong.results import RunResults, load_results
from lifelong.sweep import build_sweep, prepare_run_dirs

GROUPS: dict[str, dict[str, Any]] = {
    # MemN2N: 3 hops, d = 50 (the paper's joint setting), PE, TE, RN, 50 most recent statements.
    # The paper trains with SGD (lr 0.01 halved every 25 epochs, 100 epochs, gradient clipping,
    # linear start); here Adam at a constant 0.01, batch 32, 20 epochs per task.
    "memnet": {
        "model": "memnet",
        "stream_options": {},
        "epochs": 20,
        "lr": 0.01,
        # joint:epochs=60 also trains the multitask model as long as the paper's joint runs.
        "strategies": ("finetune", "joint", "joint:epochs=60"),
        "published": "memnet",
    },
    # GRU language model (width 128, causal attention read-out). Stories keep their 20 most
    # recent statements to bound the sequence length on CPU; 10 epochs per task, Adam 0.003
    # (0.01 learns as fast but forgets twice as much, for every strategy). lamol at the paper's
    # defaults (lambda 0.25, gamma 0.2, top-k 20) and scaled to 20 tasks: LM loss weight 1 (a
    # small LM trained from scratch needs it to generate well-formed examples; the paper
    # fine-tunes a pretrained GPT-2) and gamma 1, which gives each of 19 old tasks about the
    # share of pseudo examples that gamma 0.2 gives each of 4 in the paper; also with the
    # model's own answers to its pseudo examples (answers=model).
    "lm": {
        "model": "lm",
        "stream_options": {"max_sentences": 20},
        "epochs": 10,
        "lr": 0.003,
        "strategies": (
            "finetune",
            "joint",
            "lamol",
            "lamol:lambda=1,gamma=1",
            "lamol:lambda=1,gamma=1,answers=model",
        ),
        "published": "lm",
    },
}
# The same models in the domain scenario: one answer vocabulary shared by all tasks and no task id
# when answering, the setting of the LAMOL paper (its QA input is "context question ANS"; the
# task token only starts the generation of pseudo examples). Here fine-tuning loses the old
# tasks' answer words, not only their content.
GROUPS["lm-domain"] = {
    **GROUPS["lm"],
    "scenario": "domain",
    "strategies": (
        "finetune",
        "joint",
        "lamol:lambda=1,gamma=1",
        "lamol:lambda=1,gamma=1,answers=model",
    ),
}
GROUPS["memnet-domain"] = {
    **GROUPS["memnet"],
    "scenario": "domain",
    "strategies": ("finetune", "joint"),
}
BATCH_SIZE = 32

# Published test errors (%) on the 1k bAbI tasks, from Sukhbaatar et al. (2015), Table 1:
# "PE LS RN" trained jointly on the 20 tasks (3 hops), and the LSTM baseline of Weston et al.
# (2015) reported there. Accuracy = 100 - error.
MEMN2N_JOINT_ERROR = [0.0, 11.4, 21.9, 13.4, 14.4, 2.8, 18.3, 9.3, 1.9, 6.5,
                      0.3, 0.1, 0.2, 6.9, 0.0, 2.7, 40.4, 9.4, 88.0, 0.0]  # fmt: skip
LSTM_ERROR = [50.0, 80.0, 80.0, 39.0, 30.0, 52.0, 51.0, 55.0, 36.0, 56.0,
              38.0, 26.0, 6.0, 73.0, 79.0, 77.0, 49.0, 48.0, 92.0, 9.0]  # fmt: skip
PUBLISHED = {
    "memnet": ("MemN2N PE LS RN joint (paper)", MEMN2N_JOINT_ERROR),
    "lm": ("LSTM (Weston et al. 2015)", LSTM_ERROR),
}


def config_for(
    group: str, seed: int, overrides: dict[str, Any], strategies: list[str] | None = None
) -> RunConfig:
    g = GROUPS[group]
    return RunConfig.from_dict(
        {
            "data": "babi",
            "data_dir": str(data_dir()),
            "stream": "babi",
            "stream_options": dict(g["stream_options"]),
            "scenario": g.get("scenario"),
            "tasks": overrides.get("tasks"),
            "train_samples": overrides.get("train_samples"),
            "test_samples": overrides.get("test_samples"),
            "model": g["model"],
            "epochs": overrides.get("epochs") or g["epochs"],
            "batch_size": BATCH_SIZE,
            "optimizer": "adam",
            "lr": g["lr"],
            "seed": seed,
            "strategies": strategies or list(g["strategies"]),
        }
    )


@dataclass(frozen=True)
class GroupRun:
    """The strategies ``specs`` of ``group`` for one seed, written to ``out/<group>_seed<k>``."""

    group: str
    seed: int
    overrides: dict[str, Any]
    out: Path
    specs: list[str]
    resume: bool = False
    jobs: int = 1  # strategies run at once (a local sweep), one process and one thread each


def run_group(run: GroupRun) -> Path:
    """Run the strategies in this process (``jobs`` 1), or one process per strategy, ``jobs`` at
    a time, merged into one run directory afterwards."""
    run_dir = run.out / f"{run.group}_seed{run.seed}"
    start = time.perf_counter()
    if run.jobs <= 1:
        config = config_for(run.group, run.seed, run.overrides, run.specs)
        results = run_experiment(config, run_dir, resume=run.resume)
    else:
        results = _run_parts(run)
        results.save(run_dir)
    build_report(run_dir)
    wall = time.perf_counter() - start
    print(f"{run.group} seed {run.seed}: {wall:.0f} s wall -> {run_dir}", flush=True)
    for label, r in results.strategies.items():
        m = r.metrics()
        print(f"  {label:10s} ACC {m['acc']:.3f}  BWT {m['bwt']:+.3f}  "
              f"train {r.train_seconds:.0f} s  eval {r.eval_seconds:.0f} s")  # fmt: skip
    return run_dir


def _run_parts(run: GroupRun) -> RunResults:
    """One unit per strategy (``OUT/parts/<group>_seed<k>/strategies=...``), ``jobs`` at a time
    on the engine (a local Ray) with one torch thread each, merged into one results object."""
    config = config_for(run.group, run.seed, run.overrides, run.specs).to_dict()
    base = {k: v for k, v in config.items() if k != "strategies"}
    sweep = build_sweep(base, {"strategies": [[spec] for spec in run.specs]})
    out = run.out / "parts" / f"{run.group}_seed{run.seed}"
    prepare_run_dirs(sweep, out)
    units = [Unit(out / job.name, job.name) for job in sweep.jobs]
    statuses = run_units(units, jobs=run.jobs, threads=1, quiet=False, reports=False)
    finished = [s.unit.run_dir for s in statuses if (s.unit.run_dir / "results.json").exists()]
    if not finished:
        raise SystemExit(f"no strategy of {run.group} saved results: {statuses[0].reason}")
    merged = RunResults(config=config, stream=load_results(finished[0]).stream)
    for run_dir in finished:
        merged.strategies.update(load_results(run_dir).strategies)
    return merged


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def tables(run_dir: Path, group: str) -> str:
    """Markdown: summary per strategy, final accuracy per task, joint vs published."""
    results = load_results(run_dir)
    names = [t["name"] for t in results.stream["tasks"]]
    lines = [f"#### {group} (`{run_dir.name}`)", ""]
    lines += ["| strategy | ACC % | BWT % | FWT % | forgetting % | LA % | train s | eval s |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for label, r in results.strategies.items():
        m = r.metrics()
        lines.append(
            f"| {label} | {_pct(m['acc'])} | {_pct(m['bwt'])} | {_pct(m['fwt'])} | "
            f"{_pct(m['forgetting'])} | {_pct(m['learning_accuracy'])} | "
            f"{r.train_seconds:.0f} | {r.eval_seconds:.0f} |"
        )
        if r.extra.get("well_formed_share") is not None:
            e = r.extra
            lines.append(
                f"| ↳ {label} pseudo-samples | drawn {e['pseudo_generated']}, well-formed "
                f"{_pct(e['well_formed_share'])} %, answered as the model answers "
                f"{_pct(e['consistent_share'])} %, real old examples stored "
                f"{e['stored_real_examples']} | | | | | | |"
            )
    lines.append("")
    sequential = [lab for lab, r in results.strategies.items() if r.strategy != "joint"]
    joint = [lab for lab, r in results.strategies.items() if r.strategy == "joint"]
    published_name, published_error = PUBLISHED[GROUPS[group]["published"]]
    columns = [f"{lab} just learned | {lab} at the end" for lab in sequential] + joint
    header = f"| task | {' | '.join(columns)} | {published_name} |"
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    task_numbers = [int(n.split()[0][2:]) for n in names]
    matrices = {lab: r.accuracy_matrix for lab, r in results.strategies.items()}
    for j, name in enumerate(names):
        cells = [
            f"{_pct(matrices[lab][j + 1][j])} | {_pct(matrices[lab][-1][j])}" for lab in sequential
        ]
        cells += [_pct(matrices[lab][-1][j]) for lab in joint]
        published = 100 - published_error[task_numbers[j] - 1]
        lines.append(f"| {name} | {' | '.join(cells)} | {published:.1f} |")
    t = len(names)
    cells = []
    for lab in sequential:
        r = matrices[lab]
        cells.append(f"{_pct(sum(r[j + 1][j] for j in range(t)) / t)} | {_pct(sum(r[-1]) / t)}")
    cells += [_pct(sum(matrices[lab][-1]) / t) for lab in joint]
    published = sum(100 - published_error[n - 1] for n in task_numbers) / t
    lines.append(f"| **mean** | {' | '.join(cells)} | {published:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", nargs="+", default=list(GROUPS), choices=list(GROUPS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--tasks", type=int, default=None, help="first N tasks (default 20)")
    parser.add_argument("--train-samples", type=int, default=None, help="per task (smoke runs)")
    parser.add_argument("--test-samples", type=int, default=None, help="per task (smoke runs)")
    parser.add_argument("--epochs", type=int, default=None, help="override the group's epochs")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--out", type=Path, default=OUT_DIR / "babi")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue interrupted runs (with --jobs > 1 finished strategies are always skipped)",
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="strategies run in parallel, one thread each"
    )
    parser.add_argument(
        "--strategies", nargs="+", help="only these of each group's strategies (as listed there)"
    )
    parser.add_argument("--tables", action="store_true", help="only print tables of finished runs")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {
        "tasks": args.tasks,
        "train_samples": args.train_samples,
        "test_samples": args.test_samples,
        "epochs": args.epochs,
    }
    print(f"machine: {machine()}", flush=True)
    for group in args.groups:
        for seed in args.seeds:
            run_dir = args.out / f"{group}_seed{seed}"
            specs = [s for s in GROUPS[group]["strategies"] if s in (args.strategies or [s])]
            if not specs:
                parser.error(f"--strategies: none of {args.strategies} is in group {group!r}")
            if not args.tables:
                run_group(GroupRun(group, seed, overrides, args.out, specs, args.resume, args.jobs))
            if (run_dir / "results.json").exists():
                print(tables(run_dir, group))


if __name__ == "__main__":
    main()
