"""Where a run's fixed overhead goes: CPU seconds of each phase of one ``lifelong run``.

The run is one row of ``make bench`` (permuted MNIST, 20 tasks x 1000 samples, MLP
784-100-100-10, one epoch, ``--no-report``, one torch thread; ``--strategy``, default finetune). Each repeat is a fresh process
(``--child``) that runs the real command line in-process with the library's phase functions
wrapped to count CPU time (``time.process_time``; wall time on a shared machine mostly measures
the other processes):

* **python start**: CPU time the interpreter spent before the script's first line;
* **import torch**; **our imports**: the modules of the run path (cli, config, experiment,
  runner, train, strategies, streams, models, report's table);
* **md5 check** of the data files (``require_files``), **decode** (``load_idx_dataset`` minus the
  md5 check), **stream build** (``build_run_stream`` minus loading the data);
* **model build**; **environment** (``run_environment``: versions and the git commit, whose
  ``git`` children are counted too);
* **checkpoints** (``Checkpoint.save``), **results writes** (``RunResults.save``: results.json and
  metrics.csv, at the start, after every task and at the end), **config.json**;
* **train** / **eval**: the trainer's phases (not overhead);
* **final print** (the table, ``_finish``); **rest**: everything else up to the end of ``main``;
* **exit**: the process's CPU time (``rusage``, as the parent sees it) after ``main`` returned;
* **fixed overhead**: the process's CPU time minus train and eval; **wall: fixed overhead**: the
  process's wall time minus the train and eval seconds of ``results.json``.

The first process on a machine decodes MNIST and writes its decoded copies (see
``lifelong.data.idx.read_idx_cached``); every later one maps them: the best of several repeats is
the warm case.

Usage: python benchmarks/overhead.py [--repeats 5] [--tasks 20] [--strategy finetune] [--data-dir DIR]
Prints, per phase, the best (smallest) and the median of the repeats, and writes
benchmarks/out/overhead.json.
"""

from __future__ import annotations

import time

_START_CPU = time.process_time()  # the interpreter's own start-up, before this script ran

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import command_imports, data_dir  # noqa: E402 (imports neither torch nor lifelong)

PHASES = [
    "python start",
    "import torch",
    "our imports",
    "md5 check",
    "decode",
    "stream build",
    "model build",
    "environment",
    "config.json",
    "checkpoints",
    "results writes",
    "final print",
    "rest",
    "exit",
]


def _children_cpu() -> float:
    times = os.times()
    return times.children_user + times.children_system


def child(args: argparse.Namespace) -> None:
    """One run with its phases timed; prints one JSON line of CPU seconds per phase."""
    spent: dict[str, float] = {"python start": _START_CPU}
    mark = time.process_time()
    import lifelong.cli as cli

    cli_import = time.process_time() - mark

    with command_imports():  # as `lifelong run` imports them: collector paused, then frozen
        mark = time.process_time()
        import torch  # noqa: F401

        spent["import torch"] = time.process_time() - mark
        mark = time.process_time()
        import lifelong.config
        import lifelong.data.files
        import lifelong.data.idx as idx
        import lifelong.experiment as experiment
        import lifelong.models
        import lifelong.report
        import lifelong.results as results
        import lifelong.runner as runner
        import lifelong.strategies
        import lifelong.streams  # noqa: F401 (the run path, timed with the other imports)
        import lifelong.train as train

    spent["our imports"] = time.process_time() - mark + cli_import
    before = set(sys.modules)

    learning = [0]  # > 0 while Trainer.learn runs

    def timed(owner: object, name: str, phase: str, children: bool = False) -> None:
        original = getattr(owner, name)

        def wrapper(*a, **k):
            start, start_children = time.process_time(), _children_cpu()
            learning[0] += phase == "learn"
            try:
                return original(*a, **k)
            finally:
                cost = time.process_time() - start
                if children:
                    cost += _children_cpu() - start_children
                learning[0] -= phase == "learn"
                spent[phase] = spent.get(phase, 0.0) + cost
                if phase == "eval" and learning[0]:
                    spent["eval in learn"] = spent.get("eval in learn", 0.0) + cost

        setattr(owner, name, wrapper)

    timed(idx, "require_files", "md5 check")
    timed(idx, "load_idx_dataset", "data load")
    timed(experiment, "build_run_stream", "stream + data")
    timed(runner, "build_model", "model build")
    timed(experiment, "run_environment", "environment", children=True)
    timed(experiment, "save_config", "config.json")
    timed(runner.Checkpoint, "save", "checkpoints")
    timed(results.RunResults, "save", "results writes")
    timed(train.Trainer, "evaluate", "eval")  # before learn: evaluations inside learn count
    timed(train.Trainer, "learn", "learn")  # in both, and are taken out of training below
    timed(cli, "_finish", "final print")

    out = Path(args.out)
    cli_args = [
        "run", "--data", "mnist", "--data-dir", args.data_dir, "--stream", "permuted",
        "--tasks", str(args.tasks), "--train-samples", "1000", "--model", "mlp",
        "--hidden", "100", "100", "--epochs", "1", "--batch-size", "10", "--lr", "0.1",
        "--seed", "0", "--strategy", args.strategy, "--out", str(out / "run"), "--quiet",
        "--no-report",
    ]  # fmt: skip
    start_main, children_main = time.process_time(), _children_cpu()
    with contextlib.redirect_stdout(io.StringIO()):
        sys.argv = ["lifelong", *cli_args]  # as the `lifelong` command runs (its own process)
        code = cli.main()
    main_cpu = time.process_time() - start_main + _children_cpu() - children_main
    if code != 0:
        raise SystemExit(f"overhead: the run failed (exit {code})")
    eval_in_learn = spent.pop("eval in learn", 0.0)
    spent["decode"] = spent.pop("data load") - spent["md5 check"]
    spent["stream build"] = spent.pop("stream + data") - spent["decode"] - spent["md5 check"]
    spent["train"] = spent.pop("learn") - eval_in_learn
    before_main = ("python start", "import torch", "our imports")
    named = sum(v for k, v in spent.items() if k not in before_main)
    spent["rest"] = main_cpu - named
    spent["total to end of main"] = time.process_time() + _children_cpu()
    imported = sorted(m for m in set(sys.modules) - before)
    print(json.dumps({**spent, "imported during the run": imported}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--strategy", default="finetune", help="as make bench names it")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.data_dir is None:
        args.data_dir = str(data_dir())
    if args.child:
        child(args)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    runs: list[dict] = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="lifelong-overhead-") as tmp:
            cmd = [sys.executable, __file__, "--child", "--out", tmp, "--tasks", str(args.tasks)]
            cmd += ["--data-dir", args.data_dir, "--strategy", args.strategy]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True)
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            results = json.loads((Path(tmp) / "run" / "results.json").read_text())
        (result,) = results["strategies"].values()
        run = json.loads(done.stdout.strip().splitlines()[-1])
        process = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        run["process total"] = process
        run["wall: fixed overhead"] = wall - result["train_seconds"] - result["eval_seconds"]
        run["exit"] = process - run.pop("total to end of main")
        runs.append(run)
    _report(runs, args)


def _report(runs: list[dict], args: argparse.Namespace) -> None:
    fixed = [r["process total"] - r["train"] - r["eval"] for r in runs]
    for run, value in zip(runs, fixed, strict=True):
        run["fixed overhead"] = value
    rows = [*PHASES, "fixed overhead", "train", "eval", "process total", "wall: fixed overhead"]
    print(f"CPU seconds per phase over {len(runs)} processes (best / median):")
    for phase in rows:
        values = [r[phase] for r in runs]
        print(f"  {phase:<20} {min(values):7.3f} {statistics.median(values):7.3f}")
    imported = sorted({m for r in runs for m in r["imported during the run"]})
    print(f"modules first imported during the run: {', '.join(imported) or 'none'}")
    path = HERE / "out" / "overhead.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"tasks": args.tasks, "strategy": args.strategy, "runs": runs}
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
