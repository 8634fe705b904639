"""Helpers shared by the benchmark scripts: where the data is, throughput, output files."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent / "out"


def data_dir() -> Path:
    """The data directory: $LIFELONG_DATA, else $LIFELONG_SHARED_DATA, else ../shared/data."""
    for var in ("LIFELONG_DATA", "LIFELONG_SHARED_DATA"):
        if os.environ.get(var):
            return Path(os.environ[var])
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Best-of-``repeats`` float32 throughput of an n x n matrix product, in GFLOP/s."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def machine() -> dict[str, Any]:
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def command_imports() -> contextlib.AbstractContextManager[None]:
    """The imports of the ``lifelong`` command's own process, for a benchmark child that runs the
    command in-process (``main()`` with ``sys.argv``): torch and the library imported with the
    garbage collector paused, then frozen (``lifelong.cli._frozen_imports``). Enter it before
    anything imports torch (this module does not)."""
    from lifelong import cli

    cli._gc_state["own_process"] = True  # as main() marks it when run as the command
    return cli._frozen_imports()


def save_json(name: str, payload: dict[str, Any]) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return path


def mlp_forward_flop(widths: list[int]) -> int:
    """Floating-point operations of one sample's forward pass through a ReLU MLP (2 per MAC)."""
    return sum(2 * a * b for a, b in pairwise(widths))


def mlp_train_flop(widths: list[int]) -> int:
    """One sample's forward + backward: weight gradients for every layer, input gradients for
    every layer but the first (nothing needs the gradient of the data)."""
    pairs = list(pairwise(widths))
    forward = sum(2 * a * b for a, b in pairs)
    weight_grads = forward
    input_grads = sum(2 * a * b for a, b in pairs[1:])
    return forward + weight_grads + input_grads
