"""Gradient Episodic Memory (Lopez-Paz & Ranzato 2017, "Gradient Episodic Memory for Continual
Learning", NeurIPS).

Each past task ``k`` keeps an episodic memory ``M_k``. At every step the update ``g~`` may not
increase the loss of any memory, to first order: ``<g~, g_k> >= 0`` for every past ``k``, where
``g_k`` is the gradient of the loss on ``M_k``. When the proposed gradient ``g`` violates a
constraint, GEM projects it to the closest gradient (in squared L2 norm) that satisfies them all,
a quadratic program in as many variables as parameters. The paper solves its dual, which has one
variable per past task:

    primal:  min_z 1/2 ||g - z||^2        s.t.  G z >= 0        (rows of G: g_1 ... g_{t-1})
    dual:    min_v 1/2 v^T G G^T v + g^T G^T v   s.t.  v >= 0,    g~ = G^T v* + g.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import quadprog
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from lifelong.errors import ConfigError
from lifelong.strategies.base import Batch, Strategy, register
from lifelong.strategies.memory.buffer import EpisodicMemory
from lifelong.streams.base import Task


def trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters that take part in the update, by name."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def flat_grad(params: dict[str, nn.Parameter]) -> Tensor:
    """The current ``.grad`` of ``params`` as one vector (zeros where a gradient is missing)."""
    return torch.cat(
        [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
            for p in params.values()
        ]
    )


def write_flat_grad(params: dict[str, nn.Parameter], vector: Tensor) -> None:
    """Set the ``.grad`` of ``params`` from one vector."""
    offset = 0
    for p in params.values():
        n = p.numel()
        p.grad = vector[offset : offset + n].view_as(p).to(p.dtype).clone()
        offset += n


def memory_gradients(
    model: nn.Module, x: Tensor, y: Tensor, weights: Tensor, masks: Tensor | None
) -> Tensor:
    """Gradients of every task's memory loss, ``[tasks, n_params]``, in one vectorised call.

    Args:
        x: ``[tasks, per_task, ...]`` stored inputs; y: ``[tasks, per_task]`` labels.
        weights: ``[tasks, per_task]`` per-sample weights (``1/count`` on stored samples, 0 on
            empty slots), so each task's loss is the mean cross-entropy over its memory.
        masks: ``[tasks, n_outputs]`` columns each task may predict (task scenario), or ``None``.

    ``torch.func.vmap`` over ``torch.func.grad`` runs the forward and backward passes of all tasks
    together as batched matrix products: the same arithmetic as one backward pass per task, in
    one call, and each task's backward sees only its own samples (a batched vector-Jacobian
    product over a concatenated forward would instead cost ``tasks`` full backward passes).
    """
    params = {n: p.detach() for n, p in trainable(model).items()}
    buffers = dict(model.named_buffers())

    def task_loss(p: dict[str, Tensor], xs: Tensor, ys: Tensor, ws: Tensor, mask: Tensor | None):
        logits = functional_call(model, (p, buffers), (xs,))
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        return (F.cross_entropy(logits, ys, reduction="none") * ws).sum()

    in_dims = (None, 0, 0, 0, 0 if masks is not None else None)
    grads = vmap(grad(task_loss), in_dims=in_dims)(params, x, y, weights, masks)
    return torch.cat([g.reshape(len(x), -1) for g in grads.values()], dim=1)


def solve_gem_dual(
    g: Tensor, past: Tensor, margin: float = 0.5, ridge: float = 1e-6, relative: bool = True
) -> Tensor:
    """GEM's projected gradient: solve the dual QP with quadprog and map back (float64 inside).

    Args:
        g: ``[P]`` proposed gradient. past: ``[t, P]`` gradients of the past tasks' memories.
        margin: lower bound ``gamma`` on the dual variables (``v >= gamma``); 0 gives the exact
            projection of the paper's primal problem.
        ridge: added to the diagonal of ``G G^T``, relative to its mean diagonal, so the QP is
            strictly convex as quadprog requires even when two memory gradients coincide; the
            constraints then hold up to ``ridge * mean(diag) * v_k``.
        relative: ``False``: ``ridge`` is added as is (the authors' code adds ``eps = 1e-3``).

    Returns ``g~ = G^T v* + g``. With ``v >= gamma`` the KKT conditions give
    ``G g~ = lambda >= 0`` (``lambda`` the multipliers of the bounds), so every constraint
    ``<g~, g_k> >= 0`` holds while each past gradient is added with weight at least gamma.
    """
    G = past.detach().double().cpu().numpy()
    gv = g.detach().double().cpu().numpy()
    t = len(G)
    gram = G @ G.T
    gram = 0.5 * (gram + gram.T)
    scale = max(float(np.trace(gram)) / t, 1e-30) if relative else 1.0
    gram += np.eye(t) * ridge * scale
    # quadprog.solve_qp minimises 1/2 v^T A v - a^T v subject to C^T v >= b.
    v = quadprog.solve_qp(gram, -(G @ gv), np.eye(t), np.full(t, float(margin)))[0]
    return torch.from_numpy(G.T @ v + gv).to(dtype=g.dtype, device=g.device)


def gem_project(
    g: Tensor, past: Tensor, margin: float = 0.5, ridge: float = 1e-6, relative: bool = True
) -> tuple[Tensor, bool]:
    """``(g~, solved)``: ``g`` unchanged when ``<g, g_k> >= 0`` for every past ``k`` (no QP is
    solved, as in the paper), else the solution of :func:`solve_gem_dual`."""
    if len(past) == 0 or bool((past @ g >= 0).all()):
        return g, False
    return solve_gem_dual(g, past, margin, ridge, relative), True


@register
class GEM(Strategy):
    """Gradient Episodic Memory (Lopez-Paz & Ranzato 2017).

    Every step: the gradient ``g`` of the current batch; the gradients ``g_k`` of the episodic
    memories of all past tasks (one vectorised call, :func:`memory_gradients`); if some
    ``<g, g_k> < 0``, the dual QP (paper Sec. 3) is solved with quadprog and ``g`` is replaced
    by ``g~ = G^T v* + g``. The optimizer then steps with ``g~``. In the task scenario each
    memory's loss uses only its task's output columns, as in the paper's multi-head CIFAR setup.

    Args:
        memory_per_task: episodic memory size per task (paper: 256 on MNIST and CIFAR-100).
        margin: gamma, the paper's small constant added to the dual solution that biases the
            projection toward positive backward transfer (paper: 0.5). Following the authors'
            code it is a lower bound on the dual variables (``v >= gamma``), which keeps every
            constraint ``<g~, g_k> >= 0`` satisfied; adding gamma to the optimal ``v*`` after
            solving, the literal reading, can break them.
        ridge: Tikhonov term on ``G G^T`` for a strictly convex QP (not in the paper; a
            numerical safeguard for coinciding memory gradients). Default 1e-6 relative to the
            mean of ``diag(G G^T)``, so that it does not depend on the scale of the gradients.
        absolute_ridge: add ``ridge`` as is, as the authors' code does with its ``eps = 1e-3``
            (use ``ridge=1e-3,absolute_ridge=true`` for their setting, which produced the
            paper's numbers). Not the default: an absolute 1e-3 is large next to ``G G^T`` of
            small gradients (late in training every ``|g_k|² ≪ 1e-3``), and then the constraints
            hold only up to ``1e-3 · v_k``; the relative ridge keeps the same small
            perturbation at every scale.

    Memory: the most recent ``memory_per_task`` training samples of each task (a ring buffer
    filled as batches arrive, as in the authors' code; the paper leaves the choice open).
    ``info()`` reports the time per step split into current gradient, memory gradients, QP
    (constraint check, dual QP, projection) and update (the optimizer step).
    """

    name = "gem"
    description = "gradient episodic memory: project the gradient so no past memory loss rises"
    family = "memory"

    def __init__(
        self,
        memory_per_task: int = 256,
        margin: float = 0.5,
        ridge: float = 1e-6,
        absolute_ridge: bool = False,
    ) -> None:
        if memory_per_task < 1:
            raise ConfigError(f"gem: memory_per_task must be at least 1, got {memory_per_task}")
        if margin < 0:
            raise ConfigError(f"gem: margin must be >= 0, got {margin}")
        if ridge < 0:
            raise ConfigError(f"gem: ridge must be >= 0, got {ridge}")
        self.memory_per_task = memory_per_task
        self.margin = margin
        self.ridge = ridge
        self.absolute_ridge = bool(absolute_ridge)
        self.memory = EpisodicMemory(memory_per_task)
        self.seconds = dict.fromkeys(
            ("current_gradient", "memory_gradients", "qp", "update", "memory_update"), 0.0
        )
        self.steps = 0
        self.constrained_steps = 0  # steps with at least one past task
        self.qp_solves = 0  # steps on which some constraint was violated
        self._mark = 0.0

    def _sync(self, model: nn.Module) -> None:
        p = next(model.parameters(), None)
        if p is not None and p.is_cuda:
            torch.cuda.synchronize(p.device)

    def loss(self, model: nn.Module, batch: Batch, task: Task) -> Tensor:
        self._mark = time.perf_counter()
        return super().loss(model, batch, task)

    def after_backward(self, model: nn.Module, batch: Batch, task: Task) -> None:
        self._sync(model)
        start = time.perf_counter()
        self.seconds["current_gradient"] += start - self._mark
        rows = self.memory.rows_except(task.id)
        if rows:
            device = self.memory.y.device
            # past tasks are the leading rows (a view, no copy); otherwise gather them
            index = (
                slice(0, len(rows))
                if rows == list(range(len(rows)))
                else torch.tensor(rows, device=device)
            )
            masks = None
            if self.stream.scenario == "task":
                ids = torch.tensor([self.memory.task_ids[r] for r in rows], device=device)
                masks = self.stream.column_mask(ids)
            past = memory_gradients(
                model, self.memory.x[index], self.memory.y[index], self.memory.weights(rows), masks
            )
            self._sync(model)
            mid = time.perf_counter()
            params = trainable(model)
            g = flat_grad(params)
            projected, solved = gem_project(
                g, past, self.margin, self.ridge, not self.absolute_ridge
            )
            if solved:
                write_flat_grad(params, projected)
                self.qp_solves += 1
            self._sync(model)
            end = time.perf_counter()
            self.seconds["memory_gradients"] += mid - start
            self.seconds["qp"] += end - mid
            self.constrained_steps += 1
        self._mark = time.perf_counter()

    def after_step(self, model: nn.Module, batch: Batch, task: Task) -> None:
        self._sync(model)
        start = time.perf_counter()
        self.seconds["update"] += start - self._mark
        self.memory.write_recent(task.id, batch.x, batch.y)
        self.seconds["memory_update"] += time.perf_counter() - start
        self.steps += 1

    def info(self) -> dict[str, Any]:
        per_step = {k: 1000 * v / max(self.steps, 1) for k, v in self.seconds.items()}
        per_constrained = {
            k: 1000 * self.seconds[k] / max(self.constrained_steps, 1)
            for k in ("memory_gradients", "qp")
        }
        return {
            "memory": self.memory.describe(),
            "steps": self.steps,
            "constrained_steps": self.constrained_steps,
            "qp_solves": self.qp_solves,
            "seconds": dict(self.seconds),
            "ms_per_step": per_step,
            "ms_per_constrained_step": per_constrained,
        }
