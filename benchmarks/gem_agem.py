"""GEM and A-GEM in the GEM paper's MNIST setting (Lopez-Paz & Ranzato 2017, Sec. 6).

Permuted and rotated MNIST, 20 tasks of 1,000 training samples each (every task evaluated on the
full 10,000-image test set, transformed), MLP 784-100-100-10, plain SGD with lr 0.1, batch 10,
one epoch, an episodic memory of 256 samples per task, GEM's margin 0.5, A-GEM's reference sample
of 256. Rotation angles are drawn as in GEM's data script: task t's angle uniformly in
[180 t / T, 180 (t + 1) / T) degrees (here from numpy seed 0). Fine-tuning runs alongside as the
forgetting baseline (same settings).

Prints a markdown table and saves everything (accuracy matrices, metrics, GEM's time per step
split into current gradient, memory gradients, QP and update) to benchmarks/out/gem_agem.json.

With --gradient-timing it instead times three ways of computing the gradients of t past
tasks' memories (256 samples each, the MLP above): GEM's vectorised torch.func.vmap(grad) call,
one forward/backward per task, and one forward over all memories with a batched backward
(torch.autograd.grad(..., is_grads_batched=True)), and checks that they agree.

Usage: python benchmarks/gem_agem.py [--tasks 20] [--streams permuted rotated]
           [--strategies finetune gem agem gem:margin=0] [--out NAME] [--gradient-timing]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import data_dir, machine, save_json
from lifelong.config import parse_named
from lifelong.runner import learn_stream
from lifelong.strategies import create_strategy
from lifelong.streams import build_stream
from lifelong.train import TrainConfig

HIDDEN = [100, 100]


def build(name: str, tasks: int, train_samples: int):
    options = {}
    if name == "rotated":
        rng = np.random.RandomState(0)
        options["angles"] = [
            float(180.0 * (t + rng.uniform()) / tasks) for t in range(tasks)
        ]  # one per interval, as GEM's mnist_rotations.py
    return build_stream(
        name,
        "mnist",
        data_dir=data_dir(),
        tasks=tasks,
        train_samples=train_samples,
        seed=0,
        **options,
    ), options


def _vmapped(model, x, y, w):
    from lifelong.strategies.memory.gem import memory_gradients

    return memory_gradients(model, x, y, w, None)


def _loop(model, x, y, w):
    import torch
    import torch.nn.functional as F

    rows = []
    for k in range(len(x)):
        grads = torch.autograd.grad(F.cross_entropy(model(x[k]), y[k]), list(model.parameters()))
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


def _batched_backward(model, x, y, w):
    import torch
    import torch.nn.functional as F

    t, m = y.shape
    losses = F.cross_entropy(model(x.reshape(t * m, -1)), y.reshape(-1), reduction="none")
    grads = torch.autograd.grad(
        losses.reshape(t, m).mean(1), list(model.parameters()), torch.eye(t), is_grads_batched=True
    )
    return torch.cat([g.reshape(t, -1) for g in grads], 1)


def gradient_timing(past_tasks: tuple[int, ...] = (1, 5, 10, 19), repeats: int = 10) -> dict:
    """Milliseconds per call of three ways to get every past task's memory gradient."""
    import torch

    from lifelong.models import MLP

    torch.manual_seed(0)
    model = MLP(784, HIDDEN, 10)
    methods = {"vmap": _vmapped, "loop": _loop, "is_grads_batched": _batched_backward}
    out = {}
    for t in past_tasks:
        x, y = torch.rand(t, 256, 784), torch.randint(0, 10, (t, 256))
        w = torch.full((t, 256), 1 / 256)
        reference = _loop(model, x, y, w)
        row = {}
        for name, fn in methods.items():
            result = fn(model, x, y, w)  # warm-up, and the agreement check
            assert torch.allclose(result, reference, atol=1e-6), name
            n = repeats if name != "is_grads_batched" else max(repeats // 5, 1)
            start = time.perf_counter()
            for _ in range(n):
                fn(model, x, y, w)
            row[name] = 1000 * (time.perf_counter() - start) / n
        out[t] = row
        print(f"t={t}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in row.items()), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--train-samples", type=int, default=1000)
    parser.add_argument("--streams", nargs="+", default=["permuted", "rotated"])
    parser.add_argument("--strategies", nargs="+", default=["finetune", "gem", "agem"])
    parser.add_argument("--gradient-timing", action="store_true")
    parser.add_argument("--out", default="gem_agem", help="name of the JSON file in out/")
    args = parser.parse_args()
    if args.gradient_timing:
        save_json("gem_gradient_timing", {"ms": gradient_timing(), "machine": machine()})
        return

    config = TrainConfig(epochs=1, batch_size=10, lr=0.1)
    runs = {}
    for stream_name in args.streams:
        start = time.perf_counter()
        stream, options = build(stream_name, args.tasks, args.train_samples)
        stream_seconds = time.perf_counter() - start
        for strategy in args.strategies:
            start = time.perf_counter()
            name, params = parse_named(strategy, "strategy")
            result = learn_stream(
                stream, create_strategy(name, params), model="mlp", hidden=HIDDEN, train=config
            )
            wall = time.perf_counter() - start
            key = f"{stream_name}/{strategy}"
            runs[key] = {
                **result.metrics(),
                "train_seconds": result.train_seconds,
                "eval_seconds": result.eval_seconds,
                "wall_seconds": wall,
                "stream_seconds": stream_seconds,
                "params": result.params,
                "extra": result.extra,
                "accuracy_matrix": result.accuracy_matrix,
                "stream_options": options,
            }
            print(
                f"{key}: acc {runs[key]['acc']:.4f} bwt {runs[key]['bwt']:.4f} "
                f"fwt {runs[key]['fwt']:.4f} train {result.train_seconds:.1f}s "
                f"wall {wall:.1f}s",
                flush=True,
            )
    payload = {
        "setting": f"{args.tasks} tasks x {args.train_samples} samples, MLP 784-100-100-10, "
        "SGD lr 0.1, batch 10, 1 epoch, memory 256/task, margin 0.5, A-GEM sample 256",
        "train": config.to_dict(),
        "machine": machine(),
        "runs": runs,
    }
    save_json(args.out, payload)

    print("\n| stream | method | ACC | BWT | FWT | train s | wall s |")
    print("|---|---|---|---|---|---|---|")
    for key, run in runs.items():
        stream_name, strategy = key.split("/", 1)
        print(
            f"| {stream_name} | {strategy} | {run['acc']:.4f} | {run['bwt']:+.4f} | "
            f"{run['fwt']:+.4f} | {run['train_seconds']:.1f} | {run['wall_seconds']:.1f} |"
        )
    print("\nGEM time per step (ms): current gradient / memory gradients / QP / update")
    for key, run in runs.items():
        if key.split("/", 1)[1].startswith("gem"):
            ms = run["extra"]["ms_per_step"]
            per = run["extra"]["ms_per_constrained_step"]
            print(
                f"{key}: {ms['current_gradient']:.2f} / {ms['memory_gradients']:.2f} / "
                f"{ms['qp']:.2f} / {ms['update']:.2f}  (per step with past tasks: memory "
                f"gradients {per['memory_gradients']:.2f}, QP {per['qp']:.2f}; QP solved on "
                f"{run['extra']['qp_solves']} of {run['extra']['constrained_steps']} steps)"
            )
    print(json.dumps({k: {m: run[m] for m in ("acc", "bwt", "fwt")} for k, run in runs.items()}))


if __name__ == "__main__":
    main()
