"""Shared fixtures: the genuine-data path, small digits streams, the CLI entry points.

Every test runs without files except those marked ``shared_data``, which read the genuine data
sets from the directory named by the environment variable ``LIFELONG_SHARED_DATA`` (``make test``
sets it to ``../shared/data``) and are skipped with the reason when it is unset or missing.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")  # plots without a display, before matplotlib loads
# One intra-op thread (before torch loads; CLI subprocesses inherit it): the tests' batches are
# tiny, and on a shared 2-core machine two spinning OpenMP threads per process made them up to
# 25x slower. Results are compared only between processes with the same setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The per-user cache (decoded copies of the data files, lifelong.data.files.decoded_dir) is a
# folder of this test session, removed at its end, never the user's own ~/.cache.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="lifelong-tests-cache-")

import pytest

from lifelong.streams import Stream, build_stream

atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], ignore_errors=True)

SHARED_DATA_ENV = "LIFELONG_SHARED_DATA"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The genuine data directory (MNIST, Fashion-MNIST, bAbI), or skip with the reason."""
    value = os.environ.get(SHARED_DATA_ENV, "")
    if not value:
        pytest.skip(f"{SHARED_DATA_ENV} is not set (path to the genuine shared data sets)")
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"{SHARED_DATA_ENV}={value} is not a directory")
    return path


@pytest.fixture(scope="session")
def digits_stream() -> Stream:
    """Three permuted-digits tasks, 200 training and 100 test samples each (seed 0)."""
    return build_stream("permuted", "digits", tasks=3, train_samples=200, test_samples=100, seed=0)


@pytest.fixture(scope="session")
def split_task_stream() -> Stream:
    """Split digits in the task-incremental scenario: 5 tasks of 2 classes, one head each."""
    return build_stream("split", "digits", tasks=5, scenario="task", test_samples=60, seed=0)


@pytest.fixture(scope="session")
def lifelong_exe() -> Path:
    """The installed console script of this virtualenv."""
    exe = Path(sys.executable).parent / "lifelong"
    if not exe.exists():
        pytest.skip(f"no console script at {exe}; install the project with pip install -e .")
    return exe


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment for CLI subprocesses: headless plots, a private data cache, unbuffered."""
    env = dict(os.environ)
    env.update(MPLBACKEND="Agg", PYTHONUNBUFFERED="1", LIFELONG_DATA=str(tmp_path / "no-data"))
    return env
