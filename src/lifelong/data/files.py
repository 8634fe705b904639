"""Catalogue of the official data files, where they live on disk, and their verification.

Every data set is a fixed list of files with the checksums published with its official release.
On disk the files sit under one *data directory* in this layout::

    DATA_DIR/mnist/train-images-idx3-ubyte.gz          (and the other 3 IDX files)
    DATA_DIR/fashion-mnist/train-images-idx3-ubyte.gz  (and the other 3 IDX files)
    DATA_DIR/babi/en/qa1_single-supporting-fact_train.txt  (40 files: tasks 1-20, train + test)

:func:`require_files` is the one gate every loader passes: it returns the paths only when each file
exists and has its official md5, and otherwise raises a one-line :class:`DataError` saying what to
run. A file once verified is remembered by (path, size, mtime) for the life of the process, so
loading the same data set again does not hash it again. Decoded copies of compressed files are
kept in the per-user cache (:func:`decoded_dir`), never in the data directory.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lifelong.errors import DataError, UnknownNameError

DATA_DIR_ENV = "LIFELONG_DATA"
"""Environment variable naming the data directory when no ``data_dir`` is passed."""

_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class DataFile:
    """One file of a data set: its name in the data set's folder, official md5 and size in bytes."""

    name: str
    md5: str
    size: int


@dataclass(frozen=True)
class DatasetFiles:
    """The files of one data set and where the official release serves them.

    ``folder`` is the data set's folder relative to the data directory. Files are fetched either
    one by one from ``base_url + file name`` or, when ``archive`` is set, from one archive at
    ``base_url + archive`` whose member ``archive_folder + file name`` is each file.
    """

    name: str
    folder: str
    files: tuple[DataFile, ...]
    base_url: str
    source: str  # publisher and licence, for messages and the CLI's listing
    archive: str | None = None
    archive_folder: str = ""

    @property
    def file_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.files)


def _idx_files(md5s: Mapping[str, tuple[str, int]]) -> tuple[DataFile, ...]:
    return tuple(DataFile(name, md5, size) for name, (md5, size) in md5s.items())


# Official md5 checksums and sizes. MNIST: as distributed by Y. LeCun, C. Cortes, C. Burges (the
# same values torchvision checks). Fashion-MNIST: from the README of zalandoresearch/fashion-mnist.
_MNIST = _idx_files(
    {
        "train-images-idx3-ubyte.gz": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", 9_912_422),
        "train-labels-idx1-ubyte.gz": ("d53e105ee54ea40749a09fcbcd1e9432", 28_881),
        "t10k-images-idx3-ubyte.gz": ("9fb629c4189551a2d022fa330f9573f3", 1_648_877),
        "t10k-labels-idx1-ubyte.gz": ("ec29112dd5afa0611ce80d1b7f02629c", 4_542),
    }
)
_FASHION_MNIST = _idx_files(
    {
        "train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", 26_421_880),
        "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe", 29_515),
        "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79", 4_422_102),
        "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12a480ee83cd310", 5_148),
    }
)

# bAbI QA tasks v1.2, English 1k set: the 40 files of ``tasks_1-20_v1-2/en/`` in the official
# archive. Per task: (train md5, train bytes, test md5, test bytes).
_BABI_TASKS: dict[str, tuple[str, int, str, int]] = {
    "qa1_single-supporting-fact": (
        "b3d2196a7dd5d8c65b2ddc17a34d76bd",
        94_346,
        "d33488e97ced71fabb9381ee273a66d3",
        94_477,
    ),
    "qa2_two-supporting-facts": (
        "4b0568df2bc9946408b3ba69ef1b78f9",
        177_412,
        "dd4b3eb2de365efe93eecfa67b3988f0",
        179_835,
    ),
    "qa3_three-supporting-facts": (
        "f169fe223a687ff3a9e21bf0c98a02b9",
        529_204,
        "c78f5b0c59c278deae7493dbc5f65626",
        526_527,
    ),
    "qa4_two-arg-relations": (
        "a1fc439c292b72657a0bd0a464784c92",
        117_470,
        "70d4cec7286d2a5ce73501eabba4ffdc",
        117_394,
    ),
    "qa5_three-arg-relations": (
        "2bc8cf0da71a900732e2cc647bf4514c",
        199_473,
        "2cf6f2134b9dac40d1e57a75ed1f4b35",
        207_037,
    ),
    "qa6_yes-no-questions": (
        "67ba903b50ba4869ce4d04be578ebc69",
        100_561,
        "aecebb00ca94af658ea6dd3e2d5a1004",
        100_109,
    ),
    "qa7_counting": (
        "1a5235bc8cb1ea780f5427b3bb59f089",
        135_895,
        "f1e78a8a0fd0ed94de4e872a48fe1b28",
        130_136,
    ),
    "qa8_lists-sets": (
        "e659defa5443771481274b41d7f857ca",
        124_487,
        "56166f60577ebbac4d195133b54551f0",
        126_863,
    ),
    "qa9_simple-negation": (
        "86ea0832a682096157fe73003ddf68a7",
        97_310,
        "69b8ed3da50e03b56c0ad1e44f410731",
        97_208,
    ),
    "qa10_indefinite-knowledge": (
        "0ef5628c13db273e9daae923e03e117d",
        99_217,
        "f0d77cf3e646b9daa4ec3c2a21a8401d",
        99_632,
    ),
    "qa11_basic-coreference": (
        "c6f9d1123893b567a698b29a3c86a7ec",
        104_520,
        "037385cbc6f74433d906cb61b5bf0f44",
        104_800,
    ),
    "qa12_conjunction": (
        "6385fb8a9e0bd282c38ec82435e8281f",
        114_560,
        "4b599627b9452558cc9a1875e59dafa9",
        114_489,
    ),
    "qa13_compound-coreference": (
        "e54ff427d64b90e36feb08b3a3dbdc57",
        116_516,
        "96f6dbbb74b719706d4dfb79546150b8",
        116_444,
    ),
    "qa14_time-reasoning": (
        "5b5be4de2f8edd4351ac1ab9c0beea12",
        152_131,
        "2f5c0cd4e42f53925be1b677db999cb1",
        151_420,
    ),
    "qa15_basic-deduction": (
        "f7b814a139b1139735ab96b9ac6e3a9a",
        87_688,
        "135db07bf613444c5c9636aa051fb93d",
        87_769,
    ),
    "qa16_basic-induction": (
        "69f726fcc30abc3e412483d573f80963",
        208_334,
        "9ee715176a82862d8fc65440cd1c71d8",
        208_208,
    ),
    "qa17_positional-reasoning": (
        "820551ce0c53e61ad3a7ff6185a0cac3",
        68_596,
        "bb108b8290f963cd361c26f7ef058ec5",
        68_578,
    ),
    "qa18_size-reasoning": (
        "1c32d0545a8cf5a26777041873a2ba55",
        104_815,
        "a2af390670baf39c72e4052e5c15d083",
        103_626,
    ),
    "qa19_path-finding": (
        "42677eed7987c1ded046682743864687",
        247_496,
        "b317a287f6780b941bb876047418e6ca",
        247_449,
    ),
    "qa20_agents-motivations": (
        "e5114c487cb1cf559a69db30289ea4ab",
        67_892,
        "3238749cfa9731bcdb0c4d01114385bd",
        67_963,
    ),
}
_BABI = tuple(
    DataFile(f"{task}_{split}.txt", md5, size)
    for task, (train_md5, train_size, test_md5, test_size) in _BABI_TASKS.items()
    for split, md5, size in (("train", train_md5, train_size), ("test", test_md5, test_size))
)

CATALOGUE: dict[str, DatasetFiles] = {
    "mnist": DatasetFiles(
        name="mnist",
        folder="mnist",
        files=_MNIST,
        # The public S3 mirror of Y. LeCun's files that torchvision downloads from.
        base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        source="MNIST, Y. LeCun, C. Cortes, C. J. C. Burges (CC BY-SA 3.0)",
    ),
    "fashion-mnist": DatasetFiles(
        name="fashion-mnist",
        folder="fashion-mnist",
        files=_FASHION_MNIST,
        # Zalando Research's official S3 bucket (its website endpoint serves plain HTTP only;
        # the md5 check guards the content).
        base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        source="Fashion-MNIST, H. Xiao, K. Rasul, R. Vollgraf, Zalando Research (MIT)",
    ),
    "babi": DatasetFiles(
        name="babi",
        folder="babi/en",
        files=_BABI,
        # The official archive linked from the bAbI project page (research.fb.com/downloads/babi);
        # only its ``tasks_1-20_v1-2/en/`` files are kept.
        base_url="http://www.thespermwhale.com/jaseweston/babi/",
        source="bAbI QA tasks v1.2, Weston et al. 2015, Facebook AI Research (CC BY 3.0)",
        archive="tasks_1-20_v1-2.tar.gz",
        archive_folder="tasks_1-20_v1-2/en/",
    ),
}


def dataset_names() -> list[str]:
    """Names of the data sets whose files this package knows, sorted."""
    return sorted(CATALOGUE)


def dataset_files(name: str) -> DatasetFiles:
    """The catalogue entry of data set ``name``; raises :class:`UnknownNameError` if unknown."""
    try:
        return CATALOGUE[name]
    except KeyError:
        raise UnknownNameError("data set", name, dataset_names()) from None


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The data directory: ``data_dir`` if given, else ``$LIFELONG_DATA``, else a per-user cache.

    The per-user cache is ``$XDG_CACHE_HOME/lifelong`` when ``XDG_CACHE_HOME`` is set to an
    absolute path (as the XDG spec requires), else ``~/.cache/lifelong``. The directory is not
    created here.
    """
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    from_env = os.environ.get(DATA_DIR_ENV, "")
    if from_env:
        return Path(from_env).expanduser()
    return user_cache_dir()


def user_cache_dir() -> Path:
    """The per-user cache: ``$XDG_CACHE_HOME/lifelong`` (an absolute path), else
    ``~/.cache/lifelong``."""
    xdg_cache = os.environ.get("XDG_CACHE_HOME", "")
    if xdg_cache and Path(xdg_cache).is_absolute():
        return Path(xdg_cache) / "lifelong"
    return Path.home() / ".cache" / "lifelong"


def decoded_dir(name: str) -> Path:
    """Where decoded copies of data set ``name``'s compressed files are kept: the per-user cache
    (``~/.cache/lifelong/decoded/mnist``), whatever the data directory, which may be read-only or
    shared. The copies are named after the compressed files' md5, so one copy serves every data
    directory that holds the same files."""
    return user_cache_dir() / "decoded" / dataset_files(name).folder


def dataset_dir(name: str, data_dir: str | Path | None = None) -> Path:
    """The folder that holds data set ``name``'s files, e.g. ``DATA_DIR/babi/en``."""
    return resolve_data_dir(data_dir) / dataset_files(name).folder


def download_command(name: str, data_dir: Path) -> str:
    """The command line that fetches data set ``name`` into ``data_dir``."""
    return f"lifelong data download {name} --data-dir {data_dir}"


def file_md5(path: Path) -> str:
    """Hex md5 of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# Files already found valid in this process: resolved path -> (size, mtime_ns, md5).
_verified: dict[str, tuple[int, int, str]] = {}


def _stat_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def remember_verified(path: Path, md5: str) -> None:
    """Record that ``path``, as it is now on disk, has md5 ``md5`` (used after a download)."""
    key, size, mtime_ns = _stat_key(path)
    _verified[key] = (size, mtime_ns, md5)


def is_valid(path: Path, expected: DataFile) -> bool:
    """True if ``path`` exists with ``expected``'s size and md5 (cached per process)."""
    try:
        key, size, mtime_ns = _stat_key(path)
    except OSError:
        return False
    if size != expected.size:
        return False
    if _verified.get(key) == (size, mtime_ns, expected.md5):
        return True
    try:
        actual = file_md5(path)
    except OSError:
        return False
    if actual != expected.md5:
        return False
    _verified[key] = (size, mtime_ns, actual)
    return True


def _name_list(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


def require_files(name: str, data_dir: str | Path | None = None) -> dict[str, Path]:
    """Paths of data set ``name``'s files, keyed by file name, after checking each one.

    Raises :class:`DataError` naming the missing files (and the command that downloads them), or
    the first file whose size or md5 differs from the official release.
    """
    spec = dataset_files(name)
    root = resolve_data_dir(data_dir)
    folder = root / spec.folder
    paths = {f.name: folder / f.name for f in spec.files}
    missing = [file_name for file_name, path in paths.items() if not path.is_file()]
    if missing:
        raise DataError(
            f"{name}: {len(missing)} of {len(paths)} files missing in {folder} "
            f"({_name_list(missing)}); run `{download_command(name, root)}`"
        )
    for expected in spec.files:
        path = paths[expected.name]
        if not is_valid(path, expected):
            raise DataError(
                f"{name}: {path} does not match the official md5 {expected.md5} "
                f"({expected.size} bytes); it is corrupted or incomplete: delete it and run "
                f"`{download_command(name, root)}`"
            )
    return paths
