"""``evaluate_task`` (public, no longer called by the loop) agrees with ``evaluate_stream`` and
with an accuracy counted here; it gives NaN for a split the task does not have. Written for the
mutmut report: its mutants had no test (TESTING.md)."""

from __future__ import annotations

import math

import torch

from lifelong.evaluate import evaluate_stream, evaluate_task
from lifelong.models import build_model
from lifelong.strategies import create_strategy
from lifelong.streams import build_stream


def test_evaluate_task_counts_argmax_within_the_tasks_columns() -> None:
    stream = build_stream("split", "digits", tasks=3, scenario="task", test_samples=30, seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", stream, [16]).eval()
    strategy = create_strategy("finetune")
    strategy.prepare(model, stream)
    whole = evaluate_stream(strategy, model, stream, batch_size=7)
    for task, expected in zip(stream.tasks, whole, strict=True):
        got = evaluate_task(strategy, model, task, batch_size=7)
        start, stop = task.columns
        with torch.no_grad():
            scores = model(task.test.inputs())[:, start:stop]
        by_hand = float((scores.argmax(1) + start == task.test.y).float().mean())
        assert got == expected
        assert math.isclose(got, by_hand, rel_tol=1e-6)
    assert math.isnan(evaluate_task(strategy, model, stream.tasks[0], 7, split="valid"))
