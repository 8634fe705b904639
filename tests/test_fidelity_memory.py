"""The loss terms and targets of iCaRL, generative replay (soft labels) and LwF against
references written here from the papers' formulas (not through the library's helpers). Every
test names the deliberate bug it was run against and failed on; the list is also in TESTING.md."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lifelong.models import build_model
from lifelong.strategies import Batch, create_strategy
from lifelong.streams import build_stream


def move(model: nn.Module, seed: int) -> None:
    """Stands in for training: the current model differs from the frozen previous one."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p += 0.2 * torch.randn(p.shape, generator=gen)


def log_softmax(z: torch.Tensor) -> torch.Tensor:
    return z - torch.log(torch.exp(z).sum(1, keepdim=True))


def softmax(z: torch.Tensor) -> torch.Tensor:
    return torch.exp(z) / torch.exp(z).sum(1, keepdim=True)


@pytest.fixture(scope="module")
def class_stream():
    return build_stream("split", "digits", tasks=3, scenario="class", train_samples=60, seed=0)


@pytest.fixture(scope="module")
def task_stream():
    return build_stream("split", "digits", tasks=3, scenario="task", train_samples=60, seed=0)


def test_icarl_loss_is_sigmoid_bce_with_the_old_networks_outputs_on_old_classes(
    class_stream,
) -> None:
    """iCaRL Alg. 3: for every seen class y a binary cross-entropy on σ(g_y(x)), with target
    δ_{y = label} for new classes and σ(g_y^old(x)) (the previous network) for old ones, summed
    over classes and averaged over the batch. Deliberate bugs: one-hot targets on old classes
    (no distillation) fails; softmax cross-entropy fails."""
    stream = class_stream
    torch.manual_seed(0)
    model = build_model("mlp", stream, [16])
    strategy = create_strategy("icarl", {"memory_size": 12})
    strategy.prepare(model, stream)
    strategy.before_task(stream.tasks[0], model)
    strategy.after_task(stream.tasks[0], model, None)  # exemplars of classes 0-2
    strategy.before_task(stream.tasks[1], model)
    previous = copy.deepcopy(model)
    move(model, 1)
    x = torch.cat([stream.tasks[1].train.inputs(torch.arange(6)), strategy.exemplars[0][:2]])
    y = torch.cat([stream.tasks[1].train.y[:6], torch.zeros(2, dtype=torch.long)])
    batch = Batch(x, y, torch.ones_like(y), None)
    got = strategy.loss(model, batch, stream.tasks[1])

    with torch.no_grad():
        old_prob = 1 / (1 + torch.exp(-previous(x)))
    z = model(x)
    total = torch.zeros(())
    for c in range(6):  # the classes seen: 0-2 old, 3-5 new
        target = old_prob[:, c] if c < 3 else (y == c).float()
        q = 1 / (1 + torch.exp(-z[:, c]))
        total = total - (target * torch.log(q) + (1 - target) * torch.log(1 - q)).sum()
    torch.testing.assert_close(got, total / len(y))


def test_generative_replay_soft_targets_are_the_old_solvers_softened_outputs(
    class_stream,
) -> None:
    """Soft labels (van de Ven et al. 2020): replayed x' gets the target softmax(z_old(x')/T)
    over the previous solver's columns (zero elsewhere); the student's log-softmax at T is over
    the columns a real sample uses (all of them in the class scenario); the term is multiplied
    by T² and mixed r·CE(real) + (1 - r)·replay with r = 1/2 on the second task. Deliberate
    bugs: uniform soft targets fail; T = 1 in the targets fails; no T² fails; the student
    restricted to the old columns fails."""
    stream, t = class_stream, 3.0
    torch.manual_seed(0)
    model = build_model("mlp", stream, [16])
    params = {"labels": "soft", "temperature": t, "hidden": 8, "latent": 2}
    strategy = create_strategy("generative-replay", params)
    strategy.prepare(model, stream)
    strategy.before_task(stream.tasks[1], model)
    previous = copy.deepcopy(model)
    move(model, 2)
    replayed = stream.tasks[0].train.inputs(torch.arange(5)).clone()
    strategy.previous_vae.sample = lambda n, shape, generator=None: replayed[:n]
    x, y = stream.tasks[1].train.inputs(torch.arange(5)), stream.tasks[1].train.y[:5]
    batch = Batch(x, y, torch.ones_like(y), None)
    got = strategy.loss(model, batch, stream.tasks[1])

    old = list(stream.tasks[0].classes)  # the columns the previous solver learned
    with torch.no_grad():
        target = softmax(previous(replayed)[:, old] / t)
    student = log_softmax(model(replayed) / t)
    replay = -(target * student[:, old]).sum(1).mean() * t * t
    z = model(x)
    current = -log_softmax(z)[torch.arange(5), y].mean()
    torch.testing.assert_close(got, 0.5 * current + 0.5 * replay)


@pytest.mark.parametrize("temperature", [2.0, 4.0])
def test_lwf_distils_each_old_head_separately_at_temperature(task_stream, temperature) -> None:
    """LwF (Li & Hoiem 2017) in the task scenario on the third task: CE over the task's head plus
    λ Σ_{old heads h} -mean Σ_j softmax(z_old,h / T)_j log softmax(z_h / T)_j, one softmax per
    old task's head. Deliberate bugs: T = 1 fails; the two old heads distilled as one softmax
    fails; λ ignored fails."""
    stream, lam = task_stream, 0.7
    torch.manual_seed(0)
    model = build_model("mlp", stream, [16])
    strategy = create_strategy("lwf", {"lambda": lam, "temperature": temperature})
    strategy.prepare(model, stream)
    strategy.before_task(stream.tasks[2], model)
    previous = copy.deepcopy(model)
    move(model, 3)
    task = stream.tasks[2]
    x, y = task.train.inputs(torch.arange(7)), task.train.y[:7]
    ids = torch.full_like(y, 2)
    batch = Batch(x, y, ids, stream.column_mask(ids))
    got = strategy.loss(model, batch, task)

    z = model(x)
    with torch.no_grad():
        z_old = previous(x)
    start, stop = task.columns
    expected = -log_softmax(z[:, start:stop])[torch.arange(7), y - start].mean()
    for head in (slice(0, 3), slice(3, 6)):
        target = softmax(z_old[:, head] / temperature)
        expected = expected - lam * (target * log_softmax(z[:, head] / temperature)).sum(1).mean()
    torch.testing.assert_close(got, expected)
