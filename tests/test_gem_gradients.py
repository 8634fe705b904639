"""GEM's memory gradients, all past tasks in one pass, against a plain loop of one backward pass
per task (the definition), to 1e-6.

All three routes of ``memory_gradients`` are checked: the outer-product route (every trainable
parameter in a plain ``nn.Linear``), the per-task loop (batch norm in training mode) and the
``vmap(grad)`` route (any other model). Breaking the outer-product route (e.g. dropping the
per-sample weights from its loss, or summing the weight gradient over all tasks instead of per
task) makes ``test_memory_gradients_equal_the_per_task_loop`` fail; so does making
``samplewise_linears`` accept a batch-norm model (``test_batch_norm_model_takes_the_generic_route``)
or sending batch-norm models to ``vmap``, which cannot update running statistics in place.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lifelong.models import CNN, MLP
from lifelong.runner import learn_stream
from lifelong.strategies.memory.gem import couples_or_mutates, memory_gradients, trainable
from lifelong.strategies.samplewise import samplewise_linears
from lifelong.streams import build_stream
from lifelong.train import TrainConfig


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
    "batch-norm": (
        lambda: nn.Sequential(
            nn.Flatten(), nn.Linear(12, 7), nn.BatchNorm1d(7), nn.ReLU(), nn.Linear(7, 6)
        ),
        False,
    ),
    "batch-norm-2d": (
        lambda: nn.Sequential(
            nn.Conv2d(1, 3, 2), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(18, 6)
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
    reference = copy.deepcopy(model)
    expected = per_task_loop(reference, x, y, counts, masks)
    batched = memory_gradients(model, x, y, weights, masks)
    # the same training-mode passes: batch norm's running statistics moved as the loop's did
    for a, b in zip(model.buffers(), reference.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6 if dtype == torch.float64 else 1e-5)
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


@pytest.mark.parametrize("name", list(MODELS))
def test_memory_gradients_leave_the_current_gradient_alone(name):
    """GEM calls the routes after the current batch's backward pass: its ``.grad`` must stay."""
    torch.manual_seed(0)
    model = MODELS[name][0]()
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    before = [p.grad.clone() for p in model.parameters()]
    x, y = torch.randn(2, 4, 1, 4, 3), torch.randint(0, 6, (2, 4))
    memory_gradients(model, x, y, torch.full((2, 4), 0.25), None)
    for p, g in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.grad, g)


def test_which_models_take_the_per_task_loop():
    """Batch statistics, or running statistics updated in training mode; nothing else."""
    assert couples_or_mutates(nn.BatchNorm1d(3))
    assert not couples_or_mutates(nn.BatchNorm1d(3).eval())
    assert couples_or_mutates(nn.BatchNorm2d(3, track_running_stats=False).eval())
    assert couples_or_mutates(nn.InstanceNorm1d(3, track_running_stats=True))
    assert not couples_or_mutates(nn.InstanceNorm1d(3))
    assert not couples_or_mutates(nn.Sequential(nn.LayerNorm(3), nn.Dropout(0.5)))


def test_dropout_model_takes_the_vmap_route():
    """``vmap`` refuses random operations unless told how to draw them: each task draws its own
    dropout mask, as each pass of the per-task loop would."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 2), nn.ReLU(), nn.Flatten(), nn.Dropout(0.5), nn.Linear(12, 6)
    )
    x, y = torch.randn(3, 5, 1, 4, 3), torch.randint(0, 6, (3, 5))
    weights = torch.full((3, 5), 0.2)
    dropped = memory_gradients(model, x, y, weights, None)
    plain = memory_gradients(model.eval(), x, y, weights, None)
    assert torch.isfinite(dropped).all() and not torch.allclose(dropped, plain)


@pytest.mark.parametrize(("strategy", "memory_passes"), [("gem", 3), ("agem", 2)])
def test_memory_methods_train_a_batch_norm_model(strategy, memory_passes):
    """GEM and A-GEM through three split-digits tasks with a batch-norm model. Every memory pass
    is a training-mode pass (as in the authors' code), so besides the S steps of each task the
    running statistics count GEM's one pass per past task (S + 2S) and A-GEM's one per step
    after the first task (2S)."""
    stream = build_stream("split", "digits", tasks=3, train_samples=60, test_samples=60, seed=0)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 9)
    )
    result = learn_stream(stream, strategy, model=model, train=TrainConfig(batch_size=10))
    steps = 60 // 10
    assert result.extra["constrained_steps"] == 2 * steps
    assert int(model[2].num_batches_tracked) == 3 * steps + memory_passes * steps
    final = result.accuracy_matrix[-1]
    assert len(final) == 3 and min(final) > 0.5  # chance: 1/9 (class scenario)


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
