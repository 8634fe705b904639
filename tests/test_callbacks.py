"""Callbacks and loggers: TensorBoard and CSV logs read back, the environment in results.json,
a seeded user model, and a progress display that moves within a task on a terminal.

Checked to fail: with ``cb.step`` no longer called from ``learn_stream``, the loss rows and
scalars are missing; with ``ProgressBar.step`` not updating the bar, the pseudo-terminal test
sees one count per task; with the re-initialisation of a user's model removed, the seed test
fails.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import termios

import pytest
import torch
from torch import nn

from lifelong.callbacks import Callback, make_loggers
from lifelong.cli import main
from lifelong.errors import ConfigError
from lifelong.runner import learn_stream
from lifelong.train import TrainConfig

RUN = ["run", "--data", "digits", "--tasks", "2", "--train-samples", "50", "--test-samples",
       "30", "--hidden", "8", "--batch-size", "10", "--seed", "3", "--quiet", "--no-report"]  # fmt: skip
STEPS_PER_TASK = 5


def test_csv_and_tensorboard_logs_are_written_and_read_back(tmp_path):
    out = tmp_path / "run"
    code = main(
        [*RUN, "--strategy", "finetune", "ewc", "--log", "csv", "tensorboard", "--out", str(out)]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())["strategies"]

    with (out / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    for label in ("finetune", "ewc"):
        mine = [r for r in rows if r["label"] == label]
        losses = [r for r in mine if r["key"] == "loss"]
        assert [int(r["step"]) for r in losses] == list(range(1, 2 * STEPS_PER_TASK + 1))
        assert [int(r["task"]) for r in losses] == [1] * STEPS_PER_TASK + [2] * STEPS_PER_TASK
        assert all(r["seed"] == "3" and r["strategy"] == label for r in mine)
        accuracy = {
            (int(r["task"]), r["key"]): float(r["value"])
            for r in mine
            if r["key"].startswith("accuracy/")
        }
        matrix = results[label]["accuracy_matrix"]
        for t in (1, 2):
            for j in (1, 2):
                assert accuracy[(t, f"accuracy/task_{j}")] == pytest.approx(
                    matrix[t][j - 1], abs=1e-6
                )
        final = {r["key"]: r["value"] for r in mine if r["task"] == "" and r["step"]}
        assert float(final["acc"]) == pytest.approx(results[label]["acc"], abs=1e-6)
        settings = {r["key"]: r["value"] for r in mine if r["key"].startswith("setting/")}
        assert settings["setting/train/lr"] == "0.1" and settings["setting/seed"] == "3"

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for label in ("finetune", "ewc"):
        events = EventAccumulator(str(out / "tensorboard" / label))
        events.Reload()
        loss = events.Scalars("loss")
        assert [e.step for e in loss] == list(range(1, 2 * STEPS_PER_TASK + 1))
        assert all(torch.isfinite(torch.tensor(e.value)) for e in loss)
        task1 = events.Scalars("accuracy/task_1")
        matrix = results[label]["accuracy_matrix"]
        assert [(e.step, round(e.value, 5)) for e in task1] == [
            (1, round(matrix[1][0], 5)),
            (2, round(matrix[2][0], 5)),
        ]
        assert events.Scalars("final/acc")[0].value == pytest.approx(
            results[label]["acc"], abs=1e-6
        )
        (settings,) = events.Tensors("settings/text_summary")
        assert b'"lr": 0.1' in settings.tensor_proto.string_val[0]


def test_missing_optional_logger_says_how_to_install(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    with pytest.raises(
        ConfigError, match=r"needs the wandb package; install it with: pip install wandb"
    ):
        make_loggers(["wandb"], tmp_path)


def test_results_json_records_the_environment(tmp_path):
    out = tmp_path / "run"
    assert main([*RUN, "--strategy", "finetune", "--device", "auto", "--out", str(out)]) == 0
    env = json.loads((out / "results.json").read_text())["environment"]
    assert env["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert env["torch"] == torch.__version__ and env["threads"] == torch.get_num_threads()
    assert env["python"].count(".") == 2 and env["host"] and env["lifelong"]
    head = subprocess.run(
        ["git", "-C", os.path.dirname(__file__), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
    )
    if head.returncode == 0:  # run from a checkout
        assert env["git_commit"].startswith(head.stdout.strip())


def test_seed_reinitialises_a_model_the_user_built(digits_stream):
    config = TrainConfig(batch_size=20, lr=0.1)

    def run(init_seed: int, **kwargs):
        torch.manual_seed(init_seed)  # the model arrives with different weights
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
        return learn_stream(digits_stream, "finetune", model=model, train=config, seed=5, **kwargs)

    assert run(1).accuracy_matrix == run(2).accuracy_matrix
    assert run(1, init_model=False).accuracy_matrix != run(2, init_model=False).accuracy_matrix


def test_python_callbacks_hear_strategy_seed_and_task(digits_stream):
    class Recorder(Callback):
        def __init__(self):
            self.events = []

        def run_start(self, run, first_task):
            self.events.append(("start", run.label, run.seed, first_task))

        def fit_start(self, run, task, steps):
            self.events.append(("fit", task, steps))

        def step(self, run, task, step, loss):
            self.events.append(("step", run.strategy, run.seed, task))

        def task_end(self, run, task, accuracies):
            self.events.append(("task", task, len(accuracies)))

        def run_end(self, run, result):
            self.events.append(("end", result.status))

    rec = Recorder()
    learn_stream(
        digits_stream,
        "finetune",
        hidden=[8],
        train=TrainConfig(batch_size=50),
        seed=4,
        callbacks=[rec],
    )
    assert rec.events[:2] == [("start", "finetune", 4, 0), ("fit", 0, 4)]
    assert rec.events.count(("step", "finetune", 4, 1)) == 4
    assert ("task", 2, 3) in rec.events and rec.events[-1] == ("end", "complete")


@pytest.mark.slow
def test_progress_display_moves_within_a_task_on_a_terminal(tmp_path, lifelong_exe, cli_env):
    """On a pseudo-terminal the bar of task 1 is redrawn with growing step counts before the
    task ends; a non-terminal stderr gets no bar at all."""
    # one task of about 2,500 steps: about a second even on a fast idle machine, so tqdm
    # (redrawing every 0.1 s) shows several counts before the task ends
    args = [str(lifelong_exe), "run", "--data", "digits", "--tasks", "1", "--batch-size", "1",
            "--epochs", "2", "--hidden", "8", "--no-report", "--strategy", "finetune"]  # fmt: skip
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(
        [*args, "--out", str(tmp_path / "tty")],
        stdin=slave,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env=cli_env,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=120) == 0
    text = b"".join(chunks).decode(errors="replace")
    frames = re.findall(r"finetune seed 0 task 1/1:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+) \[[^\]]*\]", text)
    counts = sorted({int(n) for n, total in frames if int(n) < int(total)})
    assert len(counts) >= 2, text[-2000:]
    assert re.search(r"loss -?\d", text) and ("step/s" in text or "s/step" in text)

    plain = subprocess.run(
        [*args, "--train-samples", "20", "--out", str(tmp_path / "plain")],
        capture_output=True,
        text=True,
        env=cli_env,
    )
    assert plain.returncode == 0 and "task 1/1" not in plain.stderr


def test_wandb_logger_calls(tmp_path, monkeypatch, digits_stream):
    """The calls WandbLogger makes, recorded by a stand-in module (the wandb package itself is
    not installed for the tests): offline by default, one run per label with the settings as
    config, the loss of every step with its task, accuracies and the final metrics."""
    import sys
    import types

    calls: list = []

    class FakeRun:
        def __init__(self):
            self.summary = {}

        def log(self, values, step=None):
            calls.append(("log", values, step))

        def finish(self):
            calls.append(("finish", dict(self.summary)))

    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: calls.append(("init", kw)) or FakeRun()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    (logger,) = make_loggers(["wandb"], tmp_path)
    learn_stream(
        digits_stream,
        "finetune",
        hidden=[8],
        train=TrainConfig(batch_size=100),
        seed=7,
        callbacks=[logger],
    )
    init = calls[0][1]
    assert init["mode"] == "offline" and init["name"] == "finetune seed 7"
    assert init["config"]["train"]["batch_size"] == 100 and init["dir"] == str(tmp_path / "wandb")
    steps = [c for c in calls if c[0] == "log" and "loss" in c[1]]
    assert [(c[1]["task"], c[2]) for c in steps] == [(1, 1), (1, 2), (2, 3), (2, 4), (3, 5), (3, 6)]
    assert "accuracy/task_3" in calls[-2][1]
    assert (
        calls[-1][0] == "finish" and calls[-1][1]["status"] == "complete" and "acc" in calls[-1][1]
    )
