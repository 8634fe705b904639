"""The engine: units run in-process and on a real Ray cluster; plugins; locks; no orphans.

Ray starts slowly on a shared 2-core machine, so every Ray behaviour is checked in one test
against one head started for it (``ray start --head`` on 127.0.0.1, stopped at the end even on
failure, its processes checked gone). Seen failing with the behaviour broken: the cluster test
while ray.init's own SIGTERM handler was left in place (the driver aborted with -6 instead of
stopping its units), and the serial test with the engine not skipping complete units.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifelong import cli
from lifelong.engine import Unit, folder_state, import_ray, run_units
from lifelong.errors import ConfigError
from lifelong.results import run_lock
from lifelong.sweep import build_sweep, prepare_run_dirs

PLUGIN = '''
"""A user's own strategies, registered on import (the test's plugin module)."""
import torch

from lifelong.strategies import Strategy, register


@register
class Shrink(Strategy):
    """Fine-tuning that shrinks the weights after every task."""

    name = "plugin-shrink"
    description = "test plugin: shrink the weights after each task"

    def __init__(self, factor: float = 0.9) -> None:
        self.factor = factor

    def after_task(self, task, model, fit):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(self.factor)


@register
class Boom(Strategy):
    """Raises after its second task: a bug in a user's method."""

    name = "plugin-boom"
    description = "test plugin: raises after task 2"

    def __init__(self) -> None:
        pass

    def after_task(self, task, model, fit):
        if task.id == 1:
            raise RuntimeError("boom after task 2")
'''

SMALL = {"data": "digits", "tasks": 3, "train_samples": 150, "test_samples": 60, "epochs": 1}


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh plugin module in a temporary folder on sys.path (and PYTHONPATH for children)."""
    folder = tmp_path / "plugin-src"
    folder.mkdir()
    name = f"lifelong_test_plugin_{os.getpid()}"
    (folder / f"{name}.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])))  # fmt: skip
    return name


def _units(out: Path, base: dict, grid: dict) -> list[Unit]:
    sweep = build_sweep(base, grid)
    prepare_run_dirs(sweep, out)
    return [Unit(out / job.name, job.name) for job in sweep.jobs]


def _matrices(out: Path) -> dict[str, dict[str, list]]:
    return {
        d.parent.name: {
            k: v["accuracy_matrix"]
            for k, v in json.loads(d.read_text())["strategies"].items()
            if v["status"] == "complete"
        }
        for d in sorted(out.glob("*/results.json"))
    }


def test_serial_units_failure_lock_skip_and_plugin(tmp_path, plugin, capsys):
    """In-process: a plugin strategy runs, a raising unit is recorded, a locked unit waits."""
    out = tmp_path / "out"
    units = _units(
        out,
        {**SMALL, "tasks": 2, "plugins": [plugin]},
        {"strategy": ["plugin-shrink", "plugin-boom", "finetune"]},
    )
    held, release = threading.Event(), threading.Event()

    def hold() -> None:  # another process (here: thread) is running this unit right now
        with run_lock(units[2].run_dir):
            held.set()
            release.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    try:
        statuses = run_units(units, quiet=False)
    finally:
        release.set()
        holder.join()
    assert [s.status for s in statuses] == ["complete", "failed", "skipped"]
    assert "RuntimeError: boom after task 2" in statuses[1].reason
    assert "unit-error.txt" in statuses[1].reason
    assert "Traceback" in (units[1].run_dir / "unit-error.txt").read_text()
    assert "holds its lock" in statuses[2].reason
    assert folder_state(units[0].run_dir) == "complete"
    assert (units[0].run_dir / "report.html").is_file()
    assert folder_state(units[1].run_dir) == "partial"  # task 1 kept
    assert folder_state(units[2].run_dir) == "pending"
    printed = capsys.readouterr().out
    assert "[1/3] strategy=plugin-shrink: complete" in printed
    # Again: the complete unit is skipped (its file untouched), the others run.
    stamp = (units[0].run_dir / "results.json").stat().st_mtime_ns
    statuses = run_units(units)
    assert [s.status for s in statuses] == ["skipped", "failed", "complete"]
    assert (units[0].run_dir / "results.json").stat().st_mtime_ns == stamp


def test_plugin_flag_and_bad_plugins(tmp_path, plugin, capsys):
    assert cli.main(["list", "--plugin", plugin]) == 0
    assert "plugin-shrink" in capsys.readouterr().out
    assert cli.main(["show", "plugin-shrink", "--plugin", plugin]) == 0
    assert "factor" in capsys.readouterr().out
    assert cli.main(["list", "--plugin", "no_such_module_xyz"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lifelong: cannot import plugin 'no_such_module_xyz'")
    assert len(err.splitlines()) == 1
    config = tmp_path / "c.toml"
    config.write_text('plugins = ["./mine.py"]\n')
    assert cli.main(["run", "--config", str(config), "--out", str(tmp_path / "r")]) == 2
    assert "must be a module's import name" in capsys.readouterr().err


def test_a_run_folder_never_imports_a_plugin_by_itself(tmp_path, monkeypatch, capsys):
    """A config.json naming a module the command did not import is refused, and the module does
    not run; named with --plugin, it is imported and the run resumes. A sweep's emitted commands
    name its plugins. (Watched failing with ``check_named`` removed from ``load_run_config``:
    the marker file appears.)"""
    folder, marker = tmp_path / "src", tmp_path / "imported"
    folder.mkdir()
    name = f"lifelong_test_marker_{os.getpid()}"
    (folder / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, name, raising=False)
    run = tmp_path / "run"
    args = ["run", "--data", "digits", "--tasks", "2", "--train-samples", "40", "--quiet"]
    assert cli.main([*args, "--no-report", "--out", str(run)]) == 0
    settings = json.loads((run / "config.json").read_text())
    settings["plugins"] = [name]
    (run / "config.json").write_text(json.dumps(settings))
    capsys.readouterr()
    assert cli.main(["run", "--resume", str(run), "--quiet", "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert "never imports code by itself" in err and f"--plugin {name}" in err
    assert len(err.splitlines()) == 1 and not marker.exists()
    assert cli.main(["run", "--resume", str(run), "--quiet", "--no-report", "--plugin", name]) == 0
    assert marker.exists()


def test_emitted_sweep_commands_name_the_plugins(tmp_path, plugin, capsys):
    sweep = tmp_path / "s.toml"
    sweep.write_text(
        f"plugins = [{json.dumps(plugin)}]\n[base]\n"
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in SMALL.items())
        + "[grid]\nseed = [0]\n"
    )
    out = tmp_path / "out"
    assert cli.main(["sweep", str(sweep), "--out", str(out), "--emit", "commands"]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert line.endswith(f"--no-report --plugin {plugin}")
    assert cli.main(["sweep", str(sweep), "--out", str(out), "--emit", "slurm"]) == 0
    assert (out / "sweep.sbatch").read_text().rstrip().endswith(f"--plugin {plugin}")


def test_missing_ray_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"needs Ray: pip install"):
        import_ray()


# ------------------------------------------------------------------------------------------------
# A real Ray cluster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(root: int) -> set[int]:
    """Every living process below ``root`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _lock_holders(folders: list[Path]) -> set[int]:
    """The processes holding a flock on any of ``folders`` (from /proc/locks)."""
    inodes = {f.stat().st_ino for f in folders}
    holders = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "FLOCK" and int(fields[5].split(":")[-1]) in inodes:
            holders.add(int(fields[4]))
    return holders


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_until(condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def ray_head(tmp_path_factory) -> Iterator[str]:
    """A Ray head on 127.0.0.1 with 2 CPUs; every process of it is gone afterwards."""
    import ray.scripts.scripts  # noqa: F401  (ray is a declared dependency)

    temp = Path(f"/tmp/lr{os.getpid()}")  # Ray's socket paths must stay short
    port = _free_port()
    command = [
        str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
        "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
        "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(temp),
    ]  # fmt: skip
    env = dict(os.environ, RAY_ADDRESS="")
    env.pop("PYTHONPATH", None)  # the workers find plugins because the engine ships them
    head = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True, cwd="/",
    )  # fmt: skip
    seen = set()
    try:
        for line in head.stdout:  # wait for the line that says the head is up
            seen |= _descendants(head.pid)
            if "Ray runtime started" in line:
                break
        else:
            raise AssertionError("ray start --head ended before the runtime started")
        yield f"127.0.0.1:{port}"
    finally:
        seen |= _descendants(head.pid)
        head.send_signal(signal.SIGTERM)  # `ray start --block` drains and stops its processes
        try:
            head.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        for pid in seen:  # workers in other process groups, orphans of the raylet
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        _wait_until(lambda: not any(_alive(p) for p in seen), "the Ray head's processes to end")
        subprocess.run(["rm", "-rf", str(temp)], check=False)


@pytest.mark.slow
def test_study_on_a_ray_cluster_survives_sigterm_and_resumes_exactly(
    tmp_path, plugin, ray_head, cli_env, lifelong_exe
):
    """6 units with a plugin strategy on a Ray head: SIGTERM midway, relaunch, same numbers.

    The driver is stopped once a unit has saved a task (a checkpoint file), not after a delay;
    afterwards no process that ran a unit is alive and every unit folder is unlocked. The
    relaunch ends with accuracy matrices identical to an uninterrupted in-process run, the
    unit whose strategy raises is recorded as failed with its reason, the others complete.
    """
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        "plugins = [" + json.dumps(plugin) + "]\n[base]\n"
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in SMALL.items())
        + '[grid]\nstrategy = ["finetune", "plugin-shrink:factor=0.8", "plugin-boom"]\n'
        + "seed = [0, 1]\n"
    )  # fmt: skip
    reference = tmp_path / "reference"
    assert cli.main(["sweep", str(sweep), "--out", str(reference)]) == 1  # the boom units fail

    out = tmp_path / "out"
    env = dict(cli_env, PYTHONPATH=os.environ["PYTHONPATH"])
    driver = [str(lifelong_exe), "sweep", str(sweep), "--out", str(out), "--address", ray_head]
    first = subprocess.Popen(driver, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    workers: set[int] = set()  # every process seen holding a unit folder's lock

    def midway() -> bool:
        workers.update(_lock_holders([p.parent for p in out.glob("*/config.json")]))
        return any(out.glob("*/checkpoints/*.pt")) or first.poll() is not None

    try:
        _wait_until(midway, "a unit's first checkpoint")
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err
    assert "interrupted" in err
    unit_dirs = sorted(p.parent for p in out.glob("*/config.json"))
    assert len(unit_dirs) == 6
    assert any(folder_state(d) != "complete" for d in unit_dirs)  # stopped midway
    # No process of the study survives: those that held a unit's lock are gone, locks are free.
    assert workers and first.pid not in workers
    _wait_until(lambda: not any(_alive(p) for p in workers), "the unit workers to end", 60)
    for d in unit_dirs:
        with run_lock(d):
            pass

    again = subprocess.run(driver, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 1, again.stderr  # the two boom units
    record = {j["name"]: j for j in json.loads((out / "sweep.json").read_text())["jobs"]}
    for name, job in record.items():
        if "boom" in name:
            assert job["status"] == "partial" and "boom after task 2" in job["reason"]
        else:
            assert job["status"] == "complete", job
    matrices = _matrices(out)
    assert len([m for m in matrices.values() if m]) == 4
    assert matrices == _matrices(reference)


def test_engine_flags_are_refused_where_they_mean_nothing(tmp_path, capsys):
    assert cli.main(["run", "--tasks", "2", "--jobs", "2", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "run the units of a study" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()
    sweep = tmp_path / "s.toml"
    sweep.write_text("[base]\ntasks = 2\n[grid]\nseed = [0]\n")
    argv = ["sweep", str(sweep), "--out", str(tmp_path / "o"), "--emit", "slurm"]
    assert cli.main([*argv, "--address", "h:1"]) == 2
    assert "drop them with --emit" in capsys.readouterr().err
