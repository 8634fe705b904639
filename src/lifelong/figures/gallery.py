"""The gallery page: every figure with what the lecture says and what our run measured.

One self-contained HTML file (inline CSS, PNGs as data URIs, no scripts), like a run's report.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from lifelong.report.html import _CSS, _e, _image
from lifelong.results import atomic_write_text

if TYPE_CHECKING:
    from lifelong.figures import Made


def render_gallery(made: Mapping[str, Made | str]) -> str:
    """The page's HTML: per figure its title, picture and caption, or the reason it is missing."""
    from lifelong.figures import FIGURES

    sections, links = [], []
    for name, result in made.items():
        entry = FIGURES[name]
        links.append(f'<a href="#{_e(name)}">{_e(name)}</a>')
        if isinstance(result, str):
            body = f'<p class="warning">not drawn here: {_e(result)}</p>'
        else:
            caption = (
                f"<b>The lecture:</b> {_e(entry.lecture)}<br><b>Our run:</b> {_e(result.measured)}"
            )
            body = _image(result.png, f"{name}: {entry.title}", caption)
        sections.append(
            f'<section id="{_e(name)}"><h2>{_e(entry.title)} '
            f"<small>(<code>lifelong figure {_e(name)}</code>)</small></h2>{body}</section>"
        )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<title>lifelong: the lecture's figures</title>"
        f"<style>{_CSS}</style></head><body>"
        "<h1>The lecture's figures</h1>"
        "<p class='meta'>Each picture is computed by the library's own code (training runs, "
        "strategies, GEM's quadratic program, the metric functions); nothing is drawn by hand. "
        "Remake them with <code>lifelong figure all --out DIR</code>.</p>"
        f"<nav>{' '.join(links)}</nav>{''.join(sections)}</body></html>"
    )


def write_gallery(path: Path, made: Mapping[str, Made | str]) -> Path:
    """Write the gallery page atomically; returns ``path``."""
    atomic_write_text(path, render_gallery(made))
    return path
