"""L2: every parameter equally important (the "intransigence" end of the family)."""

from __future__ import annotations

import torch
from torch import nn

from lifelong.strategies.base import FitFn, register
from lifelong.strategies.regularization.anchor import (
    AnchoredStrategy,
    QuadraticPenalty,
    check_positive,
    snapshot,
)
from lifelong.streams.base import Task


@register
class L2(AnchoredStrategy):
    """Plain L2 pull towards the previous task's solution: ``b_i = 1`` for every parameter.

    Objective on task t > 1: ``L_t(θ) + λ Σ_i (θ_i − θ*_i)²`` with θ* the parameters after task
    t − 1. This is the "L2" baseline of Kirkpatrick et al. 2017 (PNAS, Fig. 2A): it protects old
    tasks only by refusing to move any weight, so it learns new tasks poorly (intransigence).

    Args:
        lambda_: λ, the strength (no paper value; the EWC paper shows the qualitative behaviour).
            Default 1.0.
    """

    name = "l2"
    description = "L2 pull towards the previous solution, every weight equally (intransigent)"

    def __init__(self, lambda_: float = 1.0) -> None:
        check_positive("l2: lambda", lambda_)
        self.lambda_ = float(lambda_)
        self.penalty: QuadraticPenalty | None = None

    @property
    def penalty_scale(self) -> float:
        return self.lambda_

    def after_task(self, task: Task, model: nn.Module, fit: FitFn) -> None:
        anchor = snapshot(model)
        ones = {name: torch.ones_like(a) for name, a in anchor.items()}
        self.penalty = QuadraticPenalty(ones, anchor)
