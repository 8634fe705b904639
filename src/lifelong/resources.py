"""What a run ran on: peak memory per strategy (resident set size on Linux, allocator peak on
CUDA) and the environment recorded in results.json."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak measurement (Linux: reset VmHWM through /proc/self/clear_refs)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # Not Linux, or not permitted: the process-wide peak is reported instead.
    with contextlib.suppress(OSError):
        _CLEAR_REFS.write_text("5")


def peak_rss_mb() -> float:
    """Peak resident set size since the last reset (Linux VmHWM), else the process maximum."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def peak_device_mb(device: torch.device) -> float | None:
    """Peak memory allocated by torch on a CUDA device since the last reset."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the git checkout holding ``path`` (this package by default), with ``+dirty``
    when tracked files differ from it; ``None`` outside a checkout or without git."""
    where = str(path or Path(__file__).resolve().parent)

    def git(*args: str) -> str:
        command = ["git", "-C", where, *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=5, check=True)
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def run_environment(device: torch.device) -> dict[str, Any]:
    """The device actually used, versions, host, threads and the code's commit."""
    from lifelong import __version__

    env: dict[str, Any] = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "lifelong": __version__,
        "git_commit": git_commit(),
    }
    return env
