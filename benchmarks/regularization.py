"""Selective synaptic plasticity (issue 3): cost of the importance estimates, and the GEM setting.

Two parts, both on permuted MNIST read from $LIFELONG_DATA / $LIFELONG_SHARED_DATA:

``timing``: on one task of 1000 training samples and the MLP 784-100-100-10,
  * the EWC Fisher (per-sample, ``torch.func``) over those 1000 samples against one training
    epoch over the same samples (batch 10, SGD), both through the library (``Trainer.fit``) and
    as a bare PyTorch loop on pre-gathered tensors (the stricter comparison);
  * SI's per-step bookkeeping: an epoch with ``si`` against one with ``finetune`` on the first
    task (no penalty yet), and against ``l2`` on the second task (same penalty machinery, so the
    difference is the path integral alone);
  * the end-of-task cost of MAS and SCP and the per-step cost of RWalk, for reference.
  Every time is the best of ``--repeats`` runs, as CPU time of this process and as wall time
  (the machine is shared: with one torch thread the CPU time is the work itself, the wall time
  also counts waiting for a core).

``gem``: the GEM setting (Lopez-Paz & Ranzato 2017): 20 tasks, 1000 training samples per task,
  the full 10,000-image test set per task, MLP 784-100-100-10, SGD lr 0.1, batch 10, one epoch,
  seed 0, for any list of ``name:key=value`` strategy specifications. Prints ACC/BWT/FWT and
  forgetting per strategy.

Results go to benchmarks/out/regularization_{timing,gem}.json. The benchmark pins torch to one
thread (``--threads``): on a 2-core machine shared with other jobs, two threads oversubscribe
the cores and make every time several times slower and noisier.

Usage:
    python benchmarks/regularization.py timing [--repeats 7]
    python benchmarks/regularization.py gem ewc:lambda=10 si:c=0.1 ... [--tasks 20]
        [--test-samples N] [--name OUTPUT_NAME]
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
from lifelong.models import build_model
from lifelong.runner import learn_stream, seed_everything
from lifelong.strategies import create_strategy
from lifelong.strategies.regularization.persample import (
    diagonal_fisher,
    log_likelihood_loss,
    per_sample_gradient_sum,
)
from lifelong.strategies.regularization.scp import (
    mean_response_jacobian,
    sliced_importance,
)
from lifelong.streams import build_stream
from lifelong.train import TrainConfig, Trainer

HIDDEN = [100, 100]
GEM_CONFIG = TrainConfig(epochs=1, batch_size=10, lr=0.1)


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``ewc:lambda=10,fisher=empirical`` -> ("ewc", {"lambda": "10", "fisher": "empirical"})."""
    name, _, rest = spec.partition(":")
    params = dict(item.split("=", 1) for item in rest.split(",")) if rest else {}
    return name, params


def cpu_and_wall(fn) -> tuple[float, float]:
    """CPU seconds of this process (one torch thread: the work itself, whatever else runs on the
    machine) and wall seconds of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


# ---- timing ------------------------------------------------------------------------------------
def timing(repeats: int) -> dict[str, Any]:
    stream = build_stream(
        "permuted", "mnist", data_dir=data_dir(), tasks=2, train_samples=1000, test_samples=1000
    )
    first, second = stream.tasks
    seed_everything(0)
    model = build_model("mlp", stream, HIDDEN)
    config = GEM_CONFIG
    steps = len(first.train) // config.batch_size

    def trainer_epoch(name: str, params: dict[str, Any] | None = None, tasks=(first,)):
        """A fresh strategy trained over ``tasks[:-1]``; returns a callable timing the last."""
        strategy = create_strategy(name, params or {})
        strategy.prepare(model, stream)
        trainer = Trainer(model, strategy, stream, config)
        for task in tasks[:-1]:
            trainer.learn(task)
        return lambda: trainer.fit(tasks[-1])

    # Bare PyTorch loop over pre-gathered tensors: the cheapest possible epoch.
    x, y = first.train.inputs(), first.train.y
    bare_model = build_model("mlp", stream, HIDDEN)
    optimizer = torch.optim.SGD(bare_model.parameters(), lr=config.lr)

    def bare_epoch() -> None:
        order = torch.randperm(len(y))
        for start in range(0, len(y), config.batch_size):
            idx = order[start : start + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(bare_model(x[idx]), y[idx])
            loss.item()
            loss.backward()
            optimizer.step()

    def fisher(kind: str):
        return lambda: diagonal_fisher(model, first.train, first.columns, labels=kind)

    def fisher_generic():
        """The same Fisher through the generic route (per-sample gradients materialised)."""
        x, y = first.train.inputs(), first.train.y
        loss = log_likelihood_loss(first.columns)
        return lambda: per_sample_gradient_sum(model, loss, [(x, y)], "square", factorise=False)

    def mas():
        strategy = create_strategy("mas")
        strategy.prepare(model, stream)
        return lambda: strategy.after_task(first, model, None)

    def scp():
        return lambda: sliced_importance(mean_response_jacobian(model, first), 50)

    fisher("true")()  # warm-up: torch.func's first call imports its machinery (seconds)
    finetune_epoch = trainer_epoch("finetune")
    si_first = trainer_epoch("si")
    l2_second = trainer_epoch("l2", {"lambda": 0.01}, (first, second))
    si_second = trainer_epoch("si", {"c": 0.01}, (first, second))
    rwalk_first = trainer_epoch("rwalk")
    candidates = {
        "bare_epoch": bare_epoch,
        "trainer_epoch_finetune": finetune_epoch,
        "fisher_true": fisher("true"),
        "fisher_empirical": fisher("empirical"),
        "fisher_empirical_generic_route": fisher_generic(),
        "trainer_epoch_si_task1": si_first,
        "trainer_epoch_l2_task2": l2_second,
        "trainer_epoch_si_task2": si_second,
        "trainer_epoch_rwalk_task1": rwalk_first,
        "mas_importance": mas(),
        "scp_importance": scp(),
    }
    for fn in candidates.values():  # warm-up
        fn()
    # Interleave the repeats so that a burst of load on the shared machine hits all alike; keep
    # the minimum of each (the least disturbed measurement), in CPU and in wall time.
    cpu = {name: float("inf") for name in candidates}
    wall = dict(cpu)
    for _ in range(repeats):
        for name, fn in candidates.items():
            c, w = cpu_and_wall(fn)
            cpu[name], wall[name] = min(cpu[name], c), min(wall[name], w)
    out: dict[str, Any] = {"steps_per_epoch": steps, "repeats": repeats}
    for clock, times in (("cpu", cpu), ("wall", wall)):
        ratios = {
            "fisher_true_over_trainer_epoch": times["fisher_true"]
            / times["trainer_epoch_finetune"],
            "fisher_true_over_bare_epoch": times["fisher_true"] / times["bare_epoch"],
            "fisher_empirical_over_trainer_epoch": times["fisher_empirical"]
            / times["trainer_epoch_finetune"],
            "fisher_generic_route_over_trainer_epoch": times["fisher_empirical_generic_route"]
            / times["trainer_epoch_finetune"],
            "mas_over_trainer_epoch": times["mas_importance"] / times["trainer_epoch_finetune"],
            "scp_over_trainer_epoch": times["scp_importance"] / times["trainer_epoch_finetune"],
            "si_overhead_task1": times["trainer_epoch_si_task1"] / times["trainer_epoch_finetune"]
            - 1,
            "si_overhead_task2_vs_l2": times["trainer_epoch_si_task2"]
            / times["trainer_epoch_l2_task2"]
            - 1,
            "rwalk_overhead_task1": times["trainer_epoch_rwalk_task1"]
            / times["trainer_epoch_finetune"]
            - 1,
        }
        out[clock] = {
            **{f"{k}_ms": round(v * 1e3, 2) for k, v in times.items()},
            **{k: round(v, 3) for k, v in ratios.items()},
        }
    out["machine"] = machine()
    return out


# ---- GEM setting --------------------------------------------------------------------------------
def gem(specs: list[str], tasks: int, seed: int, test_samples: int | None) -> dict[str, Any]:
    stream = build_stream(
        "permuted",
        "mnist",
        data_dir=data_dir(),
        tasks=tasks,
        train_samples=1000,
        test_samples=test_samples,
        seed=seed,
    )
    runs = {}
    for spec in specs:
        name, params = parse_spec(spec)
        strategy = create_strategy(name, params)
        start = time.perf_counter()
        try:
            result = learn_stream(
                stream, strategy, model="mlp", hidden=HIDDEN, train=GEM_CONFIG, seed=seed
            )
        except Exception as err:  # a diverged setting is a result too
            runs[spec] = {"error": str(err)}
            print(f"{spec:40s} FAILED: {err}", flush=True)
            continue
        m = result.metrics()
        runs[spec] = {
            "params": strategy.params(),
            **{k: round(v, 4) for k, v in m.items() if v is not None},
            "final_row": [round(a, 4) for a in result.accuracy_matrix[-1]],
            "train_seconds": round(result.train_seconds, 1),
            "eval_seconds": round(result.eval_seconds, 1),
            "wall_seconds": round(time.perf_counter() - start, 1),
        }
        print(
            f"{spec:40s} ACC {m['acc']:.4f}  BWT {m['bwt']:+.4f}  FWT {m['fwt']:+.4f}  "
            f"forgetting {m['forgetting']:.4f}  train {result.train_seconds:.0f}s  "
            f"eval {result.eval_seconds:.0f}s",
            flush=True,
        )
    return {
        "setting": f"permuted MNIST, {tasks} tasks x 1000 train samples, "
        f"{test_samples or 'all 10000'} test samples per task, "
        f"MLP 784-100-100-10, SGD lr 0.1, batch 10, 1 epoch, seed {seed}",
        "runs": runs,
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    sub = parser.add_subparsers(dest="part", required=True)
    t = sub.add_parser("timing")
    t.add_argument("--repeats", type=int, default=7)
    g = sub.add_parser("gem")
    g.add_argument("specs", nargs="+")
    g.add_argument("--tasks", type=int, default=20)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--test-samples", type=int, default=None, help="default: all 10,000")
    g.add_argument("--name", default="regularization_gem")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.part == "timing":
        payload = timing(args.repeats)
        print(json.dumps(payload, indent=1))
        save_json("regularization_timing", payload)
    else:
        save_json(args.name, gem(args.specs, args.tasks, args.seed, args.test_samples))


if __name__ == "__main__":
    main()
