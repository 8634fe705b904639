"""Sweeps: grid expansion and naming, up-front validation, cluster output, local runs, summaries.

One test trains for real (two seeds of a tiny digits stream, run by the engine in-process); the
others use synthetic results files or a stand-in "python" shell script that records how it was
called. The engine itself (failures, locks, Ray) is tested in test_engine.py.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from lifelong import cli
from lifelong.config import RunConfig
from lifelong.engine import folder_state
from lifelong.errors import ConfigError, LifelongError
from lifelong.experiment import load_run_config
from lifelong.results import RunResults, StrategyResult
from lifelong.sweep import (
    add_sweep_parsers,
    build_sweep,
    format_summary,
    job_name,
    load_sweep,
    prepare_run_dirs,
    summarize,
)

TINY = {"data": "digits", "tasks": 2, "train_samples": 50, "test_samples": 50, "epochs": 1}
ONE_TASK = [[0.1], [0.2]]  # accuracy matrices for synthetic results files
TWO_TASKS = [[0.1, 0.1], [0.2, 0.1], [0.3, 0.4]]


def run_cli(argv: list[str]) -> int:
    """``lifelong ARGV`` in-process with the sweep commands added, errors handled like main()."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "sweep" not in sub.choices:  # until cli.py wires them in itself
        add_sweep_parsers(sub)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except LifelongError as err:
        print(f"lifelong: {err}", file=sys.stderr)
        return 2


def write_toml(path: Path, base: dict, grid: dict) -> Path:
    def value(v) -> str:
        return json.dumps(v)  # JSON scalars and arrays of them are valid TOML

    lines = ["[base]", *(f"{k} = {value(v)}" for k, v in base.items())]
    lines += ["[grid]", *(f"{k} = {value(v)}" for k, v in grid.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def fake_python(tmp_path: Path, body: str = "printf '%s\\n' \"$@\"") -> Path:
    """A stand-in for the Python that runs jobs (by default it prints its arguments, one a line).

    Its arguments are ``-m lifelong.cli run --resume RUN_DIR ...``: ``$5`` is the run directory.
    """
    exe = tmp_path / "fake-python"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)
    return exe


def write_results(run_dir: Path, config: dict, strategies: dict[str, tuple[list, str]]) -> None:
    """A results.json in the real format: label -> (accuracy matrix, status)."""
    results = RunResults(config=config, stream={"name": "permuted"})
    for label, (matrix, status) in strategies.items():
        results.strategies[label] = StrategyResult(
            strategy=label.split(":")[0],
            params={},
            train={},
            accuracy_matrix=matrix,
            status=status,
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    results.save(run_dir)


# ------------------------------------------------------------------------------------------------
# Grid expansion, naming and validation


def test_grid_expands_in_file_order_with_readable_names():
    sweep = build_sweep(
        {**TINY, "strategy": ["finetune", "ewc:lambda=100"]},
        {"seed": [0, 1], "lr": [0.1, 0.03], "stream": ["permuted", "rotated"]},
    )
    names = [job.name for job in sweep.jobs]
    assert len(names) == 8 == len(set(names))
    assert names[:3] == [
        "seed=0,lr=0.1,stream=permuted",
        "seed=0,lr=0.1,stream=rotated",
        "seed=0,lr=0.03,stream=permuted",
    ]
    assert names[-1] == "seed=1,lr=0.03,stream=rotated"
    for job in sweep.jobs:
        assert job.config.seed == job.values["seed"]
        assert job.config.lr == job.values["lr"]
        assert job.config.stream == job.values["stream"]
        assert job.config.tasks == 2
        assert [s.label for s in job.config.strategies] == ["finetune", "ewc:lambda=100"]


def test_strategy_and_list_valued_grid_keys():
    sweep = build_sweep(
        TINY,
        {
            "strategy": ["ewc:lambda=100", {"name": "gem", "memory_per_task": 10}, ["si", "mas"]],
            "hidden": [[20], [20, 10]],
        },
    )
    names = [job.name for job in sweep.jobs]
    assert names[0] == "strategy=ewc_lambda=100,hidden=20"
    assert names[3] == "strategy=gem_memory_per_task=10,hidden=20+10"
    assert names[4] == "strategy=si+mas,hidden=20"
    assert [s.name for s in sweep.jobs[4].config.strategies] == ["si", "mas"]
    assert sweep.jobs[2].config.strategies[0].params == {"memory_per_task": 10}
    assert sweep.jobs[3].config.hidden == (20, 10)
    assert all(re.fullmatch(r"[A-Za-z0-9._=+,-]+", n) for n in names)


def test_names_without_grid_long_and_colliding():
    assert [j.name for j in build_sweep(TINY, {}).jobs] == ["run"]
    long = {"stream": "permuted:" + ",".join(f"option{i}={i}" for i in range(40))}
    assert len(job_name(long)) == 150 and job_name(long) == job_name(dict(long))
    # Labels that differ only in characters a file name cannot hold still get distinct dirs.
    sweep = build_sweep(
        TINY,
        {"strategy": [{"name": "finetune", "label": "a b"}, {"name": "finetune", "label": "a_b"}]},
    )
    first, second = (job.name for job in sweep.jobs)
    assert (
        first != second and first.startswith("strategy=a_b-") and second.startswith("strategy=a_b-")
    )


def test_every_invalid_job_is_reported_before_anything_runs(tmp_path, capsys):
    path = write_toml(
        tmp_path / "bad.toml",
        {**TINY, "optimizer": "sgd"},
        {"lr": [0.1, "fast"], "strategy": ["finetune", "nosuch", "gem:memory=10"]},
    )
    out = tmp_path / "out"
    assert run_cli(["sweep", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "5 of 6 jobs are invalid" in err[0]
    assert len(err) == 4  # one line per distinct problem
    assert any("unknown strategy 'nosuch'" in line for line in err)
    assert any("has no setting 'memory'" in line for line in err)
    assert any(
        "lr must be a number" in line and "lr=fast,strategy=finetune" in line for line in err
    )
    assert not out.exists()


@pytest.mark.parametrize(
    ("base", "grid", "message"),
    [
        ({"seeds": [0, 1]}, {"lr": [0.1]}, "make a job a study"),
        ({"validation": 0.2}, {"strategy": ["ewc:lambda=[1,10]"]}, "make a job a study"),
        ({}, {"stream": ["rotated:angles=[0,90]", "rotated:angle=[0,90]"]}, "has no option angle"),
        ({"train_samples": 5, "validation": 0.5}, {"seed": [0]}, "holds out nothing of task 1"),
        ({"seed": 1}, {"seed": [2, 3]}, "in both base and grid"),
        ({}, {"seed": 3}, "must be a list of values"),
        ({}, {"seed": []}, "empty list"),
        ({}, {"seed": [1, 1]}, "lists 1 twice"),
        ({"data": "babi"}, {"seed": [0]}, "does not work on data 'babi'"),
        ({"stream": "split", "scenario": "class"}, {"strategy": ["pnn"]}, "task scenario"),
        ({"base_lr": 1}, {"seed": [0]}, "unknown setting(s) base_lr"),
        ({"optimizer": "adam:lr=0.001"}, {"lr": [0.1, 0.03]}, "set lr differently"),
    ],
)
def test_bad_sweep_files(base, grid, message):
    """Study jobs and stream mistakes are refused when the sweep is validated (fails when they
    pass validation and every job fails when it runs)."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_sweep({**TINY, **base}, grid)


def test_file_level_mistakes(tmp_path):
    path = tmp_path / "flat.toml"
    path.write_text("seed = 1\n[grid]\nlr = [0.1]\n")
    with pytest.raises(ConfigError, match="unknown top-level key"):
        load_sweep(path)
    path = tmp_path / "sweep.yaml"
    path.write_text("base:\n  tasks: 2\ngrid:\n  seed: [0, 1]\n")
    assert [j.name for j in load_sweep(path).jobs] == ["seed=0", "seed=1"]


def test_run_dirs_hold_the_exact_config_and_refuse_changed_settings(tmp_path):
    base = {
        **TINY,
        "hidden": [16],
        "stream": "rotated:angles=[0,90]",
        "strategy": ["finetune:lr=0.05", {"name": "ewc", "lambda": 10, "label": "E"}],
    }
    sweep = build_sweep(base, {"seed": [0, 1]})
    prepare_run_dirs(sweep, tmp_path)
    for job in sweep.jobs:
        assert load_run_config(tmp_path / job.name) == job.config
    prepare_run_dirs(sweep, tmp_path)  # the same sweep again: fine
    changed = build_sweep({**base, "epochs": 2}, {"seed": [0, 1, 2]})
    with pytest.raises(ConfigError, match=r"2 run dir\(s\) .* hold other settings"):
        prepare_run_dirs(changed, tmp_path)
    assert not (tmp_path / "seed=2").exists()  # nothing written when a clash is found


def test_folder_state(tmp_path):
    def with_config(run_dir: Path) -> Path:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps({"strategies": ["finetune", "ewc"]}))
        return run_dir

    assert folder_state(with_config(tmp_path / "none")) == "pending"
    cases = {
        ("complete", "complete"): "complete",
        ("complete", "failed"): "failed",
        ("complete", "partial"): "partial",
    }
    for (a, b), expected in cases.items():
        run_dir = with_config(tmp_path / a / b)
        write_results(run_dir, {}, {"finetune": (ONE_TASK, a), "ewc": (ONE_TASK, b)})
        assert folder_state(run_dir) == expected
    write_results(with_config(tmp_path / "one"), {}, {"finetune": (ONE_TASK, "complete")})
    assert folder_state(tmp_path / "one") == "partial"  # ewc not started


# ------------------------------------------------------------------------------------------------
# Cluster output


def test_emit_commands_lists_pending_jobs_as_shell_commands(tmp_path, capsys):
    path = write_toml(tmp_path / "s.toml", TINY, {"seed": [0, 1, 2], "lr": [0.1]})
    out = tmp_path / "out dir"  # a space: commands must quote it
    exe = fake_python(tmp_path)
    argv = ["sweep", str(path), "--out", str(out), "--emit", "commands", "--threads", "3"]
    assert run_cli([*argv, "--python", str(exe)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    for line, seed in zip(lines, (0, 1, 2), strict=True):
        words = shlex.split(line)
        assert words[:2] == ["OMP_NUM_THREADS=3", "MKL_NUM_THREADS=3"]
        run_dir = out.resolve() / f"seed={seed},lr=0.1"
        assert words[2:] == [
            str(exe), "-m", "lifelong.cli", "run", "--resume", str(run_dir), "--quiet", "--no-report"
        ]  # fmt: skip
        assert (run_dir / "config.json").is_file()
        shell = subprocess.run(line, shell=True, capture_output=True, text=True, check=True)
        assert shell.stdout.splitlines() == words[3:]
    assert (out / "jobs.txt").read_text().splitlines()[1] == str(out.resolve() / "seed=1,lr=0.1")
    # A job that completed meanwhile is left out on the next emission.
    write_results(out / "seed=1,lr=0.1", {}, {"finetune": (TWO_TASKS, "complete")})
    assert run_cli([*argv, "--python", str(exe)]) == 0
    again = capsys.readouterr().out.strip().splitlines()
    assert again == [lines[0], lines[2]]
    record = json.loads((out / "sweep.json").read_text())
    assert [j["status"] for j in record["jobs"]] == ["pending", "complete", "pending"]


def _array_indices(spec: str) -> list[int]:
    spec = spec.split("%")[0]
    indices = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        indices += range(int(lo), int(hi or lo) + 1)
    return indices


def test_emit_slurm_writes_an_array_over_jobs_txt(tmp_path, capsys):
    path = write_toml(tmp_path / "s.toml", TINY, {"seed": [0, 1, 2, 3, 4]})
    out = tmp_path / "out"
    exe = fake_python(tmp_path)
    # Jobs 1 and 2 are already done (complete / diverged): the array leaves them out.
    sweep = load_sweep(path)
    prepare_run_dirs(sweep, out)
    write_results(out / "seed=1", {}, {"finetune": (TWO_TASKS, "complete")})
    write_results(out / "seed=2", {}, {"finetune": (ONE_TASK, "failed")})
    argv = ["sweep", str(path), "--out", str(out), "--emit", "slurm", "--jobs", "2"]
    argv += ["--threads", "4", "--sbatch=--time=00:10:00", "--python", str(exe)]
    assert run_cli(argv) == 0
    script = out / "sweep.sbatch"
    assert str(script) in capsys.readouterr().out
    text = script.read_text()
    directives = dict(
        line[len("#SBATCH ") :].split("=", 1)
        for line in text.splitlines()
        if line.startswith("#SBATCH")
    )
    assert directives["--array"] == "0,3-4%2"
    assert directives["--cpus-per-task"] == "4"
    assert directives["--time"] == "00:10:00"
    assert Path(directives["--output"]).parent.is_dir()
    jobs = (out / "jobs.txt").read_text().splitlines()
    assert jobs == [str(out.resolve() / f"seed={s}") for s in range(5)]
    for index in _array_indices(directives["--array"]):
        env = dict(os.environ, SLURM_ARRAY_TASK_ID=str(index), SLURM_CPUS_PER_TASK="4")
        done = subprocess.run(
            ["bash", str(script)], env=env, capture_output=True, text=True, check=True
        )
        assert done.stdout.splitlines() == [
            "-m", "lifelong.cli", "run", "--resume", jobs[index], "--quiet", "--no-report"
        ]  # fmt: skip
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="7")
    beyond = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert beyond.returncode == 1 and "no job number 7" in beyond.stderr
    # Everything done: no script to submit.
    for seed in (0, 3, 4):
        write_results(out / f"seed={seed}", {}, {"finetune": (TWO_TASKS, "complete")})
    assert run_cli(argv) == 0
    assert "nothing to submit" in capsys.readouterr().out
    assert not script.exists()


# ------------------------------------------------------------------------------------------------
# Local runs


def test_local_sweep_trains_skips_and_summarizes(tmp_path, capsys):
    path = write_toml(tmp_path / "s.toml", {**TINY, "strategy": ["finetune"]}, {"seed": [0, 1]})
    out = tmp_path / "out"
    assert run_cli(["sweep", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    run_dirs = sorted(p.parent for p in out.rglob("results.json"))
    assert [p.name for p in run_dirs] == ["seed=0", "seed=1"]
    results = [json.loads((d / "results.json").read_text()) for d in run_dirs]
    assert [r["config"]["seed"] for r in results] == [0, 1]
    assert all(r["strategies"]["finetune"]["status"] == "complete" for r in results)
    record = json.loads((out / "sweep.json").read_text())
    assert [(j["name"], j["status"], j["outcome"]) for j in record["jobs"]] == [
        ("seed=0", "complete", "complete"),
        ("seed=1", "complete", "complete"),
    ]
    # The summary's mean and sample std equal those computed here from the two results files.
    summary = json.loads((out / "summary.json").read_text())
    (group,) = summary["groups"]
    assert group["strategy"] == "finetune" and group["n"] == 2 and group["seeds"] == [0, 1]
    for metric in ("acc", "bwt", "fwt", "forgetting"):
        values = [r["strategies"]["finetune"][metric] for r in results]
        assert group["metrics"][metric]["mean"] == pytest.approx(sum(values) / 2)
        assert group["metrics"][metric]["std"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    rows = list(csv.DictReader((out / "summary.csv").open()))
    acc = [r["strategies"]["finetune"]["acc"] for r in results]
    assert float(rows[0]["acc_mean"]) == pytest.approx(statistics.fmean(acc))
    assert f"{100 * statistics.fmean(acc):.2f} ± {100 * statistics.stdev(acc):.2f}" in printed
    # Second invocation: both jobs complete, nothing retrains or rewrites.
    stamps = {d: (d / "results.json").stat().st_mtime_ns for d in run_dirs}
    assert run_cli(["sweep", str(path), "--out", str(out)]) == 0
    assert "2 already done, running 0" in capsys.readouterr().out
    assert {d: (d / "results.json").stat().st_mtime_ns for d in run_dirs} == stamps
    record = json.loads((out / "sweep.json").read_text())
    assert [(j["outcome"], j["reason"]) for j in record["jobs"]] == [
        ("skipped", "already complete")
    ] * 2


# ------------------------------------------------------------------------------------------------
# Summaries


def test_summarize_groups_by_setting_over_seeds(tmp_path, capsys):
    def config(seed: int, lr: float) -> dict:
        return {**RunConfig(seed=seed, lr=lr).to_dict(), "data_dir": f"/somewhere/{seed}"}

    matrices = {  # (lr, seed) -> finetune's accuracy matrix (T = 2)
        (0.1, 0): [[0.1, 0.2], [0.9, 0.3], [0.5, 0.8]],
        (0.1, 1): [[0.1, 0.1], [0.8, 0.2], [0.6, 0.9]],
        (0.1, 2): [[0.2, 0.1], [0.7, 0.1], [0.4, 0.7]],
        (0.03, 0): [[0.1, 0.2], [0.6, 0.2], [0.6, 0.5]],
    }
    for (lr, seed), matrix in matrices.items():
        write_results(
            tmp_path / "runs" / f"lr={lr},seed={seed}",
            config(seed, lr),
            {"finetune": (matrix, "complete"), "ewc": (matrix[:2], "partial")},
        )
    assert run_cli(["summarize", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    summary = summarize(tmp_path)
    assert summary.varying == ["lr"]  # seed and data_dir are not settings
    assert [(g.setting["lr"], g.strategy, g.n) for g in summary.groups] == [
        (0.03, "finetune", 1),
        (0.1, "finetune", 3),
    ]
    assert len(summary.incomplete) == 4  # every ewc result is partial: left out
    group = summary.groups[1]
    acc = [(m[-1][0] + m[-1][1]) / 2 for (lr, _), m in matrices.items() if lr == 0.1]
    bwt = [m[-1][0] - m[1][0] for (lr, _), m in matrices.items() if lr == 0.1]
    assert group.stats("acc") == pytest.approx((statistics.fmean(acc), statistics.stdev(acc)))
    assert group.stats("bwt") == pytest.approx((statistics.fmean(bwt), statistics.stdev(bwt)))
    assert summary.groups[0].stats("acc") == (pytest.approx(0.55), None)
    table = printed.splitlines()
    assert table[0].split()[:3] == ["lr", "strategy", "n"]
    single = next(line for line in table if line.startswith("0.03"))
    assert "±" not in single and "55.00" in single  # n = 1: the mean alone
    triple = next(line for line in table if line.startswith("0.1 "))
    assert f"{100 * statistics.fmean(acc):.2f} ± {100 * statistics.stdev(acc):.2f}" in triple
    assert "not included: 4 incomplete" in printed
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert [(r["lr"], r["n"], r["seeds"]) for r in rows] == [
        ("0.03", "1", "0"),
        ("0.1", "3", "0;1;2"),
    ]
    assert rows[0]["acc_std"] == ""
    assert json.loads((tmp_path / "summary.json").read_text())["groups"][1]["runs"] == [
        "runs/lr=0.1,seed=0", "runs/lr=0.1,seed=1", "runs/lr=0.1,seed=2"
    ]  # fmt: skip
    # The study's report: the same mean ± std, the figure, a link to every run.
    (tmp_path / "runs" / "lr=0.1,seed=1" / "report.html").write_text("a run's own report")
    page = (tmp_path / "report.html").read_text()
    assert f"{100 * statistics.fmean(acc):.2f} ± {100 * statistics.stdev(acc):.2f}" in page
    assert (
        page.count("data:image/png;base64,") == 1 and (tmp_path / "plots" / "summary.png").is_file()
    )
    assert 'href="runs/lr=0.1,seed=0/results.json"' in page
    assert run_cli(["summarize", str(tmp_path)]) == 0  # again: the run's report is linked now
    assert 'href="runs/lr=0.1,seed=1/report.html"' in (tmp_path / "report.html").read_text()


def test_summarize_without_results(tmp_path, capsys):
    assert run_cli(["summarize", str(tmp_path)]) == 2
    assert "no results.json under" in capsys.readouterr().err
    assert run_cli(["summarize", str(tmp_path / "missing")]) == 2


def test_summarize_notes_a_seed_counted_twice(tmp_path):
    config = RunConfig(seed=0).to_dict()
    for name in ("a", "copy-of-a"):
        write_results(tmp_path / name, config, {"finetune": (TWO_TASKS, "complete")})
    summary = summarize(tmp_path)
    assert [g.n for g in summary.groups] == [2]
    assert "finetune has seed(s) 0 more than once" in format_summary(summary)


def test_summary_report_of_a_study_shows_each_chosen_setting_and_its_validation_score(
    tmp_path, capsys
):
    """`lifelong summarize` of a `lifelong run --seeds ... --validation` folder: the page has the
    candidates' mean ± std, and the chosen setting with its validation score (from the study's
    schema-2 results.json). Seen failing with the studies' section left out of the page."""
    out = tmp_path / "study"
    argv = ["run", "--data", "digits", "--tasks", "2", "--train-samples", "60"]
    argv += ["--test-samples", "30", "--hidden", "16", "--seeds", "0", "1", "--validation", "0.2"]
    argv += ["--strategy", "finetune:lr=[0.05,0.1]", "--quiet", "--no-report", "--out", str(out)]
    assert cli.main(argv) == 0
    study = json.loads((out / "results.json").read_text())
    (entry,) = study["strategies"].values()
    chosen = next(c for c in entry["candidates"] if c["chosen"])
    assert run_cli(["summarize", str(out)]) == 0
    assert not (out / "report.html").exists()  # the study's own report is not overwritten
    page = (out / "summary.html").read_text()
    assert "Chosen settings (validation scores)" in page
    assert f"{100 * chosen['validation_score']:.2f}" in page
    assert page.count("finetune:lr=") >= 2  # one row per candidate (two seeds each)
    assert "<td class='num'>2</td>" in page
