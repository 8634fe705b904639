"""A model with two parameters, so that loss surfaces and gradients can be drawn exactly.

Logistic regression without bias on 2-D inputs: ``p(y = 1 | x) = σ(w · x)``, written as a
two-column classifier (logits ``[0, w · x]``) so that every strategy of the library trains it
through the ordinary loop. Each task's data are drawn from the same model with its own true
weights and input spread, so a task's loss is steep along the input directions it varies in and
flat along the others: exactly the situation EWC exploits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TwoWeights(nn.Module):
    """``logits = [0, w · x]``: a binary logistic regression with the parameter vector ``w``."""

    def __init__(self, w: Sequence[float]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(list(w), dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        z = x.reshape(len(x), -1) @ self.w
        return torch.stack([torch.zeros_like(z), z], dim=1)


def logistic_task(
    gen: torch.Generator, n: int, spread: Sequence[float], weights: Sequence[float]
) -> tuple[Tensor, Tensor]:
    """``n`` samples ``x ~ N(0, diag(spread)²)`` with labels ``y ~ Bernoulli(σ(weights · x))``."""
    x = torch.randn(n, 2, generator=gen) * torch.tensor(list(spread), dtype=torch.float32)
    p = torch.sigmoid(x @ torch.tensor(list(weights), dtype=torch.float32))
    y = (torch.rand(n, generator=gen) < p).long()
    return x, y


def polar(angle_degrees: float, length: float) -> tuple[float, float]:
    """The 2-D vector of ``length`` at ``angle_degrees`` from the first axis."""
    a = math.radians(angle_degrees)
    return length * math.cos(a), length * math.sin(a)


def loss_surface(x: Tensor, y: Tensor, points: Tensor, chunk: int = 2048) -> Tensor:
    """The exact mean cross-entropy of :class:`TwoWeights` on ``(x, y)`` at each row of
    ``points`` (``[K, 2]``): the model's logits ``[0, w · x]`` for all points at once."""
    out = []
    with torch.no_grad():
        for part in points.split(chunk):
            z = part.to(torch.float32) @ x.T  # [k, N]: w · x for every point and sample
            logits = torch.stack([torch.zeros_like(z), z], dim=2)
            loss = F.cross_entropy(logits.reshape(-1, 2), y.repeat(len(part)), reduction="none")
            out.append(loss.reshape(len(part), -1).mean(1))
    return torch.cat(out)


def grid(
    low: Sequence[float], high: Sequence[float], n: int = 121
) -> tuple[Tensor, Tensor, Tensor]:
    """``(W1, W2, points)``: an ``n x n`` mesh over the box and its points as ``[n², 2]``."""
    w1 = torch.linspace(low[0], high[0], n)
    w2 = torch.linspace(low[1], high[1], n)
    mesh1, mesh2 = torch.meshgrid(w1, w2, indexing="xy")
    return mesh1, mesh2, torch.stack([mesh1.reshape(-1), mesh2.reshape(-1)], dim=1)
