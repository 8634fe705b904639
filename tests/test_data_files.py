"""Data-file catalogue, data-dir resolution, checksum verification and the IDX reader."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from lifelong.data import files
from lifelong.data.files import (
    CATALOGUE,
    dataset_names,
    file_md5,
    require_files,
    resolve_data_dir,
)
from lifelong.data.idx import load_idx_dataset, read_idx, read_idx_pair
from lifelong.errors import DataError, UnknownNameError

# Label counts per digit 0..9, from the README of the shared data folder.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture
def shared_data() -> Path:
    value = os.environ.get("LIFELONG_SHARED_DATA", "")
    if not value:
        pytest.skip("LIFELONG_SHARED_DATA is not set (path to the genuine shared data sets)")
    path = Path(value)
    if not (path / "MD5SUMS").is_file():
        pytest.skip(f"LIFELONG_SHARED_DATA={value} has no MD5SUMS file")
    return path


def write_idx(path: Path, array: np.ndarray, dtype_code: int = 0x08, extra: bytes = b"") -> None:
    header = bytes([0, 0, dtype_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as stream:
        stream.write(header + array.astype(np.uint8).tobytes() + extra)


def copy_dataset(shared: Path, name: str, target_root: Path) -> Path:
    folder = target_root / CATALOGUE[name].folder
    folder.mkdir(parents=True)
    for data_file in CATALOGUE[name].files:
        shutil.copyfile(shared / CATALOGUE[name].folder / data_file.name, folder / data_file.name)
    return folder


# --- names and data directory -------------------------------------------------------------


def test_dataset_names_and_layout():
    assert dataset_names() == ["babi", "fashion-mnist", "mnist"]
    assert len(CATALOGUE["mnist"].files) == len(CATALOGUE["fashion-mnist"].files) == 4
    babi = CATALOGUE["babi"]
    assert len(babi.files) == 40 and babi.folder == "babi/en"
    assert "qa1_single-supporting-fact_train.txt" in babi.file_names
    assert "qa20_agents-motivations_test.txt" in babi.file_names
    for spec in CATALOGUE.values():
        assert all(len(f.md5) == 32 and int(f.md5, 16) >= 0 and f.size > 0 for f in spec.files)


def test_unknown_dataset_name():
    with pytest.raises(UnknownNameError, match=r"unknown data set 'cifar'.*mnist"):
        require_files("cifar", "/nonexistent")


def test_resolve_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("LIFELONG_DATA", str(tmp_path / "from-env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"
    assert resolve_data_dir(None) == tmp_path / "from-env"
    monkeypatch.delenv("LIFELONG_DATA")
    assert resolve_data_dir() == tmp_path / "xdg" / "lifelong"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec requires absolute
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "lifelong"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert resolve_data_dir("~/d") == tmp_path / "home" / "d"


# --- verification ---------------------------------------------------------------------------


def test_catalogue_matches_shared_md5sums(shared_data):
    listed = {}
    for line in (shared_data / "MD5SUMS").read_text().splitlines():
        md5, relative = line.split()
        listed[relative] = md5
    catalogue = {
        f"{spec.folder}/{f.name}": f.md5 for spec in CATALOGUE.values() for f in spec.files
    }
    assert catalogue == listed
    sizes = {f"{s.folder}/{f.name}": f.size for s in CATALOGUE.values() for f in s.files}
    assert all((shared_data / rel).stat().st_size == size for rel, size in sizes.items())


def test_require_files_on_shared_data_caches_hashes(shared_data, monkeypatch):
    calls = []
    real_md5 = files.file_md5

    def counting_md5(path):
        calls.append(Path(path).name)
        return real_md5(path)

    monkeypatch.setattr(files, "_verified", {})
    monkeypatch.setattr(files, "file_md5", counting_md5)
    for name in dataset_names():
        paths = require_files(name, shared_data)
        assert list(paths) == list(CATALOGUE[name].file_names)
        assert all(path.is_file() for path in paths.values())
    assert len(calls) == 48
    for name in dataset_names():
        require_files(name, shared_data)
    assert len(calls) == 48  # verified once per process


def test_missing_files_message(tmp_path):
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"x")
    with pytest.raises(DataError) as caught:
        require_files("mnist", tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert "3 of 4 files missing" in message
    assert "train-images-idx3-ubyte.gz" in message and "t10k-images-idx3-ubyte.gz" in message
    assert "t10k-labels" not in message
    assert str(tmp_path / "mnist") in message
    assert f"lifelong data download mnist --data-dir {tmp_path}" in message


def test_missing_babi_files_are_summarised(tmp_path):
    with pytest.raises(DataError, match=r"40 of 40 files missing in .*babi/en .* and 36 more"):
        require_files("babi", tmp_path)


def test_data_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LIFELONG_DATA", str(tmp_path / "env-dir"))
    with pytest.raises(DataError, match="env-dir/fashion-mnist"):
        require_files("fashion-mnist")


def test_corrupted_file_names_the_file(shared_data, tmp_path):
    folder = copy_dataset(shared_data, "mnist", tmp_path)
    assert require_files("mnist", tmp_path)  # genuine copies pass
    target = folder / "train-labels-idx1-ubyte.gz"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, one bit different
    target.write_bytes(bytes(data))
    os.utime(target, ns=(1, 1))  # a new mtime, as any rewrite would give
    with pytest.raises(DataError) as caught:
        require_files("mnist", tmp_path)
    message = str(caught.value)
    assert str(target) in message and "md5" in message and "delete it" in message
    assert f"lifelong data download mnist --data-dir {tmp_path}" in message
    assert "\n" not in message


def test_cache_notices_a_rewritten_file(shared_data, tmp_path):
    folder = copy_dataset(shared_data, "mnist", tmp_path)
    require_files("mnist", tmp_path)
    target = folder / "t10k-labels-idx1-ubyte.gz"
    stat = target.stat()
    data = bytearray(target.read_bytes())
    data[-10] ^= 0xFF
    target.write_bytes(bytes(data))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz does not match"):
        require_files("mnist", tmp_path)


def test_file_md5(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert file_md5(path) == "900150983cd24fb0d6963f7d28e17f72"  # RFC 1321 test suite


# --- IDX reader -----------------------------------------------------------------------------


def test_read_idx_roundtrip(tmp_path):
    array = np.arange(3 * 5 * 7).reshape(3, 5, 7) % 256
    write_idx(tmp_path / "a.gz", array)
    tensor = read_idx(tmp_path / "a.gz")
    assert tensor.dtype == torch.uint8 and tensor.shape == (3, 5, 7)
    assert np.array_equal(tensor.numpy(), array)
    tensor[0, 0, 0] = 9  # writable, owned memory


@pytest.mark.parametrize(
    ("extra", "shape_bytes", "message"),
    [
        (b"\x01", None, "more values"),
        (b"", struct.pack(">2I", 3, 11), "holds 30 of the 33 values"),
    ],
)
def test_read_idx_payload_length_is_exact(tmp_path, extra, shape_bytes, message):
    path = tmp_path / "bad.gz"
    payload = bytes(range(30))
    header = bytes([0, 0, 8, 2]) + (shape_bytes or struct.pack(">2I", 3, 10))
    with gzip.open(path, "wb") as stream:
        stream.write(header + payload + extra)
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*" + message):
        read_idx(path)


def test_read_idx_bad_header(tmp_path):
    path = tmp_path / "magic.gz"
    with gzip.open(path, "wb") as stream:
        stream.write(b"\x01\x02\x08\x01" + struct.pack(">I", 2) + b"ab")
    magic_error = re.escape(f"{path} does not start with an IDX magic number")
    with pytest.raises(DataError, match=magic_error):
        read_idx(path)
    write_idx(tmp_path / "float.gz", np.zeros(4), dtype_code=0x0D)
    with pytest.raises(DataError, match=r"float.gz has IDX dtype code 0x0d"):
        read_idx(tmp_path / "float.gz")
    with gzip.open(tmp_path / "short.gz", "wb") as stream:
        stream.write(bytes([0, 0, 8, 3]) + struct.pack(">I", 2))
    with pytest.raises(DataError, match=r"short.gz ends inside its IDX header"):
        read_idx(tmp_path / "short.gz")


def test_read_idx_not_gzip_or_missing(tmp_path):
    path = tmp_path / "plain.gz"
    path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 1, 7]))
    with pytest.raises(DataError, match=re.escape(f"{path} is not a complete gzip file")):
        read_idx(path)
    with pytest.raises(DataError, match=r"nothing.gz does not exist"):
        read_idx(tmp_path / "nothing.gz")


def test_truncated_gzip_names_the_file(shared_data, tmp_path):
    source = shared_data / "mnist" / "t10k-images-idx3-ubyte.gz"
    path = tmp_path / source.name
    path.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(DataError) as caught:
        read_idx(path)
    assert str(path) in str(caught.value) and "not a complete gzip file" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_corrupted_gzip_crc_is_caught(shared_data, tmp_path):
    source = shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz"
    path = tmp_path / source.name
    data = bytearray(source.read_bytes())
    data[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=re.escape(f"{path} is not a complete gzip file")):
        read_idx(path)


def test_read_idx_pair_checks_counts(tmp_path):
    write_idx(tmp_path / "images.gz", np.zeros((5, 2, 2)))
    write_idx(tmp_path / "labels.gz", np.arange(4))
    with pytest.raises(DataError, match=r"holds 5 images but .*labels.gz holds 4 labels"):
        read_idx_pair(tmp_path / "images.gz", tmp_path / "labels.gz", n_classes=10)
    write_idx(tmp_path / "labels.gz", np.array([0, 1, 2, 3, 10]))
    with pytest.raises(DataError, match="label 10 >= 10"):
        read_idx_pair(tmp_path / "images.gz", tmp_path / "labels.gz", n_classes=10)
    write_idx(tmp_path / "labels.gz", np.array([0, 1, 2, 3, 9]))
    images, labels = read_idx_pair(tmp_path / "images.gz", tmp_path / "labels.gz", 10)
    assert images.shape == (5, 2, 2) and labels.dtype == torch.int64
    assert labels.tolist() == [0, 1, 2, 3, 9]


# --- genuine data sets ----------------------------------------------------------------------


@pytest.mark.shared_data
def test_load_genuine_mnist(shared_data):
    data = load_idx_dataset("mnist", shared_data)
    assert data.name == "mnist" and data.n_classes == 10 and data.max_value == 255
    assert data.x_train.shape == (60000, 28, 28) and data.x_test.shape == (10000, 28, 28)
    assert data.x_train.dtype == torch.uint8 and data.y_train.dtype == torch.int64
    assert data.image_shape == (28, 28)
    assert torch.bincount(data.y_train).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(data.y_test).tolist() == MNIST_TEST_COUNTS
    assert int(data.x_train.max()) == 255 and int(data.x_train.min()) == 0
    # Border pixels of MNIST's centred digits are almost always background.
    assert data.x_train[:, 0, :].float().mean() < 1.0


@pytest.mark.shared_data
def test_load_genuine_fashion_mnist(shared_data):
    data = load_idx_dataset("fashion-mnist", shared_data)
    assert data.x_train.shape == (60000, 28, 28) and data.x_test.shape == (10000, 28, 28)
    assert torch.bincount(data.y_train).tolist() == [6000] * 10
    assert torch.bincount(data.y_test).tolist() == [1000] * 10
    mnist = load_idx_dataset("mnist", shared_data)
    assert not torch.equal(data.x_test[:100], mnist.x_test[:100])


def test_load_idx_dataset_rejects_other_names(tmp_path):
    with pytest.raises(UnknownNameError, match="unknown IDX data set 'babi'"):
        load_idx_dataset("babi", tmp_path)
