"""MAS's importance on a tiny linear model, derived by hand."""

from __future__ import annotations

import torch
from torch import nn

from lifelong.strategies.regularization.mas import MAS, mas_importance
from lifelong.streams.base import Task, TaskData

W = torch.tensor([[1.0, -2.0], [0.5, 0.0], [-1.0, 1.0]], dtype=torch.float64)
B = torch.tensor([0.1, -0.3, 0.2], dtype=torch.float64)
X = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.0, -3.0]], dtype=torch.float64)


def linear_model() -> nn.Linear:
    model = nn.Linear(2, 3).double()
    with torch.no_grad():
        model.weight.copy_(W)
        model.bias.copy_(B)
    return model


def task_with(columns: tuple[int, int]) -> Task:
    split = TaskData(X, torch.zeros(3, dtype=torch.long))
    return Task(0, "t", split, split, (0, 1, 2), columns)


def by_hand(rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
    """F(x) = W x + b, ‖F‖² has gradient 2 F(x) xᵀ (weight) and 2 F(x) (bias); Ω averages the
    absolute values of these per-sample gradients over the 3 inputs."""
    out = X @ W.T + B
    mask = torch.zeros(3, dtype=torch.float64)
    mask[rows] = 1.0
    out = out * mask
    weight = sum((2 * out[k, :, None] * X[k, None, :]).abs() for k in range(3)) / 3
    bias = sum((2 * out[k]).abs() for k in range(3)) / 3
    return weight, bias


def test_mas_importance_matches_the_hand_derivation() -> None:
    omega = mas_importance(linear_model(), task_with((0, 3)))
    weight, bias = by_hand(slice(0, 3))
    torch.testing.assert_close(omega["weight"], weight)
    torch.testing.assert_close(omega["bias"], bias)
    # Not the gradient of the summed batch norm: signs cancel there.
    model = linear_model()
    (model(X) ** 2).sum().backward()
    assert not torch.allclose(model.weight.grad.abs() / 3, weight)


def test_mas_uses_only_the_task_columns() -> None:
    omega = mas_importance(linear_model(), task_with((1, 3)))
    weight, bias = by_hand(slice(1, 3))
    torch.testing.assert_close(omega["weight"], weight)
    torch.testing.assert_close(omega["bias"], bias)
    assert omega["weight"][0].abs().max() == 0 and omega["bias"][0] == 0


def test_mas_accumulates_importance_over_tasks() -> None:
    strategy = MAS(lambda_=2.0)
    model = linear_model()
    strategy.after_task(task_with((0, 3)), model, None)
    with torch.no_grad():
        model.weight.mul_(-0.5)
    strategy.after_task(task_with((0, 3)), model, None)
    first, _ = by_hand(slice(0, 3))
    second = mas_importance(model, task_with((0, 3)))["weight"]
    importance, anchor = strategy.penalty.as_dicts()
    torch.testing.assert_close(importance["weight"], first + second)
    torch.testing.assert_close(anchor["weight"], model.weight.detach())
    assert strategy.penalty_scale == 2.0  # λ, no 1/2 (MAS eq. 3)
