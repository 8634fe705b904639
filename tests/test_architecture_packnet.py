"""PackNet: disjoint per-task masks covering the pruned fraction, frozen weights, exact old tasks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lifelong.errors import ConfigError
from lifelong.models import build_model
from lifelong.runner import learn_stream, seed_everything
from lifelong.strategies import create_strategy
from lifelong.strategies.architecture.masking import FREE, magnitude_prune
from lifelong.strategies.architecture.packnet import PackNet
from lifelong.streams import Stream, build_stream
from lifelong.train import TrainConfig, Trainer

# Momentum and weight decay carried over between tasks would move frozen weights if only their
# gradients were masked: this configuration checks that they are really kept.
HARSH = TrainConfig(
    epochs=2, batch_size=32, lr=0.1, momentum=0.9, weight_decay=1e-2, reset_optimizer=False
)


@pytest.fixture(scope="module")
def split_task() -> Stream:
    return build_stream("split", "digits", scenario="task", seed=0)


def task_outputs(strategy, model, stream: Stream, upto: int) -> list[torch.Tensor]:
    model.eval()
    with torch.inference_mode():
        outputs = []
        for task in stream.tasks[: upto + 1]:
            start, stop = task.columns
            outputs.append(strategy.predict(model, task.test.inputs(), task)[:, start:stop].clone())
    model.train()
    return outputs


def test_masks_are_disjoint_cover_the_pruned_fraction_and_old_tasks_are_exact(
    split_task: Stream,
) -> None:
    seed_everything(0)
    strategy = PackNet(prune=0.6)
    model = build_model("mlp", split_task, [32, 32])
    net = strategy.prepare(model, split_task)
    trainer = Trainer(net, strategy, split_task, HARSH)
    params = dict(net.named_parameters())
    assert strategy.layers == ["features.1.weight", "features.3.weight"]
    assert strategy.head == ["head.weight", "head.bias"]
    masks: list[dict[str, torch.Tensor]] = []  # task t's binary masks, right after task t
    values: list[dict[str, torch.Tensor]] = []  # its weights' values, right after task t
    outputs: list[list[torch.Tensor]] = []
    biases = None
    last = len(split_task) - 1
    for task in split_task.tasks:
        free_before = {n: int((o == FREE).sum()) for n, o in strategy.owners.items()}
        trainer.learn(task)
        for n, owner in strategy.owners.items():
            n_owned = int((owner == task.id).sum())
            n_pruned = round(0.6 * free_before[n]) if task.id < last else 0  # last: not pruned
            assert n_owned == free_before[n] - n_pruned
            assert int((owner == FREE).sum()) == n_pruned
            assert torch.all(params[n][owner == FREE] == 0)  # released weights are zero
        masks.append({n: (o == task.id).clone() for n, o in strategy.owners.items()})
        values.append(
            {n: params[n][o == task.id].detach().clone() for n, o in strategy.owners.items()}
        )
        outputs.append(task_outputs(strategy, net, split_task, task.id))
        if task.id == 0:
            biases = [params[f"features.{i}.bias"].detach().clone() for i in (1, 3)]
    # each task's mask never changes, the masks are pairwise disjoint, and the owned values stay
    for j in range(len(masks)):
        for n, owner in strategy.owners.items():
            assert torch.equal(owner == j, masks[j][n])
            assert torch.equal(params[n][masks[j][n]], values[j][n])
            for k in range(j):
                assert not torch.any(masks[j][n] & masks[k][n])
    # biases are trained with the first task and frozen afterwards
    assert all(
        torch.equal(b, params[f"features.{i}.bias"]) for b, i in zip(biases, (1, 3), strict=True)
    )
    for t, after_t in enumerate(outputs):
        for j, scores in enumerate(after_t):
            assert torch.equal(scores, outputs[-1][j]), f"task {j} changed after task {t}"
    info = strategy.info()
    assert info["parameters_total"] == [sum(p.numel() for p in net.parameters())] * len(split_task)
    assert info["parameters_free"][-1] == 0
    first_used = info["parameters_used"]
    assert all(row[0] == first_used[0][0] for row in first_used)  # task 1's share never changes


def test_parameter_count_does_not_grow_and_bwt_is_zero(split_task: Stream) -> None:
    result = learn_stream(split_task, "packnet", hidden=[32, 32], train=HARSH)
    assert len(set(result.parameters)) == 1
    assert result.metrics()["bwt"] == 0.0
    assert result.extra["parameters_free"] == sorted(result.extra["parameters_free"], reverse=True)


def test_magnitude_prune_removes_exactly_the_smallest_eligible_weights() -> None:
    weight = torch.tensor([[0.5, -0.1, 0.3], [-0.2, 0.05, 0.9]])
    eligible = torch.tensor([[True, True, True], [True, False, True]])
    remove = magnitude_prune(weight, eligible, 0.4)  # round(0.4 * 5) = 2: -0.1 and -0.2
    assert remove.tolist() == [[False, True, False], [True, False, False]]
    ties = magnitude_prune(torch.ones(2, 3), torch.ones(2, 3, dtype=torch.bool), 0.5)
    assert int(ties.sum()) == 3


def test_packnet_works_with_a_cnn(split_task: Stream) -> None:
    two = build_stream("split", "digits", scenario="task", tasks=2, seed=0)
    result = learn_stream(two, "packnet", model="cnn", hidden=[16], train=TrainConfig(epochs=1))
    assert result.metrics()["bwt"] == 0.0


def test_packnet_rejects_bad_settings_and_models(split_task: Stream) -> None:
    with pytest.raises(ConfigError, match="prune"):
        create_strategy("packnet", {"prune": "1.5"})
    strategy = create_strategy("packnet", {"prune": "0.5"})
    assert strategy.params()["prune"] == 0.5
    bad = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))  # output layer too small for 10 columns
    with pytest.raises(ConfigError, match="output layer"):
        strategy.prepare(bad, split_task)


def test_gradients_of_weights_the_task_does_not_own_are_zeroed(split_task: Stream) -> None:
    seed_everything(0)
    strategy = PackNet(prune=0.5)
    net = strategy.prepare(build_model("mlp", split_task, [16]), split_task)
    trainer = Trainer(net, strategy, split_task, TrainConfig(epochs=1, batch_size=32))
    for task in split_task.tasks[:2]:
        trainer.learn(task)
    task = split_task.tasks[2]
    strategy.before_task(task, net)
    batch = next(iter(strategy.training_data(task, split_task.tasks[:3]).batches(64)))
    strategy.loss(net, batch, task).backward()
    strategy.after_backward(net, batch, task)
    params = dict(net.named_parameters())
    for n, owner in strategy.owners.items():
        grad = params[n].grad
        assert torch.all(grad[owner != 2] == 0)
        assert torch.any(grad[owner == 2] != 0)
    start, stop = task.columns
    assert torch.all(params["head.weight"].grad[:start] == 0)
    assert torch.all(params["head.weight"].grad[stop:] == 0)
    assert not params["features.1.bias"].requires_grad  # frozen after the first task
