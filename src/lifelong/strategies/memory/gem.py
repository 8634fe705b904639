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
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.errors import ConfigError
from lifelong.resources import to_device
from lifelong.strategies.base import Batch, Strategy, register
from lifelong.strategies.memory.buffer import EpisodicMemory
from lifelong.strategies.samplewise import linear_inputs_and_output_grads, samplewise_linears
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


def _task_losses(logits: Tensor, y: Tensor, weights: Tensor, mask: Tensor | None) -> Tensor:
    """``Σ_n w_n CE_n``: with ``w_n = 1/count`` on a task's samples, each task's mean loss."""
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return (F.cross_entropy(logits, y, reduction="none") * weights).sum()


def _linear_memory_gradients(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    weights: Tensor,
    masks: Tensor | None,
    params: dict[str, Tensor],
    linears: dict[str, nn.Linear],
    out: Tensor,
) -> Tensor | None:
    """The outer-product route of :func:`memory_gradients` (``None``: the model does not fit it).

    One ordinary forward pass over all ``tasks x per_task`` memories and one backward pass to the
    outputs of the Linear layers, of the weighted loss ``Σ_k L_k``
    (:func:`~lifelong.strategies.samplewise.linear_inputs_and_output_grads`): every sample gets
    the output gradient ``δ_n`` it has in its own task's loss. A Linear layer's weight gradient
    of task ``k`` is then ``Σ_{n∈k} δ_n a_nᵀ`` (``a_n`` the layer's input), one batched matrix
    product ``[k, out, n] @ [k, n, in]`` for all tasks, written straight into ``out``; the bias
    gradient is ``Σ_{n∈k} δ_n``. The arithmetic is one forward and one backward pass per memory
    sample, as with one backward pass per task, but in a few large matrix products.
    """
    tasks, per_task = weights.shape
    n = tasks * per_task
    mask = None if masks is None else masks.repeat_interleave(per_task, dim=0)

    def total_loss(logits: Tensor) -> Tensor:
        return _task_losses(logits.reshape(n, -1), y.reshape(n), weights.reshape(n), mask)

    found = linear_inputs_and_output_grads(model, x.reshape(n, *x.shape[2:]), total_loss, linears)
    if found is None:
        return None
    inputs, deltas = found
    offset = 0
    for name, p in params.items():
        prefix, kind = name.rsplit(".", 1) if "." in name else ("", name)
        prefix = f"{prefix}." if prefix else ""
        block = out[:, offset : offset + p.numel()]
        offset += p.numel()
        delta = deltas[prefix]
        if delta is None:
            block.zero_()
            continue
        delta = delta.reshape(tasks, -1, delta.shape[-1])  # [tasks, per_task (x positions), out]
        if kind == "weight":
            a = inputs[prefix].reshape(tasks, -1, p.shape[1])
            torch.bmm(delta.transpose(1, 2), a, out=block.view(tasks, *p.shape))
        else:
            torch.sum(delta, dim=1, out=block)
    return out


def couples_or_mutates(model: nn.Module) -> bool:
    """Whether a forward pass of ``model`` as it is now normalises over the batch or updates
    buffers in place: a batch norm layer in training mode (or one without running statistics,
    which always uses the batch's), or an instance norm layer tracking running statistics in
    training mode. ``torch.func.vmap`` can do neither (an in-place update of a captured buffer
    is an error; batch statistics of a padded memory row would take in its empty slots)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (
            m.training or not m.track_running_stats
        ):
            return True
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.training and m.track_running_stats:
            return True
    return False


def _looped_memory_gradients(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    weights: Tensor,
    masks: Tensor | None,
    params: dict[str, nn.Parameter],
    out: Tensor,
) -> Tensor:
    """The per-task route of :func:`memory_gradients`: for each task, one ordinary forward pass
    over its stored samples alone (they form their own batch) and one backward pass, written into
    its row of ``out``. ``torch.autograd.grad`` returns the gradients without accumulating them,
    so the parameters' ``.grad`` (GEM's current batch gradient) stays as it was."""
    counts = (weights > 0).sum(dim=1).tolist()  # stored samples are each row's leading slots
    leaves = list(params.values())
    for k, n in enumerate(counts):
        mask = None if masks is None else masks[k]
        loss = _task_losses(model(x[k, :n]), y[k, :n], weights[k, :n], mask)
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        offset = 0
        for g, p in zip(grads, leaves, strict=True):
            block = out[k, offset : offset + p.numel()]
            offset += p.numel()
            if g is None:
                block.zero_()
            else:
                block.copy_(g.reshape(-1))
    return out


def memory_gradients(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    weights: Tensor,
    masks: Tensor | None,
    out: Tensor | None = None,
) -> Tensor:
    """Gradients of every task's memory loss, ``[tasks, n_params]`` (the trainable parameters in
    ``named_parameters`` order, flattened).

    Args:
        x: ``[tasks, per_task, ...]`` stored inputs; y: ``[tasks, per_task]`` labels.
        weights: ``[tasks, per_task]`` per-sample weights (``1/count`` on stored samples, which
            are each row's leading slots, 0 on empty slots), so each task's loss is the mean
            cross-entropy over its memory.
        masks: ``[tasks, n_outputs]`` columns each task may predict (task scenario), or ``None``.
        out: a ``[tasks, n_params]`` tensor to write into (e.g. a preallocated buffer).

    Three exact routes, none of which touches the parameters' ``.grad``. When every trainable
    parameter belongs to a plain ``nn.Linear`` layer (called once on all samples, no batch
    normalisation): one forward and one backward pass over all memories, then one batched matrix
    product per layer (:func:`_linear_memory_gradients`). When the model normalises over the
    batch or updates buffers in training mode (batch norm: :func:`couples_or_mutates`): a loop
    of one forward and one backward pass per task, each task's memory its own batch, as in the
    authors' code (:func:`_looped_memory_gradients`); batch norm's running statistics are then
    updated by every task's memory pass. Otherwise ``torch.func.vmap`` over ``torch.func.grad``
    of one task's loss: batched matrix products too, each task's backward seeing only its own
    samples (dropout draws a mask for each task, as each pass of the loop would). All three
    cost one forward and one backward pass per memory sample, the same arithmetic (a batched
    vector-Jacobian product over a concatenated forward would instead cost ``tasks`` full
    backward passes); the loop does it in ``tasks`` smaller passes, one after another.
    """
    params = trainable(model)
    size = sum(p.numel() for p in params.values())
    if out is None:
        p = next(iter(params.values()))
        out = torch.empty(len(x), size, dtype=p.dtype, device=p.device)
    if couples_or_mutates(model):
        return _looped_memory_gradients(model, x, y, weights, masks, params, out)
    linears = samplewise_linears(model, params)
    if linears is not None:
        done = _linear_memory_gradients(model, x, y, weights, masks, params, linears, out)
        if done is not None:
            return done
    from torch.func import functional_call, grad, vmap  # imported on first use: ~1 s

    detached = {n: p.detach() for n, p in params.items()}
    buffers = dict(model.named_buffers())

    def task_loss(p: dict[str, Tensor], xs: Tensor, ys: Tensor, ws: Tensor, mask: Tensor | None):
        return _task_losses(functional_call(model, (p, buffers), (xs,)), ys, ws, mask)

    in_dims = (None, 0, 0, 0, 0 if masks is not None else None)
    batched = vmap(grad(task_loss), in_dims=in_dims, randomness="different")
    grads = batched(detached, x, y, weights, masks)
    return torch.cat([g.reshape(len(x), -1) for g in grads.values()], dim=1, out=out)


def solve_gem_dual(
    g: Tensor,
    past: Tensor,
    margin: float = 0.5,
    ridge: float = 1e-6,
    relative: bool = True,
    dots: Tensor | None = None,
) -> Tensor:
    """GEM's projected gradient: solve the dual QP with quadprog and map back.

    Args:
        g: ``[P]`` proposed gradient. past: ``[t, P]`` gradients of the past tasks' memories.
        margin: lower bound ``gamma`` on the dual variables (``v >= gamma``); 0 gives the exact
            projection of the paper's primal problem.
        ridge: added to the diagonal of ``G G^T``, relative to its mean diagonal, so the QP is
            strictly convex as quadprog requires even when two memory gradients coincide; the
            constraints then hold up to ``ridge * mean(diag) * v_k``.
        relative: ``False``: ``ridge`` is added as is (the authors' code adds ``eps = 1e-3``).
        dots: ``G g`` when already computed (the violation check needs it).

    Returns ``g~ = G^T v* + g``. With ``v >= gamma`` the KKT conditions give
    ``G g~ = lambda >= 0`` (``lambda`` the multipliers of the bounds), so every constraint
    ``<g~, g_k> >= 0`` holds while each past gradient is added with weight at least gamma.
    The products with ``G`` (``G G^T``, ``G g``, ``G^T v``) run in the gradients' dtype where
    they live; the ``t x t`` problem is solved in float64 (the authors' code does all of it in
    float64 on the CPU, which costs a float64 copy of ``G`` at every solve).
    """
    import quadprog  # only runs that solve a QP pay for the import

    t = len(past)
    gram = (past @ past.T).double().cpu().numpy()
    gram = 0.5 * (gram + gram.T)
    scale = max(float(np.trace(gram)) / t, 1e-30) if relative else 1.0
    gram += np.eye(t) * ridge * scale
    lin = (past @ g if dots is None else dots).double().cpu().numpy()
    # quadprog.solve_qp minimises 1/2 v^T A v - a^T v subject to C^T v >= b.
    v = quadprog.solve_qp(gram, -lin, np.eye(t), np.full(t, float(margin)))[0]
    return torch.addmv(g, past.T, torch.from_numpy(v).to(dtype=g.dtype, device=g.device))


def gem_project(
    g: Tensor, past: Tensor, margin: float = 0.5, ridge: float = 1e-6, relative: bool = True
) -> tuple[Tensor, bool]:
    """``(g~, solved)``: ``g`` unchanged when ``<g, g_k> >= 0`` for every past ``k`` (no QP is
    solved, as in the paper), else the solution of :func:`solve_gem_dual`. The check is the one
    host synchronisation of a GEM step: whether to solve the QP is a decision on the host."""
    if len(past) == 0:
        return g, False
    dots = past @ g
    if bool((dots >= 0).all()):
        return g, False
    return solve_gem_dual(g, past, margin, ridge, relative, dots), True


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
    Batch norm: each past task's memory is its own training-mode batch, as in the authors' code,
    whose memory passes update the running statistics too; there they run before the current
    batch's pass, here after it (the trainer's loss comes first), so the gradients are the same
    and the running statistics take the same batches in another order.
    ``info()`` reports the time per step split into current gradient, memory gradients (with
    the constraint check), QP (dual QP and projection) and update (the optimizer step), and the
    stored samples put through forward and backward passes (``memory_sample_passes``, the work
    ``make bench`` counts). No timer synchronises a GPU: the step's one host synchronisation is
    the constraint check, so on a GPU the split is exact only at that point.
    """

    name = "gem"
    description = "gradient episodic memory: project the gradient so no past memory loss rises"
    family = "memory"
    memory_setting = "memory_per_task"

    @classmethod
    def budget(cls, memory: int, tasks: int) -> int:
        """``M / T`` per task: "when the total number of tasks T is known, we can allocate
        m = M/T memories for each task" (Lopez-Paz & Ranzato 2017, Sec. 3)."""
        return memory // tasks

    def stored_examples(self) -> int:
        return len(self.memory)

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
        self.memory_sample_passes = 0  # stored samples put through forward + backward
        self._mark = 0.0
        self._buffer: Tensor | None = None

    def loss(self, model: nn.Module, batch: Batch, task: Task) -> Tensor:
        self._mark = time.perf_counter()
        return super().loss(model, batch, task)

    def _scratch(self, tasks: int, params: dict[str, nn.Parameter]) -> Tensor:
        """A reused ``[tasks, n_params]`` buffer for the memory gradients (a fresh 7 MB tensor
        per step would cost page faults and zeroing on every step on a CPU)."""
        size = sum(p.numel() for p in params.values())
        p = next(iter(params.values()))
        buf = self._buffer
        if buf is None or buf.shape[1] != size or len(buf) < tasks or buf.device != p.device:
            buf = torch.empty(
                max(tasks, 2 * len(buf) if buf is not None else 0),
                size,
                dtype=p.dtype,
                device=p.device,
            )
            self._buffer = buf
        return buf[:tasks]

    def after_backward(self, model: nn.Module, batch: Batch, task: Task) -> None:
        start = time.perf_counter()
        self.seconds["current_gradient"] += start - self._mark
        rows = self.memory.rows_except(task.id)
        if rows:
            device = self.memory.y.device
            # past tasks are the leading rows (a view, no copy); otherwise gather them
            index = (
                slice(0, len(rows))
                if rows == list(range(len(rows)))
                else to_device(torch.tensor(rows), device)
            )
            masks = None
            if self.stream.scenario == "task":
                ids = to_device(torch.tensor([self.memory.task_ids[r] for r in rows]), device)
                masks = self.stream.column_mask(ids)
            params = trainable(model)
            past = memory_gradients(
                model,
                self.memory.x[index],
                self.memory.y[index],
                self.memory.weights(rows),
                masks,
                out=self._scratch(len(rows), params),
            )
            g = flat_grad(params)
            dots = past @ g
            # The step's one host synchronisation: whether a QP is needed. On a GPU the time
            # split below is therefore exact only at this point and after the QP.
            violated = not bool((dots >= 0).all())
            mid = time.perf_counter()
            if violated:
                projected = solve_gem_dual(
                    g, past, self.margin, self.ridge, not self.absolute_ridge, dots
                )
                write_flat_grad(params, projected)
                self.qp_solves += 1
            end = time.perf_counter()
            self.seconds["memory_gradients"] += mid - start
            self.seconds["qp"] += end - mid
            self.constrained_steps += 1
            self.memory_sample_passes += self.memory.stored(rows)
        self._mark = time.perf_counter()

    def after_step(self, model: nn.Module, batch: Batch, task: Task) -> None:
        start = time.perf_counter()
        self.seconds["update"] += start - self._mark
        self.memory.write_recent(task.id, batch.x, batch.y)
        self.seconds["memory_update"] += time.perf_counter() - start
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        """As the base class, without the scratch buffer (it holds nothing between steps)."""
        return {k: v for k, v in super().state_dict().items() if k != "_buffer"}

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
            "memory_sample_passes": self.memory_sample_passes,
            "seconds": dict(self.seconds),
            "ms_per_step": per_step,
            "ms_per_constrained_step": per_constrained,
        }
