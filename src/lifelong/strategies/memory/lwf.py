"""Learning without Forgetting (Li & Hoiem 2017, "Learning without Forgetting", TPAMI 40(12)).

No data of old tasks is stored. Before training a new task, the previous network's outputs on
the new task's own images are the targets that keep the old outputs unchanged: the loss is

    L = L_new(y_n, y^_n) + lambda_o * sum_{old heads h} L_old(y_o^h, y^_o^h)

with ``L_old`` the knowledge-distillation cross-entropy of Hinton et al. at temperature ``T``:
``L_old = -sum_j y'_o^(j) log y^'_o^(j)``, ``y' = softmax(logits / T)`` (paper Sec. 3: T = 2,
lambda_o = 1).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.errors import ConfigError
from lifelong.resources import to_device
from lifelong.strategies.base import Batch, FitFn, Strategy, classification_loss, register
from lifelong.streams.base import Task


def distillation_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """Mean over samples of ``-sum_j softmax(teacher/T)_j log softmax(student/T)_j``."""
    target = F.softmax(teacher / temperature, dim=1)
    return -(target * F.log_softmax(student / temperature, dim=1)).sum(1).mean()


@register
class LwF(Strategy):
    """Learning without Forgetting (Li & Hoiem 2017).

    The previous model (a frozen copy taken before each task) gives the targets. Its old heads
    are distilled separately: in the task scenario each past task's own columns form one head
    (a softmax over them); in the class scenario the columns of all classes seen before form the
    old head; in the domain scenario the shared head is distilled as a whole.

    Args:
        lambda_: ``lambda_o``, weight of the old-task loss (paper: 1).
        temperature: distillation temperature ``T`` (paper: 2).

    Differences from the paper: the paper first trains only the new head ("warm-up") before
    fine-tuning all weights; here all parameters are trained from the first step. As in the paper
    the distillation term is not multiplied by ``T^2`` (Hinton et al. suggest it; LwF does not).
    """

    name = "lwf"
    description = "learning without forgetting: distil the previous model's outputs (T=2)"
    family = "memory"

    def __init__(self, lambda_: float = 1.0, temperature: float = 2.0) -> None:
        if lambda_ < 0:
            raise ConfigError(f"lwf: lambda must be >= 0, got {lambda_}")
        if temperature <= 0:
            raise ConfigError(f"lwf: temperature must be positive, got {temperature}")
        self.lambda_ = lambda_
        self.temperature = temperature
        self.previous: nn.Module | None = None
        self.old_heads: list[tuple[int, ...]] = []  # output columns of each old head

    def before_task(self, task: Task, model: nn.Module) -> None:
        if task.id == 0:
            return
        self.previous = copy.deepcopy(model).eval().requires_grad_(False)
        seen = self.stream.tasks[: task.id]
        if self.stream.scenario == "task":
            self.old_heads = [tuple(range(*t.columns)) for t in seen]
        elif self.stream.scenario == "class":
            old = torch.cat([t.train.y for t in seen]).unique().tolist()
            self.old_heads = [tuple(int(c) for c in old)]
        else:
            self.old_heads = [tuple(range(*seen[0].columns))]

    def loss(self, model: nn.Module, batch: Batch, task: Task) -> Tensor:
        logits = self.forward(model, batch.x, batch.task_ids)
        loss = classification_loss(logits, batch)
        if self.previous is None or self.lambda_ == 0:
            return loss
        with torch.no_grad():
            old_logits = self.forward(self.previous, batch.x, batch.task_ids)
        for head in self.old_heads:
            cols = to_device(torch.tensor(head), logits.device)
            loss = loss + self.lambda_ * distillation_loss(
                logits[:, cols], old_logits[:, cols], self.temperature
            )
        return loss

    def after_task(self, task: Task, model: nn.Module, fit: FitFn) -> None:
        self.previous = None  # the copy is only needed while training the next task

    def info(self) -> dict[str, Any]:
        return {
            "memory": {
                "stores": "no samples; a frozen copy of the previous model while a task trains",
                "samples": 0,
            }
        }
