"""Baselines: the lower and upper bounds every method is compared with.

* ``finetune``: plain sequential training, the catastrophic-forgetting baseline.
* ``joint``: one model trained once on all tasks together (multitask), the usual upper bound.
* ``cumulative``: at each task, continue training on all data seen so far (a rehearsal upper bound).
* ``independent``: a separate model per task, each starting from the same initial weights.
"""

from __future__ import annotations

import copy

from torch import Tensor, nn
from torch.func import functional_call

from lifelong.strategies.base import FitFn, Strategy, TrainSet, register
from lifelong.streams.base import Stream, Task


@register
class Finetune(Strategy):
    """Plain fine-tuning: train on each task in turn with nothing to protect earlier tasks."""

    name = "finetune"
    description = "plain sequential training (forgetting baseline)"

    def __init__(self) -> None:
        pass


@register
class Joint(Strategy):
    """Multitask training on the union of all tasks, once (the upper bound).

    The whole stream is trained at the first task step (``epochs`` passes over the union, so the
    number of gradient steps equals that of sequential training); the later steps train nothing.
    Rows 1..T of the accuracy matrix are therefore identical: BWT and forgetting are 0 by
    construction, and ACC is the multitask accuracy.
    """

    name = "joint"
    description = "multitask training on all tasks at once (upper bound)"

    def __init__(self) -> None:
        pass

    def training_data(self, task: Task, seen: list[Task]) -> TrainSet | None:
        return TrainSet.of(self.stream.tasks, self.stream) if task.id == 0 else None

    def not_applicable(self, scenario: str) -> dict[str, str]:
        once = "joint learns every task at once: there is no sequence"
        return {
            "bwt": f"{once}, nothing learned later can change an earlier task",
            "forgetting": f"{once}, nothing learned later can change an earlier task",
            "fwt": f"{once}, every task is trained before any is evaluated",
        }

    def stored_examples(self) -> int:
        """Every training sample of the stream (not budgeted: the upper bound)."""
        return sum(len(t.train) for t in self.stream.tasks)


@register
class Cumulative(Strategy):
    """At task t, continue training on the data of tasks 1..t together (storing all data)."""

    name = "cumulative"
    description = "retrain on all data seen so far at each task"

    def __init__(self) -> None:
        pass

    def training_data(self, task: Task, seen: list[Task]) -> TrainSet | None:
        self.seen_tasks = len(seen)
        return TrainSet.of(seen, self.stream)

    def stored_examples(self) -> int:
        """Every training sample seen so far (not budgeted: the rehearsal upper bound)."""
        return sum(len(t.train) for t in self.stream.tasks[: getattr(self, "seen_tasks", 0)])


@register
class Independent(Strategy):
    """One model per task, each trained from the same initial weights; predicts with its own.

    Memory grows linearly with the number of tasks (a copy of the parameters per task).
    Choosing the task's own model needs the task identity at test time, which only the task
    scenario gives (as for PNN, PackNet and CPG): in the domain and class scenarios it would be
    an oracle that the other methods are denied (98% "class-incremental" accuracy on split
    MNIST), so it runs in the task scenario only.
    """

    name = "independent"
    description = "a fresh model per task (no transfer, no forgetting)"
    scenarios = ("task",)

    def __init__(self) -> None:
        self.initial: dict[str, Tensor] = {}
        self.per_task: dict[int, dict[str, Tensor]] = {}

    def prepare(self, model: nn.Module, stream: Stream) -> nn.Module:
        super().prepare(model, stream)
        self.initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return model

    def not_applicable(self, scenario: str) -> dict[str, str]:
        separate = "a separate model per task: learning a later task cannot change it"
        return {
            "bwt": f"{separate} (0 by construction)",
            "forgetting": f"{separate} (0 by construction)",
            "fwt": "a task not yet learned is scored with the initial model (0 by construction)",
        }

    def before_task(self, task: Task, model: nn.Module) -> None:
        model.load_state_dict(self.initial)

    def after_task(self, task: Task, model: nn.Module, fit: FitFn) -> None:
        self.per_task[task.id] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def predict(self, model: nn.Module, x: Tensor, task: Task) -> Tensor:
        weights = self.per_task.get(task.id, self.initial)
        return functional_call(model, copy.copy(weights), (x,))

    def info(self) -> dict[str, int]:
        n = sum(v.numel() for v in self.initial.values())
        return {"stored_parameters": n * len(self.per_task)}
