"""The study section of a report (results.json schema 2, :mod:`lifelong.study`): mean ± sample
std over seeds per strategy with the chosen setting, and every candidate with its validation
score."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def study_section(results: Mapping[str, Any]) -> str:
    """HTML for a study's results (empty for a single run, schema 1)."""
    if results.get("schema") != 2:
        return ""
    from lifelong.study import TABLE, mean_std, values_text

    seeds = ", ".join(str(s) for s in results.get("seeds") or [])
    selection = results.get("selection") or {}
    head = "".join(f"<th>{_e(h)} (mean ± std)</th>" for _, h, _ in TABLE)
    rows = []
    for label, e in (results.get("strategies") or {}).items():
        cells = "".join(
            f'<td class="num">{_e(mean_std(e["mean"].get(k), e["std"].get(k), signed))}</td>'
            for k, _, signed in TABLE
        )
        val = e.get("validation_score")
        rows.append(
            f"<tr><td>{_e(label)}</td><td>{_e(values_text(e.get('chosen_values')))}</td>{cells}"
            f'<td class="num">{_e(mean_std(val, None) if val is not None else "—")}</td>'
            f'<td class="num">{_e(e.get("n"))}</td><td>{_e(e.get("status"))}</td></tr>'
        )
    table = (
        f"<table><tr><th>strategy</th><th>chosen</th>{head}<th>validation ACC %</th><th>n</th>"
        f"<th>status</th></tr>{''.join(rows)}</table>"
    )
    parts = [
        f"<p>A study over seeds {_e(seeds)}: mean ± sample standard deviation (ddof 1) over the "
        "seeds that finished (n); the per-seed results are in results.json.</p>",
        table,
    ]
    choices = [
        (label, e)
        for label, e in (results.get("strategies") or {}).items()
        if len(e.get("candidates") or []) > 1
    ]
    if choices:
        parts.append(f"<h3>Candidates</h3><p>Chosen: {_e(selection.get('criterion', ''))}.</p>")
        for label, e in choices:
            lines = "".join(
                f"<tr><td>{'&#10003;' if c.get('chosen') else ''}</td>"
                f"<td>{_e(values_text(c.get('values')))}</td>"
                f'<td class="num">{_e(mean_std(c.get("validation_score"), c.get("validation_std")))}</td>'
                f'<td class="num">{_e(c.get("n"))}</td><td>{_e(c.get("status"))}</td></tr>'
                for c in e["candidates"]
            )
            parts.append(
                f"<p><b>{_e(label)}</b></p><table><tr><th>chosen</th><th>setting</th>"
                f"<th>validation ACC % (mean ± std)</th><th>n</th><th>status</th></tr>{lines}"
                "</table>"
            )
    return '<h2 id="study">Study: seeds and chosen settings</h2>\n' + "\n".join(parts)
