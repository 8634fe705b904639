"""A self-contained, offline HTML page for a run: inline CSS, PNGs as base64 data URIs, no scripts.

Every piece of text that comes from results.json (labels, names, config values, errors, extras)
passes through :func:`html.escape`, so a strategy label such as ``<script>`` shows as text.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lifelong.report.plots import PlotFiles, accuracy_array, rows_recorded
from lifelong.report.study import study_section
from lifelong.report.table import (
    METRIC_COLUMNS,
    UNDEFINED,
    not_applicable_notes,
    number_of_tasks,
    summary_rows,
    tasks_finished,
)

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
h3 { margin-bottom: 0.3em; }
.meta { color: #666; margin-top: 0; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; vertical-align: top; }
th { background: #f4f4f4; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.partial td { background: #fff6e5; } tr.failed td { background: #fdecec; }
.badge { display: inline-block; padding: 0.05em 0.5em; border-radius: 0.7em; font-size: 0.8em;
         font-weight: 600; color: #fff; vertical-align: middle; }
.badge.complete { background: #2e7d32; } .badge.partial { background: #e08a00; }
.badge.failed { background: #c62828; } .badge.unknown { background: #777; }
.warning { border-left: 5px solid #e08a00; background: #fff6e5; padding: 0.5em 1em; }
.warning.failed { border-left-color: #c62828; background: #fdecec; }
section.strategy.partial { border-left: 4px solid #e08a00; padding-left: 1em; }
section.strategy.failed { border-left: 4px solid #c62828; padding-left: 1em; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
img { max-width: 100%; height: auto; display: block; margin: 0.6em 0; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.9em; max-width: 800px; }
.formula { font-family: "Cambria Math", "STIX Two Math", serif; font-size: 1.08em;
           margin: 0.3em 0 0.3em 1.5em; }
.cite { color: #555; font-size: 0.9em; }
"""

_METRICS_HTML = """
<p>All metrics are computed from the accuracy matrix <var>R</var> of shape
(<var>T</var>+1)&nbsp;&times;&nbsp;<var>T</var>: <var>R</var><sub><var>i</var>,<var>j</var></sub>
is the test accuracy on task <var>j</var> after the model has learned tasks 1&hellip;<var>i</var>
(tasks numbered from 1); row <var>i</var>&nbsp;=&nbsp;0 is the untrained model, the vector
<var>b&#773;</var> of accuracies at random initialisation in the GEM paper. Accuracy metrics are
reported in percent; BWT and FWT in percentage points.</p>
<dl>
<dt><b>ACC</b> &mdash; average accuracy</dt>
<dd><div class="formula">ACC = (1/<var>T</var>)
&sum;<sub><var>j</var>=1</sub><sup><var>T</var></sup>
<var>R</var><sub><var>T</var>,<var>j</var></sub></div></dd>
<dt><b>BWT</b> &mdash; backward transfer (negative values mean forgetting)</dt>
<dd><div class="formula">BWT = 1/(<var>T</var>&minus;1)
&sum;<sub><var>j</var>=1</sub><sup><var>T</var>&minus;1</sup>
(<var>R</var><sub><var>T</var>,<var>j</var></sub> &minus;
<var>R</var><sub><var>j</var>,<var>j</var></sub>)</div></dd>
<dt><b>FWT</b> &mdash; forward transfer (accuracy on a task just before learning it, minus that of
the untrained model)</dt>
<dd><div class="formula">FWT = 1/(<var>T</var>&minus;1)
&sum;<sub><var>j</var>=2</sub><sup><var>T</var></sup>
(<var>R</var><sub><var>j</var>&minus;1,<var>j</var></sub> &minus;
<var>R</var><sub>0,<var>j</var></sub>)</div>
<p class="cite">ACC, BWT and FWT: D. Lopez-Paz and M. Ranzato, &ldquo;Gradient Episodic Memory for
Continual Learning&rdquo;, NIPS 2017 (arXiv:1706.08840), where
<var>R</var><sub>0,<var>j</var></sub> is written <var>b&#773;</var><sub><var>j</var></sub>.
BWT and FWT are undefined (&ldquo;&mdash;&rdquo;) when <var>T</var>&nbsp;=&nbsp;1.</p></dd>
<dt><b>Forgetting</b> &mdash; average forgetting</dt>
<dd><div class="formula"><var>f</var><sub><var>j</var></sub> =
max<sub><var>l</var>&isin;{1,&hellip;,<var>T</var>&minus;1}</sub>
<var>R</var><sub><var>l</var>,<var>j</var></sub> &minus;
<var>R</var><sub><var>T</var>,<var>j</var></sub>, &nbsp;&nbsp;
F = 1/(<var>T</var>&minus;1) &sum;<sub><var>j</var>=1</sub><sup><var>T</var>&minus;1</sup>
<var>f</var><sub><var>j</var></sub></div>
<p class="cite">A. Chaudhry, P. K. Dokania, T. Ajanthan and P. H. S. Torr, &ldquo;Riemannian Walk
for Incremental Learning: Understanding Forgetting and Intransigence&rdquo;, ECCV 2018
(arXiv:1801.10112): their forgetting measure at <var>k</var>&nbsp;=&nbsp;<var>T</var>.
Undefined when <var>T</var>&nbsp;=&nbsp;1.</p></dd>
<dt><b>LA</b> &mdash; learning accuracy</dt>
<dd><div class="formula">LA = (1/<var>T</var>) &sum;<sub><var>j</var>=1</sub><sup><var>T</var></sup>
<var>R</var><sub><var>j</var>,<var>j</var></sub></div>
<p class="cite">M. Riemer et al., &ldquo;Learning to Learn without Forgetting by Maximizing Transfer
and Minimizing Interference&rdquo;, ICLR 2019 (arXiv:1810.11910).</p></dd>
<dt><b>train s / eval s / peak MB</b></dt>
<dd>Wall-clock seconds spent training and evaluating, and the peak resident memory of the process
in MB while the strategy ran.</dd>
</dl>
"""


_COMPARISON_CAPTION = (
    "ACC, BWT, FWT and forgetting of every strategy in percent; hatched bars belong to strategies "
    "that did not finish, &ldquo;n/a&rdquo; marks undefined values."
)
_MATRICES_CAPTION = (
    "Accuracy on every task (columns) after learning each task (rows; the top row is the untrained "
    "model), all strategies on one colour scale; grey rows were never reached."
)
_PLASTICITY = (
    "Accuracy on the first tasks while the stream is learned, every strategy overlaid (the layout "
    "of Kirkpatrick et al. 2017, &ldquo;Overcoming catastrophic forgetting in neural "
    "networks&rdquo;, Fig.&nbsp;2A); dashed lines are task boundaries."
)
_FOOTPRINT_CAPTION = (
    "Everything each strategy keeps after each task, in bytes (log scale): the model, copies of "
    "models, anchors, importances, buffers of examples, generators, optimizer state."
)
_AVERAGE_CAPTION = (
    "Average accuracy over the tasks seen so far after each task; the band is ± one sample "
    "standard deviation over seeds (none for one seed)."
)


def _e(value: Any) -> str:
    """Escape any value for HTML text and attribute positions."""
    return html.escape(str(value), quote=True)


def _json(value: Any) -> str:
    """Compact JSON text of ``value`` (strings as-is), escaped for HTML."""
    if isinstance(value, str):
        return _e(value)
    return _e(json.dumps(value, ensure_ascii=False, default=str))


def _status_class(status: Any) -> str:
    return status if status in ("complete", "partial", "failed") else "unknown"


def _badge(status: Any) -> str:
    return f'<span class="badge {_status_class(status)}">{_e(status or "unknown")}</span>'


def _image(path: Path | None, alt: str, caption: str = "") -> str:
    """``<img>`` with the PNG at ``path`` embedded as a data URI (empty when ``path`` is None)."""
    if path is None:
        return ""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    image = f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'
    if not caption:
        return image
    return f"<figure>{image}<figcaption>{caption}</figcaption></figure>"


def _class_ranges(classes: Any) -> str:
    """``[0, 1, 2, 3, 7]`` as ``0–3, 7``; anything that is not a list of ints as JSON."""
    if not isinstance(classes, list) or not all(isinstance(c, int) for c in classes):
        return _json(classes)
    parts: list[str] = []
    values = sorted(set(classes))
    start = previous = None
    for value in [*values, None]:
        if start is not None and (value is None or value != previous + 1):
            parts.append(str(start) if start == previous else f"{start}–{previous}")
            start = None
        if value is not None and start is None:
            start = value
        previous = value
    return _e(", ".join(parts))


def _key_value_table(mapping: Mapping[str, Any]) -> str:
    if not mapping:
        return "<p>none</p>"
    rows = "".join(
        f"<tr><th>{_e(key)}</th><td>{_json(value)}</td></tr>" for key, value in mapping.items()
    )
    return f"<table>{rows}</table>"


def _summary_table(results: Mapping[str, Any]) -> str:
    headers = "".join(
        f'<th title="{_e(column.description)}">{_e(column.header)}</th>'
        for column in METRIC_COLUMNS
    )
    lines = []
    order = {str(label): i for i, label in enumerate(results.get("strategies") or {})}
    for row in summary_rows(results):  # unfinished strategies last, never ranked
        cells = "".join(f'<td class="num">{_e(cell)}</td>' for cell in row.cells)
        lines.append(
            f'<tr class="{_status_class(row.raw_status)}">'
            f'<td><a href="#strategy-{order.get(row.label, 0):02d}">{_e(row.label)}</a></td>'
            f"{cells}<td>{_badge(row.raw_status)} {_e(row.status.partition(' ')[2])}</td></tr>"
        )
    body = "".join(lines) or f'<tr><td colspan="{len(METRIC_COLUMNS) + 2}">no strategies</td></tr>'
    notes = "".join(f"<p>{_e(note)}</p>" for note in not_applicable_notes(results))
    return f"<table><tr><th>strategy</th>{headers}<th>status</th></tr>{body}</table>{notes}"


def _stream_section(results: Mapping[str, Any]) -> str:
    stream = results.get("stream") or {}
    tasks = stream.get("tasks") or []
    num_tasks = number_of_tasks(results)
    facts = [
        f"<b>{_e(stream.get('name', 'unknown'))}</b> stream",
        f"scenario <b>{_e(stream.get('scenario', 'unknown'))}</b>-incremental",
        f"data <b>{_e(stream.get('data', 'unknown'))}</b>",
        f"<b>{num_tasks}</b> task{'s' if num_tasks != 1 else ''}",
    ]
    rows = "".join(
        "<tr>"
        f'<td class="num">{_e(task.get("id", j))}</td><td>{_e(task.get("name", ""))}</td>'
        f"<td>{_class_ranges(task.get('classes'))}</td>"
        f'<td class="num">{_e(task.get("train_samples", UNDEFINED))}</td>'
        f'<td class="num">{_e(task.get("test_samples", UNDEFINED))}</td>'
        "</tr>"
        for j, task in enumerate(tasks)
    )
    table = (
        "<table><tr><th>id</th><th>name</th><th>classes</th><th>train samples</th>"
        f"<th>test samples</th></tr>{rows}</table>"
        if rows
        else ""
    )
    return f"<p>{', '.join(facts)}.</p>{table}"


def _matrix_table(entry: Mapping[str, Any], num_tasks: int) -> str:
    reached = rows_recorded(entry)
    if reached == 0:
        return ""
    matrix = accuracy_array(entry, num_tasks)[:reached]
    header = "".join(f"<th>task {j + 1}</th>" for j in range(num_tasks))
    rows = "".join(
        f"<tr><th>{'untrained' if i == 0 else f'after task {i}'}</th>"
        + "".join(
            f'<td class="num">{UNDEFINED if value != value else f"{100 * value:.2f}"}</td>'
            for value in matrix[i]
        )
        + "</tr>"
        for i in range(reached)
    )
    return (
        "<details><summary>accuracy matrix R in percent (rows: after each task)</summary>"
        f"<table><tr><th></th>{header}</tr>{rows}</table></details>"
    )


def _strategy_section(
    index: int, label: str, entry: Mapping[str, Any], num_tasks: int, plots: PlotFiles
) -> str:
    status = entry.get("status") or "unknown"
    css = _status_class(status)
    parts = [
        f'<section class="strategy {css}" id="strategy-{index:02d}">',
        f"<h3>{_e(label)} {_badge(status)}</h3>",
    ]
    if status != "complete":
        parts.append(
            f'<div class="warning {css}"><b>{_e(str(status).upper())}</b>: stopped after '
            f"{tasks_finished(entry)} of {num_tasks} tasks; later rows of R are missing.</div>"
        )
    if entry.get("error"):
        parts.append(f'<p><b>error:</b></p><pre class="error">{_e(entry["error"])}</pre>')
    info = {
        "strategy": entry.get("strategy"),
        "hyperparameters": entry.get("params") or {},
        "training": entry.get("train") or {},
        "tasks done": entry.get("tasks_done"),
    }
    if entry.get("parameters"):
        info["parameters after each task"] = entry["parameters"]
    parts.append(_key_value_table(info))
    if label in plots.accuracy_matrix:
        parts.append(_image(plots.accuracy_matrix[label], f"accuracy matrix of {label}"))
    if label in plots.task_accuracy:
        parts.append(_image(plots.task_accuracy[label], f"accuracy per task of {label}"))
    if rows_recorded(entry) == 0:
        parts.append("<p>No accuracy was recorded for this strategy.</p>")
    parts.append(_matrix_table(entry, num_tasks))
    extra = entry.get("extra") or {}
    parts.append("<p><b>extra</b> (strategy-specific facts):</p>")
    if extra:
        text = json.dumps(extra, indent=2, ensure_ascii=False, default=str)
        parts.append(f"<pre>{_e(text)}</pre>")
    else:
        parts.append("<p>none</p>")
    parts.append("</section>")
    return "\n".join(parts)


def render_html(results: Mapping[str, Any], plots: PlotFiles) -> str:
    """The whole report page for ``results`` (the results.json dict) with the PNGs in ``plots``."""
    stream = results.get("stream") or {}
    strategies = results.get("strategies") or {}
    num_tasks = number_of_tasks(results)
    name, data = stream.get("name", "unknown"), stream.get("data", "unknown")
    title = f"lifelong report: {name} stream on {data}"
    meta = (
        f"created {results.get('created', 'unknown')} by lifelong "
        f"{results.get('lifelong_version', 'unknown')}, results schema {results.get('schema', '?')}"
    )
    unfinished = [
        (index, label, entry)
        for index, (label, entry) in enumerate(strategies.items())
        if entry.get("status") != "complete"
    ]
    warning = ""
    if unfinished:
        items = "".join(
            f'<li><a href="#strategy-{index:02d}">{_e(label)}</a> {_badge(entry.get("status"))}'
            + (f" {_e(entry['error'])}" if entry.get("error") else "")
            + "</li>"
            for index, label, entry in unfinished
        )
        warning = f'<div class="warning">Not every strategy finished:<ul>{items}</ul></div>'
    figures = "\n".join(
        [
            _image(plots.comparison, "metrics of all strategies compared", _COMPARISON_CAPTION),
            _image(
                plots.accuracy_matrices, "accuracy matrices of all strategies", _MATRICES_CAPTION
            ),
            _image(plots.plasticity, "accuracy on the first tasks during training", _PLASTICITY),
            _image(plots.average_accuracy, "average accuracy so far", _AVERAGE_CAPTION),
            _image(plots.footprint, "footprint against tasks learned", _FOOTPRINT_CAPTION),
        ]
    )
    sections = "\n".join(
        _strategy_section(index, str(label), entry, num_tasks, plots)
        for index, (label, entry) in enumerate(strategies.items())
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{_e(title)}</h1>
<p class="meta">{_e(meta)}</p>
<nav><a href="#summary">Summary</a><a href="#stream">Stream</a><a href="#config">Configuration</a>
<a href="#metrics">Metrics</a><a href="#strategies">Strategies</a></nav>
{study_section(results)}
<h2 id="summary">Summary</h2>
{warning}
{_summary_table(results)}
{figures}
<h2 id="stream">Stream</h2>
{_stream_section(results)}
<h2 id="config">Configuration</h2>
{_key_value_table(results.get("config") or {})}
<h2 id="metrics">Metrics</h2>
{_METRICS_HTML}
<h2 id="strategies">Strategies</h2>
{sections}
</body>
</html>
"""
