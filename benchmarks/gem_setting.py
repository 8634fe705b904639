"""The GEM paper's setting, for fine-tuning: how close to the machine's limit does a run get?

Permuted MNIST, 20 tasks, 1000 training samples per task, MLP 784-100-100-10, SGD (lr 0.1)
with batch 10, one epoch; the full 10,000-image test set of every task evaluated before training
(row 0) and after every task (Lopez-Paz & Ranzato 2017, Sec. 6). Prints, as its last line, and
saves to benchmarks/out/gem_setting.json: train/eval/total seconds, the run's floating-point work
(gflop), the machine's float32 matmul throughput measured in this process (matmul_gflops), the
lower bound gflop / matmul_gflops, and the peak resident memory.

Usage: python benchmarks/gem_setting.py [--tasks 20] [--strategy finetune]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import data_dir, machine, matmul_gflops, mlp_forward_flop, mlp_train_flop, save_json
from lifelong.resources import peak_rss_mb, reset_peak_memory
from lifelong.runner import learn_stream
from lifelong.streams import build_stream
from lifelong.train import TrainConfig

WIDTHS = [784, 100, 100, 10]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--train-samples", type=int, default=1000)
    parser.add_argument("--strategy", default="finetune")
    parser.add_argument("--eval-batch-size", type=int, default=TrainConfig.eval_batch_size)
    args = parser.parse_args()

    import torch

    reset_peak_memory(torch.device("cpu"))
    start = time.perf_counter()
    stream = build_stream(
        "permuted", "mnist", data_dir=data_dir(), tasks=args.tasks, train_samples=args.train_samples
    )
    stream_seconds = time.perf_counter() - start
    config = TrainConfig(epochs=1, batch_size=10, lr=0.1, eval_batch_size=args.eval_batch_size)
    start = time.perf_counter()
    result = learn_stream(stream, args.strategy, model="mlp", hidden=WIDTHS[1:-1], train=config)
    total = time.perf_counter() - start
    peak = peak_rss_mb()

    n_test = sum(len(t.test) for t in stream.tasks)
    n_train = sum(len(t.train) for t in stream.tasks)
    evaluations = len(result.accuracy_matrix)  # T + 1 rows, each over every task's test set
    gflop = (
        evaluations * n_test * mlp_forward_flop(WIDTHS) + n_train * mlp_train_flop(WIDTHS)
    ) / 1e9
    throughput = matmul_gflops()
    metrics = result.metrics()
    payload = {
        "setting": f"permuted MNIST, {args.tasks} tasks x {args.train_samples} samples, MLP "
        f"784-100-100-10, SGD lr 0.1, batch 10, 1 epoch, {args.strategy}",
        "train_seconds": round(result.train_seconds, 3),
        "eval_seconds": round(result.eval_seconds, 3),
        "total_seconds": round(total, 3),
        "stream_seconds": round(stream_seconds, 3),
        "gflop": round(gflop, 2),
        "matmul_gflops": round(throughput, 2),
        "lower_bound_seconds": round(gflop / throughput, 3),
        "ratio_to_lower_bound": round(total / (gflop / throughput), 3),
        "peak_rss_mb": round(peak, 1),
        "acc": metrics["acc"],
        "bwt": metrics["bwt"],
        "fwt": metrics["fwt"],
        "machine": machine(),
    }
    save_json("gem_setting", payload)
    print(json.dumps(payload))


if __name__ == "__main__":
    main()
