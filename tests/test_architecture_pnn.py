"""Progressive Neural Networks: frozen columns, lateral adapters, quadratic growth, routing."""

from __future__ import annotations

import itertools

import pytest
import torch

from lifelong.errors import ConfigError
from lifelong.models import build_model
from lifelong.runner import learn_stream, seed_everything
from lifelong.strategies import create_strategy
from lifelong.strategies.architecture.pnn import PNN, ProgressiveNet
from lifelong.streams import Stream, build_stream
from lifelong.train import TrainConfig, Trainer

CONFIG = TrainConfig(epochs=2, batch_size=32, lr=0.1)


@pytest.fixture(scope="module")
def split_task() -> Stream:
    return build_stream("split", "digits", scenario="task", seed=0)


def task_outputs(strategy, model, stream: Stream, upto: int) -> list[torch.Tensor]:
    """Each learned task's scores on its test set, in its own columns."""
    model.eval()
    with torch.inference_mode():
        outputs = []
        for task in stream.tasks[: upto + 1]:
            start, stop = task.columns
            outputs.append(strategy.predict(model, task.test.inputs(), task)[:, start:stop].clone())
    model.train()
    return outputs


def test_old_tasks_outputs_are_bit_identical_after_new_tasks(split_task: Stream) -> None:
    seed_everything(0)
    strategy = PNN()
    net = strategy.prepare(build_model("mlp", split_task, [32, 32]), split_task)
    trainer = Trainer(net, strategy, split_task, CONFIG)
    after: list[list[torch.Tensor]] = []
    for task in split_task.tasks:
        trainer.learn(task)
        after.append(task_outputs(strategy, net, split_task, task.id))
        # only the new column trains; the earlier ones are frozen
        trained = {id(p) for p in strategy.parameters_to_train(net)}
        assert trained == {id(p) for p in net.columns[task.id].parameters()}
        for column in net.columns[: task.id]:
            assert not any(p.requires_grad for p in column.parameters())
    for t, outputs in enumerate(after):
        for j, scores in enumerate(outputs):
            assert torch.equal(scores, after[-1][j]), f"task {j} changed after task {t}"
    # and the tasks are actually learned (not a constant network; at lr 0.1 a column sometimes
    # stays near chance, on one task of five at some seeds, so the check is on the mean)
    assert all(bool((out.std(0) > 0).all()) for out in after[-1])
    accuracy = [
        float((out.argmax(1) + t.columns[0] == t.test.y).float().mean())
        for out, t in zip(after[-1], split_task.tasks, strict=True)
    ]
    assert sum(accuracy) / len(accuracy) > 0.7


def test_parameters_grow_quadratically_with_adapters(split_task: Stream) -> None:
    result = learn_stream(split_task, "pnn", hidden=[20, 30], train=CONFIG)
    counts = result.parameters
    assert len(counts) == len(split_task)
    steps = [b - a for a, b in itertools.pairwise(counts)]
    second = [b - a for a, b in itertools.pairwise(steps)]
    # V of the adapter into layer i reads all k earlier columns: k * n_{i-1}^2 weights, so each
    # new column costs sum_i n_{i-1}^2 more than the previous one (hidden 20, 30 -> 20^2 + 30^2)
    assert second == [20**2 + 30**2] * (len(split_task) - 2)
    one_column = (64 * 20 + 20) + (20 * 30 + 30) + (30 * 2 + 2)
    assert counts[0] == one_column
    assert result.extra["parameters_total"] == counts
    used = result.extra["parameters_used"]
    assert [row[-1] for row in used] == counts  # the newest task reads every column
    assert used[-1][0] == one_column  # the first task reads its own column only


def test_mixed_batches_are_routed_per_sample(split_task: Stream) -> None:
    seed_everything(0)
    strategy = PNN()
    net = strategy.prepare(build_model("mlp", split_task, [16]), split_task)
    trainer = Trainer(net, strategy, split_task, CONFIG)
    for task in split_task.tasks[:3]:
        trainer.learn(task)
    x = torch.cat([t.test.inputs(slice(0, 5)) for t in split_task.tasks[:4]])
    ids = torch.arange(4).repeat_interleave(5)
    with torch.inference_mode():
        mixed = strategy.forward(net, x, ids)
        for t in range(3):
            alone = strategy.forward(net, x[ids == t], torch.full((5,), t))
            assert torch.equal(mixed[ids == t], alone)
            start, stop = split_task.tasks[t].columns
            outside = torch.ones(split_task.n_outputs, dtype=torch.bool)
            outside[start:stop] = False
            assert torch.all(mixed[ids == t][:, outside] == 0)
        assert torch.all(mixed[ids == 3] == 0)  # no column for task 4 yet: chance


def test_adapter_uses_every_earlier_column_with_a_learned_scale() -> None:
    net = ProgressiveNet(6, [5, 4], n_outputs=6)
    for columns in [(0, 2), (2, 4), (4, 6)]:
        net.add_column(columns)
    adapter = net.columns[2].adapters[0]
    assert adapter.project.in_features == 2 * 5  # both earlier columns' first hidden layer
    assert adapter.project.out_features == 5 and adapter.lateral.out_features == 4
    assert adapter.alpha.requires_grad and 0 <= float(adapter.alpha.detach()) < 0.1
    assert len(net.columns[0].adapters) == 0 and len(net.columns[1].adapters) == 2
    x = torch.randn(3, 6)
    before = net.column_logits(x, 2)
    with torch.no_grad():
        net.columns[0].layers[0].weight.add_(1.0)  # an earlier column feeds column 3
    assert not torch.equal(before, net.column_logits(x, 2))


def test_pnn_needs_an_mlp_and_the_task_scenario(split_task: Stream) -> None:
    with pytest.raises(ConfigError, match="--model mlp"):
        learn_stream(split_task, "pnn", model="cnn", train=CONFIG)
    domain = build_stream("split", "digits", scenario="domain", tasks=2, seed=0)
    with pytest.raises(ConfigError, match="task"):
        learn_stream(domain, "pnn", train=CONFIG)
    assert create_strategy("pnn").params() == {}
