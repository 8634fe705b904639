"""RWalk's score and Fisher, and SCP's sliced importance, against direct re-computations."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.strategies import Batch
from lifelong.strategies.regularization.rwalk import RWalk, min_max_normalise
from lifelong.strategies.regularization.scp import SCP, mean_response_jacobian, sliced_importance
from lifelong.streams.base import Task, TaskData


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def batches(steps: int, size: int = 6) -> list[Batch]:
    gen = torch.Generator().manual_seed(1)
    return [
        Batch(
            torch.randn(size, 4, generator=gen, dtype=torch.float64),
            torch.randint(0, 3, (size,), generator=gen),
            torch.zeros(size, dtype=torch.long),
        )
        for _ in range(steps)
    ]


def task_of(x: torch.Tensor, columns=(0, 3)) -> Task:
    split = TaskData(x, torch.zeros(len(x), dtype=torch.long))
    return Task(0, "t", split, split, (0, 1, 2), columns)


def per_sample_fisher(model: nn.Module, batch: Batch) -> list[torch.Tensor]:
    total = [torch.zeros_like(p) for p in model.parameters()]
    for i in range(len(batch)):
        model.zero_grad()
        F.cross_entropy(model(batch.x[i : i + 1]), batch.y[i : i + 1]).backward()
        for t, p in zip(total, model.parameters(), strict=True):
            t += p.grad.square()
    return [t / len(batch) for t in total]


def test_rwalk_score_and_fisher_follow_the_paper() -> None:
    """Replays RWalk on plain tensors: path integral over intervals of 2 steps divided by
    ½ F Δθ² + ε (F from the start of the interval; the first interval uses its own batch
    Fisher), negative scores clipped, F ← α F_batch + (1 - α) F with per-sample batch Fishers."""
    lr, alpha, eps, every = 0.3, 0.9, 1e-3, 2
    data = batches(6)
    model = small_model()
    strategy = RWalk(lambda_=1.0, alpha=alpha, update_every=every, epsilon=eps)
    strategy.prepare(model, None)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    task = task_of(data[0].x)

    reference_model = small_model()
    ref_params = list(reference_model.parameters())
    fisher = None
    score = [torch.zeros_like(p) for p in ref_params]
    omega = [torch.zeros_like(p) for p in ref_params]
    start = [p.detach().clone() for p in ref_params]
    for step, batch in enumerate(data, 1):
        optimizer.zero_grad()
        strategy.loss(model, batch, task).backward()
        strategy.after_backward(model, batch, task)
        optimizer.step()
        strategy.after_step(model, batch, task)

        reference_model.zero_grad()
        F.cross_entropy(reference_model(batch.x), batch.y).backward()
        with torch.no_grad():
            for p, w in zip(ref_params, omega, strict=True):
                before = p.clone()
                p -= lr * p.grad
                w += -p.grad * (p - before)
        if step % every == 0:
            batch_fisher = per_sample_fisher(reference_model, batch)
            used = fisher if fisher is not None else batch_fisher
            with torch.no_grad():
                for i, p in enumerate(ref_params):
                    kl = 0.5 * used[i] * (p - start[i]).square() + eps
                    score[i] += (omega[i] / kl).clamp(min=0)
                    omega[i].zero_()
                    start[i] = p.detach().clone()
            fisher = (
                batch_fisher
                if fisher is None
                else [
                    alpha * b + (1 - alpha) * f for b, f in zip(batch_fisher, fisher, strict=True)
                ]
            )
    names = [n for n, _ in model.named_parameters()]
    for i, name in enumerate(names):
        torch.testing.assert_close(strategy.task_score[name], score[i])
        torch.testing.assert_close(strategy.running_fisher[name], fisher[i])
    assert any((s > 0).any() for s in score)

    strategy.after_task(task, model, None)
    importance, anchor = strategy.penalty.as_dicts()
    f_hat = min_max_normalise(dict(zip(names, fisher, strict=True)))
    s_hat = min_max_normalise(dict(zip(names, score, strict=True)))
    for name, p in model.named_parameters():
        torch.testing.assert_close(importance[name], f_hat[name] + s_hat[name])
        torch.testing.assert_close(anchor[name], p.detach())
    assert min(float(v.min()) for v in f_hat.values()) == 0.0
    assert max(float(v.max()) for v in f_hat.values()) == 1.0

    # The next task's score is averaged with this one: s <- (s + s_new) / 2.
    first = {n: s.clone() for n, s in strategy.score.items()}
    for batch in data[:4]:
        optimizer.zero_grad()
        strategy.loss(model, batch, task).backward()
        strategy.after_backward(model, batch, task)
        optimizer.step()
        strategy.after_step(model, batch, task)
    new = {n: s.clone() for n, s in strategy.task_score.items()}
    strategy.after_task(task, model, None)
    for name in names:
        torch.testing.assert_close(strategy.score[name], (first[name] + new[name]) / 2)


def test_scp_importance_equals_the_definition() -> None:
    """Γ = 1/L Σ_l (∂⟨ξ_l, φ̄⟩/∂θ)² with φ̄ the mean output over the task's columns."""
    model = small_model()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(30, 4, generator=gen, dtype=torch.float64)
    task = task_of(x, columns=(1, 3))
    slices = 16
    torch.manual_seed(5)
    gamma = sliced_importance(mean_response_jacobian(model, task), slices)
    torch.manual_seed(5)
    directions = torch.randn(slices, 2)
    directions /= directions.norm(dim=1, keepdim=True)
    expected = [torch.zeros_like(p) for p in model.parameters()]
    for xi in directions.double():
        model.zero_grad()
        (model(x)[:, 1:3].mean(0) @ xi).backward()
        for e, p in zip(expected, model.parameters(), strict=True):
            e += p.grad.square() / slices
    for (name, _), e in zip(model.named_parameters(), expected, strict=True):
        torch.testing.assert_close(gamma[name], e)


def test_scp_combines_tasks_online_with_alpha() -> None:
    model = small_model()
    strategy = SCP(lambda_=4.0, slices=8, alpha=0.25)
    x = torch.randn(20, 4, dtype=torch.float64)
    strategy.after_task(task_of(x), model, None)
    first = {n: g.clone() for n, g in strategy.importance.items()}
    with torch.no_grad():
        model[0].weight.mul_(2)
    slices = torch.Generator()
    slices.set_state(strategy.generator.get_state())  # the slices come from the strategy's own
    strategy.after_task(task_of(x), model, None)
    second = sliced_importance(mean_response_jacobian(model, task_of(x)), 8, slices)
    importance, _ = strategy.penalty.as_dicts()
    for name, g in first.items():
        torch.testing.assert_close(importance[name], 0.25 * g + 0.75 * second[name])
    assert strategy.penalty_scale == 2.0  # λ/2
