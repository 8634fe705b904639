"""``lifelong show NAME``: a strategy's, stream's or model's settings, read from the code itself.

Everything printed comes from the class signature (names, types, defaults) and the docstrings
(paper, one-line meaning of each setting from the ``Args:`` or ``Options:`` section), so the
listing cannot drift from what the code accepts.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any

from lifelong.errors import UnknownNameError


@dataclass(frozen=True)
class Setting:
    """One hyperparameter: command-line name, type, default and the first sentence of its doc."""

    name: str
    type: str
    default: str
    meaning: str


def doc_sections(doc: str | None) -> dict[str, dict[str, str]]:
    """Google-style sections of a docstring: ``{"Args": {"name": "text ..."}, ...}``.

    An entry starts at the section's indentation with ``name:`` or ``name (...):`` and runs over
    its more deeply indented continuation lines."""
    sections: dict[str, dict[str, str]] = {}
    lines = inspect.cleandoc(doc or "").splitlines()
    current: dict[str, str] | None = None
    indent, key = 0, ""
    for line in lines:
        stripped = line.strip()
        header = re.fullmatch(r"([A-Z][A-Za-z ]*):", stripped)
        if header and not line.startswith(" "):
            current = sections.setdefault(header.group(1), {})
            indent, key = -1, ""
            continue
        if current is None:
            continue
        if not stripped:
            key = ""
            continue
        if not line.startswith(" "):
            current = None
            continue
        width = len(line) - len(line.lstrip())
        if indent < 0:
            indent = width
        entry = re.match(r"([\w, *]+?)(\s*\((.*)\))?:\s(.*)", stripped)
        if width == indent and entry:
            key = entry.group(1)
            head = f"({entry.group(3)}) " if entry.group(3) else ""
            current[key] = head + entry.group(4)
        elif key:
            current[key] += " " + stripped
    return sections


def first_sentence(text: str) -> str:
    """Up to the first full stop followed by a space (``e.g.``, ``et al.`` excepted)."""
    text = " ".join(text.split())
    for match in re.finditer(r"\.(\s|$)", text):
        before = text[: match.start()]
        if not re.search(r"(e\.g|i\.e|et al|etc|eq|Eq|vs|cf)$", before):
            return before + "."
    return text


def _args_docs(cls: type) -> dict[str, str]:
    """``Args:`` entries of the class and its bases (the nearest definition wins); an entry
    written for several names (``alpha, beta: ...``) applies to each."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        for key, text in doc_sections(klass.__doc__).get("Args", {}).items():
            for name in key.split(","):
                out[name.strip()] = text
    return out


def _type_name(annotation: Any, default: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return type(default).__name__ if default is not inspect.Parameter.empty else "any"
    return (
        annotation
        if isinstance(annotation, str)
        else getattr(annotation, "__name__", str(annotation))
    )


def strategy_settings(cls: type) -> list[Setting]:
    """Every hyperparameter of a strategy class, from its ``__init__`` and docstrings."""
    docs = _args_docs(cls)
    rows = []
    for cli_name, p in cls.hyperparameters().items():
        text = docs.get(p.name) or docs.get(cli_name) or ""
        default = "required" if p.default is inspect.Parameter.empty else repr(p.default)
        rows.append(
            Setting(cli_name, _type_name(p.annotation, p.default), default, first_sentence(text))
        )
    return rows


def paper(doc: str | None) -> str:
    """The docstring's first paragraph (where each class names its paper)."""
    return " ".join(inspect.cleandoc(doc or "").split("\n\n")[0].split())


def _table(rows: list[Setting]) -> list[str]:
    if not rows:
        return ["  (no settings)"]
    head = ("setting", "type", "default", "meaning")
    cells = [head, *((r.name, r.type, r.default, r.meaning) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(3)]
    return ["  " + "  ".join(c[i].ljust(widths[i]) for i in range(3)) + "  " + c[3] for c in cells]


def show_strategy(name: str) -> str:
    from lifelong.strategies import STRATEGIES
    from lifelong.train import TRAIN_KEYS

    cls = STRATEGIES[name]
    lines = [
        f"strategy {name} ({cls.family}): {cls.description}",
        f"paper: {paper(cls.__doc__)}",
        f"scenarios: {', '.join(cls.scenarios)}",
        f"usage: --strategy {name}:key=value,...",
        "",
        *_table(strategy_settings(cls)),
        "",
        "training settings overridable per strategy: " + ", ".join(TRAIN_KEYS)
        + ", optimizer.KEY, scheduler.KEY",
    ]  # fmt: skip
    return "\n".join(lines)


def show_stream(name: str) -> str:
    from lifelong.streams import STREAMS

    entry = STREAMS[name]
    rows = []
    for key, text in doc_sections(entry.build.__doc__).get("Options", {}).items():
        m = re.match(r"\((.*?)(?:, default:? (.*))?\) (.*)", text)
        kind, default, meaning = (m.group(1), m.group(2) or "", m.group(3)) if m else ("", "", text)
        rows.append(Setting(key, kind, default, first_sentence(meaning)))
    lines = [
        f"stream {name}: {entry.description}",
        f"paper: {paper(entry.build.__doc__)}",
        f"data: {', '.join(entry.data)}; default {entry.tasks} tasks, {entry.scenario} scenario",
        f"usage: --stream {name}:key=value,...",
        "",
        *_table(rows),
    ]
    return "\n".join(lines)


def show_model(name: str) -> str:
    from lifelong.models import MODELS

    entry = MODELS[name]
    lines = [
        f"model {name}: {entry.description}",
        f"inputs: {', '.join(entry.input_kinds)}",
        f"usage: --model {name} --hidden WIDTH [WIDTH ...]",
    ]
    if entry.build.__doc__:
        lines.append(f"paper: {paper(entry.build.__doc__)}")
    return "\n".join(lines)


def show(name: str) -> str:
    """The description of a registered strategy, stream or model (looked up in that order)."""
    from lifelong.models import MODELS
    from lifelong.strategies import STRATEGIES
    from lifelong.streams import STREAMS

    parts = []
    if name in STRATEGIES:
        parts.append(show_strategy(name))
    if name in STREAMS:
        parts.append(show_stream(name))
    if name in MODELS:
        parts.append(show_model(name))
    if not parts:
        raise UnknownNameError("strategy, stream or model", name, [*STRATEGIES, *STREAMS, *MODELS])
    return "\n\n".join(parts)
