"""The report of a folder of runs (a sweep, a study's units), built from the results files alone.

:func:`build_summary_report` writes ``plots/summary.png`` (mean ± sample std over seeds of ACC,
BWT and forgetting per strategy and setting, as bars with error bars) and a self-contained
``report.html`` beside ``summary.json``: the table of every strategy and setting with n and
mean ± std, the figure, the chosen setting of every strategy with its validation score for each
study under the folder (the schema-2 ``results.json`` of ``lifelong run --seeds ...``, shown by
:func:`lifelong.report.study.study_section`), and links to every run's own report (or its
results.json when the run has no report).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from lifelong.report.html import _CSS, _e, _image, _json
from lifelong.report.plots import _new_figure, _plain, _strategy_colour, save_figure

SUMMARY_REPORT = "report.html"
SUMMARY_REPORT_BESIDE_A_RUN = "summary.html"
"""Name used when the folder is itself a run or study folder (its report.html is its own)."""

METRICS = (("acc", "ACC %", False), ("bwt", "BWT %", True), ("forgetting", "Forgetting %", False))


def group_label(group: Mapping[str, Any], varying: list[str]) -> str:
    """``ewc:lambda=100 (lr=0.1, stream=permuted)``: a strategy label with its varying setting."""
    setting = group.get("setting") or {}
    parts = [f"{k}={_value(setting.get(k))}" for k in varying]
    return group["strategy"] + (f" ({', '.join(parts)})" if parts else "")


def _value(value: Any) -> str:
    return value if isinstance(value, str) else _json_text(value)


def _json_text(value: Any) -> str:
    import json

    return json.dumps(value, default=str)


def summary_figure(summary: Mapping[str, Any]) -> Figure | None:
    """Horizontal bars of the mean over seeds with ± sample-std error bars, one panel per metric."""
    groups = summary.get("groups") or []
    if not groups:
        return None
    labels = [_plain(f"{group_label(g, summary.get('varying') or [])}, n={g['n']}") for g in groups]
    figure = _new_figure(11.0, 1.2 + 0.32 * len(groups))
    y = np.arange(len(groups))
    for column, (key, title, _) in enumerate(METRICS):
        axes = figure.add_subplot(1, len(METRICS), column + 1)
        stats = [g["metrics"].get(key) or {} for g in groups]
        means = [np.nan if s.get("mean") is None else 100 * s["mean"] for s in stats]
        stds = [0.0 if s.get("std") is None else 100 * s["std"] for s in stats]
        axes.barh(
            y,
            means,
            xerr=stds,
            color=[_strategy_colour(i) for i in range(len(groups))],
            error_kw={"elinewidth": 1, "capsize": 3},
        )
        axes.axvline(0.0, color="black", linewidth=0.8)
        axes.set_yticks(y, labels if column == 0 else [""] * len(groups), fontsize=7)
        axes.invert_yaxis()
        axes.grid(axis="x", alpha=0.3)
        axes.set_title(f"{title} (mean ± std)", fontsize=9)
        for i, mean in enumerate(means):
            if not np.isfinite(mean):
                axes.text(0, i, " n/a", va="center", fontsize=6)
    return figure


def _cell(stat: Mapping[str, Any] | None, signed: bool) -> str:
    if not stat or stat.get("mean") is None:
        return "n/a"
    text = f"{100 * stat['mean']:+.2f}" if signed else f"{100 * stat['mean']:.2f}"
    return text if stat.get("std") is None else f"{text} ± {100 * stat['std']:.2f}"


def _run_link(root: Path, run: str) -> str:
    folder = root / run
    target = "report.html" if (folder / "report.html").is_file() else "results.json"
    href = "/".join(p for p in (run, target) if p and p != ".")
    return f'<a href="{_e(href)}">{_e(run)}</a>'


def render_summary_html(summary: Mapping[str, Any], root: Path, figure: Path | None) -> str:
    """The page: one row per strategy and setting, the figure, studies' choices, every run."""
    varying = list(summary.get("varying") or [])
    groups = summary.get("groups") or []
    head = "".join(f"<th>{_e(k)}</th>" for k in varying)
    head += "<th>strategy</th><th>n</th><th>seeds</th>"
    head += "".join(f"<th>{_e(title)}</th>" for _, title, _ in METRICS)
    rows = []
    for g in groups:
        cells = "".join(f"<td>{_json((g.get('setting') or {}).get(k))}</td>" for k in varying)
        cells += f"<td>{_e(g['strategy'])}</td><td class='num'>{g['n']}</td>"
        cells += f"<td>{_e(', '.join(map(str, g.get('seeds') or [])))}</td>"
        cells += "".join(
            f"<td class='num'>{_e(_cell(g['metrics'].get(key), signed))}</td>"
            for key, _, signed in METRICS
        )
        rows.append(f"<tr>{cells}</tr>")
    table = (
        f"<table><tr>{head}</tr>{''.join(rows)}</table>" if rows else "<p>no complete results</p>"
    )
    runs = "".join(
        f"<li>{_e(group_label(g, varying))}: "
        + ", ".join(_run_link(root, run) for run in g.get("runs") or [])
        + "</li>"
        for g in groups
    )
    notes = ""
    if summary.get("incomplete"):
        items = "".join(f"<li>{_e(line)}</li>" for line in summary["incomplete"])
        notes = f'<div class="warning">Not included (did not finish):<ul>{items}</ul></div>'
    caption = (
        "Mean over seeds with ± one sample standard deviation (ddof = 1) as error bars; n is the "
        "number of seeds. Only complete results enter."
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lifelong summary: {_e(Path(str(summary.get("root", root))).name)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>lifelong summary: {_e(Path(str(summary.get("root", root))).name)}</h1>
<p class="meta">{len(groups)} strategy settings; settings that vary: {_e(", ".join(varying) or "none")}.
Built from the runs' results.json files (summary.json beside this page).</p>
<h2 id="summary">Mean ± std over seeds</h2>
{notes}
{table}
{_image(figure, "mean and std of the metrics per strategy and setting", caption)}
{_studies(root)}
<h2 id="runs">Runs</h2>
<ul>{runs}</ul>
</body>
</html>
"""


def _studies(root: Path) -> str:
    """Every study under ``root`` (schema-2 results.json): its chosen settings and candidates."""
    import json

    from lifelong.report.study import study_section

    parts = []
    for path in sorted(root.rglob("results.json")):
        try:
            results = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(results, dict) and results.get("schema") == 2:
            where = path.parent.relative_to(root).as_posix() if path.parent != root else "."
            section = study_section(results).replace("<h2", "<h3").replace("</h2>", "</h3>")
            parts.append(f"<p>Study in <code>{_e(where)}</code>:</p>{section}")
    if not parts:
        return ""
    return '<h2 id="chosen">Chosen settings (validation scores)</h2>\n' + "\n".join(parts)


def build_summary_report(summary: Mapping[str, Any], root: str | Path) -> Path:
    """Write ``plots/summary.png`` and the folder's report page into ``root``; return its path."""
    from lifelong.results import atomic_write_text

    root = Path(root)
    figure = summary_figure(summary)
    png = save_figure(figure, root / "plots" / "summary.png") if figure is not None else None
    own = (root / "results.json").exists()
    name = SUMMARY_REPORT_BESIDE_A_RUN if own else SUMMARY_REPORT
    path = root / name
    atomic_write_text(path, render_summary_html(summary, root, png))
    return path
