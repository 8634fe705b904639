"""SI's path integral on a tiny linear model, derived by hand."""

from __future__ import annotations

import math

import torch
from torch import nn

from lifelong.strategies import Batch
from lifelong.strategies.regularization.si import SI


def sgd_steps(strategy: SI, model: nn.Module, batch: Batch, steps: int, lr: float) -> None:
    """The training loop's order of hooks around plain SGD."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        strategy.loss(model, batch, None).backward()
        strategy.after_backward(model, batch, None)
        optimizer.step()
        strategy.after_step(model, batch, None)


def one_input_model() -> nn.Module:
    model = nn.Linear(1, 2, bias=False).double()
    nn.init.zeros_(model.weight)
    return model


def batch_of(label: int) -> Batch:
    return Batch(torch.ones(1, 1, dtype=torch.float64), torch.tensor([label]), torch.zeros(1), None)


def test_si_importance_matches_the_hand_derivation() -> None:
    """Logits (w0, w1) for the input 1, label 0, SGD with lr 1, two steps from w = 0.

    Step 1: p = (1/2, 1/2), g = p - e0 = (-1/2, 1/2), Δ = -g, so -gΔ = (1/4, 1/4).
    Step 2: w = (1/2, -1/2), p0 = σ(1) =: s, g = (s - 1, 1 - s), -gΔ = ((1 - s)², (1 - s)²).
    Ω = ω / (Δ_task² + ξ) with Δ_task = ±(1/2 + 1 - s).
    """
    model = one_input_model()
    strategy = SI(c=0.5, xi=0.1)
    strategy.prepare(model, None)
    sgd_steps(strategy, model, batch_of(0), steps=2, lr=1.0)
    s = 1 / (1 + math.exp(-1))
    omega = 0.25 + (1 - s) ** 2
    delta = 0.5 + 1 - s
    torch.testing.assert_close(
        strategy.path.omega[0], torch.full((2, 1), omega, dtype=torch.float64)
    )
    strategy.after_task(None, model, None)
    expected = omega / (delta**2 + 0.1)
    torch.testing.assert_close(
        strategy.importance["weight"], torch.full((2, 1), expected, dtype=torch.float64)
    )
    importance, anchor = strategy.penalty.as_dicts()
    torch.testing.assert_close(importance["weight"], strategy.importance["weight"])
    torch.testing.assert_close(anchor["weight"], model.weight.detach())
    assert strategy.penalty_scale == 0.5
    assert all(w.abs().max() == 0 for w in strategy.path.omega)  # reset for the next task


def test_si_integrates_the_unregularised_gradient() -> None:
    """On task 2 the update follows the penalised gradient, but ω credits only the task's own
    gradient: ω += -g_task · Δθ with Δθ = -lr (g_task + 2 c Ω (w - w*))."""
    model = one_input_model()
    strategy = SI(c=0.5, xi=0.1)
    strategy.prepare(model, None)
    sgd_steps(strategy, model, batch_of(0), steps=2, lr=1.0)
    strategy.after_task(None, model, None)
    anchor = model.weight.detach().clone()[:, 0]
    omega_imp = strategy.importance["weight"][:, 0]

    lr, c = 0.5, 0.5
    w = anchor.clone()
    expected = torch.zeros(2, dtype=torch.float64)
    naive = torch.zeros(2, dtype=torch.float64)
    for _ in range(2):
        p = torch.softmax(w, 0)
        g_task = p - torch.tensor([0.0, 1.0], dtype=torch.float64)  # label 1
        g_total = g_task + 2 * c * omega_imp * (w - anchor)
        delta = -lr * g_total
        expected += -g_task * delta
        naive += -g_total * delta
        w = w + delta
    sgd_steps(strategy, model, batch_of(1), steps=2, lr=lr)
    torch.testing.assert_close(model.weight.detach()[:, 0], w)
    torch.testing.assert_close(strategy.path.omega[0][:, 0], expected)
    assert not torch.allclose(expected, naive)  # the second step really had a penalty gradient


def test_si_path_integral_survives_pickling() -> None:
    model = one_input_model()
    strategy = SI()
    strategy.prepare(model, None)
    sgd_steps(strategy, model, batch_of(0), steps=1, lr=1.0)
    import io

    buffer = io.BytesIO()
    torch.save(strategy.state_dict(), buffer)
    buffer.seek(0)
    restored = SI()
    restored.load_state_dict(torch.load(buffer, weights_only=False))
    torch.testing.assert_close(restored.path.omega[0], strategy.path.omega[0])
    sgd_steps(restored, model, batch_of(0), steps=1, lr=1.0)  # buffers were rebuilt
