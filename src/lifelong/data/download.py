"""Download the official data files, verify their md5, and install them atomically.

Each file is written to a hidden temporary file in its final folder (``.NAME.XXXX.part``), checked
against the catalogue's official md5, and only then moved into place with :func:`os.replace`. A
failed, interrupted (including Ctrl-C) or corrupted download therefore never leaves a partial or
wrong file under a data file's name, and the temporary file is removed. Files already present
and valid are not downloaded again.

Sources (see :data:`lifelong.data.files.CATALOGUE`): MNIST from the public S3 mirror of
Y. LeCun's files that torchvision uses, Fashion-MNIST from Zalando Research's S3 bucket, and bAbI
from the official ``tasks_1-20_v1-2.tar.gz`` archive, of which only the 40 files of
``tasks_1-20_v1-2/en/`` are extracted. A mirror replaces the base URL: file names (for bAbI, the
archive name) are appended to it. Only the standard library is used.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from lifelong.data.files import (
    DataFile,
    DatasetFiles,
    dataset_files,
    is_valid,
    remember_verified,
    resolve_data_dir,
)
from lifelong.errors import ConfigError, DataError
from lifelong.results import PART_SUFFIX, run_lock

MIRROR_ENV = "LIFELONG_MIRROR"
"""Environment variable with a mirror base URL, used when ``download`` gets no ``base_url``."""

DEFAULT_TIMEOUT_S = 30.0
"""Seconds to wait for a connection or for the next block of data before giving up."""

DEFAULT_DEADLINE_S = 1800.0
"""Seconds one file (or archive) may take in all: a server trickling bytes fails in bounded time."""

ProgressCallback = Callable[[str, int, int | None], None]
"""``progress(label, done_bytes, total_bytes)``: called after each block written; ``label`` is the
file (or archive) name, ``total_bytes`` is None when the server does not send a length."""

_CHUNK = 1 << 16
_USER_AGENT = "lifelong-data-download/1 (Python urllib)"


def download(
    name: str,
    data_dir: str | Path | None = None,
    base_url: str | None = None,
    progress: ProgressCallback | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    deadline: float = DEFAULT_DEADLINE_S,
) -> Path:
    """Download data set ``name`` into ``data_dir`` (see ``resolve_data_dir``); return its folder.

    ``base_url`` (else ``$LIFELONG_MIRROR``, else the official source) is the URL that file names
    are appended to; a ``{name}`` in it is replaced by the data set's name, so one mirror can
    serve every data set, and a local folder path is accepted as well as a URL. Raises
    :class:`DataError` with one line on a network failure, an HTTP error, or a file whose md5
    differs from the official one; nothing but complete, verified files is ever left behind.
    ``timeout`` bounds each wait for data, ``deadline`` each file's whole transfer. The folder is
    locked while files are written, and ``.part`` files of a killed download are removed first.
    """
    spec = dataset_files(name)
    root = resolve_data_dir(data_dir)
    folder = root / spec.folder
    todo = [f for f in spec.files if not is_valid(folder / f.name, f)]
    if not todo:
        return folder
    base = mirror_base_url(spec, base_url)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(
            f"cannot create {folder} ({error.strerror or error}); choose another --data-dir"
        ) from error
    with run_lock(folder, "data folder"):  # also removes .part files of a killed download
        limits = (timeout, deadline)
        if spec.archive is None:
            for expected in todo:
                url = base + expected.name
                temp, md5 = _download_to_temp(url, folder, expected.name, progress, limits)
                _install(temp, md5, expected, folder / expected.name, origin=url)
        else:
            url = base + spec.archive
            archive, _ = _download_to_temp(url, folder, spec.archive, progress, limits)
            try:
                _extract_verified(archive, url, spec, todo, folder)
            finally:
                archive.unlink(missing_ok=True)
    return folder


def mirror_base_url(spec: DatasetFiles, base_url: str | None = None) -> str:
    """The base URL for ``spec``'s files: ``base_url``, else ``$LIFELONG_MIRROR``, else official.

    The result ends with ``/``; ``{name}`` is replaced by the data set's name; a path without a
    URL scheme must be an existing local folder, and is turned into a ``file://`` URL.
    """
    chosen = base_url or os.environ.get(MIRROR_ENV, "") or spec.base_url
    chosen = chosen.replace("{name}", spec.name)
    if "://" not in chosen:
        folder = Path(chosen).expanduser()
        if not folder.is_dir():
            raise ConfigError(
                f"mirror {chosen!r} is neither a URL (http://, https://, file://) nor an existing "
                f"folder; pass --mirror with one of those"
            )
        chosen = folder.resolve().as_uri()
    return chosen if chosen.endswith("/") else chosen + "/"


def _download_to_temp(
    url: str,
    folder: Path,
    label: str,
    progress: ProgressCallback | None,
    limits: tuple[float, float],
) -> tuple[Path, str]:
    """Fetch ``url`` into a temporary file in ``folder``; return its path and md5.

    ``limits``: (seconds to wait for each block, seconds for the whole transfer)."""
    timeout, deadline = limits
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            total = _content_length(response)
            temp, md5, done = _stream_to_temp(
                response, folder, label, total, progress, time.monotonic() + deadline
            )
    except urllib.error.HTTPError as error:
        error.close()
        raise _unreachable(url, f"HTTP {error.code} {error.reason}", folder) from error
    except urllib.error.URLError as error:
        raise _unreachable(url, _reason(error.reason), folder) from error
    except (http.client.HTTPException, OSError) as error:  # timeouts, resets, TLS failures
        raise _unreachable(url, _reason(error), folder) from error
    except _DeadlineExceeded:
        raise _unreachable(url, f"not complete after {deadline:g} s", folder) from None
    except ValueError as error:  # malformed URL
        raise ConfigError(f"invalid URL {url!r} ({error}); pass --mirror http(s)://...") from error
    if total is not None and done != total:
        temp.unlink(missing_ok=True)
        raise _unreachable(url, f"transfer ended after {done} of {total} bytes", folder)
    return temp, md5


def _stream_to_temp(
    source: BinaryIO,
    folder: Path,
    label: str,
    total: int | None,
    progress: ProgressCallback | None,
    deadline: float | None = None,
) -> tuple[Path, str, int]:
    """Copy ``source`` to a new hidden temporary file in ``folder``; remove it on any failure.

    Read errors propagate unchanged (the caller knows what they mean); write errors become a
    :class:`DataError`; past ``deadline`` (a ``time.monotonic()`` value) :class:`_DeadlineExceeded`
    is raised. Returns the temporary path, the md5 of what was written, and its length.
    """
    try:
        handle, temp_name = tempfile.mkstemp(dir=folder, prefix=f".{label}.", suffix=PART_SUFFIX)
    except OSError as error:
        raise DataError(
            f"cannot write in {folder} ({error.strerror or error}); choose another --data-dir"
        ) from error
    temp = Path(temp_name)
    digest = hashlib.md5(usedforsecurity=False)
    done = 0
    out = os.fdopen(handle, "wb")
    read = getattr(source, "read1", source.read)  # what has arrived, not a full 64 KiB block
    try:
        while chunk := read(_CHUNK):
            if deadline is not None and time.monotonic() > deadline:
                raise _DeadlineExceeded
            try:
                out.write(chunk)
            except OSError as error:
                raise _write_error(temp, error) from error
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(label, done, total)
        try:
            out.flush()
            os.fsync(out.fileno())
            out.close()
        except OSError as error:
            raise _write_error(temp, error) from error
    except BaseException:  # also KeyboardInterrupt: never leave a partial file behind
        out.close()
        temp.unlink(missing_ok=True)
        raise
    return temp, digest.hexdigest(), done


def _install(temp: Path, md5: str, expected: DataFile, target: Path, origin: str) -> None:
    """Move ``temp`` to ``target`` if its md5 is the official one; delete it otherwise."""
    if md5 != expected.md5:
        temp.unlink(missing_ok=True)
        raise DataError(
            f"{origin} has md5 {md5}, not the official {expected.md5} of {expected.name}; "
            f"nothing was saved: try again, or pass --mirror URL with a correct copy"
        )
    try:
        os.chmod(temp, 0o644)  # mkstemp creates 0600; data files are meant to be shared
        os.replace(temp, target)
    except OSError as error:
        temp.unlink(missing_ok=True)
        raise _write_error(target, error) from error
    remember_verified(target, md5)


def _extract_verified(
    archive: Path, url: str, spec: DatasetFiles, todo: list[DataFile], folder: Path
) -> None:
    """Extract the ``todo`` files of ``spec`` from the downloaded ``archive``, each verified.

    Every wanted member is looked up before anything is written, so an archive that lacks some
    of them leaves the folder untouched. Members are read as data only (never extracted by their
    own path), so a hostile archive cannot write outside ``folder``.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = {
                member.name.removeprefix("./"): member
                for member in tar.getmembers()
                if member.isfile()
            }
            wanted = {f.name: spec.archive_folder + f.name for f in todo}
            missing = [path for path in wanted.values() if path not in members]
            if missing:
                shown = ", ".join(missing[:3]) + (
                    f" and {len(missing) - 3} more" if len(missing) > 3 else ""
                )
                raise DataError(
                    f"{url} lacks {len(missing)} of the {len(wanted)} expected files ({shown}); "
                    f"it is not the official {spec.archive}: pass --mirror URL with the right one"
                )
            in_archive_order = sorted(todo, key=lambda f: members[wanted[f.name]].offset)
            for installed, expected in enumerate(in_archive_order):
                member_path = wanted[expected.name]
                source = tar.extractfile(members[member_path])
                if source is None:  # not a regular file; excluded above, kept for type safety
                    raise DataError(f"{url}: {member_path} is not a regular file")
                temp, md5, _ = _stream_to_temp(source, folder, expected.name, None, None)
                if md5 != expected.md5 and installed:
                    temp.unlink(missing_ok=True)
                    raise DataError(
                        f"{url} ({member_path}) has md5 {md5}, not the official {expected.md5}; "
                        f"{installed} verified files of the archive were installed in {folder}, "
                        f"that one was not: pass --mirror URL with the official {spec.archive}"
                    )
                _install(temp, md5, expected, folder / expected.name, f"{url} ({member_path})")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise DataError(
            f"{url} is not a readable tar archive ({_reason(error)}); try again, or pass --mirror "
            f"URL with the official {spec.archive}"
        ) from error


class _DeadlineExceeded(Exception):
    """A transfer took longer than its overall deadline."""


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value is not None and value.isdigit() else None


def _reason(error: object) -> str:
    text = str(error) or type(error).__name__
    if isinstance(error, TimeoutError) and text in ("timed out", "TimeoutError"):
        text = "timed out"
    return " ".join(text.split())  # one line


def _unreachable(url: str, reason: str, folder: Path) -> DataError:
    return DataError(
        f"could not download {url} ({reason}); check your internet connection, or pass "
        f"--mirror URL (or set {MIRROR_ENV}), or copy the files into {folder} by hand"
    )


def _write_error(path: Path, error: OSError) -> DataError:
    return DataError(
        f"cannot write {path} ({error.strerror or error}); free some disk space or choose "
        f"another --data-dir"
    )
