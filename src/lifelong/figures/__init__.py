"""The lecture's figures, each computed by the library's own code (``lifelong figure NAME``).

Every figure is registered in :data:`FIGURES` with what the lecture says about it; its ``make``
function runs what the picture needs (a training run, a projection, a loss surface), draws it,
and returns a :class:`Made` with the PNG and one sentence on what our run measured.
:func:`make_all` writes every figure and a self-contained gallery page, ``index.html``.

* ``forgetting``: the lecture's first example (a task forgotten once the next one is learned).
* ``landscape``: why it happens: two tasks' loss surfaces; SGD, L2 and EWC paths.
* ``plasticity``: SGD vs L2 vs EWC on tasks A, B, C (Kirkpatrick et al. 2017, Fig. 2A).
* ``gem``: GEM's projected gradient g′ and A-GEM's, against the old tasks' gradients.
* ``evaluation``: the accuracy matrix with the cells ACC, BWT and FWT read.
* ``qa``: the 20 bAbI tasks, sequential vs multitask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lifelong.errors import LifelongError
from lifelong.figures.plasticity import plasticity


@dataclass(frozen=True)
class FigureOptions:
    """Settings a figure may use (each uses the ones that apply to it).

    Attributes:
        seed: seeds every run and data draw.
        data, data_dir: the image data of ``plasticity``; ``data_dir`` is also where ``qa``
            looks for bAbI.
        results: a run folder (or results.json) to draw ``qa`` from instead of running.
    """

    seed: int = 0
    data: str = "digits"
    data_dir: str | None = None
    results: str | None = None


@dataclass
class Made:
    """A figure written: its PNG and what our run measured (one or two sentences)."""

    name: str
    png: Path
    measured: str


@dataclass(frozen=True)
class FigureEntry:
    name: str
    title: str
    lecture: str
    make: Callable[[Path, FigureOptions], Made]


FIGURES: dict[str, FigureEntry] = {}


def register_figure(name: str, title: str, lecture: str):
    """Register ``make(out_dir, options) -> Made`` under ``name``."""

    def decorate(make: Callable[[Path, FigureOptions], Made]):
        FIGURES[name] = FigureEntry(name, title, lecture, make)
        return make

    return decorate


def make_figure(name: str, out: str | Path, options: FigureOptions | None = None) -> Made:
    """Make one registered figure into ``out``."""
    from lifelong.errors import UnknownNameError

    if name not in FIGURES:
        raise UnknownNameError("figure", name, [*FIGURES, "all"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return FIGURES[name].make(out, options or FigureOptions())


def make_all(
    out: str | Path,
    options: FigureOptions | None = None,
    on_figure: Callable[[str, Made | None, str | None], None] | None = None,
) -> Path:
    """Make every figure into ``out`` and write ``out/index.html``; returns its path.

    A figure that cannot be made here (bAbI files missing for ``qa``, say) is listed in the
    gallery with the one-line reason instead of its picture; the others are still made.
    ``on_figure(name, made, reason)`` is called after each one.
    """
    from lifelong.figures.gallery import write_gallery

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    made: dict[str, Made | str] = {}
    for name in FIGURES:
        try:
            result: Made | str = make_figure(name, out, options)
        except LifelongError as err:
            result = str(err)
        made[name] = result
        if on_figure is not None:
            if isinstance(result, Made):
                on_figure(name, result, None)
            else:
                on_figure(name, None, result)
    return write_gallery(out / "index.html", made)


# The figures register themselves in the lecture's order.
from lifelong.figures import catalogue  # noqa: E402, F401

__all__ = [
    "FIGURES",
    "FigureOptions",
    "Made",
    "make_all",
    "make_figure",
    "plasticity",
    "register_figure",
]
