"""GEM and A-GEM: the projections against brute force, the batched memory gradients, behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize

from lifelong.errors import ConfigError
from lifelong.models import MLP
from lifelong.runner import learn_stream
from lifelong.strategies import create_strategy
from lifelong.strategies.memory.agem import agem_project
from lifelong.strategies.memory.gem import gem_project, memory_gradients, solve_gem_dual
from lifelong.streams import build_stream
from lifelong.train import TrainConfig


def _violating_case(seed: int, t: int = 4, p: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    past = torch.randn(t, p, generator=gen, dtype=torch.float64)
    g = torch.randn(p, generator=gen, dtype=torch.float64)
    if bool((past @ g >= 0).all()):
        g = -past[0] + 0.1 * g  # make sure at least one constraint is violated
    return g, past


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("margin", [0.0, 0.5])
def test_gem_projection_satisfies_every_constraint(seed, margin):
    g, past = _violating_case(seed)
    projected, solved = gem_project(g, past, margin=margin, ridge=0.0)
    assert solved
    assert (past @ projected >= -1e-9).all(), past @ projected


def test_gem_projection_is_identity_without_violation():
    gen = torch.Generator().manual_seed(3)
    past = torch.randn(3, 10, generator=gen)
    g = past.sum(0) + 0.01 * torch.randn(10, generator=gen)
    g = g if bool((past @ g >= 0).all()) else past[0].clone()
    past[1:] = past[1:] * torch.sign(past[1:] @ g).unsqueeze(1)  # every <g, g_k> >= 0
    assert (past @ g >= 0).all()
    projected, solved = gem_project(g, past, margin=0.5)
    assert not solved
    assert torch.equal(projected, g)


@pytest.mark.parametrize("seed", range(6))
def test_gem_projection_matches_brute_force_primal(seed):
    """margin 0: the dual solution equals scipy's solution of the primal QP."""
    g, past = _violating_case(seed, t=3 + seed % 3, p=8 + seed)
    ours = solve_gem_dual(g, past, margin=0.0, ridge=0.0).numpy()
    G, gv = past.numpy(), g.numpy()
    result = minimize(
        lambda z: 0.5 * np.sum((z - gv) ** 2),
        gv.copy(),
        jac=lambda z: z - gv,
        constraints=[{"type": "ineq", "fun": lambda z: G @ z, "jac": lambda z: G}],
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 1000},
    )
    assert result.success
    np.testing.assert_allclose(ours, result.x, atol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_gem_projection_with_margin_matches_brute_force_dual(seed):
    """margin 0.5: g~ = G^T v* + g with v* the bounded dual solution found by scipy."""
    g, past = _violating_case(seed)
    ours = solve_gem_dual(g, past, margin=0.5, ridge=0.0).numpy()
    G, gv = past.numpy(), g.numpy()
    gram, lin = G @ G.T, G @ gv
    result = minimize(
        lambda v: 0.5 * v @ gram @ v + lin @ v,
        np.full(len(G), 0.5),
        jac=lambda v: gram @ v + lin,
        bounds=[(0.5, None)] * len(G),
        method="L-BFGS-B",
        options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10_000},
    )
    np.testing.assert_allclose(ours, G.T @ result.x + gv, atol=1e-5)


def test_memory_gradients_match_one_backward_per_task():
    torch.manual_seed(0)
    model = MLP(6, (5,), 6)
    x = torch.randn(3, 4, 6)
    y = torch.tensor([[0, 1, 0, 1], [2, 3, 3, 2], [4, 5, 5, 5]])
    counts = [4, 2, 3]
    weights = torch.zeros(3, 4)
    masks = torch.zeros(3, 6, dtype=torch.bool)
    for k, n in enumerate(counts):
        weights[k, :n] = 1.0 / n
        masks[k, 2 * k : 2 * k + 2] = True
    batched = memory_gradients(model, x, y, weights, masks)
    for k, n in enumerate(counts):
        model.zero_grad()
        logits = model(x[k, :n]).masked_fill(~masks[k], float("-inf"))
        F.cross_entropy(logits, y[k, :n]).backward()
        expected = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        torch.testing.assert_close(batched[k], expected, rtol=1e-5, atol=1e-6)
    unmasked = memory_gradients(model, x, y, weights, None)
    model.zero_grad()
    F.cross_entropy(model(x[0]), y[0]).backward()
    expected = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(unmasked[0], expected, rtol=1e-5, atol=1e-6)


def test_agem_projection_matches_closed_form():
    gen = torch.Generator().manual_seed(0)
    g_ref = torch.randn(20, generator=gen, dtype=torch.float64)
    g = -0.7 * g_ref + torch.randn(20, generator=gen, dtype=torch.float64)
    assert torch.dot(g, g_ref) < 0
    projected, changed = agem_project(g, g_ref)
    expected = g - torch.dot(g, g_ref) / torch.dot(g_ref, g_ref) * g_ref
    assert changed
    torch.testing.assert_close(projected, expected)
    assert abs(torch.dot(projected, g_ref).item()) < 1e-10  # on the constraint's boundary
    same, changed = agem_project(-g, g_ref)
    assert not changed and torch.equal(same, -g)


@pytest.mark.parametrize(
    ("name", "params"),
    [("gem", {"memory_per_task": 0}), ("gem", {"margin": -1}), ("agem", {"sample_size": 0})],
)
def test_bad_settings_raise_config_error(name, params):
    with pytest.raises(ConfigError):
        create_strategy(name, params)


@pytest.fixture(scope="module")
def permuted_runs():
    """finetune, gem and agem on 4 permuted-digits tasks (GEM's batch 10 and lr 0.1; 3 epochs,
    since one pass over ~1,250 digits per task is too little for A-GEM to differ clearly)."""
    stream = build_stream("permuted", "digits", tasks=4, seed=0)
    config = TrainConfig(epochs=3, batch_size=10, lr=0.1)
    runs = {}
    for name in ("finetune", "gem", "agem"):
        runs[name] = learn_stream(stream, name, train=config, seed=0)
    return runs


def test_gem_and_agem_forget_less_than_finetune(permuted_runs):
    bwt = {name: run.metrics()["bwt"] for name, run in permuted_runs.items()}
    assert bwt["finetune"] < -0.15, bwt  # the stream does cause forgetting
    assert bwt["gem"] > bwt["finetune"] + 0.1, bwt
    assert bwt["agem"] > bwt["finetune"] + 0.1, bwt
    acc = {name: run.metrics()["acc"] for name, run in permuted_runs.items()}
    assert acc["gem"] > acc["finetune"] and acc["agem"] > acc["finetune"], acc


def test_gem_reports_memory_and_time_split(permuted_runs):
    extra = permuted_runs["gem"].extra
    assert extra["memory"]["per_task"] == 256
    assert extra["memory"]["samples"] == 4 * 256
    assert extra["qp_solves"] > 0
    assert extra["constrained_steps"] == 3 * extra["steps"] // 4
    for key in ("current_gradient", "memory_gradients", "qp", "update"):
        assert extra["ms_per_step"][key] > 0
    agem = permuted_runs["agem"].extra
    assert agem["memory"]["samples"] == 4 * 256 and agem["projected_steps"] > 0
