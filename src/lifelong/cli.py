"""The ``lifelong`` command line: parse flags, build a RunConfig, call the library.

Every user mistake ends with one line on stderr (``lifelong: ...``) and exit status 2; no
traceback. Ctrl-C keeps the results of finished tasks (exit status 130).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from lifelong import __version__
from lifelong.errors import ConfigError, LifelongError

RUN_FLAGS = (
    "data", "data_dir", "stream", "scenario", "tasks", "train_samples", "test_samples", "model",
    "hidden", "epochs", "batch_size", "optimizer", "scheduler", "lr", "momentum", "weight_decay", "seed",
    "seeds", "validation", "tune_tasks", "memory", "device", "eval_every", "eval_batch_size", "log",
    "strategies",
)  # fmt: skip


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error convention: one line on stderr, exit status 2, no usage."""

    def error(self, message: str) -> NoReturn:
        text = " ".join(message.split())
        self.exit(2, f"{self.prog}: {text}; see `{self.prog} --help`\n")


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    S = argparse.SUPPRESS  # unset flags stay unset, so a --config file's values are not overridden
    g = p.add_argument_group("data and stream")
    g.add_argument(
        "--data", default=S, help="data set: digits (default), mnist, fashion-mnist, babi"
    )
    g.add_argument(
        "--data-dir",
        default=S,
        help="where data files live (default: $LIFELONG_DATA or ~/.cache/lifelong)",
    )
    g.add_argument(
        "--stream",
        default=S,
        help="stream generator, optionally NAME:key=value,... (default permuted)",
    )
    g.add_argument(
        "--scenario",
        default=S,
        choices=("task", "domain", "class"),
        help="task-, domain- or class-incremental (default: the stream's)",
    )
    g.add_argument("--tasks", type=int, default=S, help="number of tasks (default: the stream's)")
    g.add_argument(
        "--train-samples", type=int, default=S, help="training samples per task (default: all)"
    )
    g.add_argument(
        "--test-samples", type=int, default=S, help="test samples per task (default: all)"
    )
    g = p.add_argument_group("model and training")
    g.add_argument(
        "--model",
        default=S,
        help="mlp (default for images) or cnn; memnet (default for babi) or lm",
    )
    g.add_argument(
        "--hidden", type=int, nargs="+", default=S, help="hidden widths, e.g. --hidden 100 100"
    )
    g.add_argument("--epochs", type=int, default=S, help="epochs per task (default 1)")
    g.add_argument("--batch-size", type=int, default=S, help="mini-batch size (default 10)")
    g.add_argument(
        "--optimizer",
        default=S,
        metavar="NAME[:key=value,...]",
        help="any torch.optim optimizer: sgd (default), adam, adamw:weight_decay=0.01, "
        "sgd:momentum=0.9,nesterov=true, rmsprop, ...",
    )
    g.add_argument(
        "--scheduler",
        default=S,
        metavar="NAME[:key=value,...]",
        help="learning-rate schedule, restarted each task: none (default), cosine, "
        "step:step_size=100, onecycle, linear, exponential:gamma=0.99, cosine:warmup=50, ...",
    )
    g.add_argument("--lr", type=float, default=S, help="learning rate (default 0.1)")
    g.add_argument("--momentum", type=float, default=S, help="momentum (default 0)")
    g.add_argument("--weight-decay", type=float, default=S, help="weight decay (default 0)")
    g.add_argument(
        "--seed", type=int, default=S, help="seed of the stream, the model and training (default 0)"
    )
    g.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=S,
        metavar="SEED",
        help="a study: every strategy on every seed, mean ± std (each seed as --seed would)",
    )
    g.add_argument(
        "--memory",
        type=int,
        default=S,
        metavar="N",
        help="examples kept over the whole stream by every strategy that stores examples "
        "(replay, gem, agem, icarl), each split as its paper does, unless its spec sets its own",
    )
    g.add_argument("--device", default=S, help="cpu (default), cuda, cuda:N or auto")
    g.add_argument(
        "--eval-every", type=int, default=S, help="also evaluate all tasks every N steps (curves)"
    )
    g.add_argument(
        "--eval-batch-size",
        type=int,
        default=S,
        help="most samples per evaluation batch (default 8192; smaller on a CPU)",
    )
    g.add_argument(
        "--log",
        nargs="+",
        default=S,
        choices=("csv", "tensorboard", "wandb"),
        help="loggers writing into the run directory: csv (log.csv), tensorboard "
        "(tensorboard/LABEL), wandb (offline unless WANDB_MODE=online)",
    )
    g.add_argument("--strategy", dest="strategies", nargs="+", default=S, metavar="NAME[:key=value,...]",
                   help="strategies to compare, e.g. finetune ewc:lambda=100 gem:memory_per_task=256 finetune:lr=0.03; "
                        "a list gives candidates, one chosen on validation data: ewc:lambda=[1,10,100],lr=[0.01,0.1] "
                        "(every combination; a setting that takes a list: key=[[1,2],[3]])")  # fmt: skip
    g = p.add_argument_group("choosing hyperparameters (with candidate lists in --strategy)")
    g.add_argument(
        "--validation",
        type=float,
        default=S,
        metavar="F",
        help="hold out a stratified, seeded fraction F of every task's training data; candidates "
        "are chosen by the mean over seeds of their final average accuracy on it",
    )
    g.add_argument(
        "--tune-tasks",
        type=int,
        default=S,
        metavar="K",
        help="choose candidates on the first K tasks, report on the rest (Chaudhry et al. 2019)",
    )


def _add_plugin_flag(p: Any) -> None:
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first: your strategies, streams, models (repeatable; also "
        "plugins = [...] in a config file)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lifelong",
        description="Lifelong (continual) learning: task streams, strategies, metrics, reports.",
    )
    parser.add_argument("--version", action="version", version=f"lifelong {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="train strategies through a stream and report", description="Train each strategy through the stream; write results.json, metrics.csv, plots and report.html.")  # fmt: skip
    _add_run_flags(run)
    g = run.add_argument_group("run")
    g.add_argument("--config", help="TOML or YAML file with the same settings (flags override it)")
    g.add_argument("--out", help="run directory (default: a new folder under runs/)")
    g.add_argument("--resume", metavar="DIR", help="continue an interrupted run in DIR")
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run or study already in --out (the files lifelong wrote there are deleted)",
    )
    g.add_argument("--no-report", action="store_true", help="skip plots and report.html")
    g.add_argument("--quiet", action="store_true", help="no progress display")
    _add_plugin_flag(g)
    from lifelong.engine import add_engine_flags

    add_engine_flags(
        run.add_argument_group("engine (a study's units: several seeds or candidate settings)")
    )

    _add_plugin_flag(sub.add_parser("list", help="data sets, streams, models and strategies"))

    show = sub.add_parser(
        "show", help="a strategy's, stream's or model's settings: type, default, meaning, paper"
    )
    show.add_argument("name", help="a name from `lifelong list`, e.g. ewc, split, mlp")
    _add_plugin_flag(show)

    comp = sub.add_parser(
        "completion",
        help="print a shell completion script",
        description="Print the completion script for SHELL. bash: lifelong completion bash > "
        "~/.local/share/bash-completion/completions/lifelong; zsh: lifelong completion zsh > "
        '"${fpath[1]}/_lifelong" (any directory of $fpath).',
    )
    comp.add_argument("shell", choices=("bash", "zsh", "tcsh"))

    rep = sub.add_parser("report", help="rebuild plots and report.html from DIR/results.json")
    rep.add_argument("run_dir")

    demo = sub.add_parser("demo", help="the lecture's story on digits, in under a minute")
    demo.add_argument("--out", default="runs/demo", help="where to write (default runs/demo)")
    demo.add_argument("--quiet", action="store_true")

    data = sub.add_parser("data", help="manage data files")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    dl = data_sub.add_parser("download", help="download and verify a data set's official files")
    dl.add_argument("name", help="mnist, fashion-mnist or babi")
    dl.add_argument(
        "--data-dir", help="target directory (default: $LIFELONG_DATA or ~/.cache/lifelong)"
    )
    dl.add_argument("--mirror", help="base URL to download from instead of the official source")
    data_sub.add_parser("list", help="data sets and where their files are looked for")

    fig = sub.add_parser(
        "figure",
        help="make a figure of the lecture, or all of them with a gallery page",
        description="Make one of the lecture's figures with the library's own code, or `all` of "
        "them with a gallery page (DIR/index.html).",
    )
    fig.add_argument(
        "name",
        metavar="NAME",
        help="forgetting, landscape, plasticity, gem, evaluation, qa, or all",
    )
    fig.add_argument("--out", help="output directory (default runs/figure-NAME)")
    fig.add_argument(
        "--data", default="digits", help="plasticity's data: digits, mnist, fashion-mnist"
    )
    fig.add_argument("--data-dir", help="where data files live (plasticity's images, qa's bAbI)")
    fig.add_argument("--seed", type=int, default=0)
    fig.add_argument(
        "--results", metavar="DIR", help="qa: draw from this run's results.json instead of running"
    )

    from lifelong.sweep import add_sweep_parsers

    add_sweep_parsers(sub)
    return parser


def _progress(quiet: bool) -> list:
    """The progress display (shown only on a terminal) unless ``--quiet``."""
    from lifelong.callbacks import ProgressBar

    return [] if quiet else [ProgressBar()]


_gc_state = {"own_process": False, "frozen": False}
"""``own_process``: :func:`main` runs as the ``lifelong`` command (no ``argv`` given), so the
process is ours; ``frozen``: the imports were frozen already."""


@contextlib.contextmanager
def _frozen_imports() -> Iterator[None]:
    """Import with the cyclic garbage collector paused, then freeze every object alive.

    torch and the library leave about 165,000 long-lived objects, which the collector would walk
    during the imports (about 0.1 CPU seconds), at each full collection of the run, and several
    times at interpreter exit (about 0.3 s); frozen (``gc.freeze``), they are never walked again.
    Only in the ``lifelong`` command's own process and only once: a program that calls
    ``main(argv)`` keeps its collector as it is (a freeze would also keep its objects alive).
    """
    if _gc_state["frozen"] or not _gc_state["own_process"]:
        yield
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
    gc.freeze()
    _gc_state["frozen"] = True


def cmd_run(args: argparse.Namespace) -> int:
    with _frozen_imports():
        from lifelong.config import RunConfig, load_config_file
        from lifelong.experiment import load_run_config, new_run_dir, run_experiment

    if args.resume:
        given = [k for k in RUN_FLAGS if hasattr(args, k)]
        given += [k for k in ("config", "out", "overwrite") if getattr(args, k)]
        if given:
            names = ("strategy" if k == "strategies" else k for k in given)
            flags = ", ".join("--" + k.replace("_", "-") for k in names)
            raise ConfigError(
                f"--resume takes every setting from {args.resume}/config.json; drop {flags}"
            )
        run_dir = Path(args.resume)
        from lifelong.plugins import load_plugins

        load_plugins(args.plugin, "--plugin")  # the ones config.json names must be among these
        config = load_run_config(run_dir)
    else:
        file = load_config_file(args.config) if args.config else {}
        # the file's keys in the flags' spelling, so that a flag given overrides them
        raw: dict[str, Any] = {k.replace("-", "_"): v for k, v in file.items()}
        if "strategy" in raw:
            raw["strategies"] = raw.pop("strategy")
        if hasattr(args, "seed") and hasattr(args, "seeds"):
            raise ConfigError("give --seed N (one run) or --seeds N [N ...] (a study), not both")
        for flag, other in (("seed", "seeds"), ("seeds", "seed")):
            if hasattr(args, flag):
                raw.pop(other, None)  # a flag overrides the file's seed or seeds
        if "seed" in raw and "seeds" in raw:
            raise ConfigError(f"{args.config}: give seed (one run) or seeds (a study), not both")
        raw.update({k: getattr(args, k) for k in RUN_FLAGS if hasattr(args, k)})
        if args.plugin:
            listed = raw.get("plugins") or []
            listed = [listed] if isinstance(listed, str) else list(listed)
            raw["plugins"] = listed + [m for m in args.plugin if m not in listed]
        config = RunConfig.from_dict(raw)
        run_dir = Path(args.out) if args.out else new_run_dir()
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} is a file; give a directory")
    if config.is_study:
        from lifelong.report import build_report
        from lifelong.study import format_study_table, run_study

        engine = {
            "jobs": args.jobs or 1,
            "address": args.address,
            "threads": args.threads,
            "gpus_per_unit": args.gpus_per_unit,
            "plugins": list(config.plugins),  # the workers import them (a folder never does)
            "reports": False,  # the study's report covers its units (`lifelong report UNIT`)
        }
        study = run_study(
            config,
            run_dir,
            resume=bool(args.resume),
            overwrite=args.overwrite,
            quiet=args.quiet,
            **engine,
        )
        print(format_study_table(study))
        print(f"results: {run_dir / 'results.json'}")
        if not args.no_report:
            print(f"report:  {build_report(run_dir)}")
        return 0 if all(e["status"] == "complete" for e in study["strategies"].values()) else 1
    if args.jobs or args.address or args.gpus_per_unit:
        raise ConfigError(
            "--jobs, --address and --gpus-per-unit run the units of a study (--seeds or candidate "
            "lists); a single run is one unit: drop them, or use lifelong sweep"
        )
    results = run_experiment(
        config,
        run_dir,
        resume=bool(args.resume),
        overwrite=args.overwrite,
        callbacks=_progress(args.quiet),
    )
    return _finish(results.to_dict(), run_dir, report=not args.no_report)


def _finish(results: dict, run_dir: Path, report: bool = True) -> int:
    from lifelong.report import build_report, format_table

    print(format_table(results))
    print(f"results: {run_dir / 'results.json'}")
    if report:
        print(f"report:  {build_report(run_dir)}")
    failed = [k for k, v in results["strategies"].items() if v["status"] == "failed"]
    return 1 if failed else 0


def cmd_list(args: argparse.Namespace) -> int:
    from lifelong.plugins import load_plugins

    load_plugins(args.plugin, "--plugin")
    from lifelong.data import IMAGE_SOURCES
    from lifelong.models import MODELS
    from lifelong.strategies import STRATEGIES
    from lifelong.streams import STREAMS

    def section(title: str, rows: list[tuple[str, str]]) -> None:
        print(title)
        width = max(len(n) for n, _ in rows)
        for name, text in rows:
            print(f"  {name:<{width}}  {text}")
        print()

    data_rows = [(s.name, s.description) for s in IMAGE_SOURCES.values()]
    if "babi" in STREAMS:
        data_rows.append(("babi", "bAbI QA tasks v1.2, English 1k, 20 tasks (text files)"))
    section("data sets (--data)", data_rows)
    section("streams (--stream)", [(s.name, f"{s.description} [{', '.join(s.data)}; default {s.tasks} tasks, {s.scenario} scenario]") for s in STREAMS.values()])  # fmt: skip
    section("models (--model)", [(m.name, m.description) for m in MODELS.values()])
    by_family: dict[str, list] = {}
    for cls in STRATEGIES.values():
        by_family.setdefault(cls.family, []).append(cls)
    rows = [(c.name, f"[{fam}] {c.description}") for fam, cs in by_family.items() for c in cs]
    section("strategies (--strategy NAME[:key=value,...])", rows)
    print("lifelong show NAME: every setting of a strategy, stream or model")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from lifelong.plugins import load_plugins
    from lifelong.show import show

    load_plugins(args.plugin, "--plugin")
    print(show(args.name))
    return 0


def cmd_completion(args: argparse.Namespace) -> int:
    try:
        import shtab
    except ImportError:
        raise ConfigError(
            "shell completion needs shtab; install it with: pip install shtab"
        ) from None
    print(shtab.complete(build_parser(), shell=args.shell))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from lifelong.report import build_report, read_results

    read_results(args.run_dir)  # a missing or invalid results.json: one line naming the file
    print(build_report(Path(args.run_dir)))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from lifelong.data import files

    if args.data_command == "list":
        for name in files.dataset_names():
            print(f"{name:<14} {files.dataset_dir(name, None)}")
        return 0
    from tqdm import tqdm

    from lifelong.data.download import download

    bars: dict[str, Any] = {}

    def progress(label: str, done: int, total: int | None) -> None:
        bar = bars.get(label)
        if bar is None:
            bar = bars[label] = tqdm(
                total=total, desc=label, unit="B", unit_scale=True, file=sys.stderr
            )
        bar.update(done - bar.n)

    try:
        path = download(args.name, args.data_dir, args.mirror, progress=progress)
    finally:
        for bar in bars.values():
            bar.close()
    print(f"{args.name}: verified files in {path}")
    return 0


def _one_thread() -> None:
    """The demo's and the figures' models are tiny: one thread is as fast as two on an idle
    machine and immune to OpenMP spin-waiting when other programs share the cores."""
    import os

    import torch

    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)


def cmd_demo(args: argparse.Namespace) -> int:
    from lifelong.demo import run_demo

    _one_thread()
    run_dir = run_demo(Path(args.out), callbacks=_progress(args.quiet))
    print(f"report:  {run_dir / 'report.html'}")
    return 0


def cmd_figure(args: argparse.Namespace) -> int:
    from lifelong.config import check_seed
    from lifelong.figures import FIGURES, FigureOptions, make_all, make_figure

    check_seed(args.seed)
    if args.name != "all" and args.name not in FIGURES:
        known = ", ".join([*FIGURES, "all"])
        raise ConfigError(f"unknown figure {args.name!r}; known: {known}")
    _one_thread()
    options = FigureOptions(
        seed=args.seed, data=args.data, data_dir=args.data_dir, results=args.results
    )
    out = Path(args.out or f"runs/figure-{args.name}")
    if args.name != "all":
        made = make_figure(args.name, out, options)
        print(f"{made.name}: {made.measured}\n{made.png}")
        return 0

    def report(name: str, made, reason: str | None) -> None:
        print(f"{name}: {made.png}" if made is not None else f"{name}: not drawn: {reason}")

    print(f"gallery: {make_all(out, options, on_figure=report)}")
    return 0


COMMANDS = {
    "run": cmd_run,
    "list": cmd_list,
    "show": cmd_show,
    "completion": cmd_completion,
    "report": cmd_report,
    "data": cmd_data,
    "demo": cmd_demo,
    "figure": cmd_figure,
}


def main(argv: list[str] | None = None) -> int:
    """The ``lifelong`` command; ``argv`` defaults to the process's own arguments."""
    if argv is None:
        _gc_state["own_process"] = True
    args = build_parser().parse_args(argv)
    try:
        handler = getattr(args, "handler", None) or COMMANDS[args.command]
        return handler(args)
    except LifelongError as err:
        print(f"lifelong: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 2)
    except KeyboardInterrupt:
        print("lifelong: interrupted", file=sys.stderr)
        return 130
    except OSError as err:  # an unwritable --out, a full disk: the user's environment
        where = f" {err.filename}" if err.filename else ""
        print(f"lifelong: cannot use{where}: {err.strerror or err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
