"""``lifelong demo``: the lecture's story on the embedded digits, in under a minute.

1. Noisy then clean digits (2 tasks, the lecture's first example): two similar tasks.
2. Five permuted-digit tasks: fine-tuning forgets each task as the next is learned (negative BWT),
   while the joint (multitask) model trained on all five at once masters them.

The numbers printed are measured, never assumed: on the small digits, clean images interfere
little with noisy ones, and the permuted stream shows catastrophic forgetting plainly.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from lifelong.callbacks import Callback
from lifelong.config import RunConfig, StrategySpec
from lifelong.experiment import run_experiment
from lifelong.report import build_report, format_table
from lifelong.results import atomic_write_text

DEMO_TRAINING = {"epochs": 3, "batch_size": 10, "lr": 0.05, "hidden": (100, 100), "eval_every": 50}
DEMO_RUNS = {
    "noisy": {"stream": "noisy", "tasks": 2},
    "permuted": {"stream": "permuted", "tasks": 5},
}


def run_demo(out: Path, callbacks: Sequence[Callback] = (), seed: int = 0) -> Path:
    """Run both parts into ``out/noisy`` and ``out/permuted``; write ``out/report.html``."""
    sections = []
    for name, settings in DEMO_RUNS.items():
        config = RunConfig(
            data="digits",
            seed=seed,
            strategies=(StrategySpec("finetune", "finetune"), StrategySpec("joint", "joint")),
            **DEMO_TRAINING,
            **settings,
        )
        run_dir = out / name
        # the demo's own folder, rebuilt on every call
        results = run_experiment(config, run_dir, overwrite=True, callbacks=callbacks).to_dict()
        table = format_table(results)
        fine, joint = results["strategies"]["finetune"], results["strategies"]["joint"]
        summary = (
            f"finetune: ACC {fine['acc']:.1%}, BWT {fine['bwt']:+.1%} (change on earlier tasks "
            f"after learning later ones); joint: ACC {joint['acc']:.1%}"
        )
        print(f"\n{name} digits ({settings['tasks']} tasks): {summary}\n{table}")
        report = build_report(run_dir)
        sections.append(
            f"<h2>{html.escape(name)} digits</h2><p>{html.escape(summary)}</p>"
            f"<pre>{html.escape(table)}</pre>"
            f'<p><a href="{html.escape(str(report.relative_to(out)))}">full report</a></p>'
        )
    index = out / "report.html"
    atomic_write_text(
        index,
        "<!doctype html><meta charset='utf-8'><title>lifelong demo</title>"
        "<body style='font-family:sans-serif;max-width:60em;margin:auto'>"
        "<h1>Catastrophic forgetting on digits</h1>"
        "<p>Fine-tuning learns the tasks one after another; the joint (multitask) model is "
        "trained on all tasks at once. BWT below zero is accuracy lost on earlier tasks.</p>"
        + "".join(sections)
        + "</body>",
    )
    return out
