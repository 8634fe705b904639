"""Evaluation: accuracy of a model (through its strategy's ``predict``) on every task's test set."""

from __future__ import annotations

import torch
from torch import nn

from lifelong.strategies.base import Strategy
from lifelong.streams.base import Stream, Task


def evaluate_task(
    strategy: Strategy, model: nn.Module, task: Task, batch_size: int, split: str = "test"
) -> float:
    """Accuracy on ``task``'s ``split`` (``test`` or ``valid``): argmax of the strategy's scores
    within the task's columns."""
    data = task.split(split)
    n = len(data) if data is not None else 0
    if n == 0:
        return float("nan")
    start_col, stop_col = task.columns
    correct = torch.zeros((), dtype=torch.long, device=data.y.device)
    for start in range(0, n, batch_size):
        part = slice(start, min(start + batch_size, n))
        scores = strategy.predict(model, data.inputs(part), task)[:, start_col:stop_col]
        correct += (scores.argmax(1) + start_col == data.y[part]).sum()
    return correct.item() / n


def evaluate_stream(
    strategy: Strategy,
    model: nn.Module,
    stream: Stream,
    batch_size: int = 8192,
    split: str = "test",
) -> list[float]:
    """Accuracy on every task's ``split`` (``test`` or ``valid``), in eval mode and under
    ``torch.inference_mode``."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return [
                evaluate_task(strategy, model, task, batch_size, split) for task in stream.tasks
            ]
    finally:
        model.train(was_training)
