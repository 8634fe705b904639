"""Sliced Cramér preservation (SCP): importance from random projections of the mean response."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev

from lifelong.errors import ConfigError
from lifelong.strategies.base import FitFn, register
from lifelong.strategies.regularization.anchor import (
    AnchoredStrategy,
    ParamDict,
    QuadraticPenalty,
    check_fraction,
    check_positive,
    snapshot,
    trainable,
)
from lifelong.strategies.regularization.persample import pick_samples
from lifelong.streams.base import Task

JACOBIAN_CHUNK = 1024
"""Samples per forward pass while differentiating the mean response."""


def mean_response_jacobian(
    model: nn.Module,
    task: Task,
    samples: int | None = None,
    generator: torch.Generator | None = None,
) -> ParamDict:
    """``J = ∂ φ̄ / ∂θ`` with ``φ̄ = 1/N Σ_n φ(x_n)`` the mean output over the task's columns.

    One tensor ``[K, *shape]`` per parameter (K = number of the task's columns), by reverse-mode
    Jacobian (``torch.func.jacrev``), accumulated chunk by chunk since φ̄ is a mean. ``samples``
    inputs are drawn from ``generator`` (``None``: all inputs).
    """
    params = {name: p.detach() for name, p in trainable(model).items()}
    buffers = dict(model.named_buffers())
    start, stop = task.columns
    data = task.train
    device = next(iter(params.values())).device
    idx = pick_samples(len(data), samples, device, generator)

    def chunk_sum(p: ParamDict, x: Tensor) -> Tensor:
        return functional_call(model, (p, buffers), (x,))[:, start:stop].sum(0)

    total: ParamDict | None = None
    was_training = model.training
    model.eval()
    try:
        for first in range(0, len(idx), JACOBIAN_CHUNK):
            jac = jacrev(chunk_sum)(params, data.inputs(idx[first : first + JACOBIAN_CHUNK]))
            if total is None:
                total = jac
            else:
                for name, j in jac.items():
                    total[name] += j
    finally:
        model.train(was_training)
    return {name: j / len(idx) for name, j in total.items()}


def sliced_importance(
    jacobian: ParamDict, slices: int, generator: torch.Generator | None = None
) -> ParamDict:
    """``Γ_i = 1/L Σ_l (∂ ⟨ξ_l, φ̄⟩ / ∂θ_i)²`` with ξ_l drawn uniformly on the unit sphere
    (from the CPU ``generator``; ``None``: the global torch RNG).

    With ``J`` the Jacobian of φ̄ this is ``J_iᵀ C J_i`` for ``C = 1/L Σ_l ξ_l ξ_lᵀ``.
    """
    first = next(iter(jacobian.values()))
    k = first.shape[0]
    directions = torch.randn(slices, k, generator=generator)
    directions /= directions.norm(dim=1, keepdim=True)
    c = (directions.T @ directions / slices).to(device=first.device, dtype=first.dtype)
    out = {}
    for name, j in jacobian.items():
        flat = j.reshape(k, -1)
        out[name] = ((c @ flat) * flat).sum(0).reshape(j.shape[1:])
    return out


@register
class SCP(AnchoredStrategy):
    """Sliced Cramér preservation (Kolouri, Ketz, Soltoggio & Pilly 2020, ICLR, "Sliced Cramér
    Synaptic Consolidation for Preserving Deeply Learned Representations").

    SCP keeps the distribution of the network's responses: their sliced Cramér distance to the
    old responses, to second order and through the mean response ``φ̄ = 1/N Σ_n φ(x_n; θ)``,
    is ``1/L Σ_l (⟨ξ_l, φ̄(θ) − φ̄(θ*)⟩)²`` for random slices ξ_l on the unit sphere, whose
    diagonal quadratic approximation gives the importance (Algorithm 1)

        Γ_i = 1/L Σ_l (∂ ⟨ξ_l, φ̄(θ*)⟩ / ∂θ_i)²,

    and the next task minimises ``L(θ) + (λ/2) Σ_i Γ_i (θ_i − θ*_i)²``. φ is the network's
    output over the task's columns (our choice for multi-head streams; the authors' code does
    not restrict φ to a task's columns). Over tasks the importance is combined online,
    ``Γ ← α Γ + (1 − α) Γ_new`` (α = 0.5 as in the authors' code), anchored at the latest
    solution; the first task's Γ is taken as is, where the authors' code weighs the first task
    differently.

    Scale: Γ here is built from the *mean* response over the task's N samples, as the paper
    writes it; the authors' code normalises its importance differently, about N times smaller
    than ours, so ``λ_official ≈ N · λ`` here: divide an official λ by N (the README's
    deviation table).

    Γ is computed exactly for the drawn slices: the Jacobian of φ̄ (one reverse pass per output
    column, ``torch.func.jacrev``) projected on all slices at once, so more slices cost nothing.

    Args:
        lambda_: λ. Default 30, the best of a grid on permuted MNIST in the GEM setting (SGD,
            lr 0.1; benchmarks/RESULTS.md). Not on the authors' code's scale (see above).
        slices: L, the number of random directions (the authors' code uses 50).
        alpha: α of the online combination over tasks (the authors' code uses 0.5).
        samples: training inputs the mean response is taken over, drawn at random; 0 (default)
            uses all of them.
    """

    name = "scp"
    description = "sliced Cramer preservation: importance from random slices of the mean output"

    def __init__(
        self, lambda_: float = 30.0, slices: int = 50, alpha: float = 0.5, samples: int = 0
    ) -> None:
        check_positive("scp: lambda", lambda_)
        check_fraction("scp: alpha", alpha)
        check_positive("scp: samples", samples)
        if slices < 1:
            raise ConfigError(f"scp: slices must be at least 1, got {slices}")
        self.lambda_ = float(lambda_)
        self.slices = int(slices)
        self.alpha = float(alpha)
        self.samples = int(samples)
        self.importance: ParamDict | None = None
        self.penalty: QuadraticPenalty | None = None

    @property
    def penalty_scale(self) -> float:
        return self.lambda_ / 2

    def after_task(self, task: Task, model: nn.Module, fit: FitFn) -> None:
        jacobian = mean_response_jacobian(model, task, self.samples or None, self.generator)
        new = sliced_importance(jacobian, self.slices, self.generator)
        if self.importance is None:
            self.importance = new
        else:
            a = self.alpha
            self.importance = {n: g * a + new[n] * (1 - a) for n, g in self.importance.items()}
        self.penalty = QuadraticPenalty(dict(self.importance), snapshot(model))
