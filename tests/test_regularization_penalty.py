"""The shared quadratic penalty and what every strategy of the family must do with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lifelong.errors import ConfigError
from lifelong.models import build_model
from lifelong.runner import learn_stream
from lifelong.strategies import Batch, create_strategy
from lifelong.strategies.base import classification_loss
from lifelong.strategies.regularization.anchor import AnchoredStrategy, QuadraticPenalty
from lifelong.train import TrainConfig

METHODS = ["l2", "ewc", "online-ewc", "si", "mas", "rwalk", "scp"]
# Small strengths: the tests here check the mechanics, not the protection.
SMALL = {
    "l2": {"lambda": 0.1},
    "ewc": {"lambda": 1.0},
    "online-ewc": {"lambda": 1.0, "gamma": 0.9},
    "si": {"c": 0.1},
    "mas": {"lambda": 0.1},
    "rwalk": {"lambda": 1.0, "update_every": 7},
    "scp": {"lambda": 1.0, "slices": 10},
}
CONFIG = TrainConfig(epochs=1, batch_size=10, lr=0.05)


def random_dicts(shapes: dict[str, tuple[int, ...]], seed: int) -> tuple[dict, dict]:
    gen = torch.Generator().manual_seed(seed)
    importance = {n: torch.rand(s, generator=gen, dtype=torch.float64) for n, s in shapes.items()}
    anchor = {n: torch.randn(s, generator=gen, dtype=torch.float64) for n, s in shapes.items()}
    return importance, anchor


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def test_penalty_value_is_zero_at_the_anchor_and_positive_elsewhere() -> None:
    model = tiny_model()
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    importance, anchor = random_dicts(shapes, 1)
    penalty = QuadraticPenalty(importance, anchor)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(anchor[n])
    assert penalty.value(model).item() == 0.0
    assert penalty.begin_step(penalty.parameters_of(model)).item() == 0.0
    with torch.no_grad():
        next(model.parameters()).add_(0.1)
    assert penalty.value(model).item() > 0


def test_combine_equals_the_sum_of_separate_penalties() -> None:
    model = tiny_model()
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    terms = [random_dicts(shapes, seed) for seed in (1, 2, 3)]
    terms[1][0]["0.bias"].zero_()  # a parameter no task cares about in one term
    merged = QuadraticPenalty.combine(terms)
    separate = sum(QuadraticPenalty(b, a).value(model) for b, a in terms)
    together = merged.value(model)
    torch.testing.assert_close(together, separate, rtol=1e-10, atol=1e-10)
    grads_sep = torch.autograd.grad(separate, list(model.parameters()))
    grads_tog = torch.autograd.grad(merged.value(model), list(model.parameters()))
    for a, b in zip(grads_sep, grads_tog, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_hooks_add_exactly_the_gradient_of_the_penalty() -> None:
    """loss() + backward + after_backward gives the gradient of CE + s * penalty."""
    model = tiny_model()
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    strategy = create_strategy("l2", {"lambda": 0.7})
    strategy.penalty = QuadraticPenalty(*random_dicts(shapes, 5))
    x = torch.randn(6, 3, dtype=torch.float64)
    batch = Batch(x, torch.tensor([0, 1, 1, 0, 1, 0]), torch.zeros(6, dtype=torch.long))

    loss = strategy.loss(model, batch, None)
    loss.backward()
    strategy.after_backward(model, batch, None)
    got = [p.grad.clone() for p in model.parameters()]

    model.zero_grad()
    reference = classification_loss(model(x), batch) + 0.7 * strategy.penalty.value(model)
    torch.testing.assert_close(loss.detach(), reference.detach(), rtol=1e-12, atol=1e-12)
    reference.backward()
    for g, p in zip(got, model.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", METHODS)
def test_every_method_penalty_is_zero_at_its_anchor_with_the_expected_gradient(
    name: str, digits_stream
) -> None:
    strategy = create_strategy(name, SMALL[name])
    assert isinstance(strategy, AnchoredStrategy)
    stream = digits_stream
    one_task = type(stream)(
        stream.name, stream.data, stream.scenario, stream.tasks[:1], stream.input_shape,
        stream.n_outputs,
    )  # fmt: skip
    learn_stream(one_task, strategy, train=CONFIG, seed=0)
    penalty = strategy.penalty
    assert penalty is not None
    model = build_model("mlp", stream)
    importance, anchor = penalty.as_dicts()
    assert all((b >= 0).all() for b in importance.values()), "importances must be non-negative"
    assert any((b > 0).any() for b in importance.values())
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(anchor[n])
    params = penalty.parameters_of(model)
    assert penalty.begin_step(params).item() == pytest.approx(penalty.offset, abs=1e-6)
    assert penalty.offset == 0.0  # one task: a single anchor

    # Away from the anchor, the hooks add exactly 2 s b (θ - θ*) to the task gradient.
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    task = stream.tasks[1]
    x, y = task.train.inputs(slice(0, 10)), task.train.y[:10]
    batch = Batch(x, y, torch.full((10,), 1), None)
    strategy.loss(model, batch, task).backward()
    strategy.after_backward(model, batch, task)
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    classification_loss(model(x), batch).backward()
    scale = strategy.penalty_scale
    for n, p in model.named_parameters():
        expected = p.grad + 2 * scale * importance[n] * (p.detach() - anchor[n])
        torch.testing.assert_close(got[n], expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", METHODS)
def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(
    name: str, digits_stream, tmp_path: Path
) -> None:
    whole = learn_stream(digits_stream, create_strategy(name, SMALL[name]), train=CONFIG, seed=3)

    class Stop(Exception):
        pass

    def stop_after_first(result) -> None:
        if result.tasks_done == 1:
            raise Stop

    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(Stop):
        learn_stream(
            digits_stream,
            create_strategy(name, SMALL[name]),
            train=CONFIG,
            seed=3,
            checkpoint=checkpoint,
            on_task=stop_after_first,
        )
    resumed = learn_stream(
        digits_stream, create_strategy(name, SMALL[name]), train=CONFIG, seed=3,
        checkpoint=checkpoint,
    )  # fmt: skip
    assert resumed.accuracy_matrix == whole.accuracy_matrix


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("ewc", {"lambda": "-1"}),
        ("ewc", {"fisher": "sampled"}),
        ("ewc", {"fisher_samples": "-5"}),
        ("online-ewc", {"gamma": "1.5"}),
        ("si", {"xi": "0"}),
        ("mas", {"lambda": "-0.1"}),
        ("rwalk", {"alpha": "0"}),
        ("rwalk", {"update_every": "0"}),
        ("scp", {"slices": "0"}),
        ("l2", {"lambda": "nan"}),
    ],
)
def test_bad_hyperparameters_are_config_errors(name: str, params: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        create_strategy(name, params)
    assert "\n" not in str(info.value)


def test_strings_from_the_command_line_are_converted() -> None:
    strategy = create_strategy(
        "ewc", {"lambda": "5", "fisher": "empirical", "fisher_samples": "200"}
    )
    assert strategy.params() == {"lambda": 5.0, "fisher": "empirical", "fisher_samples": 200}
