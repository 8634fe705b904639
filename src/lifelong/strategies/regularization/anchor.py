"""The machinery every synaptic-plasticity method shares: one quadratic penalty.

All seven methods of this family minimise, on task t,

    L'(θ) = L_t(θ) + s · Σ_i b_i (θ_i − θ*_i)²

and differ only in the importance ``b`` (1 for L2, the Fisher for EWC, the path integral for SI,
...), the anchor ``θ*`` and the scale ``s`` each paper writes (λ/2 for EWC, c for SI, λ for MAS).
:class:`QuadraticPenalty` is that sum, implemented once; :class:`AnchoredStrategy` adds it to the
objective.

The penalty is not put through autograd: its value is added to the loss (for the NaN check and
the reported loss) and its exact gradient, ``2 s b (θ − θ*)``, is added to the parameters'
gradients right after ``loss.backward()``. The optimizer therefore sees exactly the gradient of
``L'``, with a handful of fused ``torch._foreach`` operations instead of a graph over every
parameter tensor, and ``p.grad`` still holds the unregularised gradient when ``after_backward``
starts, which is what SI and RWalk integrate along the path.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lifelong.errors import ConfigError
from lifelong.strategies.base import Batch, Strategy
from lifelong.streams.base import Task

ParamDict = dict[str, Tensor]


def trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    """The model's parameters that require gradients, by name."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def snapshot(model: nn.Module) -> ParamDict:
    """Detached copies of the trainable parameters (an anchor θ*)."""
    return {name: p.detach().clone() for name, p in trainable(model).items()}


def check_positive(name: str, value: float, allow_zero: bool = True) -> None:
    """Raise a one-line :class:`ConfigError` for a negative (or zero), NaN or infinite value."""
    if not math.isfinite(value) or not (value >= 0 if allow_zero else value > 0):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be {bound}, got {value}")


def check_fraction(name: str, value: float, low_open: bool = False) -> None:
    """Raise a one-line :class:`ConfigError` unless ``value`` is in [0, 1] ((0, 1] if low_open)."""
    ok = (0 < value <= 1) if low_open else (0 <= value <= 1)
    if not ok:
        raise ConfigError(f"{name} must be in {'(0, 1]' if low_open else '[0, 1]'}, got {value}")


class BoundParameters:
    """A model's parameters in a fixed order of names, looked up once per model object.

    The hot path (every optimizer step) needs the parameter tensors themselves; walking
    ``named_parameters()`` each time costs more than some of the arithmetic. The lookup is
    redone whenever a different model object is passed (after a checkpoint is restored, say).
    """

    def __init__(self, names: list[str]) -> None:
        self.names = list(names)
        self._model: weakref.ref[nn.Module] | None = None
        self._params: list[Tensor] = []

    def __call__(self, model: nn.Module) -> list[Tensor]:
        if self._model is None or self._model() is not model:
            lookup = dict(model.named_parameters())
            self._params = [lookup[name] for name in self.names]
            self._model = weakref.ref(model)
        return self._params

    def __getstate__(self) -> dict[str, Any]:
        return {"names": self.names}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["names"])


class QuadraticPenalty:
    """``Σ_i b_i (θ_i − θ*_i)² + offset`` over named parameters.

    Attributes:
        names: the parameters it covers (parameters not listed have no penalty).
        importance: ``b``, one tensor per name, ``>= 0``.
        anchor: ``θ*``, one tensor per name.
        offset: a constant, non-zero only when several penalties were merged by :meth:`combine`
            (it makes the value equal the sum of the separate penalties exactly).
    """

    def __init__(self, importance: ParamDict, anchor: ParamDict, offset: float = 0.0) -> None:
        if importance.keys() != anchor.keys():
            raise ValueError("importance and anchor must cover the same parameters")
        self.names = list(importance)
        self.parameters_of = BoundParameters(self.names)
        self.importance = [importance[n].detach() for n in self.names]
        self.anchor = [anchor[n].detach() for n in self.names]
        self.offset = float(offset)
        self._weighted_diff: list[Tensor] | None = None  # b (θ − θ*) of the current step

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def combine(cls, terms: Sequence[tuple[ParamDict, ParamDict]]) -> QuadraticPenalty:
        """One penalty equal to ``Σ_k Σ_i b_ki (θ_i − θ*_ki)²`` for several (b_k, θ*_k) pairs.

        A sum of quadratics is a quadratic: with ``B = Σ_k b_k`` and ``m = Σ_k b_k θ*_k / B`` it is
        ``Σ_i B_i (θ_i − m_i)² + Σ_i (Σ_k b_ki θ*_ki² − B_i m_i²)``, the same value and gradient as
        the separate terms for every θ, at the cost of one term. Computed in float64.
        """
        if not terms:
            raise ValueError("combine needs at least one term")
        names = list(terms[0][0])
        importance, anchor, offset = {}, {}, 0.0
        for name in names:
            b = torch.stack([t[0][name].double() for t in terms])
            a = torch.stack([t[1][name].double() for t in terms])
            total = b.sum(0)
            weighted = (b * a).sum(0)
            mean = torch.where(total > 0, weighted / total.clamp_min(1e-300), a[-1])
            offset += float(((b * a * a).sum(0) - total * mean * mean).sum())
            dtype = terms[0][0][name].dtype
            importance[name] = total.to(dtype)
            anchor[name] = mean.to(dtype)
        return cls(importance, anchor, max(offset, 0.0))

    # ---- evaluation --------------------------------------------------------------------------
    def value(self, model: nn.Module) -> Tensor:
        """The penalty as a differentiable function of the model's parameters (reference form)."""
        total = sum(
            (b * (p - a).square()).sum()
            for p, b, a in zip(self.parameters_of(model), self.importance, self.anchor, strict=True)
        )
        return total + self.offset

    def begin_step(self, params: list[Tensor]) -> Tensor:
        """The value at the current parameters (no graph); keeps ``b (θ − θ*)`` for the gradient."""
        with torch.no_grad():
            diff = torch._foreach_sub(params, self.anchor)
            weighted = torch._foreach_mul(diff, self.importance)
            torch._foreach_mul_(diff, weighted)
            value = torch.stack([d.sum() for d in diff]).sum() + self.offset
        self._weighted_diff = weighted
        return value

    def add_gradient(self, params: list[Tensor], scale: float) -> None:
        """``p.grad += scale · 2 b (θ − θ*)`` with the ``b (θ − θ*)`` of :meth:`begin_step`."""
        weighted, self._weighted_diff = self._weighted_diff, None
        if weighted is None:
            return
        with torch.no_grad():
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            torch._foreach_add_([p.grad for p in params], weighted, alpha=2.0 * scale)

    def numel(self) -> int:
        """Stored numbers (importances and anchors)."""
        return 2 * sum(b.numel() for b in self.importance)

    def as_dicts(self) -> tuple[ParamDict, ParamDict]:
        return dict(zip(self.names, self.importance, strict=True)), dict(
            zip(self.names, self.anchor, strict=True)
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_weighted_diff"] = None  # per-step scratch, never checkpointed
        return state


class AnchoredStrategy(Strategy):
    """Base of the family: training loss plus ``penalty_scale · penalty`` once a penalty exists.

    Subclasses compute the importance in their hooks and set ``self.penalty`` (usually in
    ``after_task``) and define :attr:`penalty_scale`, the factor their paper writes in front of
    ``Σ b (θ − θ*)²``.
    """

    family: ClassVar[str] = "regularization"

    penalty: QuadraticPenalty | None = None

    @property
    def penalty_scale(self) -> float:
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Batch, task: Task) -> Tensor:
        loss = super().loss(model, batch, task)
        if self.penalty is None:
            return loss
        value = self.penalty.begin_step(self.penalty.parameters_of(model))
        return loss + self.penalty_scale * value

    def after_backward(self, model: nn.Module, batch: Batch, task: Task) -> None:
        if self.penalty is not None:
            self.penalty.add_gradient(self.penalty.parameters_of(model), self.penalty_scale)

    def info(self) -> dict[str, Any]:
        return {"stored_values": self.stored_values()}

    def stored_values(self) -> int:
        """Numbers kept between tasks (importances, anchors, running statistics)."""
        return self.penalty.numel() if self.penalty is not None else 0


def total_numel(tensors: Iterable[Tensor]) -> int:
    return sum(t.numel() for t in tensors)


class PathIntegral:
    """Running ``ω_i = Σ_steps −g_i Δθ_i`` over optimizer steps (SI, Zenke et al. 2017, eq. 3).

    ``g`` is the gradient of the *unregularised* loss at the parameters before the step (the
    original implementation does the same; with the penalty's own gradient included, ω would
    also credit the penalty's pull towards the anchor) and ``Δθ`` the change the optimizer actually
    made, so the integral is right for momentum and Adam too. Call :meth:`before_step` in
    ``after_backward`` before the penalty gradient is added, and :meth:`after_step` after the step.
    Four fused ``_foreach`` operations per step, into preallocated buffers.
    """

    def __init__(self, params: dict[str, Tensor]) -> None:
        self.names = list(params)
        self.parameters_of = BoundParameters(self.names)
        self.omega = [torch.zeros_like(p).detach() for p in params.values()]
        self._before = [torch.zeros_like(p).detach() for p in params.values()]
        self._grad = [torch.zeros_like(p).detach() for p in params.values()]
        self._pending = False

    def before_step(self, params: list[Tensor]) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self._before, params)
            grads = [p.grad for p in params]
            if any(g is None for g in grads):
                grads = [
                    torch.zeros_like(p) if g is None else g
                    for p, g in zip(params, grads, strict=True)
                ]
            torch._foreach_copy_(self._grad, grads)
        self._pending = True

    def after_step(self, params: list[Tensor]) -> None:
        if not self._pending:
            return
        with torch.no_grad():
            torch._foreach_sub_(self._before, params)  # −Δθ
            torch._foreach_addcmul_(self.omega, self._grad, self._before)  # ω += g · (−Δθ)
        self._pending = False

    def reset(self) -> None:
        for w in self.omega:
            w.zero_()

    def as_dict(self) -> ParamDict:
        return dict(zip(self.names, self.omega, strict=True))

    def numel(self) -> int:
        return total_numel(self.omega)

    def __getstate__(self) -> dict[str, Any]:
        # Scratch buffers are rebuilt on load: only ω is state.
        state = dict(self.__dict__)
        state["_before"] = state["_grad"] = None
        state["_pending"] = False
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._before = [torch.zeros_like(w) for w in self.omega]
        self._grad = [torch.zeros_like(w) for w in self.omega]
