"""EWC's Fisher: per-sample squared gradients (torch.func), checked against a plain loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lifelong.strategies import create_strategy
from lifelong.strategies.regularization.anchor import QuadraticPenalty
from lifelong.strategies.regularization.ewc import EWC, OnlineEWC
from lifelong.strategies.regularization.persample import (
    diagonal_fisher,
    log_likelihood_loss,
    per_sample_gradient_sum,
    sample_labels,
    squared_output_norm,
)
from lifelong.streams.base import TaskData


class TwoConvNet(nn.Module):
    """A conv layer (generic route) before Linear layers (outer-product route)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 4 * 4, 7)
        self.out = nn.Linear(7, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x)).flatten(1)
        return self.out(torch.tanh(self.fc(h)))


class SharedLinearNet(nn.Module):
    """The same Linear applied twice: the outer-product shortcut does not hold, so it must not
    be used."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(16, 5)
        self.mid = nn.Linear(5, 5)
        self.out = nn.Linear(5, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x.flatten(1)))
        h = torch.tanh(self.mid(torch.tanh(self.mid(h))))
        return self.out(h)


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 6))


MODELS = {"mlp": mlp, "conv": TwoConvNet, "shared": SharedLinearNet}


def data(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 4, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(2, 5, (n,), generator=gen)  # labels are output columns 2..4
    return x, y


def loop_fisher(model: nn.Module, x, y, columns) -> dict[str, torch.Tensor]:
    """Reference: one backward per sample, squared, averaged (no torch.func)."""
    start, stop = columns
    total = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(len(x)):
        model.zero_grad()
        logits = model(x[i : i + 1])[:, start:stop]
        F.cross_entropy(logits, y[i : i + 1] - start).backward()
        for n, p in model.named_parameters():
            total[n] += p.grad.square()
    return {n: t / len(x) for n, t in total.items()}


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("factorise", [True, False])
def test_per_sample_fisher_equals_a_plain_loop(kind: str, factorise: bool) -> None:
    torch.manual_seed(0)
    model = MODELS[kind]().double()
    x, y = data()
    columns = (2, 5)  # a head of three columns: the rest of the outputs must not matter
    sums = per_sample_gradient_sum(
        model, log_likelihood_loss(columns), [(x[:25], y[:25]), (x[25:], y[25:])], "square",
        factorise=factorise,
    )  # fmt: skip
    reference = loop_fisher(model, x, y, columns)
    for name, ref in reference.items():
        torch.testing.assert_close(sums[name] / len(x), ref, rtol=1e-6, atol=1e-6)
        assert ref.abs().max() > 1e-4 or name.startswith("out")  # a non-trivial check


def test_diagonal_fisher_true_and_empirical_match_the_loop_with_the_same_labels() -> None:
    torch.manual_seed(0)
    model = mlp().double()
    x, y = data(60)
    split = TaskData(x, y)
    columns = (2, 5)
    empirical = diagonal_fisher(model, split, columns, labels="empirical")
    for name, ref in loop_fisher(model, x, y, columns).items():
        torch.testing.assert_close(empirical[name], ref, rtol=1e-6, atol=1e-8)

    torch.manual_seed(7)
    true = diagonal_fisher(model, split, columns, labels="true")
    torch.manual_seed(7)
    sampled = sample_labels(model, x, columns)  # the same draw the Fisher made
    assert ((sampled >= 2) & (sampled < 5)).all()
    assert (sampled != y).any()
    for name, ref in loop_fisher(model, x, sampled, columns).items():
        torch.testing.assert_close(true[name], ref, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("seed", range(5))
def test_sampled_labels_are_torch_multinomials_draws_bit_for_bit(seed) -> None:
    """The draw that avoids a host read on a GPU gives, on a CPU, the labels (and leaves the
    generator in the state) that ``torch.multinomial`` does; a different method of sampling
    (inverse CDF, say) passes the range checks of the test above but fails here."""
    torch.manual_seed(seed)
    model = mlp().double()
    x, _ = data(40, seed)
    ours, theirs = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    got = sample_labels(model, x, (1, 6), ours)
    with torch.no_grad():
        probs = F.softmax(model(x)[:, 1:6], dim=1)
    want = torch.multinomial(probs, 1, generator=theirs).squeeze(1) + 1
    assert torch.equal(got, want)
    assert torch.equal(ours.get_state(), theirs.get_state())


def test_fisher_on_a_subset_of_samples() -> None:
    torch.manual_seed(0)
    model = mlp().double()
    x, y = data(50)
    torch.manual_seed(3)
    fisher = diagonal_fisher(model, TaskData(x, y), None, labels="empirical", samples=20)
    torch.manual_seed(3)
    idx = torch.randperm(50)[:20].sort().values
    for name, ref in loop_fisher(model, x[idx], y[idx], (0, 6)).items():
        torch.testing.assert_close(fisher[name], ref, rtol=1e-6, atol=1e-8)


def test_per_sample_fisher_differs_from_the_squared_batch_gradient() -> None:
    """Two samples whose gradients are exact opposites: the batch gradient is zero, the Fisher
    is not (and a batch-squared estimate would also change with the batch size)."""
    model = nn.Linear(3, 2, bias=False).double()
    nn.init.zeros_(model.weight)
    x = torch.tensor([[1.0, 2.0, -1.0], [-1.0, -2.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 0])
    fisher = diagonal_fisher(model, TaskData(x, y), None, labels="empirical")["weight"]
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    batch_squared = model.weight.grad.square()
    assert batch_squared.abs().max() == 0
    # By hand: p = (1/2, 1/2), per-sample gradient of -log p_0 = (p - e_0) x^T = (-1/2, 1/2) x^T.
    expected = torch.tensor([[0.25, 1.0, 0.25], [0.25, 1.0, 0.25]], dtype=torch.float64)
    torch.testing.assert_close(fisher, expected)


def test_ewc_keeps_one_penalty_per_past_task() -> None:
    torch.manual_seed(0)
    model = mlp().double()
    strategy = EWC(lambda_=2.0)
    shapes = {n: p.shape for n, p in model.named_parameters()}
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        strategy.fishers.append(
            {n: torch.rand(s, generator=gen).double() for n, s in shapes.items()}
        )
        strategy.anchors.append(
            {n: torch.randn(s, generator=gen).double() for n, s in shapes.items()}
        )
    strategy.penalty = QuadraticPenalty.combine(
        list(zip(strategy.fishers, strategy.anchors, strict=True))
    )
    expected = sum(
        (f[n] * (p - a[n]).square()).sum()
        for f, a in zip(strategy.fishers, strategy.anchors, strict=True)
        for n, p in model.named_parameters()
    )
    torch.testing.assert_close(strategy.penalty.value(model), expected, rtol=1e-10, atol=1e-10)
    assert strategy.penalty_scale == 1.0  # λ/2


def test_online_ewc_running_fisher_decays_by_gamma(monkeypatch, digits_stream) -> None:
    strategy = OnlineEWC(lambda_=1.0, gamma=0.5)
    model = mlp()
    fishers = iter(
        [{n: torch.full_like(p, v) for n, p in model.named_parameters()} for v in (4, 2)]
    )
    monkeypatch.setattr(strategy, "task_fisher", lambda task, model: next(fishers))
    task = digits_stream.tasks[0]
    strategy.after_task(task, model, None)
    strategy.after_task(task, model, None)
    running = strategy.running_fisher["1.weight"]
    torch.testing.assert_close(running, torch.full_like(running, 0.5 * 4 + 2))
    importance, anchor = strategy.penalty.as_dicts()
    torch.testing.assert_close(importance["1.weight"], 0.5 * running)  # γ F* in the penalty
    torch.testing.assert_close(anchor["1.weight"], model[1].weight.detach())


def test_ewc_fisher_uses_the_task_head_in_the_task_scenario(split_task_stream) -> None:
    from lifelong.models import build_model

    torch.manual_seed(0)
    model = build_model("mlp", split_task_stream)
    task = split_task_stream.tasks[1]  # columns (2, 4)
    fisher = create_strategy("ewc").task_fisher(task, model)
    head = fisher["head.weight"]
    assert head[2:4].abs().sum() > 0
    assert head[:2].abs().sum() == 0 and head[4:].abs().sum() == 0


class TiedNet(nn.Module):
    """Tied weights, two ways: ``dec`` shares ``mid``'s weight (two modules, one tensor), or
    ``mid``'s weight is used a second time outside its module (``F.linear``)."""

    def __init__(self, use: str) -> None:
        super().__init__()
        self.use = use
        self.inp = nn.Linear(16, 6)
        self.mid = nn.Linear(6, 6)
        if use == "modules":
            self.dec = nn.Linear(6, 6)
            self.dec.weight = self.mid.weight
        self.out = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x.flatten(1)))
        h = torch.tanh(self.mid(h))
        if self.use == "functional":
            h = torch.tanh(F.linear(h, self.mid.weight))
        else:
            h = torch.tanh(self.dec(h))
        return self.out(h)


def loop_mas(model: nn.Module, x) -> dict[str, torch.Tensor]:
    """Reference: one backward of ``‖f(x)‖²`` per sample, absolute value, averaged."""
    total = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(len(x)):
        model.zero_grad()
        model(x[i : i + 1]).square().sum().backward()
        for n, p in model.named_parameters():
            total[n] += p.grad.abs()
    return {n: t / len(x) for n, t in total.items()}


@pytest.mark.parametrize("use", ["modules", "functional"])
def test_tied_weights_get_the_gradient_of_every_use(use: str) -> None:
    """Regression (issue 12): with ``mid.weight`` shared by ``dec`` (or reused by ``F.linear``),
    the outer-product route summed only ``mid``'s own use and that weight's Fisher / MAS
    importance was ~99 % wrong. The references are plain per-sample autograd loops.
    Deliberate bugs: skipping ``_check_sole_use`` fails the ``functional`` case; skipping it and
    dropping the ``uses`` check in ``_factorisable_linears`` (the code before the fix) fails
    both (36/36 elements of ``mid.weight`` wrong)."""
    torch.manual_seed(0)
    model = TiedNet(use).double()
    x, y = data()
    fisher = per_sample_gradient_sum(model, log_likelihood_loss(None), [(x, y)], "square")
    mas = per_sample_gradient_sum(model, squared_output_norm(None), [(x, y)], "abs")
    fisher_ref = loop_fisher(model, x, y, (0, 6))
    mas_ref = loop_mas(model, x)
    assert set(fisher) == set(fisher_ref)
    for name in fisher_ref:
        torch.testing.assert_close(fisher[name] / len(x), fisher_ref[name], rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(mas[name] / len(x), mas_ref[name], rtol=1e-6, atol=1e-9)
    assert fisher_ref["mid.weight"].abs().max() > 1e-4  # a non-trivial check


def test_tied_layers_leave_the_fast_route_and_the_others_keep_it() -> None:
    """Only the layers sharing a tensor go generic (the rest stay on the outer-product route).
    Deliberate bug: dropping the ``uses`` check keeps ``mid.`` and ``dec.`` here: fails."""
    from lifelong.strategies.regularization.persample import _factorisable_linears

    model = TiedNet("modules")
    params = dict(model.named_parameters())
    assert set(_factorisable_linears(model, params)) == {"inp.", "out."}
