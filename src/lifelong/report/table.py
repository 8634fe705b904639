"""The summary table of a run: one row per strategy, as fixed-width text or as cells for HTML.

Accuracy-type metrics (ACC, BWT, FWT, forgetting, learning accuracy) are shown in percent with two
decimals; BWT and FWT carry an explicit sign because their sign is the point. Times are seconds,
memory is the peak resident set in MB. Values that are undefined (``null`` in results.json, e.g.
BWT when the stream has one task) print as an em dash.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

UNDEFINED = "—"
"""What the table shows for a value that is null or missing in results.json."""

NOT_APPLICABLE = "n/a"
"""What the table shows for a metric undefined or true by construction for a strategy (the
reason is in results.json ``not_applicable`` and in a note under the table)."""


def _percent(value: Any) -> str:
    return f"{100.0 * float(value):.2f}"


def _signed_percent(value: Any) -> str:
    return f"{100.0 * float(value):+.2f}"


def _seconds(value: Any) -> str:
    return f"{float(value):.2f}"


def _megabytes(value: Any) -> str:
    return f"{float(value):.1f}"


def _count(value: Any) -> str:
    return f"{int(value)}"


def format_bytes(value: Any) -> str:
    """``0``, ``512 B``, ``37.6 kB``, ``1.2 MB``, ``3.4 GB`` (decimal units)."""
    number = float(value)
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(number) >= size:
            return f"{number / size:.1f} {unit}"
    return "0" if number == 0 else f"{number:.0f} B"


@dataclass(frozen=True)
class Column:
    """One numeric column of the summary: results.json key, header, formatter and description."""

    key: str
    header: str
    format: Callable[[Any], str]
    description: str


METRIC_COLUMNS: tuple[Column, ...] = (
    Column("acc", "ACC %", _percent, "average accuracy after the last task"),
    Column("bwt", "BWT %", _signed_percent, "backward transfer (negative = forgetting)"),
    Column("fwt", "FWT %", _signed_percent, "forward transfer (zero-shot gain over untrained)"),
    Column("forgetting", "Forget %", _percent, "average forgetting (Chaudhry et al. 2018)"),
    Column("learning_accuracy", "LA %", _percent, "accuracy on each task just after learning it"),
    Column("train_seconds", "train s", _seconds, "wall-clock training time"),
    Column("eval_seconds", "eval s", _seconds, "wall-clock evaluation time"),
    Column("peak_rss_mb", "peak MB", _megabytes, "peak resident memory of the process"),
    Column("examples", "examples", _count, "real training examples kept after the last task"),
    Column(
        "extra_bytes",
        "extra",
        format_bytes,
        "memory kept beyond the model as built (model copies, anchors, importances, buffers, "
        "generators, added columns)",
    ),
)


def format_value(column: Column, value: Any) -> str:
    """Format one value of ``column``; ``None`` (undefined) becomes :data:`UNDEFINED`."""
    if value is None:
        return UNDEFINED
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number):
        return "nan"
    return column.format(number)


def printable(text: Any) -> str:
    """``str(text)`` with line breaks and other control characters replaced by spaces."""
    return "".join(ch if ch.isprintable() else " " for ch in str(text))


def number_of_tasks(results: Mapping[str, Any]) -> int:
    """T: the stream's task count, or else the widest accuracy-matrix row of any strategy."""
    tasks = (results.get("stream") or {}).get("tasks")
    if tasks:
        return len(tasks)
    widths = [
        len(row)
        for entry in (results.get("strategies") or {}).values()
        for row in (entry.get("accuracy_matrix") or [])
    ]
    return max(widths, default=0)


def status_text(entry: Mapping[str, Any], num_tasks: int) -> str:
    """``complete``, or ``failed: ACC over 1/5 tasks`` (partial, failed): the metrics of an
    unfinished strategy cover only the tasks it learned."""
    status = printable(entry.get("status") or "unknown")
    if status == "complete":
        return status
    return f"{status}: ACC over {tasks_finished(entry)}/{num_tasks} tasks"


def finished(entry: Mapping[str, Any]) -> bool:
    """Whether a strategy learned the whole stream (only those are ranked and compared)."""
    return entry.get("status") == "complete"


def not_applicable_notes(results: Mapping[str, Any]) -> list[str]:
    """One line per reason a metric is n/a, naming the strategies and metrics it applies to."""
    by_reason: dict[str, list[str]] = {}
    for label, entry in (results.get("strategies") or {}).items():
        for key, reason in (entry.get("not_applicable") or {}).items():
            by_reason.setdefault(str(reason), []).append(f"{label} {key.upper()}")
    return [f"n/a ({', '.join(where)}): {reason}" for reason, where in by_reason.items()]


def tasks_finished(entry: Mapping[str, Any]) -> int:
    """``tasks_done`` of a strategy, or else the number of accuracy-matrix rows after row 0."""
    done = entry.get("tasks_done")
    if done is None:
        return max(len(entry.get("accuracy_matrix") or []) - 1, 0)
    return int(done)


@dataclass(frozen=True)
class SummaryRow:
    """The formatted cells of one strategy: label, one cell per metric column, status."""

    label: str
    cells: tuple[str, ...]
    status: str
    raw_status: str


def summary_rows(results: Mapping[str, Any]) -> list[SummaryRow]:
    """One :class:`SummaryRow` per strategy: the finished ones in the order of results.json,
    then the unfinished ones (never ranked with them)."""
    num_tasks = number_of_tasks(results)
    rows = []
    entries = list((results.get("strategies") or {}).items())
    entries.sort(key=lambda item: not finished(item[1]))
    for label, entry in entries:
        na = entry.get("not_applicable") or {}
        cells = tuple(
            NOT_APPLICABLE if column.key in na else format_value(column, entry.get(column.key))
            for column in METRIC_COLUMNS
        )
        rows.append(
            SummaryRow(
                label=str(label),
                cells=cells,
                status=status_text(entry, num_tasks),
                raw_status=str(entry.get("status") or "unknown"),
            )
        )
    return rows


def format_table(results: Mapping[str, Any]) -> str:
    """A fixed-width text table of ``results`` (the dict of results.json), one line per strategy.

    Columns: strategy label, ACC, BWT, FWT, forgetting, learning accuracy (all in percent),
    training and evaluation seconds, peak memory in MB, and status. Undefined values print "—".
    """
    headers = ("strategy", *(column.header for column in METRIC_COLUMNS), "status")
    rows = summary_rows(results)
    body = [(printable(row.label), *row.cells, row.status) for row in rows]
    widths = [max(len(line[i]) for line in [headers, *body]) for i in range(len(headers))]

    def render(line: tuple[str, ...]) -> str:
        label, *numbers, status = line
        parts = [label.ljust(widths[0])]
        parts += [cell.rjust(width) for cell, width in zip(numbers, widths[1:-1], strict=True)]
        parts.append(status.ljust(widths[-1]))
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths)
    lines = [render(headers), rule]
    for index, (row, line) in enumerate(zip(rows, body, strict=True)):
        if row.raw_status != "complete" and (
            index == 0 or rows[index - 1].raw_status == "complete"
        ):
            lines.append("not finished (metrics over the tasks learned; not ranked with the rest):")
        lines.append(render(line))
    if not body:
        lines.append("(no strategies in results)")
    lines += not_applicable_notes(results)
    return "\n".join(lines)
