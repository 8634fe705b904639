"""Importances and anchors of the regularization family after several tasks, through the
strategies' own ``after_task`` (and training hooks), against references written here with plain
autograd loops. Every test names the deliberate bug it was run against (and failed on); the list
is also in TESTING.md."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import chi2
from torch import nn

from lifelong.strategies import Batch, create_strategy
from lifelong.strategies.regularization.persample import diagonal_fisher
from lifelong.streams.base import Task, TaskData

COLUMNS = (1, 4)  # a three-column head of a five-output net


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 5)).double()


def make_task(tid: int, n: int = 24) -> Task:
    gen = torch.Generator().manual_seed(100 + tid)
    x = torch.randn(n, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(*COLUMNS, (n,), generator=gen)
    split = TaskData(x, y)
    return Task(tid, f"t{tid}", split, split, (0, 1, 2), COLUMNS)


def move(model: nn.Module, seed: int) -> None:
    """Stands in for training between two tasks: every parameter changes."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p += 0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype)


def params_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def loop_fisher(model: nn.Module, task: Task) -> dict[str, torch.Tensor]:
    """Empirical Fisher over the task's head: one backward per sample, squared, averaged."""
    x, y = task.train.x, task.train.y
    start, stop = task.columns
    total = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(len(x)):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1])[:, start:stop], y[i : i + 1] - start).backward()
        for n, p in model.named_parameters():
            total[n] += p.grad.square()
    return {n: t / len(x) for n, t in total.items()}


def loop_mas(model: nn.Module, task: Task) -> dict[str, torch.Tensor]:
    """MAS's Ω: mean over samples of |∂ ‖f(x)[head]‖² / ∂θ|, one backward per sample."""
    start, stop = task.columns
    total = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for x in task.train.x:
        model.zero_grad()
        model(x[None])[:, start:stop].square().sum().backward()
        for n, p in model.named_parameters():
            total[n] += p.grad.abs()
    return {n: t / len(task.train) for n, t in total.items()}


def quadratic(model, terms) -> torch.Tensor:
    return sum(
        (b[n] * (p - a[n]).square()).sum() for b, a in terms for n, p in model.named_parameters()
    )


def test_ewc_penalty_is_the_sum_of_every_past_tasks_penalty() -> None:
    """Three tasks through ``after_task``: the penalty is Σ_k Σ_i F_k,i (θ_i - θ*_k,i)² with each
    Fisher and anchor taken at its own task's end. Deliberate bug: keeping only the last task's
    Fisher and anchor (``self.fishers = [new]``) fails."""
    model, strategy = net(), create_strategy("ewc", {"lambda": 2.0, "fisher": "empirical"})
    terms = []
    for k in range(3):
        move(model, k)
        task = make_task(k)
        strategy.after_task(task, model, None)
        terms.append((loop_fisher(model, task), params_of(model)))
    move(model, 9)
    torch.testing.assert_close(strategy.penalty.value(model), quadratic(model, terms))
    assert strategy.penalty_scale == 1.0  # λ/2


def test_online_ewc_decays_the_running_fisher_and_anchors_at_the_latest_task() -> None:
    """F* = γ² F_1 + γ F_2 + F_3 after three tasks, penalty γ F* (θ - θ*_3)². Deliberate bugs:
    no decay (``gamma`` ignored in the update) fails; anchor frozen at task 1 fails."""
    gamma = 0.5
    model = net()
    strategy = create_strategy("online-ewc", {"gamma": gamma, "fisher": "empirical"})
    fishers = []
    for k in range(3):
        move(model, k)
        task = make_task(k)
        strategy.after_task(task, model, None)
        fishers.append(loop_fisher(model, task))
    importance, anchor = strategy.penalty.as_dicts()
    for n, p in model.named_parameters():
        running = gamma**2 * fishers[0][n] + gamma * fishers[1][n] + fishers[2][n]
        torch.testing.assert_close(importance[n], gamma * running)
        torch.testing.assert_close(anchor[n], p.detach())


def test_mas_accumulates_over_three_tasks_from_per_sample_gradients() -> None:
    """Ω = Σ_k Ω_k, Ω_k the per-sample mean of |∂‖f(x)[head]‖²/∂θ| at task k's end, anchor the
    latest parameters. Deliberate bug: Ω replaced instead of accumulated fails."""
    model, strategy = net(), create_strategy("mas", {"lambda": 0.5})
    total = None
    for k in range(3):
        move(model, k)
        task = make_task(k)
        strategy.after_task(task, model, None)
        new = loop_mas(model, task)
        total = new if total is None else {n: total[n] + new[n] for n in new}
    importance, anchor = strategy.penalty.as_dicts()
    for n, p in model.named_parameters():
        torch.testing.assert_close(importance[n], total[n])
        torch.testing.assert_close(anchor[n], p.detach())


def test_l2_anchor_follows_the_latest_task() -> None:
    """After task k the anchor is θ at the end of task k (not task 1). Deliberate bug: setting
    the penalty only when none exists (anchor frozen at task 1) fails."""
    model, strategy = net(), create_strategy("l2", {"lambda": 1.0})
    for k in range(3):
        move(model, k)
        strategy.after_task(make_task(k), model, None)
        importance, anchor = strategy.penalty.as_dicts()
        for n, p in model.named_parameters():
            torch.testing.assert_close(anchor[n], p.detach())
            assert bool((importance[n] == 1).all())


def sgd_task(strategy, model, task: Task, steps: int, lr: float) -> None:
    """The training loop's order of hooks around plain SGD, full-batch."""
    batch = Batch(task.train.x, task.train.y, torch.full_like(task.train.y, task.id), None)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        strategy.loss(model, batch, task).backward()
        strategy.after_backward(model, batch, task)
        optimizer.step()
        strategy.after_step(model, batch, task)
    strategy.after_task(task, model, None)


def test_si_importance_over_two_tasks_with_xi_and_reset() -> None:
    """Reference SI written here: per step ω += -g Δθ (g the unregularised gradient, Δθ the SGD
    step on g + 2cΩ(θ - θ*)), at the task's end Ω += ω / ((θ_end - θ_start)² + ξ), ω = 0,
    θ* = θ_end. Deliberate bugs: ω not reset between tasks fails; ξ dropped fails; θ* kept at
    the first task fails."""
    c, xi, lr, steps = 0.5, 0.2, 0.5, 4
    model = nn.Sequential(nn.Linear(6, 5)).double()
    torch.manual_seed(0)
    reference = copy.deepcopy(model)
    strategy = create_strategy("si", {"c": c, "xi": xi})
    strategy.prepare(model, None)
    # the loss uses every output column here (no head), so the reference does too
    tasks = [make_task(k) for k in range(2)]
    omega_total = {n: torch.zeros_like(p) for n, p in reference.named_parameters()}
    anchor = None
    for task in tasks:
        sgd_task(strategy, model, task, steps, lr)
        start = params_of(reference)
        omega = {n: torch.zeros_like(p) for n, p in reference.named_parameters()}
        for _ in range(steps):
            reference.zero_grad()
            F.cross_entropy(reference(task.train.x), task.train.y).backward()
            with torch.no_grad():
                for n, p in reference.named_parameters():
                    g = p.grad.clone()
                    total = g if anchor is None else g + 2 * c * omega_total[n] * (p - anchor[n])
                    step = -lr * total
                    omega[n] += -g * step
                    p += step
        end = params_of(reference)
        for n in omega_total:
            omega_total[n] = omega_total[n] + omega[n] / ((end[n] - start[n]).square() + xi)
        anchor = end
    importance, penalty_anchor = strategy.penalty.as_dicts()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), reference.get_parameter(n).detach())
        torch.testing.assert_close(importance[n], omega_total[n])
        torch.testing.assert_close(penalty_anchor[n], anchor[n])


class DropoutBatchNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 5)
        )
        with torch.no_grad():  # running statistics that differ from any batch's
            self.body[1].running_mean.uniform_(-1, 1)
            self.body[1].running_var.uniform_(0.5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.mark.parametrize("name", ["ewc", "mas", "scp", "rwalk"])
def test_importances_are_computed_in_eval_mode(name: str) -> None:
    """On a net with dropout and batch norm, left in training mode as the loop leaves it, the
    importance equals the eval-mode reference, the net is back in training mode afterwards and
    its batch-norm statistics are unchanged. Deliberate bug: removing ``model.eval()`` from
    ``per_sample_gradient_sum`` (and ``diagonal_fisher``) fails ewc, mas and rwalk; removing it
    from ``mean_response_jacobian`` fails scp."""
    model = DropoutBatchNormNet().double()
    task = make_task(0)
    stats = {n: b.clone() for n, b in model.named_buffers()}
    model.train()
    reference_model = copy.deepcopy(model).eval()
    if name == "ewc":
        got = diagonal_fisher(model, task.train, task.columns, labels="empirical")
        expected = loop_fisher(reference_model, task)
    elif name == "mas":
        strategy = create_strategy("mas")
        strategy.after_task(task, model, None)
        got, expected = strategy.importance, loop_mas(reference_model, task)
    elif name == "scp":
        one = Task(0, "t", task.train, task.test, (0, 1, 2), (2, 3))  # one column: Γ = J²
        strategy = create_strategy("scp", {"slices": 3})
        strategy.after_task(one, model, None)
        got = strategy.importance
        reference_model.zero_grad()
        reference_model(task.train.x)[:, 2].mean().backward()
        expected = {n: p.grad.square() for n, p in reference_model.named_parameters()}
    else:
        strategy = create_strategy("rwalk")
        batch = Batch(task.train.x, task.train.y, torch.zeros_like(task.train.y), None)
        got = strategy.batch_fisher(model, batch, task)
        expected = loop_fisher(reference_model, task)
    for n in expected:
        torch.testing.assert_close(got[n], expected[n])
    assert model.training
    for n, b in model.named_buffers():
        if b.dtype.is_floating_point:
            torch.testing.assert_close(b, stats[n].to(b.dtype))


class ConstantLogits(nn.Module):
    """Logits that do not depend on the input: p(y | x) is one fixed softmax."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1)


def test_true_fisher_labels_follow_the_models_softmax_over_the_head() -> None:
    """The true Fisher draws y_n ~ softmax(logits[head]). With logits ℓ independent of x, the
    per-sample gradient of -log p_y w.r.t. ℓ_j is p_j - [y = j], so the Fisher entry is
    F_j = p_j² + (1 - 2 p_j) c_j / N, which gives back the label counts c_j the library drew. A
    chi-square test (seed 0, N = 3000, 2 degrees of freedom, level 0.001) compares them with
    the exact softmax of the head, computed here; the mean of F_j is p_j (1 - p_j).
    Deliberate bugs: labels drawn uniformly over the head fails; the softmax over
    all columns (labels off the head) fails; the empirical labels (all column 1) fail."""
    logits = torch.tensor([2.0, 1.5, 0.2, -0.7, 3.0], dtype=torch.float64)
    model = ConstantLogits(logits)
    n = 3000
    x = torch.zeros(n, 1, dtype=torch.float64)
    y = torch.full((n,), COLUMNS[0])
    torch.manual_seed(0)
    fisher = diagonal_fisher(model, TaskData(x, y), COLUMNS, labels="true")["logits"]
    head = slice(*COLUMNS)
    p = torch.exp(logits[head]) / torch.exp(logits[head]).sum()  # the exact distribution
    assert bool((fisher[: COLUMNS[0]] == 0).all()) and bool((fisher[COLUMNS[1] :] == 0).all())
    counts = (fisher[head] - p.square()) / (1 - 2 * p) * n
    torch.testing.assert_close(counts, counts.round(), atol=1e-6, rtol=0)  # whole numbers
    assert int(counts.round().sum()) == n
    statistic = float(((counts - n * p).square() / (n * p)).sum())
    assert statistic < chi2.ppf(0.999, df=len(p) - 1), f"chi² = {statistic:.1f}"
    torch.testing.assert_close(fisher[head], p * (1 - p), atol=0.02, rtol=0)


def test_rwalk_interval_score_clips_negative_contributions() -> None:
    """One interval by hand: s += max(0, ω / (½ F Δθ² + ε)) with ω set to (-1, 2, ...) per
    weight. With plain SGD on one task ω = Σ lr g² >= 0, so the clip is only reachable with a
    penalty or momentum; here ω is set directly. Deliberate bug (tools/mutate.py survivor before
    this test): negative scores kept."""
    model = nn.Linear(2, 1, bias=False).double()
    strategy = create_strategy("rwalk", {"epsilon": 0.1})
    strategy.prepare(model, None)
    start = params_of(model)["weight"]
    with torch.no_grad():
        model.weight += torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    strategy.path.omega[0].copy_(torch.tensor([[-1.0, 2.0]], dtype=torch.float64))
    fisher = torch.tensor([[0.5, 0.25]], dtype=torch.float64)
    strategy.running_fisher = {"weight": fisher.clone()}
    strategy._end_interval(model, None)
    moved = model.weight.detach() - start
    expected = torch.tensor([[-1.0, 2.0]], dtype=torch.float64) / (0.5 * fisher * moved**2 + 0.1)
    torch.testing.assert_close(strategy.task_score["weight"], expected.clamp(min=0))
    assert float(strategy.task_score["weight"][0, 0]) == 0.0
