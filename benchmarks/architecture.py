"""Additional neural resources (issue 5): PNN, PackNet and CPG in the GEM setting.

Permuted MNIST read from $LIFELONG_DATA / $LIFELONG_SHARED_DATA, 20 tasks, 1000 training samples
per task, the full 10,000-image test set per task, MLP 784-100-100-10, SGD lr 0.1, batch 10, one
epoch, seed 0 (Lopez-Paz & Ranzato 2017, Sec. 6). Unlike GEM's runs this is the *task* scenario
(each permutation has its own 10 output columns and the task id is given at test time), because
the three methods need the task id to pick a column (PNN) or a mask (PackNet, CPG).

For each strategy (``finetune`` is the reference) it records ACC, BWT, FWT, forgetting, the
model's parameter count after each task, the parameters each task uses (strategy ``info``), and
the wall time (training, evaluation, total). Results go to benchmarks/out/architecture_gem.json
and a Markdown table is printed. Torch is pinned to ``--threads`` threads (default 1): on a
shared 2-core machine two threads oversubscribe the cores and make every time slower and noisier.

Usage:
    python benchmarks/architecture.py [--tasks 20] [pnn packnet cpg:mask_lr=1e-3 ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch

from common import data_dir, machine, save_json
from lifelong.runner import learn_stream
from lifelong.strategies import create_strategy
from lifelong.streams import build_stream
from lifelong.train import TrainConfig

DEFAULT = ["finetune", "pnn", "packnet", "cpg"]


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    name, _, rest = spec.partition(":")
    params = dict(item.split("=", 1) for item in rest.split(",") if item)
    return name, params


def run(spec: str, tasks: int, train_samples: int, test_samples: int | None) -> dict[str, Any]:
    stream = build_stream(
        "permuted",
        "mnist",
        data_dir=data_dir(),
        tasks=tasks,
        train_samples=train_samples,
        test_samples=test_samples,
        scenario="task",
        seed=0,
    )
    name, params = parse_spec(spec)
    config = TrainConfig(epochs=1, batch_size=10, lr=0.1)
    steps = [0]

    def count(step: int, loss: float) -> None:
        steps[0] = step

    start = time.perf_counter()
    result = learn_stream(
        stream, create_strategy(name, params), hidden=[100, 100], train=config, on_step=count
    )
    total = time.perf_counter() - start
    metrics = result.metrics()
    return {
        "strategy": spec,
        "params": result.params,
        **{k: metrics[k] for k in ("acc", "bwt", "fwt", "forgetting", "learning_accuracy")},
        "parameters": result.parameters,
        "optimizer_steps": steps[0],
        "train_seconds": round(result.train_seconds, 2),
        "eval_seconds": round(result.eval_seconds, 2),
        "total_seconds": round(total, 2),
        "final_accuracies": [round(a, 4) for a in result.accuracy_matrix[-1]],
        "extra": result.extra,
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| strategy | ACC | BWT | FWT | parameters after task 1 | after last task | "
        "used by the last task | optimizer steps | train s | eval s | total s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        used = r["extra"].get("parameters_used")
        last_used = used[-1][-1] if used else r["parameters"][-1]
        fwt = "n/a" if r["fwt"] is None else f"{r['fwt']:.4f}"
        lines.append(
            f"| {r['strategy']} | {r['acc']:.4f} | {r['bwt']:.4f} | {fwt} | "
            f"{r['parameters'][0]:,} | {r['parameters'][-1]:,} | {last_used:,} | "
            f"{r['optimizer_steps']:,} | "
            f"{r['train_seconds']:.1f} | {r['eval_seconds']:.1f} | {r['total_seconds']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("strategies", nargs="*", default=DEFAULT)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--train-samples", type=int, default=1000)
    parser.add_argument("--test-samples", type=int, default=None, help="default: all 10,000")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for spec in args.strategies:
        row = run(spec, args.tasks, args.train_samples, args.test_samples)
        rows.append(row)
        print(
            f"{spec}: acc {row['acc']:.4f} bwt {row['bwt']:.4f} parameters "
            f"{row['parameters'][-1]:,} total {row['total_seconds']:.1f}s",
            flush=True,
        )
    payload = {
        "setting": f"permuted MNIST, task scenario, {args.tasks} tasks x {args.train_samples} "
        f"training samples, test samples {args.test_samples or 'all'}, MLP 784-100-100-10, "
        "SGD lr 0.1, batch 10, 1 epoch, seed 0",
        "machine": machine(),
        "results": rows,
    }
    save_json("architecture_gem", payload)
    print(table(rows))
    print(json.dumps({r["strategy"]: {"acc": r["acc"], "bwt": r["bwt"]} for r in rows}))


if __name__ == "__main__":
    main()
