"""Downloads against a real local HTTP server: verification, atomic writes, clear failures."""

from __future__ import annotations

import io
import os
import socket
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from lifelong.data import files
from lifelong.data.download import download, mirror_base_url
from lifelong.data.files import CATALOGUE, file_md5, require_files
from lifelong.errors import ConfigError, DataError

MNIST = CATALOGUE["mnist"]
BABI = CATALOGUE["babi"]


@pytest.fixture
def shared_data() -> Path:
    value = os.environ.get("LIFELONG_SHARED_DATA", "")
    if not value:
        pytest.skip("LIFELONG_SHARED_DATA is not set (path to the genuine shared data sets)")
    return Path(value)


class _Handler(SimpleHTTPRequestHandler):
    """Serves a folder; ``/truncate/...`` announces 1000 bytes, sends 100 and hangs up."""

    def __init__(self, *args, requests: list[str], **kwargs) -> None:
        self.requests = requests
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        self.requests.append(self.path)
        if self.path.startswith("/truncate/"):
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"\0" * 100)
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture
def server(tmp_path) -> Iterator[SimpleNamespace]:
    root = tmp_path / "served"
    root.mkdir()
    requests: list[str] = []
    handler = partial(_Handler, requests=requests, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(
            root=root, url=f"http://127.0.0.1:{httpd.server_address[1]}/", requests=requests
        )
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture(autouse=True)
def fresh_verification_cache(monkeypatch):
    monkeypatch.setattr(files, "_verified", {})
    monkeypatch.delenv("LIFELONG_MIRROR", raising=False)
    monkeypatch.delenv("LIFELONG_DATA", raising=False)


def serve_mnist(shared: Path, root: Path) -> Path:
    folder = root / "mnist"
    folder.mkdir()
    for data_file in MNIST.files:
        (folder / data_file.name).symlink_to(shared / "mnist" / data_file.name)
    return folder


def corrupt_copy(path: Path) -> None:
    """Replace a served symlink by a same-size copy with one bit flipped."""
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x04
    path.unlink()
    path.write_bytes(bytes(data))


def assert_only_valid_files(folder: Path, spec=MNIST) -> None:
    """Nothing half-written: no temporary files, and every file present is the official one."""
    if not folder.exists():
        return
    by_name = {f.name: f for f in spec.files}
    for path in folder.iterdir():
        assert path.name in by_name, f"left behind: {path.name}"
        assert file_md5(path) == by_name[path.name].md5


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- MNIST: one URL per file ----------------------------------------------------------------


def test_download_mnist_from_local_mirror(shared_data, server, tmp_path):
    serve_mnist(shared_data, server.root)
    seen: dict[str, tuple[int, int | None]] = {}
    data_dir = tmp_path / "data"
    folder = download(
        "mnist",
        data_dir=data_dir,
        base_url=server.url + "mnist",  # no trailing slash: one is added
        progress=lambda label, done, total: seen.__setitem__(label, (done, total)),
    )
    assert folder == data_dir / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(MNIST.file_names)
    assert seen == {f.name: (f.size, f.size) for f in MNIST.files}
    assert all((folder / f.name).stat().st_mode & 0o777 == 0o644 for f in MNIST.files)
    for data_file in MNIST.files:
        assert (folder / data_file.name).read_bytes() == (
            shared_data / "mnist" / data_file.name
        ).read_bytes()
    files._verified.clear()
    assert set(require_files("mnist", data_dir)) == set(MNIST.file_names)

    before = len(server.requests)
    assert download("mnist", data_dir=data_dir, base_url=server.url + "mnist/") == folder
    assert len(server.requests) == before  # valid files are not fetched again


def test_mirror_from_environment_replaces_only_bad_files(
    shared_data, server, tmp_path, monkeypatch
):
    serve_mnist(shared_data, server.root)
    monkeypatch.setenv("LIFELONG_MIRROR", server.url + "{name}/")
    monkeypatch.setenv("LIFELONG_DATA", str(tmp_path / "data"))
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"stale partial download")
    (folder / "train-labels-idx1-ubyte.gz").symlink_to(
        shared_data / "mnist" / "train-labels-idx1-ubyte.gz"
    )
    assert download("mnist") == folder
    assert sorted(server.requests) == [
        "/mnist/t10k-images-idx3-ubyte.gz",
        "/mnist/t10k-labels-idx1-ubyte.gz",
        "/mnist/train-images-idx3-ubyte.gz",
    ]
    files._verified.clear()
    require_files("mnist")


def test_corrupted_download_leaves_nothing(shared_data, server, tmp_path):
    corrupt_copy(serve_mnist(shared_data, server.root) / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(DataError) as caught:
        download("mnist", data_dir=tmp_path / "data", base_url=server.url + "mnist/")
    message = str(caught.value)
    assert f"{server.url}mnist/t10k-images-idx3-ubyte.gz has md5" in message
    assert "not the official 9fb629c4189551a2d022fa330f9573f3" in message
    assert "nothing was saved" in message and "\n" not in message
    folder = tmp_path / "data" / "mnist"
    assert not (folder / "t10k-images-idx3-ubyte.gz").exists()
    assert_only_valid_files(folder)


def test_http_404_names_the_url(shared_data, server, tmp_path):
    (serve_mnist(shared_data, server.root) / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as caught:
        download("mnist", data_dir=tmp_path / "data", base_url=server.url + "mnist/")
    message = str(caught.value)
    assert f"could not download {server.url}mnist/train-labels-idx1-ubyte.gz" in message
    assert "HTTP 404" in message and "--mirror" in message and "internet connection" in message
    assert str(tmp_path / "data" / "mnist") in message and "\n" not in message
    assert not (tmp_path / "data" / "mnist" / "train-labels-idx1-ubyte.gz").exists()
    assert_only_valid_files(tmp_path / "data" / "mnist")


def test_connection_refused_gives_offline_message(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/mnist/"
    with pytest.raises(DataError) as caught:
        download("mnist", data_dir=tmp_path / "data", base_url=url)
    message = str(caught.value)
    assert message.startswith(f"could not download {url}")
    assert "refused" in message.lower()
    assert "check your internet connection" in message and "--mirror URL" in message
    assert f"copy the files into {tmp_path / 'data' / 'mnist'} by hand" in message
    assert list((tmp_path / "data" / "mnist").iterdir()) == []


def test_silent_server_times_out(tmp_path):
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        with pytest.raises(DataError, match=r"could not download .*timed out.*--mirror"):
            download("mnist", data_dir=tmp_path, base_url=url, timeout=0.3)
    assert list((tmp_path / "mnist").iterdir()) == []


def test_transfer_cut_short_is_reported(server, tmp_path):
    with pytest.raises(DataError, match="transfer ended after 100 of 1000 bytes"):
        download("mnist", data_dir=tmp_path, base_url=server.url + "truncate/")
    assert list((tmp_path / "mnist").iterdir()) == []


def test_interrupt_removes_the_partial_file(shared_data, server, tmp_path):
    serve_mnist(shared_data, server.root)

    def interrupt(label: str, done: int, total: int | None) -> None:
        if done > 100_000:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        download("mnist", tmp_path, server.url + "mnist/", progress=interrupt)
    assert_only_valid_files(tmp_path / "mnist")
    assert not (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").exists()


def test_mirror_base_url_forms(tmp_path):
    assert mirror_base_url(MNIST) == MNIST.base_url
    assert mirror_base_url(MNIST, "http://m/{name}") == "http://m/mnist/"
    assert mirror_base_url(BABI, str(tmp_path)) == tmp_path.resolve().as_uri() + "/"
    with pytest.raises(ConfigError, match=r"mirror 'example\.org/x' is neither a URL"):
        mirror_base_url(MNIST, "example.org/x")


# --- bAbI: one official archive -------------------------------------------------------------


def build_babi_archive(path: Path, shared: Path, names, corrupt: str | None = None) -> None:
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        readme = b"not a data file"
        info = tarfile.TarInfo("tasks_1-20_v1-2/README")
        info.size = len(readme)
        tar.addfile(info, io.BytesIO(readme))
        tar.addfile(_dir("tasks_1-20_v1-2/en"))
        for name in names:
            data = (shared / "babi" / "en" / name).read_bytes()
            if name == corrupt:
                data = data.replace(b"Mary", b"Mari", 1)
            info = tarfile.TarInfo(f"tasks_1-20_v1-2/en/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


def test_download_babi_from_archive(shared_data, server, tmp_path):
    build_babi_archive(server.root / BABI.archive, shared_data, reversed(BABI.file_names))
    labels = []
    folder = download(
        "babi",
        tmp_path / "data",
        server.url,
        progress=lambda label, done, total: labels.append(label),
    )
    assert folder == tmp_path / "data" / "babi" / "en"
    assert sorted(p.name for p in folder.iterdir()) == sorted(BABI.file_names)
    assert set(labels) == {BABI.archive}
    assert not any(p.name.endswith(".part") for p in folder.parent.rglob("*"))
    files._verified.clear()
    assert len(require_files("babi", tmp_path / "data")) == 40
    assert server.requests == ["/tasks_1-20_v1-2.tar.gz"]


def test_babi_archive_missing_members_writes_nothing(shared_data, server, tmp_path):
    kept = BABI.file_names[:3]
    build_babi_archive(server.root / BABI.archive, shared_data, kept)
    with pytest.raises(DataError) as caught:
        download("babi", tmp_path, server.url)
    message = str(caught.value)
    assert f"{server.url}tasks_1-20_v1-2.tar.gz lacks 37 of the 40 expected files" in message
    assert f"tasks_1-20_v1-2/en/{BABI.file_names[3]}" in message
    assert "and 34 more" in message and "\n" not in message
    assert list((tmp_path / "babi" / "en").iterdir()) == []  # not even the 3 good ones


def test_babi_corrupted_member_is_rejected(shared_data, server, tmp_path):
    bad = "qa1_single-supporting-fact_train.txt"
    build_babi_archive(server.root / BABI.archive, shared_data, BABI.file_names, corrupt=bad)
    with pytest.raises(DataError, match=f"tasks_1-20_v1-2/en/{bad}\\) has md5 .* not the official"):
        download("babi", tmp_path, server.url)
    folder = tmp_path / "babi" / "en"
    assert not (folder / bad).exists()
    assert_only_valid_files(folder, BABI)


def test_babi_garbage_archive(server, tmp_path):
    (server.root / BABI.archive).write_bytes(b"<html>moved</html>")
    with pytest.raises(DataError, match=r"tasks_1-20_v1-2\.tar\.gz is not a readable tar archive"):
        download("babi", tmp_path, server.url)
    assert list((tmp_path / "babi" / "en").iterdir()) == []


def test_babi_from_local_folder_and_skip_when_present(shared_data, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    build_babi_archive(mirror / BABI.archive, shared_data, BABI.file_names[:2])
    target = tmp_path / "data" / "babi" / "en"
    target.mkdir(parents=True)
    for name in BABI.file_names[2:]:
        (target / name).symlink_to(shared_data / "babi" / "en" / name)
    download("babi", tmp_path / "data", base_url=str(mirror))  # only the 2 missing are needed
    assert_only_valid_files(target, BABI)
    assert len(list(target.iterdir())) == 40
    (mirror / BABI.archive).unlink()
    download("babi", tmp_path / "data", base_url=str(mirror))  # nothing to do: no request
