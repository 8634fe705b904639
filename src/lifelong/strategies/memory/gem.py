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
from lifelong.strategies.base import Batch, Strategy, register
from lifelong.strategies.memory.buffer import EpisodicMemory
from lifelong.strategies.samplewise import (
    LinearRecorder,
    linear_inputs_and_output_grads,
    samplewise_linears,
)
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


def memory_factors(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    weights: Tensor,
    masks: Tensor | None,
    linears: dict[str, nn.Linear],
) -> tuple[dict[str, Tensor], dict[str, Tensor | None]] | None:
    """``(inputs a, output gradients δ)`` of every layer in ``linears`` over all ``tasks x
    per_task`` memories (``None``: the model does not fit the factored route).

    One ordinary forward pass over all memories and one backward pass to the outputs of the
    Linear layers, of the weighted loss ``Σ_k L_k``
    (:func:`~lifelong.strategies.samplewise.linear_inputs_and_output_grads`): every sample gets
    the output gradient ``δ_n`` it has in its own task's loss, so task ``k``'s weight gradient of
    a layer is ``Σ_{n∈k} δ_n a_nᵀ`` and its bias gradient ``Σ_{n∈k} δ_n``.
    """
    tasks, per_task = weights.shape
    n = tasks * per_task
    mask = None if masks is None else masks.repeat_interleave(per_task, dim=0)

    def total_loss(logits: Tensor) -> Tensor:
        return _task_losses(logits.reshape(n, -1), y.reshape(n), weights.reshape(n), mask)

    return linear_inputs_and_output_grads(model, x.reshape(n, *x.shape[2:]), total_loss, linears)


def _layer_of(name: str) -> tuple[str, str]:
    """``("features.1.", "weight")`` from ``"features.1.weight"``."""
    prefix, kind = name.rsplit(".", 1) if "." in name else ("", name)
    return (f"{prefix}." if prefix else ""), kind


def assemble_memory_gradients(
    inputs: dict[str, Tensor],
    deltas: dict[str, Tensor | None],
    params: dict[str, Tensor],
    tasks: int,
    out: Tensor,
) -> Tensor:
    """Every task's gradient ``[tasks, n_params]`` from :func:`memory_factors`, written into
    ``out``: per layer one batched matrix product ``[k, out, n] @ [k, n, in]`` for all tasks
    (``Σ_{n∈k} δ_n a_nᵀ``) and one sum for the biases. With the factors' forward and backward
    pass, the arithmetic of one backward pass per task, in a few large matrix products."""
    offset = 0
    for name, p in params.items():
        prefix, kind = _layer_of(name)
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


def factored_dots(
    inputs: dict[str, Tensor],
    deltas: dict[str, Tensor | None],
    current: dict[str, tuple[Tensor, Tensor]],
    params: dict[str, nn.Parameter],
    tasks: int,
) -> Tensor:
    """``G g`` (``[tasks]``: each past task's memory gradient dotted with the current gradient
    ``g``, the ``.grad`` of ``params``) without forming ``G``.

    For a Linear layer, ``<Σ_{n∈k} δ_n a_nᵀ, g_W> = Σ_{n∈k} δ_nᵀ g_W a_n``. The current batch's
    own gradient is ``g_W = Σ_i d_i b_iᵀ`` over its ``B`` rows (``current``: inputs ``b`` and
    output gradients ``d`` recorded while the loop computed it), so the term is
    ``Σ_{n∈k} Σ_i (δ_n·d_i)(a_n·b_i)``: ``B (in + out)`` multiply-adds per memory sample
    instead of the ``in x out`` of its weight gradient (GEM setting, first layer: 8,840
    against 78,400). Layers where that is not cheaper use ``g_W`` itself:
    ``Σ_{n∈k} δ_nᵀ (g_W a_n)``. Bias terms are ``(Σ_{n∈k} δ_n)·g_b``. The caller must check that
    ``current`` reproduces ``g_W`` (:func:`factors_reproduce_gradient`).
    """
    dots = None
    for name, p in params.items():
        prefix, kind = _layer_of(name)
        delta = deltas[prefix]
        if delta is None or p.grad is None:
            continue
        d = delta.reshape(-1, delta.shape[-1])  # [tasks x rows, out]
        if kind == "bias":
            term = (d @ p.grad).reshape(tasks, -1).sum(1)
        else:
            a = inputs[prefix].reshape(-1, p.shape[1])  # [tasks x rows, in]
            b, dc = current[prefix]
            if len(b) * (p.shape[0] + p.shape[1]) < p.shape[0] * p.shape[1]:
                # [B, n] products: MKL runs these about twice as fast as [n, B]
                term = ((dc @ d.T) * (b @ a.T)).sum(0)
            else:
                term = ((a @ p.grad.T) * d).sum(1)
            term = term.reshape(tasks, -1).sum(1)
        dots = term if dots is None else dots + term
    if dots is None:
        return torch.zeros(tasks)
    return dots


def factors_reproduce_gradient(
    current: dict[str, tuple[Tensor, Tensor]], params: dict[str, nn.Parameter]
) -> Tensor:
    """A 0-d bool tensor: ``Σ_i d_i b_iᵀ`` equals every Linear weight's ``.grad`` (so the loss
    the loop differentiated is a sum over the recorded rows and nothing else touched the
    weights, e.g. a penalty on them). Checked at every step; a few ``B x in x out`` products."""
    ok = torch.ones((), dtype=torch.bool)
    for name, p in params.items():
        prefix, kind = _layer_of(name)
        if kind != "weight":
            continue
        if p.grad is None or prefix not in current:
            return torch.zeros((), dtype=torch.bool)
        b, dc = current[prefix]
        got = dc.T @ b
        tolerance = 1e-4 * got.abs().amax().clamp(min=1e-12) + 1e-7
        ok = ok.to(got.device) & ((got - p.grad).abs().amax() <= tolerance)
    return ok


def memory_gradients(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    weights: Tensor,
    masks: Tensor | None,
    out: Tensor | None = None,
) -> Tensor:
    """Gradients of every task's memory loss, ``[tasks, n_params]`` (the trainable parameters in
    ``named_parameters`` order, flattened), all tasks in one pass.

    Args:
        x: ``[tasks, per_task, ...]`` stored inputs; y: ``[tasks, per_task]`` labels.
        weights: ``[tasks, per_task]`` per-sample weights (``1/count`` on stored samples, 0 on
            empty slots), so each task's loss is the mean cross-entropy over its memory.
        masks: ``[tasks, n_outputs]`` columns each task may predict (task scenario), or ``None``.
        out: a ``[tasks, n_params]`` tensor to write into (e.g. a preallocated buffer).

    Two exact routes. When every trainable parameter belongs to a plain ``nn.Linear`` layer
    (called once on all samples, no batch normalisation): one forward and one backward pass over
    all memories, then one batched matrix product per layer (:func:`memory_factors`, :func:`assemble_memory_gradients`).
    Otherwise ``torch.func.vmap`` over ``torch.func.grad`` of one task's loss: batched matrix
    products too, each task's backward seeing only its own samples. Both cost one forward and one
    backward pass per memory sample, the same arithmetic as a loop of one backward pass per task
    (a batched vector-Jacobian product over a concatenated forward would instead cost ``tasks``
    full backward passes).
    """
    params = trainable(model)
    size = sum(p.numel() for p in params.values())
    if out is None:
        p = next(iter(params.values()))
        out = torch.empty(len(x), size, dtype=p.dtype, device=p.device)
    linears = samplewise_linears(model, params)
    if linears is not None:
        factors = memory_factors(model, x, y, weights, masks, linears)
        if factors is not None:
            return assemble_memory_gradients(*factors, params, len(x), out)
    from torch.func import functional_call, grad, vmap  # imported on first use: ~1 s

    detached = {n: p.detach() for n, p in params.items()}
    buffers = dict(model.named_buffers())

    def task_loss(p: dict[str, Tensor], xs: Tensor, ys: Tensor, ws: Tensor, mask: Tensor | None):
        return _task_losses(functional_call(model, (p, buffers), (xs,)), ys, ws, mask)

    in_dims = (None, 0, 0, 0, 0 if masks is not None else None)
    grads = vmap(grad(task_loss), in_dims=in_dims)(detached, x, y, weights, masks)
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
        factored_check: check the constraints without forming ``G`` (an exact identity, not in
            the paper; :func:`factored_dots`): when the model is plain Linear layers, ``<g_k,
            g>`` is computed from the memories' and the batch's per-sample factors, and the
            memories' weight gradients are formed only on the steps where some constraint is
            violated (the QP needs them). ``False``: form ``G`` at every step, as the paper
            and the authors' code do. Both give the same decisions up to float rounding of
            ``<g_k, g>`` near 0.

    Memory: the most recent ``memory_per_task`` training samples of each task (a ring buffer
    filled as batches arrive, as in the authors' code; the paper leaves the choice open).
    ``info()`` reports the time per step split into current gradient, memory gradients (with
    the constraint check), QP (dual QP and projection) and update (the optimizer step), and the
    stored samples put through a forward and a backward pass to the layers' outputs
    (``memory_sample_passes``), of which those whose weight gradients were also formed
    (``memory_gradient_samples``; all of them without the factored check): the work ``make
    bench`` counts. ``factored_checks``: steps checked with the factored gradient. No timer synchronises a GPU: the step's one host synchronisation is
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
        factored_check: bool = True,
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
        self.factored_check = bool(factored_check)
        self.memory = EpisodicMemory(memory_per_task)
        self.seconds = dict.fromkeys(
            ("current_gradient", "memory_gradients", "qp", "update", "memory_update"), 0.0
        )
        self.steps = 0
        self.constrained_steps = 0  # steps with at least one past task
        self.qp_solves = 0  # steps on which some constraint was violated
        self.memory_sample_passes = 0  # stored samples put through forward + backward
        self.memory_gradient_samples = 0  # stored samples whose weight gradients were formed
        self.factored_checks = 0  # steps whose constraint check used the factored gradient
        self._mark = 0.0
        self._buffer: Tensor | None = None
        self._recorder: LinearRecorder | None = None
        self._linears_key: tuple | None = None
        self._linears_found: dict[str, nn.Linear] | None = None

    def _linears(self, model: nn.Module, params: dict[str, nn.Parameter]):
        """The model's Linear layers when it fits the factored route (cached per parameter set)."""
        key = (id(model), tuple(id(p) for p in params.values()))
        if self._linears_key != key:
            self._linears_key = key
            self._linears_found = samplewise_linears(model, params)
        return self._linears_found

    def loss(self, model: nn.Module, batch: Batch, task: Task) -> Tensor:
        """The batch's loss; when past memories exist and the model is made of plain Linear
        layers, its forward pass is recorded (:class:`LinearRecorder`) so that the constraint
        check can use the batch's gradient in factored form (:func:`factored_dots`)."""
        self._mark = time.perf_counter()
        linears = None
        if self.factored_check and self.memory.rows_except(task.id):
            linears = self._linears(model, trainable(model))
        if linears is None:
            self._recorder = None
            return super().loss(model, batch, task)
        self._recorder = LinearRecorder(linears)
        with self._recorder:
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
        recorder, self._recorder = self._recorder, None
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
            params = trainable(model)
            x, y, weights = self.memory.x[index], self.memory.y[index], self.memory.weights(rows)
            scratch = self._scratch(len(rows), params)
            linears = self._linears(model, params)
            factors = (
                None if linears is None else memory_factors(model, x, y, weights, masks, linears)
            )
            current = None if recorder is None or factors is None else recorder.factors()
            past = None
            if current is not None and current.keys() == factors[0].keys():
                # G g from the factors; G itself only when some constraint is violated
                dots = factored_dots(*factors, current, params, len(rows))
                fine, same = torch.stack(
                    [(dots >= 0).all(), factors_reproduce_gradient(current, params)]
                ).tolist()  # the step's one host synchronisation
                if same:
                    self.factored_checks += 1
                    if not fine:
                        past = assemble_memory_gradients(*factors, params, len(rows), scratch)
                    violated = not fine
                else:
                    current = None
            if current is None:
                if factors is not None:
                    past = assemble_memory_gradients(*factors, params, len(rows), scratch)
                else:
                    past = memory_gradients(model, x, y, weights, masks, out=scratch)
                violated = True  # decided below from G g
            mid = time.perf_counter()
            if past is not None:
                self.memory_gradient_samples += self.memory.stored(rows)
                g = flat_grad(params)
                dots = past @ g
                # On the dense route this is the step's one host synchronisation. On a GPU the
                # time split is therefore exact only at this point and after the QP.
                violated = not bool((dots >= 0).all())
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
        skip = ("_buffer", "_recorder", "_linears_key", "_linears_found")
        return {k: v for k, v in super().state_dict().items() if k not in skip}

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
            "memory_gradient_samples": self.memory_gradient_samples,
            "factored_checks": self.factored_checks,
            "seconds": dict(self.seconds),
            "ms_per_step": per_step,
            "ms_per_constrained_step": per_constrained,
        }
