"""Synaptic intelligence (SI): importance from the path integral of the loss decrease."""

from __future__ import annotations

import torch
from torch import nn

from lifelong.strategies.base import Batch, FitFn, register
from lifelong.strategies.regularization.anchor import (
    AnchoredStrategy,
    ParamDict,
    PathIntegral,
    QuadraticPenalty,
    check_positive,
    snapshot,
    trainable,
)
from lifelong.streams.base import Stream, Task


@register
class SI(AnchoredStrategy):
    """Synaptic intelligence (Zenke, Poole & Ganguli 2017, ICML, "Continual learning through
    synaptic intelligence").

    During task ν every optimizer step adds ``−g_k Δθ_k`` to the per-parameter path integral
    ``ω_k^ν`` (eq. 3; ``g`` is the gradient of the task's own, unregularised loss, as in the
    authors' code, and ``Δθ`` the update the optimizer made). At the end of the task the
    importance grows by (eq. 5)

        Ω_k += ω_k^ν / ((Δ_k^ν)² + ξ),   Δ_k^ν = θ_k(end of ν) − θ_k(start of ν),

    and later tasks minimise (eq. 4) ``L_μ(θ) + c Σ_k Ω_k (θ̃_k − θ_k)²`` with θ̃ the parameters at
    the end of the previous task. Negative ω are kept by default, as the paper writes eq. 5;
    Zenke et al.'s own code (``pathint``, the source of the paper's numbers) clips the
    accumulated Ω at zero with a ReLU after every task: ``clip=true`` does the same.

    The bookkeeping is four fused ``_foreach`` operations per step into preallocated buffers
    (see :class:`~.anchor.PathIntegral`; benchmarks/regularization.py measures the overhead).

    Args:
        c: the strength c. Default 0.1, the value Zenke et al. use for permuted MNIST; it is
            also the best stable value of a grid in the GEM setting (c ≥ 0.3 diverged there,
            benchmarks/RESULTS.md).
        xi: the damping ξ that bounds Ω where a parameter barely moved. Default 0.1, the
            default of van de Ven et al.'s widely used re-implementation; Zenke et al. report
            1e-3 for split MNIST, trained with Adam. With plain SGD at a large learning rate
            (the GEM setting, lr 0.1) ξ = 1e-3 makes some Ω so large that the penalty's own
            gradient step overshoots and training diverges.
        clip: ``Ω ← max(0, Ω + ω/(Δ² + ξ))`` after each task, as in Zenke et al.'s code (their
            published numbers). Default false, the paper's eq. 5: a negative Ω (a parameter
            whose movement raised the loss on balance) then pulls the parameter *away* from the
            anchor, which the paper's derivation allows; with the clip it is simply free.
    """

    name = "si"
    description = "synaptic intelligence: importance = path integral of gradient x update"

    def __init__(self, c: float = 0.1, xi: float = 0.1, clip: bool = False) -> None:
        check_positive("si: c", c)
        check_positive("si: xi", xi, allow_zero=False)
        self.c = float(c)
        self.xi = float(xi)
        self.clip = bool(clip)
        self.path: PathIntegral | None = None
        self.task_start: ParamDict = {}
        self.importance: ParamDict = {}
        self.penalty: QuadraticPenalty | None = None

    @property
    def penalty_scale(self) -> float:
        return self.c

    def prepare(self, model: nn.Module, stream: Stream) -> nn.Module:
        super().prepare(model, stream)
        self.path = PathIntegral(trainable(model))
        self.task_start = snapshot(model)
        self.importance = {name: torch.zeros_like(p) for name, p in self.task_start.items()}
        return model

    def after_backward(self, model: nn.Module, batch: Batch, task: Task) -> None:
        self.path.before_step(self.path.parameters_of(model))  # unregularised gradient
        super().after_backward(model, batch, task)  # then the penalty's gradient

    def after_step(self, model: nn.Module, batch: Batch, task: Task) -> None:
        self.path.after_step(self.path.parameters_of(model))

    def after_task(self, task: Task, model: nn.Module, fit: FitFn) -> None:
        end = snapshot(model)
        omega = self.path.as_dict()
        for name, theta in end.items():
            delta = theta - self.task_start[name]
            self.importance[name] += omega[name] / (delta.square() + self.xi)
            if self.clip:
                self.importance[name].clamp_(min=0)
        self.path.reset()
        self.task_start = end
        self.penalty = QuadraticPenalty(
            {name: imp.clone() for name, imp in self.importance.items()}, end
        )

    def stored_values(self) -> int:
        extra = sum(t.numel() for t in (*self.importance.values(), *self.task_start.values()))
        return extra + (self.path.numel() if self.path else 0) + super().stored_values()
