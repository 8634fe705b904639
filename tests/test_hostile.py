"""Hostile inputs and faults: every mistake ends in one clear line, nothing finished is lost.

Each case asserts the exit status (or the ``LifelongError`` subclass from Python), the single
line of the message (no traceback) and that files written earlier are intact and no temporary
file is left behind. Runs are in-process ``cli.main`` calls on tiny digits streams; only the
cases that need a signal, a lock held by another process or a file-size limit start a process.

Checked to fail: with ``weights_only=False`` restored in ``lifelong.checkpoint`` the planted
pickle creates its marker file and the payload cases fail; with the ``holds_run`` check removed
the re-run case exits 0; with ``run_lock`` made a no-op the concurrent-run cases exit 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from lifelong.cli import main
from lifelong.errors import DataError, FolderLockedError
from lifelong.results import _FILE_MODE, load_results, run_lock

TINY = ["--data", "digits", "--stream", "permuted", "--tasks", "2", "--train-samples", "40"]
TINY += ["--test-samples", "20", "--hidden", "8", "--batch-size", "20", "--quiet", "--no-report"]


def one_line(capsys) -> str:
    """The single stderr line of the last in-process call (no traceback, no usage text)."""
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.name.endswith((".tmp", ".part"))]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a run folder by relative path (to prove nothing changed)."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A complete two-task run (with checkpoints) to copy and damage."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["run", *TINY, "--strategy", "finetune", "l2", "--out", str(out)]) == 0
    return out


def copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def mark_unfinished(run: Path, label: str) -> None:
    """Make ``--resume`` load ``label``'s checkpoint (its results say it is unfinished)."""
    results = load_results(run)
    results.strategies[label].status = "partial"
    results.save(run)


# ---- checkpoints that cannot run code ----------------------------------------------------------


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: it creates a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _plant_zip(path: Path, marker: Path) -> None:
    torch.save({"model": _Payload(marker)}, path)


def _plant_legacy(path: Path, marker: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump({"model": _Payload(marker)}, f)


@pytest.mark.parametrize("plant", [_plant_zip, _plant_legacy], ids=["torch-zip", "raw-pickle"])
def test_planted_pickle_never_executes(plant, finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    mark_unfinished(run, "l2")
    marker = tmp_path / "pwned"
    plant(run / "checkpoints" / "l2.pt", marker)
    before = snapshot(run)
    assert main(["run", "--resume", str(run), "--quiet", "--no-report"]) == 2
    line = one_line(capsys)
    assert "cannot be loaded safely" in line and "Delete it" in line
    assert not marker.exists(), "the planted pickle ran"
    assert snapshot(run) == before
    # the payload is real: an unsafe load runs it
    with contextlib.suppress(Exception):  # a raw pickle is no torch file; it ran nonetheless
        torch.load(run / "checkpoints" / "l2.pt", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # truncated
        lambda b: os.urandom(4096),  # random bytes
        lambda b: b"",  # empty
        lambda b: b"PK\x03\x04" + os.urandom(100),  # a broken zip
    ],
    ids=["truncated", "random-bytes", "empty", "broken-zip"],
)
def test_damaged_checkpoint_is_refused_with_the_recovery_step(
    damage, finished_run, tmp_path, capsys
):
    run = copy_run(finished_run, tmp_path / "run")
    mark_unfinished(run, "l2")
    checkpoint = run / "checkpoints" / "l2.pt"
    checkpoint.write_bytes(damage(checkpoint.read_bytes()))
    before = snapshot(run)
    assert main(["run", "--resume", str(run), "--quiet", "--no-report"]) == 2
    line = one_line(capsys)
    assert str(checkpoint) in line and "Delete it and resume again" in line
    assert snapshot(run) == before
    # the recovery step works: that strategy restarts, the finished one is kept
    checkpoint.unlink()
    assert main(["run", "--resume", str(run), "--quiet", "--no-report"]) == 0
    again = json.loads((run / "results.json").read_text())["strategies"]
    reference = json.loads((finished_run / "results.json").read_text())["strategies"]
    for label in ("finetune", "l2"):
        assert again[label]["accuracy_matrix"] == reference[label]["accuracy_matrix"]


def test_python_api_refuses_a_planted_checkpoint(digits_stream, tmp_path):
    from lifelong.runner import learn_stream

    marker = tmp_path / "pwned"
    checkpoint = tmp_path / "c.pt"
    _plant_zip(checkpoint, marker)
    with pytest.raises(DataError, match="cannot be loaded safely"):
        learn_stream(digits_stream, "finetune", hidden=[8], checkpoint=checkpoint)
    assert not marker.exists()


# ---- nothing overwritten, nothing shared by accident -------------------------------------------


def test_rerun_into_a_run_folder_refuses_and_keeps_it(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    before = snapshot(run)
    assert main(["run", *TINY, "--out", str(run)]) == 2
    line = one_line(capsys)
    assert "already holds a run" in line and "--resume" in line and "--overwrite" in line
    assert snapshot(run) == before


def test_overwrite_replaces_the_run(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    assert main(["run", *TINY, "--strategy", "joint", "--out", str(run), "--overwrite"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert list(results["strategies"]) == ["joint"]
    assert [p.name for p in (run / "checkpoints").glob("*.pt")] == ["joint.pt"]


def test_overwrite_with_resume_is_refused(finished_run, capsys):
    assert main(["run", "--resume", str(finished_run), "--overwrite"]) == 2
    assert "--overwrite" in one_line(capsys)


HOLD_LOCK = """
import sys
from lifelong.results import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def lock_held_elsewhere(tmp_path):
    """Another process holding the lock of ``tmp_path / 'run'`` until the test ends."""
    folder = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "locked"  # waits for the state, not for time
        yield folder
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


@pytest.mark.parametrize("resume", [False, True], ids=["new-run", "resume"])
def test_second_run_into_a_locked_folder_refuses(
    resume, lock_held_elsewhere, finished_run, tmp_path, capsys
):
    folder = lock_held_elsewhere
    if resume:
        for item in finished_run.iterdir():
            if item.is_file():
                (folder / item.name).write_bytes(item.read_bytes())
        argv = ["run", "--resume", str(folder), "--quiet", "--no-report"]
    else:
        argv = ["run", *TINY, "--out", str(folder)]
    before = snapshot(folder)
    assert main(argv) == 2
    line = one_line(capsys)
    assert "another lifelong process is writing" in line and str(folder) in line
    assert snapshot(folder) == before


def test_lock_is_exclusive_between_threads_and_reentrant_within_one(tmp_path):
    folder = tmp_path / "run"
    errors: list[BaseException] = []

    def other() -> None:
        try:
            with run_lock(folder):
                pass
        except BaseException as err:  # collected for the assertion
            errors.append(err)

    with run_lock(folder), run_lock(folder):  # nested in one thread: allowed
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert len(errors) == 1 and isinstance(errors[0], FolderLockedError)
    with run_lock(folder):  # released: free again
        pass


def test_lock_of_a_killed_process_is_free(tmp_path):
    folder = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "locked"
    proc.kill()
    proc.wait()
    with run_lock(folder):
        pass


def test_temp_files_of_a_killed_writer_are_removed_on_resume(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    stale = [
        run / ".results.json.k3j2.tmp",
        run / ".metrics.csv.x9.tmp",
        run / "checkpoints" / ".l2.pt.abcd.tmp",
        run / "plots" / ".comparison.png.q1.tmp",
    ]
    for path in stale:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half")
    assert main(["run", "--resume", str(run), "--quiet", "--no-report"]) == 0
    assert temp_files(run) == []


def test_report_html_has_the_usual_permissions(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    assert main(["report", str(run)]) == 0
    for path in [run / "report.html", *(run / "plots").glob("*.png")]:
        assert path.stat().st_mode & 0o777 == _FILE_MODE, path


FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))
from lifelong.cli import main
sys.exit(main(["report", sys.argv[1]]))
"""


def test_report_on_a_full_disk_leaves_no_empty_or_partial_file(finished_run, tmp_path, cli_env):
    run = copy_run(finished_run, tmp_path / "run")
    proc = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(run)],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lifelong: cannot use"), proc.stderr
    assert temp_files(run) == []
    for png in (run / "plots").glob("*.png"):
        data = png.read_bytes()
        assert data.startswith(b"\x89PNG") and data.endswith(b"IEND\xaeB`\x82"), png
    assert not (run / "report.html").exists()


# ---- interrupted runs ---------------------------------------------------------------------------


def tasks_saved(run: Path, label: str) -> int:
    """Tasks of ``label`` recorded in ``run/results.json`` so far (0 before the file exists)."""
    try:
        results = json.loads((run / "results.json").read_text())  # replaced atomically
    except FileNotFoundError:
        return 0
    return results["strategies"].get(label, {}).get("tasks_done", 0)


SIGNAL_ARGS = ["run", "--data", "digits", "--stream", "permuted", "--tasks", "4", "--epochs", "2"]
SIGNAL_ARGS += ["--hidden", "32", "--strategy", "finetune", "--quiet", "--no-report"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_ends_a_run_with_one_line_and_keeps_finished_tasks(
    sig, lifelong_exe, cli_env, tmp_path
):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [str(lifelong_exe), *SIGNAL_ARGS, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env,
    )
    try:
        while tasks_saved(out, "finetune") < 1:  # a state, not a time
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.01)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    results = json.loads((out / "results.json").read_text())["strategies"]["finetune"]
    assert proc.returncode == 130, stderr
    (line,) = stderr.strip().splitlines()
    assert line.startswith("lifelong: interrupted") and f"--resume {out}" in line
    assert 1 <= results["tasks_done"] < 4 and results["status"] == "partial"
    assert temp_files(out) == []
