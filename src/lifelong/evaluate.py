"""Evaluation: accuracy of a model (through its strategy's ``predict``) on every task's test set.

Where the time goes (the GEM setting, one thread, measured with ``make bench``; see
benchmarks/RESULTS.md): almost all of it is the model's own forward pass. On a CPU the inputs of
one forward pass are kept to about :data:`CPU_BATCH_BYTES`, so that a batch's float inputs, made
from the stored data just before, are still in the cache when the first layer reads them (a
large batch is read back from memory; smaller passes pay more per-call overhead). On a GPU the
given batch size is used as is, and the correct counts of all tasks are read back with one host
synchronisation per evaluation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lifelong.strategies.base import Strategy
from lifelong.streams.base import Stream, Task

CPU_BATCH_BYTES = 4 * 2**20
"""Bytes of float inputs per forward pass on a CPU (a few times a core's L2 cache)."""


def _rows_per_pass(task_input: Tensor, batch_size: int) -> int:
    """``batch_size``, capped on a CPU so that one pass's inputs take about CPU_BATCH_BYTES."""
    if task_input.device.type != "cpu":
        return batch_size
    per_sample = max(math.prod(task_input.shape[1:]), 1) * 4
    return max(1, min(batch_size, CPU_BATCH_BYTES // per_sample))


def _correct(strategy: Strategy, model: nn.Module, task: Task, batch_size: int, split: str):
    """``(correct predictions as a 0-d device tensor, samples)`` on ``task``'s ``split``."""
    data = task.split(split)
    n = len(data) if data is not None else 0
    if n == 0:
        return None, 0
    start_col, stop_col = task.columns
    rows = _rows_per_pass(data.inputs(slice(0, 1)), batch_size)
    correct = torch.zeros((), dtype=torch.long, device=data.y.device)
    for start in range(0, n, rows):
        part = slice(start, min(start + rows, n))
        scores = strategy.predict(model, data.inputs(part), task)[:, start_col:stop_col]
        correct += (scores.argmax(1) + start_col == data.y[part]).sum()
    return correct, n


def evaluate_task(
    strategy: Strategy, model: nn.Module, task: Task, batch_size: int, split: str = "test"
) -> float:
    """Accuracy on ``task``'s ``split`` (``test`` or ``valid``): argmax of the strategy's scores
    within the task's columns."""
    correct, n = _correct(strategy, model, task, batch_size, split)
    return float("nan") if correct is None else correct.item() / n


def evaluate_stream(
    strategy: Strategy,
    model: nn.Module,
    stream: Stream,
    batch_size: int = 8192,
    split: str = "test",
) -> list[float]:
    """Accuracy on every task's ``split`` (``test`` or ``valid``), in eval mode and under
    ``torch.inference_mode``; one host synchronisation at the end."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            counts = [_correct(strategy, model, task, batch_size, split) for task in stream.tasks]
            done = [c for c, _ in counts if c is not None]
            values = iter(torch.stack(done).tolist() if done else [])
            return [float("nan") if c is None else next(values) / n for c, n in counts]
    finally:
        model.train(was_training)
