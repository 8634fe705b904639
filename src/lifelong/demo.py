"""``lifelong demo``: the lecture's story on the embedded digits, in under a minute.

Three stories, each measured here and never assumed:

1. The lecture's first example (:mod:`lifelong.figures.forgetting`): a network learns task 1
   (digits with a random quarter of each image hidden), then task 2 (the clean digits), and
   forgets task 1, while the same network trained on both at once keeps both. Five seeds; mean ±
   standard deviation beside the lecture's numbers. (Gaussian noise, the lecture's corruption,
   shows no forgetting on the 8x8 digits; benchmarks/RESULTS.md has the measurements.)
2. Five permuted-digit tasks: fine-tuning forgets each task as the next is learned (negative
   BWT), while the joint (multitask) model trained on all five at once masters them.
3. SGD vs L2 vs EWC on three permuted tasks (the lecture's plasticity figure, Kirkpatrick et al.
   2017, Fig. 2A).

``out/report.html`` opens with the three stories, one sentence and one picture each.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

from lifelong.callbacks import Callback
from lifelong.config import RunConfig, StrategySpec
from lifelong.experiment import run_experiment
from lifelong.figures import forgetting
from lifelong.figures.plasticity import plasticity
from lifelong.report import build_report, format_table, read_results
from lifelong.report.html import _CSS, _image
from lifelong.report.plots import accuracy_matrices_figure, save_figure
from lifelong.results import atomic_write_text

PERMUTED = {
    "stream": "permuted",
    "tasks": 5,
    "epochs": 3,
    "batch_size": 10,
    "lr": 0.05,
    "hidden": (100, 100),
    "eval_every": 50,
}
"""Story 2: five permuted-digit tasks."""


def _first_example(out: Path, seed: int) -> tuple[str, Path, str]:
    seeds = [seed + k for k in range(len(forgetting.SEEDS))]
    data = forgetting.run_first_example(out / "first-example", seeds=seeds)
    picture = forgetting.draw(data, out / "first-example" / "forgetting.png")
    atomic_write_text(
        out / "first-example" / "summary.json", json.dumps(data.to_dict(), indent=1) + "\n"
    )
    header = ("", "ours: task 1", "ours: task 2", "lecture: task 1", "lecture: task 2")
    rows = [header, *forgetting.table_rows(data)]
    widths = [max(len(r[k]) for r in rows) for k in range(len(header))]
    table = "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
    bwt, bwt_std = data.mean_std(data.bwt)
    fine, fine_std = data.mean_std(data.acc["finetune"])
    joint, joint_std = data.mean_std(data.acc["joint"])
    table += (
        f"\nfine-tuning: BWT {100 * bwt:+.1f} ± {100 * bwt_std:.1f} points, ACC "
        f"{100 * fine:.1f} ± {100 * fine_std:.1f} %; joint: ACC {100 * joint:.1f} ± "
        f"{100 * joint_std:.1f} % (mean ± sample std over seeds {', '.join(map(str, seeds))})"
        f"\nagain, as one study: {forgetting.command(seeds)}"
    )
    sentence = (
        "Learning a second task makes a network forget the first: "
        + forgetting.summary_line(data)
        + "."
    )
    return sentence, picture, table


def _permuted(out: Path, seed: int, callbacks: Sequence[Callback]) -> tuple[str, Path, str, Path]:
    config = RunConfig(
        data="digits",
        seed=seed,
        strategies=(StrategySpec("finetune", "finetune"), StrategySpec("joint", "joint")),
        **PERMUTED,
    )
    run_dir = out / "permuted"
    # the demo's own folder, rebuilt on every call
    results = run_experiment(config, run_dir, overwrite=True, callbacks=callbacks).to_dict()
    report = build_report(run_dir)
    figure = accuracy_matrices_figure(results)
    picture = save_figure(figure, run_dir / "story.png")
    fine, joint = results["strategies"]["finetune"], results["strategies"]["joint"]
    sentence = (
        f"Fine-tuning through five permuted-digit tasks forgets each task as the next is learned "
        f"(BWT {100 * fine['bwt']:+.1f} points, ACC {100 * fine['acc']:.1f} %), while the joint "
        f"model trained on all five at once keeps them (ACC {100 * joint['acc']:.1f} %)."
    )
    return sentence, picture, format_table(results), report


def _plasticity(out: Path, seed: int) -> tuple[str, Path, Path]:
    folder = out / "plasticity"
    picture = plasticity(folder, seed=seed)
    results = read_results(folder)
    final = {label: entry["accuracy_matrix"][-1] for label, entry in results["strategies"].items()}
    sgd, l2, ewc = final.values()
    sentence = (
        "Protecting the old weights: after tasks A, B and C, plain SGD keeps task A at "
        f"{100 * sgd[0]:.0f} %; an L2 pull to the old weights keeps A at {100 * l2[0]:.0f} % but "
        f"learns C only to {100 * l2[2]:.0f} %; EWC keeps A at {100 * ewc[0]:.0f} % and learns C "
        f"to {100 * ewc[2]:.0f} % (SGD: {100 * sgd[2]:.0f} %)."
    )
    return sentence, picture, folder / "report.html"


def run_demo(out: Path, callbacks: Sequence[Callback] = (), seed: int = 0) -> Path:
    """Run the three stories into ``out`` and write ``out/report.html``; returns ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    first_sentence, first_picture, first_table = _first_example(out, seed)
    print(f"\n1. The lecture's first example\n{first_sentence}\n{first_table}\n")
    perm_sentence, perm_picture, perm_table, perm_report = _permuted(out, seed, callbacks)
    print(f"\n2. Five permuted-digit tasks\n{perm_sentence}\n{perm_table}\n")
    plas_sentence, plas_picture, plas_report = _plasticity(out, seed)
    print(f"\n3. SGD, L2 and EWC on three tasks\n{plas_sentence}\n")
    stories = [
        ("1. The lecture's first example", first_sentence, first_picture),
        ("2. A stream of five tasks", perm_sentence, perm_picture),
        ("3. SGD, L2 and EWC", plas_sentence, plas_picture),
    ]
    esc = html.escape
    body = "".join(
        f"<section><h2>{esc(title)}</h2><p>{esc(sentence)}</p>{_image(picture, title)}</section>"
        for title, sentence, picture in stories
    )
    details = (
        "<h2>Details</h2>"
        "<h3>1. First example: ours (mean ± std over seeds) beside the lecture's</h3>"
        f"<pre>{esc(first_table)}</pre>"
        "<p>Task 1 hides a random 4x4 square (a quarter) of every 8x8 image; task 2 is the clean "
        "images. Gaussian noise, the lecture's corruption, does not make the 8x8 digits forget "
        "(see benchmarks/RESULTS.md); the occlusion does. The study (one run folder per strategy "
        'and seed): <a href="first-example/results.json">first-example/results.json</a>.</p>'
        f"<h3>2. Permuted digits</h3><pre>{esc(perm_table)}</pre>"
        f'<p><a href="{esc(str(perm_report.relative_to(out)))}">full report</a></p>'
        f'<h3>3. SGD, L2, EWC</h3><p><a href="{esc(str(plas_report.relative_to(out)))}">'
        "full report</a></p>"
    )
    atomic_write_text(
        out / "report.html",
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>lifelong demo</title><style>{_CSS}</style></head><body>"
        "<h1>The lecture's story, measured on the embedded digits</h1>"
        + body
        + details
        + "</body></html>",
    )
    return out
