"""Every strategy in the three scenarios, in the layout of van de Ven & Tolias (2019), Table 2.

Each setting is one ``lifelong run`` study: 5 seeds, every strategy, hyperparameter candidates
chosen on a 10% validation split of the training data (never on test data). The table gives
ACC and BWT (mean ± sample std over the seeds, percent) and the chosen values per strategy.

    python benchmarks/table2.py run digits-task       # runs (or resumes) one setting's study
    python benchmarks/table2.py commands              # the lifelong command of every setting
    python benchmarks/table2.py table                 # markdown from benchmarks/out/table2/*

Outputs go to ``benchmarks/out/table2/<setting>/`` (not committed); ``run`` resumes a study that
was cut off. MNIST settings need ``$LIFELONG_SHARED_DATA`` (or ``$LIFELONG_DATA``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from common import OUT_DIR, data_dir

SEEDS = ("0", "1", "2", "3", "4")
VALIDATION = "0.1"

# MNIST is reduced to 2000 training images (of which 10% validation) and 1000 test images per
# task so that every setting fits one core of the 2-core machine; the table says so at its rows.
MNIST_SIZE = ["--train-samples", "2000", "--test-samples", "1000"]

# (setting name, data, stream, scenario, extra flags)
SETTINGS: dict[str, tuple[str, str, str, list[str]]] = {
    "digits-task": ("digits", "split", "task", []),
    "digits-domain": ("digits", "split", "domain", []),
    "digits-class": ("digits", "split", "class", []),
    "mnist-task": ("mnist", "split", "task", MNIST_SIZE),
    "mnist-domain": ("mnist", "split", "domain", MNIST_SIZE),
    "mnist-class": ("mnist", "split", "class", MNIST_SIZE),
    "mnist-permuted": ("mnist", "permuted", "domain", ["--tasks", "10", *MNIST_SIZE]),
}  # fmt: skip

# (row group, strategy spec, scenarios it runs in). Candidate lists are chosen on validation data.
STRATEGIES: list[tuple[str, str, tuple[str, ...]]] = [
    ("Baselines", "finetune", ("task", "domain", "class")),
    ("Baselines", "joint", ("task", "domain", "class")),
    ("Baselines", "cumulative", ("task", "domain", "class")),
    ("Baselines", "independent", ("task",)),  # picks the task's model by its id
    ("Regularisation", "ewc:lambda=[1,100,10000]", ("task", "domain", "class")),
    ("Regularisation", "online-ewc:lambda=[1,100,10000]", ("task", "domain", "class")),
    ("Regularisation", "si:c=[0.1,1,10]", ("task", "domain", "class")),
    ("Regularisation", "mas:lambda=[0.03,1,30]", ("task", "domain", "class")),
    ("Regularisation", "rwalk:lambda=[1,5,100]", ("task", "domain", "class")),
    ("Regularisation", "scp:lambda=[1,30,1000]", ("task", "domain", "class")),
    ("Regularisation", "l2:lambda=[0.01,1,100]", ("task", "domain", "class")),
    ("Replay / distillation", "lwf:lambda=[0.5,1,2]", ("task", "domain", "class")),
    # at its defaults (2000 solver and 2000 generator iterations per task, van de Ven & Tolias)
    ("Replay / distillation", "generative-replay", ("task", "domain", "class")),
    ("Replay + exemplars", "replay", ("task", "domain", "class")),
    ("Replay + exemplars", "gem", ("task", "domain", "class")),
    ("Replay + exemplars", "agem", ("task", "domain", "class")),
    ("Replay + exemplars", "icarl", ("class",)),
    ("Architecture", "pnn", ("task",)),
    ("Architecture", "packnet", ("task",)),
    ("Architecture", "cpg", ("task",)),
]

# Generative replay costs more than all the other strategies together (4000 Adam iterations of
# a 1M-parameter VAE and the solver per task; about 5 minutes per unit on MNIST here, on one
# core), so on split MNIST it runs as a study of its own per scenario (``mnist-<scenario>-gr``),
# in parallel with the rest; the table merges it in. Not run on permuted MNIST (10 tasks).
OWN_STUDY = ("generative-replay",)
SETTINGS.update(
    {f"{name}-gr": SETTINGS[name] for name in ("mnist-task", "mnist-domain", "mnist-class")}
)

COLUMNS = (("task", "Task-IL"), ("domain", "Domain-IL"), ("class", "Class-IL"))
ROOT = OUT_DIR / "table2"


def command(setting: str) -> list[str]:
    data, stream, scenario, extra = SETTINGS[setting]
    separate = setting.endswith("-gr")
    specs = [
        spec
        for _, spec, scenarios in STRATEGIES
        if scenario in scenarios and (data != "mnist" or (spec in OWN_STUDY) == separate)
    ]
    return [
        "lifelong", "run", "--data", data, "--stream", stream, "--scenario", scenario, *extra,
        "--seeds", *SEEDS, "--validation", VALIDATION, "--quiet", "--no-report",
        "--out", f"benchmarks/out/table2/{setting}", "--strategy", *specs,
    ]  # fmt: skip


def run(setting: str) -> int:
    argv = command(setting)
    out = Path(argv[argv.index("--out") + 1])
    if (out / "results.json").exists():
        argv = ["lifelong", "run", "--resume", str(out), "--quiet", "--no-report"]
    env = {"OMP_NUM_THREADS": "1", "LIFELONG_DATA": str(data_dir()), **os.environ}
    print(shlex.join(argv), flush=True)
    return subprocess.call([sys.executable, "-m", "lifelong.cli", *argv[1:]], env=env)


def _cell(entry: dict | None, key: str) -> str:
    if entry is None:
        return "—"
    mean, std = entry["mean"].get(key), entry["std"].get(key)
    if mean is None:
        return "n/a"
    text = f"{100 * mean:+.1f}" if key == "bwt" else f"{100 * mean:.1f}"
    text += f" ± {100 * std:.1f}" if std is not None else ""
    return text if entry["status"] == "complete" else f"{text} ({entry['status']})"


def _chosen(entry: dict | None) -> str:
    if not entry or not entry.get("chosen_values"):
        return ""
    return ", ".join(f"{k}={v}" for k, v in entry["chosen_values"].items())


def table(data: str, stream: str) -> str:
    """Markdown: one row per strategy, ACC and BWT per scenario with the chosen values."""
    studies = {}
    for scenario, _ in COLUMNS:
        names = [n for n, s in SETTINGS.items() if s[:3] == (data, stream, scenario)]
        for name in names:  # the main study first, then generative replay's own
            path = ROOT / name / "results.json"
            if path.is_file():
                study = json.loads(path.read_text())
                if scenario in studies:
                    studies[scenario]["strategies"].update(study["strategies"])
                else:
                    studies[scenario] = study
    head = "| group | strategy | " + " | ".join(
        f"{title} ACC | {title} BWT | chosen" for s, title in COLUMNS if s in studies
    )
    lines = [head + " |", "|" + " --- |" * (2 + 3 * len(studies))]
    for group, spec, scenarios in STRATEGIES:
        if not any(spec in st["strategies"] for st in studies.values()):
            continue
        cells = []
        for scenario, _ in COLUMNS:
            if scenario not in studies:
                continue
            # a study made before a strategy was restricted to fewer scenarios still holds it
            entry = studies[scenario]["strategies"].get(spec) if scenario in scenarios else None
            cells += [_cell(entry, "acc"), _cell(entry, "bwt"), _chosen(entry)]
        if all(cell in ("—", "") for cell in cells):
            continue  # not run in any scenario of this table
        name = spec.partition(":")[0]
        lines.append(f"| {group} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run")
    r.add_argument("settings", nargs="+", choices=sorted(SETTINGS))
    sub.add_parser("commands")
    t = sub.add_parser("table")
    t.add_argument("--data", default="digits")
    t.add_argument("--stream", default="split")
    args = parser.parse_args()
    if args.what == "commands":
        for setting in SETTINGS:
            print(shlex.join(command(setting)))
        return 0
    if args.what == "table":
        print(table(args.data, args.stream))
        return 0
    return max(run(s) for s in args.settings)


if __name__ == "__main__":
    sys.exit(main())
