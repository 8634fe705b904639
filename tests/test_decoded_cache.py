"""Decoded copies of the IDX files (``read_idx_cached``): same tensors, never stale, never damaged.

Each test builds a small MNIST-shaped data set of real gzip IDX files and puts it in the
catalogue in place of MNIST's (its own md5s and sizes), with the per-user cache in ``tmp_path``;
one test reads the genuine MNIST files. Each docstring says which break of the code it caught
when it was written (the break was made, the test failed, the break was undone).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import lifelong.data.idx as idx
from lifelong.data import files
from lifelong.data.files import CATALOGUE, DataFile, decoded_dir
from lifelong.data.idx import load_idx_dataset, read_idx, read_idx_pair

SHAPES = {
    "train-images-idx3-ubyte.gz": (12, 5, 4),
    "train-labels-idx1-ubyte.gz": (12,),
    "t10k-images-idx3-ubyte.gz": (6, 5, 4),
    "t10k-labels-idx1-ubyte.gz": (6,),
}


def idx_gzip(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def write_dataset(root: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> dict[str, Path]:
    """Random images and labels as the four IDX files of ``mnist`` under ``root``, entered in the
    catalogue with their md5s and sizes; returns their paths."""
    rng = np.random.default_rng(seed)
    folder = root / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    entries, paths = [], {}
    for name, shape in SHAPES.items():
        high = 10 if "labels" in name else 256
        data = idx_gzip(rng.integers(0, high, size=shape))
        (folder / name).write_bytes(data)
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        entries.append(DataFile(name, md5, len(data)))
        paths[name] = folder / name
    monkeypatch.setitem(
        CATALOGUE, "mnist", dataclasses.replace(CATALOGUE["mnist"], files=tuple(entries))
    )
    monkeypatch.setattr(files, "_verified", {})
    return paths


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def fresh(paths: dict[str, Path]) -> list[torch.Tensor]:
    """The data set decoded straight from the gzip files, as before the cache existed."""
    train = read_idx_pair(
        paths["train-images-idx3-ubyte.gz"], paths["train-labels-idx1-ubyte.gz"], 10
    )
    test = read_idx_pair(paths["t10k-images-idx3-ubyte.gz"], paths["t10k-labels-idx1-ubyte.gz"], 10)
    return [*train, *test]


def tensors(data) -> list[torch.Tensor]:
    return [data.x_train, data.y_train, data.x_test, data.y_test]


def assert_identical(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def copies() -> list[Path]:
    return sorted(p for p in decoded_dir("mnist").iterdir() if not p.name.startswith("."))


def test_later_loads_map_the_copy_and_get_identical_tensors(tmp_path, cache_home, monkeypatch):
    """The second load reads no gzip file and returns the same tensors as a fresh decode.

    Caught (checked): reading the copy at offset 0 instead of after its header (wrong shape);
    not writing the copy (the second load decodes again, which is refused below)."""
    paths = write_dataset(tmp_path / "data", monkeypatch, seed=0)
    want = fresh(paths)
    assert_identical(tensors(load_idx_dataset("mnist", tmp_path / "data")), want)
    assert [p.name.split(".")[0] for p in copies()] == sorted(n[:-3] for n in SHAPES)
    for copy in copies():  # each copy is the plain IDX file its gzip file holds
        (gz,) = (p for name, p in paths.items() if name.startswith(copy.name.split(".")[0]))
        assert copy.read_bytes() == gzip.decompress(gz.read_bytes())
        assert copy.name.endswith(hashlib.md5(gz.read_bytes()).hexdigest())

    def no_decoding(path):
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr(idx, "_decompress", no_decoding)
    second = load_idx_dataset("mnist", tmp_path / "data")
    assert_identical(tensors(second), want)
    written = {copy: copy.read_bytes() for copy in copies()}
    second.x_train[0, 0, 0] += 1  # mapped copy-on-write: the file does not change
    assert {copy: copy.read_bytes() for copy in copies()} == written


def test_a_replaced_gzip_file_is_never_served_the_old_copy(tmp_path, cache_home, monkeypatch):
    """Same file names, other content (and the catalogue's md5s with it): the new numbers.

    The copy's name carries the gzip file's md5 and its CRC-32 and length must equal the gzip
    trailer's; breaking both (a name without the md5, no CRC check) served the old numbers
    (checked); either one alone still keeps the copy from being served."""
    old = write_dataset(tmp_path / "data", monkeypatch, seed=0)
    before = tensors(load_idx_dataset("mnist", tmp_path / "data"))
    new = write_dataset(tmp_path / "data", monkeypatch, seed=1)  # same names, new md5s
    after = tensors(load_idx_dataset("mnist", tmp_path / "data"))
    assert_identical(after, fresh(new))
    assert not torch.equal(after[0], before[0])
    assert old == new  # the same paths


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _flip_payload(data: bytes) -> bytes:
    flipped = bytearray(data)
    flipped[-3] ^= 0x01  # same length, same header, one pixel one bit different
    return bytes(flipped)


def _flip_header(data: bytes) -> bytes:
    return bytes([0, 0, 0x09]) + data[3:]


@pytest.mark.parametrize(
    "damage",
    [_truncate, _flip_payload, _flip_header, lambda d: b"", lambda d: d + b"\0", lambda d: d[:3]],
    ids=["truncated", "one-bit", "header", "empty", "longer", "three-bytes"],
)
def test_a_damaged_copy_is_rebuilt(tmp_path, cache_home, monkeypatch, damage):
    """A truncated, garbled or empty copy gives the true numbers and is written again whole.

    Caught (checked): without the CRC-32 check the one-bit copy was served (one pixel off);
    without the CRC-32 and the size checks, the truncated and the longer copies also failed (a
    ``reshape`` error)."""
    paths = write_dataset(tmp_path / "data", monkeypatch, seed=0)
    load_idx_dataset("mnist", tmp_path / "data")
    target = next(p for p in copies() if p.name.startswith("train-images"))
    whole = target.read_bytes()
    target.write_bytes(damage(whole))
    got = load_idx_dataset("mnist", tmp_path / "data")
    assert_identical(tensors(got), fresh(paths))
    assert target.read_bytes() == whole


def test_read_only_data_dir_and_unwritable_cache(tmp_path, cache_home, monkeypatch):
    """Nothing is written into the data directory (read-only here), and a cache folder that
    cannot be created costs only the copy, silently.

    Caught (checked): without the ``suppress(OSError)`` around the write, the second load raised
    NotADirectoryError."""
    paths = write_dataset(tmp_path / "data", monkeypatch, seed=0)
    data_dir = tmp_path / "data"
    for folder in (data_dir / "mnist", data_dir):
        folder.chmod(0o555)
    try:
        listing = sorted(data_dir.rglob("*"))
        assert_identical(tensors(load_idx_dataset("mnist", data_dir)), fresh(paths))
        assert sorted(data_dir.rglob("*")) == listing
        assert len(copies()) == 4  # in the per-user cache instead
        blocked = tmp_path / "a-file"
        blocked.write_text("not a folder")
        monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
        assert_identical(tensors(load_idx_dataset("mnist", data_dir)), fresh(paths))
    finally:
        for folder in (data_dir, data_dir / "mnist"):
            folder.chmod(0o755)


@pytest.mark.shared_data
def test_genuine_mnist_through_the_copy_equals_a_fresh_decode(shared_data, cache_home):
    """MNIST itself: decoded and written once, then mapped; every tensor bit for bit the same as
    :func:`read_idx` gives (the shared folder stays untouched)."""
    folder = shared_data / "mnist"
    want = [read_idx(folder / name) for name in SHAPES]
    before = sorted(os.listdir(shared_data))
    for _ in range(2):
        data = load_idx_dataset("mnist", shared_data)
        got = [data.x_train, data.y_train, data.x_test, data.y_test]
        assert_identical([got[0], got[2]], [want[0], want[2]])
        assert torch.equal(got[1], want[1].long()) and torch.equal(got[3], want[3].long())
    assert len(copies()) == 4
    assert sorted(os.listdir(shared_data)) == before
