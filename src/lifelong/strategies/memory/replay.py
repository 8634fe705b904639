"""Experience replay with a bounded buffer (Chaudhry et al. 2019, "On Tiny Episodic Memories in
Continual Learning"; reservoir sampling: Vitter 1985; as a continual-learning baseline also
Rolnick et al. 2019, "Experience Replay for Continual Learning").

Every step trains on the current batch concatenated with an equally large batch drawn uniformly
from the buffer, as in the ER baseline of Chaudhry et al. 2019, so the loss is the mean
cross-entropy over both halves.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lifelong.errors import ConfigError
from lifelong.strategies.base import Batch, FitFn, Strategy, classification_loss, register
from lifelong.strategies.memory.buffer import SampleBuffer, class_balanced_indices
from lifelong.streams.base import Task

SELECTIONS = ("reservoir", "class-balanced")


@register
class Replay(Strategy):
    """Experience replay (ER) from a bounded memory of real samples.

    Args:
        memory_size: total samples the buffer holds, over all tasks (Chaudhry et al. 2019 vary it
            from 1 to 5 samples per class; 500 is a common middle ground).
        selection: which samples the buffer keeps:
            ``reservoir``: Vitter's Algorithm R over every training sample as it is seen (each
            sample seen so far is stored with equal probability ``memory_size / seen``);
            ``class-balanced``: at the end of each task, an equal share of the buffer for every
            class seen so far, drawn uniformly within each class from the buffer and the
            task's training data.
        replay_batch_size: samples drawn from the buffer per step (0: the current batch's size,
            as in Chaudhry et al. 2019).

    In the task scenario each replayed sample's loss uses its own task's columns. Budget
    (``--memory N``): one buffer of N samples shared by all tasks and classes (Chaudhry et al.
    2019); ``class-balanced`` gives every class seen an equal share of it.
    """

    name = "replay"
    description = "experience replay from a bounded buffer (reservoir or class-balanced)"
    family = "memory"
    memory_setting = "memory_size"

    def stored_examples(self) -> int:
        return len(self.buffer)

    def __init__(
        self, memory_size: int = 500, selection: str = "reservoir", replay_batch_size: int = 0
    ) -> None:
        if memory_size < 1:
            raise ConfigError(f"replay: memory_size must be at least 1, got {memory_size}")
        if selection not in SELECTIONS:
            raise ConfigError(
                f"replay: selection must be one of {', '.join(SELECTIONS)}, got {selection!r}"
            )
        if replay_batch_size < 0:
            raise ConfigError(f"replay: replay_batch_size must be >= 0, got {replay_batch_size}")
        self.memory_size = memory_size
        self.selection = selection
        self.replay_batch_size = replay_batch_size
        self.buffer = SampleBuffer(memory_size)

    def loss(self, model: nn.Module, batch: Batch, task: Task) -> Tensor:
        if len(self.buffer) == 0:
            return super().loss(model, batch, task)
        x, y, task_ids = self.buffer.sample(self.replay_batch_size or len(batch), self.generator)
        mask = None
        if batch.mask is not None:
            mask = torch.cat([batch.mask, self.stream.column_mask(task_ids)])
        mixed = Batch(
            torch.cat([batch.x, x.to(batch.x.dtype)]),
            torch.cat([batch.y, y]),
            torch.cat([batch.task_ids, task_ids]),
            mask,
        )
        return classification_loss(self.forward(model, mixed.x, mixed.task_ids), mixed)

    def after_step(self, model: nn.Module, batch: Batch, task: Task) -> None:
        if self.selection == "reservoir":
            self.buffer.add_reservoir(batch.x, batch.y, batch.task_ids, self.generator)

    def after_task(self, task: Task, model: nn.Module, fit: FitFn) -> None:
        if self.selection != "class-balanced":
            return
        y_new = task.train.y
        y_all = torch.cat([self.buffer.y, y_new]) if len(self.buffer) else y_new
        keep = class_balanced_indices(y_all, self.memory_size, self.generator)
        old = keep[keep < len(self.buffer)]
        new = keep[keep >= len(self.buffer)] - len(self.buffer)
        x_new = task.train.inputs(new)
        t_new = torch.full((len(new),), task.id, dtype=torch.long, device=y_new.device)
        if len(self.buffer):
            x = torch.cat([self.buffer.x[old], x_new.to(self.buffer.x.dtype)])
            y = torch.cat([self.buffer.y[old], y_new[new]])
            t = torch.cat([self.buffer.task_ids[old], t_new])
        else:
            x, y, t = x_new, y_new[new], t_new
        self.buffer.replace(x, y, t)

    def info(self) -> dict[str, Any]:
        return {
            "memory": {
                "stores": f"real training samples (inputs, labels, task ids), {self.selection}",
                "samples": len(self.buffer),
                "capacity": self.memory_size,
                "bytes": self.buffer.nbytes(),
                "per_class": {str(k): v for k, v in self.buffer.class_counts().items()},
            },
            "samples_seen": self.buffer.seen,
        }
