"""Search for the demo's first example: noisy digits, then clean digits (the lecture's story).

The lecture (a 3-layer MLP on MNIST): after task 1 (noisy) 90 % on task 1 and 96 % on task 2;
after task 2 (clean) task 1 falls to 80 %, task 2 rises to 97 %; joint training 89 % and 98 %.
This script measures every candidate setting on the embedded 8x8 digits over several seeds and
prints mean ± std of the four numbers, BWT and the joint model's, so that the demo's setting is
chosen on evidence across seeds rather than on one lucky run::

    python benchmarks/first_example.py --seeds 5 [--quick]

Output: one line per candidate, and ``benchmarks/out/first_example.json``.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch

from common import machine, save_json
from lifelong.runner import learn_stream
from lifelong.streams import build_stream
from lifelong.train import TrainConfig


def measure(
    kind: str, level: float, hidden: tuple[int, ...], epochs: int, lr: float, batch: int, seed: int
):
    corruption = {"occlusion": [int(level), 0]} if kind == "occlusion" else {"noise": [level, 0.0]}
    stream = build_stream("noisy", "digits", seed=seed, **corruption)
    train = TrainConfig(epochs=epochs, batch_size=batch, lr=lr)
    fine = learn_stream(stream, "finetune", hidden=list(hidden), train=train, seed=seed)
    joint = learn_stream(stream, "joint", hidden=list(hidden), train=train, seed=seed)
    r, j = fine.accuracy_matrix, joint.accuracy_matrix
    return {
        "after1": r[1],
        "after2": r[2],
        "joint": j[2],
        "bwt": r[2][0] - r[1][0],
        "fine_acc": float(np.mean(r[2])),
        "joint_acc": float(np.mean(j[2])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--noise", type=float, nargs="+", default=[], help="Gaussian σ levels")
    parser.add_argument("--occlusion", type=int, nargs="+", default=[], help="square sides")
    parser.add_argument("--epochs", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--lr", type=float, nargs="+", default=[0.05, 0.1])
    parser.add_argument("--batch", type=int, nargs="+", default=[10])
    parser.add_argument("--hidden", nargs="+", default=["50,50,50", "100,100"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    hidden_options = [tuple(int(h) for h in s.split(",")) for s in args.hidden]
    corruptions = [("noise", v) for v in args.noise] + [("occlusion", v) for v in args.occlusion]
    for (kind, level), hidden, epochs, lr, batch in itertools.product(
        corruptions, hidden_options, args.epochs, args.lr, args.batch
    ):
        start = time.perf_counter()
        runs = [measure(kind, level, hidden, epochs, lr, batch, s) for s in range(args.seeds)]
        seconds = (time.perf_counter() - start) / args.seeds

        def stat(key, idx=None, runs=runs):
            v = np.array([r[key] if idx is None else r[key][idx] for r in runs]) * 100
            return f"{v.mean():5.1f}±{v.std(ddof=1):4.1f}"

        line = (
            f"{kind} {level:g} hidden {hidden!s:14} ep {epochs:2d} lr {lr:.2f} b {batch:2d} | "
            f"after1 {stat('after1', 0)} {stat('after1', 1)} | after2 {stat('after2', 0)} "
            f"{stat('after2', 1)} | joint {stat('joint', 0)} {stat('joint', 1)} | "
            f"BWT {stat('bwt')} | ACC fine {stat('fine_acc')} joint {stat('joint_acc')} | "
            f"{seconds:.1f} s/seed"
        )
        print(line, flush=True)
        rows.append(
            {
                "corruption": kind,
                "level": level,
                "hidden": hidden,
                "epochs": epochs,
                "lr": lr,
                "batch": batch,
                "seconds_per_seed": seconds,
                "runs": runs,
            }
        )
    save_json("first_example", {"machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
