"""Data sources: each returns an :class:`ImageDataset` (or, for text, its own parsed form).

``load_image_dataset(name, data_dir)`` is the one entry point for image sources. ``digits`` is
embedded (installed with scikit-learn); ``mnist`` and ``fashion-mnist`` are read from a data
directory (``--data-dir``, else ``$LIFELONG_DATA``, else a per-user cache directory) and checked
against their official md5 checksums; ``lifelong data download NAME`` fetches them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from lifelong.data.base import ImageDataset
from lifelong.errors import UnknownNameError


@dataclass(frozen=True)
class ImageSource:
    name: str
    description: str
    load: Callable[[Path | None], ImageDataset]


def _digits(_: Path | None) -> ImageDataset:
    from lifelong.data.digits import load_digits_dataset

    return load_digits_dataset()


def _idx(name: str) -> Callable[[Path | None], ImageDataset]:
    def load(data_dir: Path | None) -> ImageDataset:
        from lifelong.data.idx import load_idx_dataset

        return load_idx_dataset(name, data_dir)

    return load


IMAGE_SOURCES: dict[str, ImageSource] = {
    s.name: s
    for s in (
        ImageSource(
            "digits", "scikit-learn handwritten digits, 8x8, 1797 images (embedded)", _digits
        ),
        ImageSource("mnist", "MNIST handwritten digits, 28x28, 60k/10k (IDX files)", _idx("mnist")),
        ImageSource(
            "fashion-mnist",
            "Zalando Fashion-MNIST, 28x28, 60k/10k (IDX files)",
            _idx("fashion-mnist"),
        ),
    )
}


@lru_cache(maxsize=4)
def _cached(name: str, data_dir: str | None) -> ImageDataset:
    return IMAGE_SOURCES[name].load(Path(data_dir) if data_dir else None)


def load_image_dataset(name: str, data_dir: str | Path | None = None) -> ImageDataset:
    """Load an image data set by name (cached per process; the tensors are never modified)."""
    if name not in IMAGE_SOURCES:
        raise UnknownNameError("image data set", name, list(IMAGE_SOURCES))
    return _cached(name, str(data_dir) if data_dir else None)


__all__ = ["IMAGE_SOURCES", "ImageDataset", "ImageSource", "load_image_dataset"]
