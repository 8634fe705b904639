"""What a run ran on: peak memory per strategy (resident set size on Linux, allocator peak on
CUDA), the environment recorded in results.json, and copies of host-made tensors to a device."""

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

from lifelong.errors import ResourceError

_CLEAR_REFS = Path("/proc/self/clear_refs")
_MEMINFO = Path("/proc/meminfo")
_STATUS = Path("/proc/self/status")


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t``, a tensor the host has just made (indices, counts), on ``device`` without the host
    waiting for the work queued there. A plain ``.to("cuda")`` from pageable memory waits until
    every kernel already queued has run; this copies through pinned memory, non-blocking (the
    caching host allocator keeps the pinned copy until the transfer is done)."""
    device = device if isinstance(device, torch.device) else torch.device(device)
    if device.type != "cuda" or t.is_cuda:
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


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


def available_memory() -> int | None:
    """Bytes of memory available to new allocations now (Linux MemAvailable), if known."""
    try:
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def ensure_memory(nbytes: int, what: str, advice: str) -> None:
    """Refuse (:class:`ResourceError`) when ``what`` needs more than the available memory."""
    available = available_memory()
    if available is not None and nbytes > available:
        raise ResourceError(
            f"{what} would need about {_human(nbytes)} of memory but {_human(available)} is "
            f"available; {advice}"
        )


def _human(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} PiB"  # pragma: no cover - the loop always returns
