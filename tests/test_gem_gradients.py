"""GEM's memory gradients, all past tasks in one pass, against a plain loop of one backward pass
per task (the definition), to 1e-6.

Both routes of ``memory_gradients`` are checked: the outer-product route (every trainable
parameter in a plain ``nn.Linear``) and the ``vmap(grad)`` route (any other model). Breaking
the outer-product route (e.g. dropping the per-sample weights from its loss, or summing the
weight gradient over all tasks instead of per task) makes ``test_memory_gradients_equal_the_per_task_loop``
fail; so does making ``samplewise_linears`` accept a batch-norm model
(``test_batch_norm_model_takes_the_generic_route``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lifelong.models import CNN, MLP
from lifelong.strategies.memory.gem import memory_gradients, trainable
from lifelong.strategies.samplewise import samplewise_linears


def per_task_loop(model: nn.Module, x, y, counts, masks) -> torch.Tensor:
    """The reference: for each task, one forward and backward pass over its stored samples."""
    rows = []
    for k, n in enumerate(counts):
        model.zero_grad()
        logits = model(x[k, :n])
        if masks is not None:
            logits = logits.masked_fill(~masks[k], float("-inf"))
        F.cross_entropy(logits, y[k, :n]).backward()
        rows.append(
            torch.cat(
                [
                    (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                    for p in trainable(model).values()
                ]
            )
        )
    return torch.stack(rows)


class InplaceMLP(nn.Module):
    """A ReLU that overwrites the Linear layer's output: the outer-product route must refuse it."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(12, 7), nn.Linear(7, 6)

    def forward(self, x):
        return self.b(F.relu(self.a(x.flatten(1)), inplace=True))


class FrozenFirstLayer(MLP):
    def __init__(self) -> None:
        super().__init__(12, (7, 5), 6)
        self.features[1].requires_grad_(False)


class TiedNet(nn.Module):
    """Two Linear layers share one weight: its gradient has a term from each use."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.c, self.b = nn.Linear(12, 12), nn.Linear(12, 12), nn.Linear(12, 6)
        self.c.weight = self.a.weight

    def forward(self, x):
        return self.b(F.relu(self.c(F.relu(self.a(x.flatten(1))))))


class OutsideUse(nn.Module):
    """The head's weight is also used outside its module: no hook sees that term."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(12, 7), nn.Linear(7, 6)

    def forward(self, x):
        h = F.relu(self.a(x.flatten(1)))
        return self.b(h) + 0.5 * F.linear(h.flip(1), self.b.weight)


class NormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.norm, self.b = (
            nn.Linear(12, 7),
            nn.BatchNorm1d(7, affine=False),
            nn.Linear(7, 6),
        )

    def forward(self, x):
        return self.b(F.relu(self.norm(self.a(x.flatten(1)))))


MODELS = {
    "mlp": (lambda: MLP(12, (7, 5), 6), True),
    "frozen-first-layer": (FrozenFirstLayer, True),
    "cnn": (lambda: CNN((1, 4, 3), 6, channels=(3,), hidden=(5,)), False),
    "inplace-relu": (InplaceMLP, True),
    "tied-weights": (TiedNet, False),
    "weight-used-outside-its-module": (OutsideUse, True),
    "layer-norm": (
        lambda: nn.Sequential(
            nn.Flatten(), nn.Linear(12, 7), nn.LayerNorm(7), nn.ReLU(), nn.Linear(7, 6)
        ),
        False,
    ),
}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("task_scenario", [False, True])
def test_memory_gradients_equal_the_per_task_loop(name, dtype, task_scenario):
    build, linear_only = MODELS[name]
    torch.manual_seed(0)
    model = build().to(dtype)
    assert (samplewise_linears(model, trainable(model)) is not None) == linear_only
    tasks, per_task, counts = 3, 5, [5, 2, 4]  # task 2's memory is not full yet
    x = torch.randn(tasks, per_task, 1, 4, 3, dtype=dtype)
    y = torch.randint(0, 2, (tasks, per_task)) + 2 * torch.arange(tasks).unsqueeze(1)
    weights = torch.zeros(tasks, per_task, dtype=dtype)
    masks = torch.zeros(tasks, 6, dtype=torch.bool) if task_scenario else None
    for k, n in enumerate(counts):
        weights[k, :n] = 1.0 / n
        if masks is not None:
            masks[k, 2 * k : 2 * k + 2] = True
    if masks is None:
        y = torch.randint(0, 6, (tasks, per_task))
    expected = per_task_loop(model, x, y, counts, masks)
    batched = memory_gradients(model, x, y, weights, masks)
    assert batched.shape == expected.shape
    if dtype == torch.float64:
        torch.testing.assert_close(batched, expected, rtol=0, atol=1e-6)
    else:
        torch.testing.assert_close(batched, expected, rtol=1e-5, atol=1e-6)
    # into a preallocated buffer (what GEM does every step): the same numbers, in place
    out = torch.full((tasks + 2, expected.shape[1]), float("nan"), dtype=dtype)
    again = memory_gradients(model, x, y, weights, masks, out=out[:tasks])
    assert again.data_ptr() == out.data_ptr()
    torch.testing.assert_close(out[:tasks], batched, rtol=0, atol=0)


def test_batch_norm_model_takes_the_generic_route():
    """Batch statistics mix the samples of all tasks in one pass: that model must not qualify."""
    model = NormNet()
    assert samplewise_linears(model, trainable(model)) is None


def test_memory_gather_equals_flat_then_index():
    """A-GEM's per-step draw copies only the drawn samples; they must be the same samples."""
    from lifelong.strategies.memory.buffer import EpisodicMemory

    memory = EpisodicMemory(4)
    gen = torch.Generator().manual_seed(0)
    for task, n in ((3, 4), (5, 2), (7, 4)):
        memory.write_all(task, torch.randn(n, 1, 2, 2, generator=gen), torch.arange(n) + task)
    rows = [0, 2, 1]
    x, y, t = memory.flat(rows)
    index = torch.randperm(len(y), generator=gen)[:7]
    gx, gy, gt = memory.gather(rows, index)
    assert torch.equal(gx, x[index]) and torch.equal(gy, y[index]) and torch.equal(gt, t[index])
