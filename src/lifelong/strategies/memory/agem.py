"""Averaged GEM (Chaudhry, Ranzato, Rohrbach & Elhoseiny 2019, "Efficient Lifelong Learning with
A-GEM", ICLR).

A-GEM replaces GEM's one constraint per past task by one constraint on the *average* memory loss:
``<g~, g_ref> >= 0``, where ``g_ref`` is the gradient of the loss on a random sample of the
union of all past tasks' episodic memories. The projection then has a closed form (paper Sec. 4):

    g~ = g                                          if g^T g_ref >= 0
    g~ = g - (g^T g_ref / g_ref^T g_ref) g_ref      otherwise.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lifelong.errors import ConfigError
from lifelong.resources import to_device
from lifelong.strategies.base import Batch, FitFn, Strategy, masked_logits, register
from lifelong.strategies.memory.buffer import EpisodicMemory
from lifelong.strategies.memory.gem import flat_grad, trainable, write_flat_grad
from lifelong.streams.base import Task


def agem_project(g: Tensor, g_ref: Tensor) -> tuple[Tensor, Tensor]:
    """``(g~, projected)``: A-GEM's closed-form projection of ``g`` against ``g_ref``, and
    whether it changed ``g`` (a 0-d bool tensor).

    Written without a branch, ``g~ = g - min(g^T g_ref, 0) / (g_ref^T g_ref) g_ref``: equal to
    the paper's two cases (the coefficient is exactly 0 when ``g^T g_ref >= 0``), and the host
    never waits for the device to learn which case holds.
    """
    dot = torch.dot(g, g_ref)
    norm = torch.dot(g_ref, g_ref).clamp(min=torch.finfo(g.dtype).tiny)
    return g - (dot.clamp(max=0) / norm) * g_ref, dot < 0


@register
class AGEM(Strategy):
    """A-GEM (Chaudhry et al. 2019).

    Each step after the first task: draw ``sample_size`` samples uniformly from the memories of
    all past tasks, compute their gradient ``g_ref`` (one forward/backward pass; in the task
    scenario each sample's loss uses its own task's columns) and project the batch gradient when
    ``g^T g_ref < 0``.

    Args:
        memory_per_task: episodic memory size per task (256, GEM's MNIST setting, so that GEM
            and A-GEM are compared with equal memory).
        sample_size: samples drawn from the memory per step to estimate ``g_ref`` (paper: 256).

    The projected gradient is written at every constrained step (unchanged values when no
    projection is needed): a trainable parameter the batch left without a gradient gets a zero
    one, which an optimizer with momentum or weight decay then moves, as on a projected step.

    Memory: at the end of each task ``memory_per_task`` of its training samples, chosen
    uniformly at random (``gem`` keeps each task's most recent samples instead).
    """

    name = "agem"
    description = "averaged GEM: project the gradient against a sampled memory gradient"
    family = "memory"
    memory_setting = "memory_per_task"

    @classmethod
    def budget(cls, memory: int, tasks: int) -> int:
        """``M / T`` per task: as GEM (Lopez-Paz & Ranzato 2017, Sec. 3), whose episodic memory
        per task A-GEM keeps (Chaudhry et al. 2019, Sec. 4)."""
        return memory // tasks

    def stored_examples(self) -> int:
        return len(self.memory)

    def __init__(self, memory_per_task: int = 256, sample_size: int = 256) -> None:
        if memory_per_task < 1:
            raise ConfigError(f"agem: memory_per_task must be at least 1, got {memory_per_task}")
        if sample_size < 1:
            raise ConfigError(f"agem: sample_size must be at least 1, got {sample_size}")
        self.memory_per_task = memory_per_task
        self.sample_size = sample_size
        self.memory = EpisodicMemory(memory_per_task)
        self.steps = 0
        self.projections = 0

    def after_backward(self, model: nn.Module, batch: Batch, task: Task) -> None:
        rows = self.memory.rows_except(task.id)
        if not rows:
            return
        stored = self.memory.stored(rows)
        if stored > self.sample_size:
            pick = torch.randperm(stored, generator=self.generator)[: self.sample_size]
            pick = to_device(pick, self.memory.y.device)
            x, y, task_ids = self.memory.gather(rows, pick)
        else:
            x, y, task_ids = self.memory.flat(rows)
        ref = Batch(
            x,
            y,
            task_ids,
            self.stream.column_mask(task_ids) if self.stream.scenario == "task" else None,
        )
        params = trainable(model)
        logits = masked_logits(self.forward(model, ref.x, ref.task_ids), ref.mask)
        loss = torch.nn.functional.cross_entropy(logits, ref.y)
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        g_ref = torch.cat(
            [
                (gr if gr is not None else torch.zeros_like(p)).reshape(-1)
                for gr, p in zip(grads, params.values(), strict=True)
            ]
        )
        projected, changed = agem_project(flat_grad(params), g_ref)
        write_flat_grad(params, projected)
        self.projections = changed.long() + self.projections  # a device count: read at task end
        self.steps += 1

    def after_task(self, task: Task, model: nn.Module, fit: FitFn) -> None:
        n = len(task.train)
        pick = torch.randperm(n, generator=self.generator)[: self.memory_per_task]
        pick = pick.sort().values.to(task.train.y.device)
        self.memory.write_all(task.id, task.train.inputs(pick).clone(), task.train.y[pick].clone())

    def info(self) -> dict[str, Any]:
        return {
            "memory": self.memory.describe(),
            "sample_size": self.sample_size,
            "projected_steps": int(self.projections),
            "constrained_steps": self.steps,
        }
