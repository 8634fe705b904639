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
import http.server
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


def cli(argv: list[str]) -> int:
    """``lifelong ARGV`` in-process: its exit status (argparse's own errors exit through
    SystemExit, like the console script)."""
    try:
        return main(argv)
    except SystemExit as stop:
        return int(stop.code or 0)


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


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # the raw pickle
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
    assert "weights_only" not in line, "torch's advice to load the file unsafely is not ours"
    reason = "not plain data: " if plant is _plant_zip else "not a checkpoint this library wrote"
    assert reason in line
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


def test_overwrite_deletes_every_file_the_replaced_run_wrote(tmp_path, capsys):
    """log.csv, report.html and plots/ of the replaced run go; the user's own files stay. (Fails
    when clear_run deletes only config/results/checkpoints: log.csv then holds both runs' rows and
    the old report survives a --no-report overwrite.)"""
    run = tmp_path / "run"
    with_report = [a for a in TINY if a != "--no-report"]
    assert main(["run", *with_report, "--log", "csv", "--out", str(run)]) == 0
    assert (run / "report.html").exists() and list((run / "plots").glob("*.png"))
    (run / "notes.txt").write_text("mine")
    (run / "plots" / "mine.txt").write_text("mine")
    argv = ["run", *TINY, "--log", "csv", "--lr", "0.01", "--out", str(run), "--overwrite"]
    assert main(argv) == 0
    capsys.readouterr()
    log = (run / "log.csv").read_text().splitlines()
    assert [row for row in log if "setting/train/lr" in row] == ["finetune,finetune,0,,,setting/train/lr,0.01"]  # fmt: skip
    assert not (run / "report.html").exists() and not list((run / "plots").glob("*.png"))
    assert (run / "notes.txt").read_text() == "mine" == (run / "plots" / "mine.txt").read_text()


def test_resume_refuses_a_config_json_edited_after_the_start(finished_run, tmp_path, capsys):
    """Resuming with config.json's lr and seed changed would run the unfinished strategy with
    other settings than the finished one: refused, naming the settings (fails without the
    comparison with results.json's config). Where and how it evaluates may change."""
    run = copy_run(finished_run, tmp_path / "run")
    results = json.loads((run / "results.json").read_text())
    del results["strategies"]["l2"]
    (run / "results.json").write_text(json.dumps(results))
    (run / "checkpoints" / "l2.pt").unlink()
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "lr": 0.01, "seed": 3}))
    before = snapshot(run)
    assert main(["run", "--resume", str(run), "--quiet", "--no-report"]) == 2
    line = one_line(capsys)
    assert "lr 0.1 -> 0.01" in line and "seed 0 -> 3" in line and "restore config.json" in line
    assert snapshot(run) == before
    (run / "config.json").write_text(json.dumps({**config, "eval_batch_size": 4096}))
    assert main(["run", "--resume", str(run), "--quiet", "--no-report"]) == 0


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


@pytest.mark.parametrize("resume", [False, True, "study"], ids=["new-run", "resume", "new-study"])
def test_second_run_into_a_locked_folder_refuses(
    resume, lock_held_elsewhere, finished_run, tmp_path, capsys
):
    """A study holds its folder's lock as a run does (fails when run_study takes no lock: the
    study writes config.json and units/ into the folder another process is writing)."""
    folder = lock_held_elsewhere
    if resume == "study":
        argv = ["run", *TINY, "--seeds", "0", "1", "--out", str(folder)]
    elif resume:
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


# ---- one clear line for every mistake: flags and specs ------------------------------------------

BAD_FLAGS = [
    (["--stream", "rotated:angles=[0,45"], "unbalanced brackets"),
    (["--stream", "rotated:angles=[0,45]]"], "unbalanced brackets"),
    (["--strategy", "ewc:lambda=[1,2"], "unbalanced brackets"),
    (["--stream", "split:classes_per_task=abc"], "classes_per_task must be a whole number"),
    (["--stream", "split:classes_per_task=2.5"], "classes_per_task must be a whole number"),
    (["--stream", "split:classes_per_task=0"], "classes_per_task must be at least 1"),
    (["--stream", "split:class_order=[a,b]"], "class_order must be a whole number"),
    (["--stream", "split:class_order=[0,0,1,2,3,4,5,6,7,8]"], "distinct classes"),
    (["--stream", "split:shuffle_classes=perhaps"], "shuffle_classes must be true or false"),
    (["--stream", "permuted:identity_first=maybe"], "identity_first must be true or false"),
    (["--stream", "permuted:identity_first=1"], "identity_first must be true or false"),
    (["--stream", "noisy:noise=[nan,0]"], "not a finite number"),
    (["--stream", "noisy:noise=[inf,0]"], "not a finite number"),
    (["--stream", "noisy:noise=[-1,0]"], "must be >= 0"),
    (["--stream", "rotated:angles=[0,x]"], "angles must be a finite number"),
    (["--stream", "rotated:angles=[0,1e999]"], "not a finite number"),
    (["--stream", "rotated:angles=[0,45]", "--tasks", "3"], "2 angles given for 3 tasks"),
    (["--stream", "permuted:shuffle=1"], "has no option shuffle"),
    (["--stream", "permuted:identity_first=true,identity_first=false"], "twice"),
    (["--stream", ":x=1"], "empty stream"),
    (["--stream", "nosuch"], "unknown stream 'nosuch'"),
    (["--data", "nosuch"], "unknown data set 'nosuch'"),
    (["--model", "nosuch"], "unknown model 'nosuch'"),
    (["--strategy", "nosuch"], "unknown strategy 'nosuch'"),
    (["--strategy", "finetune:lr=0.1,lr=5"], "sets 'lr' twice"),
    (["--strategy", "finetune:lr"], "expected key=value"),
    (["--strategy", "finetune:lr=nan"], "not a finite number"),
    (["--strategy", "finetune:lr=1e999"], "not a finite number"),
    (["--strategy", "finetune:epochs=1.5"], "epochs must be a whole number"),
    (["--strategy", "finetune:reset_optimizer=maybe"], "reset_optimizer must be true or false"),
    (["--strategy", "ewc:lambda=abc"], "ewc:lambda must be a number, got 'abc'"),
    (["--strategy", "ewc:lambda=true"], "ewc:lambda must be a number, got True"),
    (["--strategy", "replay:memory_size=2.5"], "replay:memory_size must be a whole number"),
    (["--strategy", "replay:memory_size=true"], "replay:memory_size must be a whole number"),
    (["--strategy", "replay:memory_size=1e30"], "memory_size must be a whole number below 2**63"),
    (["--strategy", "gem:memory_per_task=10.5"], "gem:memory_per_task must be a whole number"),
    (["--strategy", "ewc:fisher_samples=2.5"], "ewc:fisher_samples must be a whole number"),
    (["--strategy", "si:clip=2"], "si:clip must be true or false, got 2"),
    (["--strategy", "ewc:lambda=nan"], "not a finite number"),
    (["--strategy", "gem:memory=256"], "has no setting 'memory'"),
    (["--strategy", "gem:memory_per_task=0"], "memory_per_task must be at least 1"),
    (["--strategy", "finetune", "finetune"], "labels must be distinct"),
    (["--seed", "1180591620717411303424"], "seed"),
    (["--seed", "-1"], "--seed must be between 0"),
    (["--tasks", "0"], "--tasks must be at least 1"),
    (["--tasks", "100000000"], "would need about"),
    (["--hidden", "1000000", "1000000"], "would need about"),
    (["--hidden", "0"], "--hidden widths must be positive"),
    (["--train-samples", "0"], "--train-samples must be at least 1"),
    (["--train-samples", "100000"], "only"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--eval-batch-size", "0"], "eval_batch_size must be at least 1"),
    (["--lr", "0"], "--lr must be positive"),
    (["--lr", "inf"], "not a finite number"),
    (["--lr", "nan"], "not a finite number"),
    (["--weight-decay", "inf"], "weight_decay inf is not a finite number"),
    (["--weight-decay", "nan"], "not a finite number"),
    (["--weight-decay", "-1"], "weight_decay (--weight-decay) must be a finite number >= 0"),
    (["--momentum", "-1"], "momentum (--momentum) must be a finite number >= 0"),
    (["--lr", "1e300"], "--lr must be positive and at most 3.403e+38"),
    (["--weight-decay", "1e300"], "weight_decay (--weight-decay) must be a finite number >= 0 and"),
    (["--optimizer", "adam:lr=-1"], "lr in optimizer 'adam:lr=-1' must be positive"),
    (["--optimizer", "sgd:lr=-0.5"], "lr in optimizer 'sgd:lr=-0.5' must be positive"),
    (["--optimizer", "sgd:momentum=-3"], "momentum in optimizer 'sgd:momentum=-3' must be a"),
    (["--optimizer", "sgd:momentum=abc"], "'sgd:momentum=abc': momentum must be a number"),
    (["--optimizer", "adam:eps=-1"], "optimizer 'adam:eps=-1': Invalid epsilon value: -1"),
    (["--optimizer", "adam:betas=[0.9]"], "betas must be two numbers in [0, 1), e.g."),
    (["--optimizer", "adam:betas=7"], "'adam:betas=7': betas must be two numbers"),
    (["--optimizer", "adam:lr=0.001", "--lr", "0.01"], "set lr differently; give it once"),
    (["--scheduler", "step:step_size=0"], "step_size must be at least 1, got 0"),
    (["--scheduler", "onecycle:max_lr=-1"], "sets the learning rate to -"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--device", "meta"], "unknown device 'meta'"),
    (["--device", "cuda:x"], "unknown device 'cuda:x'"),
    (["--seeds", "0", "1", "--address", "nonsense"], "'nonsense' is not a Ray address"),
    (["--seeds", "0", "1", "--address", "127.0.0.1:1"], "cannot reach a Ray cluster at 127"),
    (["--scenario", "bogus"], "invalid choice"),
    (["--tasks", "many"], "invalid int value"),
]


@pytest.mark.parametrize(("argv", "expected"), BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flag_or_spec_exits_2_with_one_line(argv, expected, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(["run", "--quiet", "--no-report", "--out", str(out), *argv]) == 2
    assert expected in one_line(capsys)
    assert not (out / "results.json").exists()  # refused before anything ran


def test_help_examples_are_valid_strategy_specs():
    """Every example of ``--strategy`` in ``lifelong run --help`` is a valid setting."""
    from lifelong.cli import build_parser
    from lifelong.config import RunConfig

    run = build_parser()._subparsers._group_actions[0].choices["run"]
    (action,) = [a for a in run._actions if a.dest == "strategies"]
    examples = action.help.split("e.g.")[1].split(";")[0].split()
    assert "gem:memory_per_task=256" in examples
    RunConfig.from_dict({"strategies": examples})


# ---- config files --------------------------------------------------------------------------------

BAD_CONFIG_FILES = [
    ("binary.toml", os.urandom(64) + b"\xff\xfe", "is not text"),
    ("seed.toml", b"seed = 1e30\n", "seed must be a whole number below 2**63, got 1e+30"),
    ("seed-big.yaml", b"seed: 1180591620717411303424\n", "below 2**63"),
    ("spec.toml", b'stream = "split:classes_per_task=abc"\n', "classes_per_task must be"),
    ("options.toml", b'stream = "split"\n[stream_options]\nclasses_per_task = "abc"\n', "whole"),
    ("noise.toml", b'stream = "noisy"\n[stream_options]\nnoise = [nan, 0.0]\n', "finite"),
    ("identity.yaml", b"stream: permuted\nstream_options: {identity_first: maybe}\n", "true or"),
    ("tasks.toml", b'tasks = "three"\n', "tasks must be a whole number"),
    ("hidden.toml", b'hidden = ["a"]\n', "each of --hidden must be a whole number"),
    ("hidden-float.toml", b"hidden = [100.7]\n", "each of --hidden must be a whole number"),
    ("seeds-float.toml", b"seeds = [0.5, 1.5]\n", "each of --seeds must be a whole number"),
    ("stream-table.toml", b'stream = {name = "rotated"}\n', "stream must be text"),
    ("model-list.toml", b'model = ["mlp"]\n', "model must be text"),
    ("data-list.toml", b'data = ["digits"]\n', "data must be text"),
    ("data-dir.toml", b"data_dir = 5\n", "data_dir must be text"),
    ("device-list.toml", b'device = ["cpu"]\n', "device must be text"),
    ("device-meta.toml", b'device = "meta"\n', "unknown device 'meta'"),
    ("name-list.toml", b'strategy = [{name = ["ewc"]}]\n', "strategy table's name must be"),
    ("label.toml", b'strategy = [{name = "finetune", label = 5}]\n', "label must be text"),
    ("gem.toml", b'strategy = [{name = "gem", memory_per_task = 2.5}]\n', "a whole number"),
    ("wd.toml", b"weight_decay = inf\n", "not a finite number"),
    ("lr.yaml", b"lr: .nan\n", "not a finite number"),
    ("unknown.toml", b"colour = 3\n", "unknown setting(s) colour"),
    ("strategy.toml", b"strategy = 5\n", "strategy must be NAME"),
    ("table.toml", b"strategy = [{lambda = 3}]\n", "needs a name"),
    ("options-type.toml", b"stream_options = 3\n", "stream_options must be a table"),
    ("syntax.yaml", b"a: [1,\n", "is not valid"),
    ("syntax.toml", b"a = = 1\n", "is not valid"),
    ("list.yaml", b"- 1\n- 2\n", "must hold a table"),
    ("config.json", b"{}", "must end in .toml, .yaml or .yml"),
]


@pytest.mark.parametrize(
    ("name", "body", "expected"), BAD_CONFIG_FILES, ids=[n for n, _, _ in BAD_CONFIG_FILES]
)
def test_bad_config_file_exits_2_with_one_line(name, body, expected, tmp_path, capsys):
    path = tmp_path / name
    path.write_bytes(body)
    out = tmp_path / "run"
    assert cli(["run", "--config", str(path), "--quiet", "--out", str(out)]) == 2
    assert expected in one_line(capsys)
    assert not out.exists() or not any(out.iterdir())


def test_missing_config_file(tmp_path, capsys):
    assert cli(["run", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "cannot read config file" in one_line(capsys)


# ---- damaged run files on --resume and report ----------------------------------------------------

DAMAGED_RUN_FILES = [
    ("config.json", b"\x00\xff garbage", "config.json is not readable JSON"),
    ("config.json", b'{"seed": ', "config.json is not readable JSON"),
    ("config.json", b"[1, 2]", "does not hold a table of settings"),
    ("config.json", b'{"lr": "fast"}', "lr must be a number"),
    ("config.json", b'{"seed": 1e30}', "below 2**63"),
    ("results.json", b"\x00\xff garbage", "delete it and resume"),
    ("results.json", b'{"schema": 1, "strat', "delete it and resume"),
    ("results.json", b"[]", "delete it and resume"),
    ("results.json", b'{"schema": 1, "config": {}}', "delete it and resume"),
]


@pytest.mark.parametrize(
    ("name", "body", "expected"),
    DAMAGED_RUN_FILES,
    ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(DAMAGED_RUN_FILES)],
)
def test_damaged_run_file_on_resume_gives_the_recovery_step(
    name, body, expected, finished_run, tmp_path, capsys
):
    run = copy_run(finished_run, tmp_path / "run")
    (run / name).write_bytes(body)
    before = snapshot(run)
    assert cli(["run", "--resume", str(run), "--quiet", "--no-report"]) == 2
    assert expected in one_line(capsys)
    assert snapshot(run) == before


def test_deleting_a_damaged_results_json_recovers_everything(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    (run / "results.json").write_bytes(b"garbage")
    assert cli(["run", "--resume", str(run), "--quiet", "--no-report"]) == 2
    (run / "results.json").unlink()  # the recovery step the message names
    assert cli(["run", "--resume", str(run), "--quiet", "--no-report"]) == 0
    again = json.loads((run / "results.json").read_text())["strategies"]
    reference = json.loads((finished_run / "results.json").read_text())["strategies"]
    assert {k: v["accuracy_matrix"] for k, v in again.items()} == {
        k: v["accuracy_matrix"] for k, v in reference.items()
    }


WRONG_RESULTS = [
    ("acc", "high"),
    ("accuracy_matrix", [["a", 0.5]]),
    ("train_seconds", [1, "x"]),
    ("status", 3),
    ("parameters", {"n": 3}),
    ("bwt", True),
    ("footprint", "zzz"),
    ("not_applicable", [1]),
    ("curves", {"step": "x"}),
]


@pytest.mark.parametrize(("key", "value"), WRONG_RESULTS, ids=[k for k, _ in WRONG_RESULTS])
def test_report_on_wrongly_typed_results_exits_2_with_one_line(
    key, value, finished_run, tmp_path, capsys
):
    run = copy_run(finished_run, tmp_path / "run")
    results = json.loads((run / "results.json").read_text())
    results["strategies"]["l2"][key] = value
    (run / "results.json").write_text(json.dumps(results))
    assert cli(["report", str(run)]) == 2
    line = one_line(capsys)
    assert "l2" in line and "results.json" in line
    assert not (run / "report.html").exists()


def test_idx_header_announcing_gigabytes_is_refused_without_allocating(tmp_path):
    import gzip
    import struct

    from lifelong.data.idx import read_idx

    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:  # 7 GiB announced, 100 bytes present
        f.write(bytes([0, 0, 8, 3]) + struct.pack(">3I", 7 * 2**20, 32, 32) + b"\0" * 100)
    with pytest.raises(DataError, match=r"more than a file of .* bytes can hold") as caught:
        read_idx(path)
    assert "\n" not in str(caught.value) and "delete it and download it again" in str(caught.value)


# ---- the Python API: the user's data and model -------------------------------------------------


def _task(n: int = 40, d: int = 8, classes: int = 3, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))  # float64: the most common user input
    y = rng.integers(0, classes, size=n)  # int64
    return x[: n // 2], y[: n // 2], x[n // 2 :], y[n // 2 :]


def test_numpy_float64_and_int64_inputs_train():
    import numpy as np

    from lifelong.runner import learn_stream
    from lifelong.streams.custom import from_tensors

    a, b = _task(seed=0), _task(seed=1)
    ints = tuple(np.rint(v * 10).astype(np.int64) if i % 2 == 0 else v for i, v in enumerate(b))
    stream = from_tensors([a, ints], scenario="domain")
    assert all(t.train.x.dtype == torch.float32 for t in stream.tasks)
    result = learn_stream(stream, "finetune", hidden=[8])
    assert result.status == "complete" and len(result.accuracy_matrix) == 3


BAD_DATA = {
    "one-hot labels": (
        lambda x, y, xt, yt: (x, torch.nn.functional.one_hot(torch.as_tensor(y), 3), xt, yt),
        "one-hot",
    ),
    "1-D inputs": (lambda x, y, xt, yt: (x[:, 0], y, xt[:, 0], yt), "one row per sample"),
    "float labels 0.5": (lambda x, y, xt, yt: (x, y + 0.5, xt, yt), "whole numbers"),
    "NaN labels": (lambda x, y, xt, yt: (x, y * float("nan"), xt, yt), "whole numbers"),
    "label 10^6": (lambda x, y, xt, yt: (x, y * 10**6, xt, yt), "renumber them"),
    "negative label": (lambda x, y, xt, yt: (x, y - 5, xt, yt), "non-negative"),
    "NaN inputs": (lambda x, y, xt, yt: (x * float("nan"), y, xt, yt), "NaN or infinite"),
    "inf inputs": (lambda x, y, xt, yt: (x * float("inf"), y, xt, yt), "NaN or infinite"),
    "empty training split": (lambda x, y, xt, yt: (x[:0], y[:0], xt, yt), "no training samples"),
    "empty test split": (lambda x, y, xt, yt: (x, y, xt[:0], yt[:0]), "no test samples"),
    "string labels": (lambda x, y, xt, yt: (x, y.astype(str), xt, yt), "numpy dtype <U"),
    "object inputs": (lambda x, y, xt, yt: (x.astype(object), y, xt, yt), "numpy dtype object"),
    "huge integer inputs": (
        lambda x, y, xt, yt: ((x * 2**40).astype("int64"), y, xt, yt),
        "more than float32 holds",
    ),
    "lengths differ": (lambda x, y, xt, yt: (x, y[:-1], xt, yt), "different lengths"),
    "a list": (lambda x, y, xt, yt: (x.tolist(), y, xt, yt), "torch tensor or numpy array"),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_user_data_gets_one_clear_error(case):
    from lifelong.errors import ConfigError
    from lifelong.streams.custom import from_tensors

    damage, expected = BAD_DATA[case]
    with pytest.raises(ConfigError) as caught:
        from_tensors([_task(), damage(*_task(seed=1))], scenario="domain")
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_names_shorter_than_tasks():
    from lifelong.errors import ConfigError
    from lifelong.streams.custom import from_tensors

    with pytest.raises(ConfigError, match="names= has 1 names for 2 tasks"):
        from_tensors([_task(), _task(seed=1)], names=["only one"])


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, labels):
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return torch.zeros(4), self.labels[i]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [(["cat", "dog"], "label 'cat'"), ([0.5, 1.0], "whole numbers"), ([None, 1], "label None")],
    ids=["strings", "fractions", "None"],
)
def test_bad_dataset_labels_get_one_clear_error(labels, expected):
    from lifelong.errors import ConfigError
    from lifelong.streams.custom import from_datasets

    with pytest.raises(ConfigError, match=expected):
        from_datasets([(_Pairs(labels), _Pairs([0, 1]))], loader="tensors")
    with pytest.raises(ConfigError, match=expected):
        from_datasets([(_Pairs(labels), _Pairs([0, 1]))], loader="dataloader")


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (lambda: torch.nn.Linear(5, 3), "fails on one sample"),  # wrong input size
        (lambda: torch.nn.Linear(8, 7), "returns [1, 7] for one sample"),  # wrong outputs
        (lambda: torch.nn.Sequential(torch.nn.Linear(8, 3), torch.nn.Flatten(0)), "[3]"),
        (lambda: "not a model", "unknown model"),
    ],
    ids=["input-size", "output-size", "output-shape", "not-a-module"],
)
def test_user_model_checked_on_one_sample_before_training(model, expected):
    from lifelong.errors import ConfigError
    from lifelong.runner import learn_stream
    from lifelong.streams.custom import from_tensors

    stream = from_tensors([_task(), _task(seed=1)], scenario="domain")
    with pytest.raises(ConfigError) as caught:
        learn_stream(stream, "finetune", model=model())
    message = str(caught.value)
    assert expected in message and "\n" not in message
    if expected != "unknown model":
        assert "[B, 8]" in message and "[B, 3] logits" in message


def test_python_api_weight_decay_inf_is_refused():
    from lifelong.errors import ConfigError
    from lifelong.train import TrainConfig

    with pytest.raises(ConfigError, match="weight_decay"):
        TrainConfig(weight_decay=float("inf"))


def test_nan_inputs_are_not_blamed_on_the_learning_rate(digits_stream):
    from lifelong.errors import TrainingDivergedError
    from lifelong.runner import learn_stream
    from lifelong.streams.base import Stream, Task, TaskData

    task = digits_stream.tasks[0]
    x = task.train.inputs().clone()
    x[3] = float("nan")
    poisoned = Task(0, "poisoned", TaskData(x, task.train.y), task.test, task.classes, task.columns)
    stream = Stream("p", "digits", "domain", [poisoned], digits_stream.input_shape, 10)
    with pytest.raises(TrainingDivergedError) as caught:
        learn_stream(stream, "finetune", hidden=[8])
    assert "inputs contain NaN" in str(caught.value)
    assert "learning rate" not in str(caught.value)


# ---- downloads from a local server on 127.0.0.1 ----------------------------------------------


class _Trickle(http.server.BaseHTTPRequestHandler):
    """Announces 1000 bytes and sends one every 0.05 s: no single read ever times out."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        try:
            for _ in range(1000):
                self.wfile.write(b"\0")
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:  # the client gave up
            pass

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def trickle_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_trickling_server_fails_at_the_overall_deadline(trickle_url, tmp_path):
    from lifelong.data.download import download

    start = time.monotonic()
    with pytest.raises(DataError, match=r"not complete after 0\.5 s.*--mirror") as caught:
        download("mnist", tmp_path, trickle_url, timeout=5, deadline=0.5)
    assert time.monotonic() - start < 5, "the deadline did not bound the transfer"
    assert "\n" not in str(caught.value)
    assert temp_files(tmp_path) == []


def test_part_files_of_a_killed_download_are_removed_on_the_next_one(trickle_url, tmp_path):
    from lifelong.data.download import download

    folder = tmp_path / "mnist"
    folder.mkdir()
    stale = folder / ".train-images-idx3-ubyte.gz.x1y2.part"
    stale.write_bytes(b"half a file")
    keep = folder / "notes.txt"
    keep.write_text("the user's own file")
    with pytest.raises(DataError):
        download("mnist", tmp_path, trickle_url, timeout=5, deadline=0.2)
    assert not stale.exists() and keep.exists()


def test_second_download_into_one_folder_refuses(tmp_path):
    from lifelong.data.download import download

    folder = tmp_path / "mnist"
    with run_lock(folder, "data folder"):
        thread_error: list[BaseException] = []

        def other() -> None:
            try:
                download("mnist", tmp_path, "http://127.0.0.1:9/")
            except BaseException as err:
                thread_error.append(err)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert isinstance(thread_error[0], FolderLockedError)
    assert "data folder" in str(thread_error[0])


def test_babi_bad_member_message_counts_what_was_installed(shared_data, tmp_path):
    """An archive with one bad member: the verified files before it stay, and the message says
    so (it used to claim that nothing was saved)."""
    import io
    import tarfile

    from lifelong.data.download import download
    from lifelong.data.files import CATALOGUE

    babi = CATALOGUE["babi"]
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    bad = babi.file_names[5]
    with tarfile.open(mirror / babi.archive, "w:gz", compresslevel=1) as tar:
        for name in babi.file_names:
            data = (shared_data / "babi" / "en" / name).read_bytes()
            if name == bad:
                data = data.replace(b"Mary", b"Mari", 1)
            info = tarfile.TarInfo(f"tasks_1-20_v1-2/en/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DataError) as caught:
        download("babi", tmp_path / "data", str(mirror))
    message = str(caught.value)
    installed = sorted(p.name for p in (tmp_path / "data" / "babi" / "en").iterdir())
    assert bad not in installed and len(installed) >= 1
    assert f"{len(installed)} verified files of the archive were installed" in message
    assert "nothing was saved" not in message and "\n" not in message


def test_whole_float_settings_are_taken_as_whole_numbers():
    from lifelong.config import RunConfig
    from lifelong.strategies import create_strategy

    assert create_strategy("gem", {"memory_per_task": 10.0}).memory_per_task == 10
    assert create_strategy("ewc", {"fisher": True}).fisher == "true"  # as written on the line
    config = RunConfig.from_dict({"hidden": [100.0], "seeds": [0.0, 1]})
    assert config.hidden == (100,) and config.seeds == (0, 1)


def test_wrong_top_level_results_fields_exit_2_with_one_line(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    results = json.loads((run / "results.json").read_text())
    (run / "results.json").write_text(json.dumps({**results, "config": "x"}))
    assert cli(["report", str(run)]) == 2
    assert "results.json: config should be an object" in one_line(capsys)
    with pytest.raises(DataError, match="config should be an object"):
        load_results(run)


def test_study_results_with_a_wrong_mean_exit_2_with_one_line(finished_run, tmp_path, capsys):
    from lifelong.study import study_from_run

    run = copy_run(finished_run, tmp_path / "run")
    study = study_from_run(json.loads((run / "results.json").read_text()))
    (run / "results.json").write_text(json.dumps(study))
    assert cli(["report", str(run)]) == 0  # the study as written is read
    capsys.readouterr()
    study["strategies"]["l2"]["mean"] = "x"
    (run / "results.json").write_text(json.dumps(study))
    assert cli(["report", str(run)]) == 2
    assert "strategies.l2.mean should be an object of numbers" in one_line(capsys)


@pytest.mark.parametrize("key", ["accuracy_matrix", "footprint"])
def test_resume_on_wrongly_typed_results_gives_the_recovery_step(
    key, finished_run, tmp_path, capsys
):
    run = copy_run(finished_run, tmp_path / "run")
    results = json.loads((run / "results.json").read_text())
    results["strategies"]["l2"][key] = "x"
    (run / "results.json").write_text(json.dumps(results))
    before = snapshot(run)
    assert cli(["run", "--resume", str(run), "--quiet", "--no-report"]) == 2
    line = one_line(capsys)
    assert f"strategies.l2.{key} should be" in line and "delete it and resume" in line
    assert snapshot(run) == before


def test_largest_seed_holds_out_validation_data(digits_stream):
    held = digits_stream.hold_out(0.2, 2**63 - 1)
    assert all(len(task.valid) and len(task.valid) + len(task.train) == 200 for task in held.tasks)


def test_figure_seed_beyond_64_bits_exits_2_with_one_line(capsys):
    assert cli(["figure", "evaluation", "--seed", "99999999999999999999"]) == 2
    assert "--seed must be between 0 and 2**63-1" in one_line(capsys)
