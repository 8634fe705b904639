"""Checkpoints and resume: a killed or interrupted `lifelong run` continues to the exact results.

The run is a real subprocess of the console script, stopped after its first checkpoint appears
(SIGKILL: no chance to clean up; SIGINT: Ctrl-C). ``lifelong run --resume DIR`` must then end with
accuracy matrices, metrics and curves identical to an uninterrupted run with the same seed. The
first strategy uses Adam with ``reset_optimizer=false``, so the optimizer state, too, has to come
back from the checkpoint; the second one has not started when the run is stopped.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from lifelong.cli import main

STRATEGIES = ["finetune:optimizer=adam,reset_optimizer=false,lr=0.001", "finetune:lr=0.05"]
TASKS = 5
ARGS = ["--data", "digits", "--stream", "permuted", "--tasks", str(TASKS), "--epochs", "3"]
ARGS += ["--hidden", "64", "--eval-every", "50", "--seed", "11", "--strategy", *STRATEGIES]
ARGS += ["--quiet", "--no-report"]


def numbers(run_dir: Path) -> dict:
    results = json.loads((run_dir / "results.json").read_text())
    keys = ("accuracy_matrix", "acc", "bwt", "fwt", "forgetting", "learning_accuracy")
    keys += ("curves", "parameters", "status", "train", "params")
    return {label: {k: r[k] for k in keys} for label, r in results["strategies"].items()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(["run", *ARGS, "--out", str(out)]) == 0
    return numbers(out)


def tasks_saved(run: Path, label: str) -> int:
    """Tasks of ``label`` recorded in ``run/results.json`` so far (0 before the file exists)."""
    try:
        results = json.loads((run / "results.json").read_text())  # replaced atomically
    except FileNotFoundError:
        return 0
    return results["strategies"].get(label, {}).get("tasks_done", 0)


def start_and_stop_after_first_checkpoint(exe: Path, out: Path, env: dict, sig: int):
    """Start `lifelong run`, wait until its first task is saved, then send ``sig`` mid-stream.

    It waits for states (the first task in results.json, after its checkpoint), never for a
    time: under load a fixed sleep let the signal land before results.json listed the task."""
    proc = subprocess.Popen(
        [str(exe), "run", *ARGS, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 300
    try:
        while tasks_saved(out, STRATEGIES[0]) < 1:
            assert proc.poll() is None, f"run ended before its first task: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "no finished task within 300 s"
            time.sleep(0.01)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, stderr


def assert_stopped_mid_stream(out: Path) -> dict:
    results = json.loads((out / "results.json").read_text())["strategies"]
    first = results[STRATEGIES[0]]
    assert first["status"] == "partial"
    assert 1 <= first["tasks_done"] < TASKS, "the run was not stopped mid-stream"
    assert len(first["accuracy_matrix"]) == first["tasks_done"] + 1
    assert STRATEGIES[1] not in results
    return first


def test_killed_run_resumes_to_the_exact_results(tmp_path, lifelong_exe, cli_env, uninterrupted):
    out = tmp_path / "run"
    code, _ = start_and_stop_after_first_checkpoint(lifelong_exe, out, cli_env, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert_stopped_mid_stream(out)
    assert main(["run", "--resume", str(out), "--quiet", "--no-report"]) == 0
    resumed = numbers(out)
    assert list(resumed) == STRATEGIES
    assert all(r["status"] == "complete" for r in resumed.values())
    assert resumed == uninterrupted
    # resuming a finished run trains nothing and changes nothing
    before = (out / "results.json").read_text()
    assert main(["run", "--resume", str(out), "--quiet", "--no-report"]) == 0
    assert (
        json.loads((out / "results.json").read_text())["strategies"]
        == json.loads(before)["strategies"]
    )


def test_ctrl_c_keeps_finished_tasks_and_resumes_exactly(
    tmp_path, lifelong_exe, cli_env, uninterrupted
):
    out = tmp_path / "run"
    code, stderr = start_and_stop_after_first_checkpoint(lifelong_exe, out, cli_env, signal.SIGINT)
    assert code == 130
    (line,) = stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith("lifelong: interrupted") and f"lifelong run --resume {out}" in line
    first = assert_stopped_mid_stream(out)
    # the finished tasks' rows are exactly those of the uninterrupted run
    done = first["tasks_done"]
    assert first["accuracy_matrix"] == uninterrupted[STRATEGIES[0]]["accuracy_matrix"][: done + 1]
    assert first["acc"] is not None
    proc = subprocess.run(
        [str(lifelong_exe), "run", "--resume", str(out), "--quiet", "--no-report"],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert numbers(out) == uninterrupted
