"""The command line end to end: run, list, report, demo, config files and bad input.

Most runs call ``lifelong.cli.main`` in-process (fast); a few start the installed console script
as a real subprocess (``lifelong_exe``) to check exit statuses, stderr and the progress bar.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import re
import struct
import subprocess
import termios
from pathlib import Path

import pytest
import torch

from lifelong import metrics
from lifelong.cli import main
from lifelong.strategies import STRATEGIES, Strategy

SMALL = ["--data", "digits", "--stream", "permuted", "--tasks", "3", "--train-samples", "100"]
SMALL += ["--test-samples", "50", "--hidden", "16", "--epochs", "1", "--lr", "0.1"]
PNG = b"\x89PNG\r\n\x1a\n"
METRICS = ("acc", "bwt", "fwt", "forgetting", "learning_accuracy")


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``lifelong ARGV`` in-process: (exit status, stdout, stderr)."""
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse (usage errors, --help, --version)
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def read_results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def strategy_numbers(results: dict) -> dict:
    """What must be reproducible: every label's matrix, metrics, curves and status."""
    keys = ("accuracy_matrix", *METRICS, "curves", "status", "parameters")
    return {label: {k: r[k] for k in keys} for label, r in results["strategies"].items()}


# ---- lifelong run ----------------------------------------------------------------------------
def test_run_writes_results_metrics_plots_and_report(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", *SMALL, "--eval-every", "5", "--seed", "0", "--out", str(out), "--quiet"]
    argv += ["--strategy", "finetune", "finetune:lr=0.03", "joint"]
    code, stdout, stderr = run_cli(argv, capsys)
    assert code == 0, stderr
    labels = ["finetune", "finetune:lr=0.03", "joint"]
    # the table, then where things are
    for label in labels:
        assert re.search(rf"^{re.escape(label)}\s+\d+\.\d\d\s", stdout, re.M), stdout
    assert f"results: {out / 'results.json'}" in stdout
    assert f"report:  {out / 'report.html'}" in stdout

    results = read_results(out)
    assert results["schema"] == 1
    config = results["config"]
    assert (config["data"], config["stream"], config["tasks"], config["seed"]) == (
        "digits",
        "permuted",
        3,
        0,
    )
    assert config["strategies"] == labels
    assert list(results["strategies"]) == labels  # one entry per setting, same method twice
    for label, entry in results["strategies"].items():
        matrix = entry["accuracy_matrix"]
        assert len(matrix) == 4 and all(len(row) == 3 for row in matrix)
        expected = metrics.summarize(matrix)
        for key in METRICS:  # n/a where true by construction (FWT in the class scenario)
            value = None if key in entry["not_applicable"] else expected[key]
            assert entry[key] == pytest.approx(value), (label, key)
        for key in ("train_seconds", "eval_seconds", "peak_rss_mb"):
            assert isinstance(entry[key], float) and entry[key] > 0, (label, key)
        assert set(entry["curves"]) >= {"step", "task", "accuracy"}
        assert len(entry["curves"]["step"]) == 6  # 10 steps per task, every 5th, 3 tasks
        assert entry["status"] == "complete"
    fine, tuned = results["strategies"]["finetune"], results["strategies"]["finetune:lr=0.03"]
    assert fine["train"]["lr"] == 0.1 and tuned["train"]["lr"] == 0.03
    assert fine["strategy"] == tuned["strategy"] == "finetune"
    assert fine["accuracy_matrix"][0] == tuned["accuracy_matrix"][0]  # same initial model
    assert fine["accuracy_matrix"][1:] != tuned["accuracy_matrix"][1:]

    with open(out / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["label"] for row in rows] == labels
    for row in rows:
        entry = results["strategies"][row["label"]]
        assert float(row["acc"]) == pytest.approx(entry["acc"])
        if entry["bwt"] is None:  # joint: n/a, an empty cell and the reason
            assert row["bwt"] == "" and "bwt:" in row["not_applicable"]
        else:
            assert float(row["bwt"]) == pytest.approx(entry["bwt"])

    pngs = sorted((out / "plots").glob("*.png"))
    names = [p.name for p in pngs]
    assert "comparison.png" in names
    assert sum(n.startswith("accuracy_matrix_") for n in names) == 3
    assert sum(n.startswith("task_accuracy_") for n in names) == 3
    assert all(p.read_bytes().startswith(PNG) for p in pngs)

    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 7
    assert not re.search(r"""(src|href)=["']?(https?:|//|plots/)""", html)  # works offline
    for label in labels:
        assert label in html
    assert (out / "checkpoints").is_dir()


def test_same_seed_gives_identical_results_json_metrics(tmp_path, capsys):
    argv = ["run", *SMALL, "--strategy", "finetune", "joint", "--no-report", "--quiet"]
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        code, _, err = run_cli([*argv, "--seed", seed, "--out", str(tmp_path / name)], capsys)
        assert code == 0, err
    a, b, c = (strategy_numbers(read_results(tmp_path / n)) for n in "abc")
    assert a == b
    assert a["finetune"]["accuracy_matrix"] != c["finetune"]["accuracy_matrix"]


TOML = """
data = "digits"
stream = "permuted"
tasks = 3
train-samples = 100
test-samples = 50
hidden = [16]
epochs = 1
lr = 0.1
seed = 3
strategy = ["finetune", {name = "finetune", lr = 0.03}]
"""
YAML = """
data: digits
stream: permuted
tasks: 3
train_samples: 100
test_samples: 50
hidden: [16]
epochs: 1
lr: 0.1
seed: 3
strategy: [finetune, "finetune:lr=0.03"]
"""


def test_config_files_are_equivalent_to_flags(tmp_path, capsys):
    flags = ["run", *SMALL, "--seed", "3", "--strategy", "finetune", "finetune:lr=0.03"]
    code, _, err = run_cli(
        [*flags, "--out", str(tmp_path / "flags"), "--no-report", "--quiet"], capsys
    )
    assert code == 0, err
    expected = strategy_numbers(read_results(tmp_path / "flags"))
    assert list(expected) == ["finetune", "finetune:lr=0.03"]
    for suffix, text in ((".toml", TOML), (".yaml", YAML)):
        path = tmp_path / f"run{suffix}"
        path.write_text(text)
        out = tmp_path / suffix[1:]
        code, _, err = run_cli(
            ["run", "--config", str(path), "--out", str(out), "--no-report", "--quiet"], capsys
        )
        assert code == 0, err
        assert strategy_numbers(read_results(out)) == expected, suffix
        assert read_results(out)["config"] == read_results(tmp_path / "flags")["config"]
    # flags override the file
    argv = ["run", "--config", str(tmp_path / "run.toml"), "--tasks", "2", "--strategy", "joint"]
    code, _, err = run_cli(
        [*argv, "--out", str(tmp_path / "over"), "--no-report", "--quiet"], capsys
    )
    assert code == 0, err
    results = read_results(tmp_path / "over")
    assert list(results["strategies"]) == ["joint"]
    assert len(results["strategies"]["joint"]["accuracy_matrix"]) == 3


def test_diverging_strategy_fails_alone(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", *SMALL, "--strategy", "finetune:lr=1e12", "finetune", "--out", str(out)]
    code, stdout, stderr = run_cli([*argv, "--quiet"], capsys)
    assert code == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr
    assert re.fullmatch(
        r"lifelong: finetune:lr=1e12: the loss became (nan|inf|-inf) at task 1, step \d+; .*",
        lines[0],
    )
    results = read_results(out)["strategies"]
    failed = results["finetune:lr=1e12"]
    assert failed["status"] == "failed" and "task 1" in failed["error"]
    assert len(failed["accuracy_matrix"]) == 1  # the untrained row: nothing finished
    assert results["finetune"]["status"] == "complete"  # the run went on
    assert "failed" in stdout
    assert (out / "report.html").exists()


class NanFromTask2(Strategy):
    """Fine-tuning whose loss is NaN from the first step of task ``from_task`` on (test only)."""

    name = "nan-from-task-2-test"
    description = "test strategy"

    def __init__(self, from_task: int = 2) -> None:
        self.from_task = from_task

    def loss(self, model, batch, task):
        loss = super().loss(model, batch, task)
        return loss * float("nan") if task.id + 1 >= self.from_task else loss


def test_divergence_keeps_the_finished_tasks(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(STRATEGIES, NanFromTask2.name, NanFromTask2)
    out = tmp_path / "run"
    argv = ["run", *SMALL, "--strategy", NanFromTask2.name, "joint", "--out", str(out)]
    code, _, stderr = run_cli([*argv, "--quiet", "--no-report"], capsys)
    assert code == 1
    (line,) = stderr.strip().splitlines()
    assert line.startswith(
        f"lifelong: {NanFromTask2.name}: the loss became nan at task 2, step 11;"
    )
    results = read_results(out)["strategies"]
    failed = results[NanFromTask2.name]
    assert failed["status"] == "failed" and failed["tasks_done"] == 1
    assert len(failed["accuracy_matrix"]) == 2  # row 0 and task 1, kept
    assert failed["acc"] == pytest.approx(failed["accuracy_matrix"][1][0])
    assert failed["error"] == line.removeprefix("lifelong: ")
    assert results["joint"]["status"] == "complete"


def test_list_shows_every_name_with_a_description(capsys):
    code, out, _ = run_cli(["list"], capsys)
    assert code == 0
    names = ["digits", "mnist", "fashion-mnist", "permuted", "rotated", "split", "noisy"]
    names += ["mlp", "cnn", "finetune", "joint", "cumulative", "independent"]
    for name in names:
        match = re.search(rf"^\s+{re.escape(name)}\s+(\S.*)$", out, re.M)
        assert match and len(match.group(1)) > 10, name
    for title in ("data sets", "streams", "models", "strategies"):
        assert title in out


def test_report_rebuilds_from_results_json(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(["run", *SMALL, "--out", str(out), "--no-report", "--quiet"], capsys)
    assert code == 0, err
    assert not (out / "report.html").exists()
    code, stdout, err = run_cli(["report", str(out)], capsys)
    assert code == 0, err
    assert stdout.strip() == str(out / "report.html")
    assert (out / "report.html").read_text().count("data:image/png;base64,") >= 2
    assert any((out / "plots").glob("accuracy_matrix_*.png"))
    empty = tmp_path / "empty"
    empty.mkdir()
    code, stdout, err = run_cli(["report", str(empty)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.count("results.json") == 1 and str(empty) in err


# ---- bad input -------------------------------------------------------------------------------
def _existing_file(tmp_path: Path) -> str:
    path = tmp_path / "a-file"
    path.write_text("")
    return str(path)


BAD = {
    "unknown strategy": (
        ["--strategy", "nosuch"],
        r"unknown strategy 'nosuch'; known: .*finetune.*joint",
    ),
    "unknown data": (["--data", "cifar"], r"unknown data set 'cifar'; known: .*digits"),
    "unknown stream": (["--stream", "shuffled"], r"known: .*permuted, rotated, split"),
    "negative lr": (["--lr", "-1"], r"--lr must be positive"),
    "zero tasks": (["--tasks", "0"], r"--tasks must be at least 1"),
    "unknown setting": (["--strategy", "finetune:foo=1"], r"'finetune' has no setting 'foo'"),
    "bad override": (["--strategy", "finetune:lr=abc"], r"lr must be a number"),
    "split too long": (["--stream", "split", "--tasks", "11"], r"use at most 10 tasks"),
    "too many samples": (["--train-samples", "100000"], r"use at most 1258"),
    "bad scenario": (["--scenario", "both"], r"invalid choice: 'both'"),
    "not a number": (["--tasks", "five"], r"invalid int value: 'five'"),
    "bad optimizer": (["--optimizer", "rmsprp"], r"unknown optimizer 'rmsprp'; known: .*rmsprop"),
    "bad optimizer key": (["--optimizer", "adamw:nesterov=true"], r"AdamW has no setting nesterov"),
    "bad scheduler": (["--scheduler", "cosin"], r"unknown scheduler 'cosin'; known: .*cosine"),
    "duplicate": (["--strategy", "joint", "joint"], r"distinct"),
    "missing config": (["--config", "/nonexistent/run.toml"], r"cannot read config file"),
    "out is a file": (["--out", "{file}"], r"is a file"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_with_one_line_before_training(case, tmp_path, capsys):
    extra, pattern = BAD[case]
    extra = [a.replace("{file}", _existing_file(tmp_path)) for a in extra]
    out = tmp_path / "run"
    argv = ["run", "--tasks", "2", "--train-samples", "20", "--test-samples", "10", "--quiet"]
    argv = [*argv, "--out", str(out), *extra]
    code, stdout, stderr = run_cli(argv, capsys)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("lifelong") and "Traceback" not in stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert not (out / "results.json").exists()  # nothing trained
    assert stdout == ""


@pytest.mark.parametrize("body", ["strategy = 3", "stream_options = 3", "epochs = 1.5", "x = ["])
def test_bad_config_file_values_exit_2_with_one_line(tmp_path, capsys, body):
    path = tmp_path / "run.toml"
    path.write_text(body + "\n")
    code, stdout, stderr = run_cli(["run", "--config", str(path), "--out", str(tmp_path)], capsys)
    assert code == 2 and stdout == ""
    (line,) = stderr.strip().splitlines()
    assert line.startswith("lifelong: ") and "Traceback" not in stderr


def test_missing_mnist_names_files_and_download_command(tmp_path, capsys):
    empty = tmp_path / "data"
    empty.mkdir()
    argv = ["run", "--data", "mnist", "--data-dir", str(empty), "--out", str(tmp_path / "r")]
    code, _, stderr = run_cli([*argv, "--quiet"], capsys)
    assert code == 2
    (line,) = stderr.strip().splitlines()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        assert name in line
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert name in line
    assert str(empty / "mnist") in line
    assert f"lifelong data download mnist --data-dir {empty}" in line


def test_resume_errors(tmp_path, capsys):
    code, _, err = run_cli(["run", "--resume", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "no config.json" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["run", "--resume", str(tmp_path), "--tasks", "3", "--lr", "1"], capsys)
    assert code == 2 and "drop --tasks, --lr" in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_a_gpu(tmp_path, capsys):
    code, _, err = run_cli(["run", *SMALL, "--device", "cuda", "--out", str(tmp_path)], capsys)
    assert code == 2 and "no CUDA GPU" in err and len(err.strip().splitlines()) == 1


# ---- the console script as a real process -------------------------------------------------------
def test_console_script_run_with_progress_bar(tmp_path, lifelong_exe, cli_env):
    """`lifelong run` as installed: exit 0, files written, a progress bar on a terminal."""
    out = tmp_path / "run"
    primary, secondary = os.openpty()  # stderr on a terminal, so tqdm draws its bar
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # 120 columns
    try:
        proc = subprocess.Popen(
            [str(lifelong_exe), "run", *SMALL, "--strategy", "finetune", "--out", str(out)],
            stdout=subprocess.PIPE,
            stderr=secondary,
            env=cli_env,
        )
        os.close(secondary)
        chunks = []
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        stdout = proc.stdout.read().decode()
        assert proc.wait(timeout=120) == 0
    finally:
        os.close(primary)
    bar = b"".join(chunks).decode(errors="replace")
    assert "finetune" in bar and "3/3" in bar and "task" in bar
    assert "Traceback" not in bar
    assert "results:" in stdout and (out / "results.json").exists()
    assert read_results(out)["strategies"]["finetune"]["status"] == "complete"


def test_console_script_bad_input(lifelong_exe, cli_env, tmp_path):
    proc = subprocess.run(
        [str(lifelong_exe), "run", "--strategy", "nosuch", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("lifelong: unknown strategy 'nosuch'; known: ")
    assert proc.stdout == ""
