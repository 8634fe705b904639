"""CPG: the learned picking mask, growth when the goal is missed, compaction, exact old tasks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lifelong.errors import ConfigError
from lifelong.models import build_model
from lifelong.runner import learn_stream, seed_everything
from lifelong.strategies import create_strategy
from lifelong.strategies.architecture.cpg import CPG, CPGNet
from lifelong.strategies.architecture.masking import FREE
from lifelong.streams import Stream, build_stream
from lifelong.train import TrainConfig, Trainer

CONFIG = TrainConfig(epochs=2, batch_size=32, lr=0.1)


@pytest.fixture(scope="module")
def three_tasks() -> Stream:
    return build_stream("split", "digits", scenario="task", tasks=3, seed=0)


def start(strategy: CPG, stream: Stream, hidden: list[int], config: TrainConfig = CONFIG):
    seed_everything(0)
    net = strategy.prepare(build_model("mlp", stream, hidden), stream)
    return net, Trainer(net, strategy, stream, config)


def task_outputs(strategy, model, stream: Stream, upto: int) -> list[torch.Tensor]:
    model.eval()
    with torch.inference_mode():
        outputs = []
        for task in stream.tasks[: upto + 1]:
            a, b = task.columns
            outputs.append(strategy.predict(model, task.test.inputs(), task)[:, a:b].clone())
    model.train()
    return outputs


def test_picked_mask_selects_old_weights_and_is_what_prediction_uses(three_tasks: Stream) -> None:
    strategy = CPG(goal=0.0, prune_step=0.3, max_prune=0.6, prune_epochs=1)
    net, trainer = start(strategy, three_tasks, [24, 24])
    for task in three_tasks.tasks:
        trainer.learn(task)
    owners = net.owners()
    for j in (1, 2):
        picks = net.parts[j].picks()
        n_old = n_picked = 0
        for owner, pick in zip(owners, picks, strict=True):
            rows, cols = pick.shape
            old = (owner[:rows, :cols] >= 0) & (owner[:rows, :cols] < j)
            assert not torch.any(pick & ~old)  # only earlier tasks' weights can be picked
            n_old, n_picked = n_old + int(old.sum()), n_picked + int(pick.sum())
        # the learned mask keeps most old weights and drops some (Adam at the official 5e-4)
        assert 0 < n_picked < n_old
        assert strategy.info()["picked"][j] == pytest.approx(n_picked / n_old)
    # prediction = ReLU layers over W * (owned by the task | picked), then the task's own head
    task = three_tasks.tasks[2]
    x = task.test.inputs()
    h = x.flatten(1)
    part = net.parts[2]
    for layer, (w, owner, pick) in enumerate(zip(net.weights, owners, part.picks(), strict=True)):
        visible = (owner == 2) | pick
        h = F.relu(F.linear(h, w.detach() * visible, part.biases[layer].detach()))
    manual = part.head(h).detach()
    with torch.inference_mode():
        predicted = strategy.predict(net, x, task)[:, slice(*task.columns)]
    torch.testing.assert_close(predicted, manual)


def test_layers_grow_when_the_goal_is_missed_and_old_tasks_stay_exact(three_tasks: Stream) -> None:
    weak = TrainConfig(epochs=1, batch_size=64, lr=0.01)  # cannot reach 100% training accuracy
    strategy = CPG(goal=0.0, max_width=2.0, prune_step=0.5, max_prune=0.5, prune_epochs=1)
    net, trainer = start(strategy, three_tasks, [20, 10], weak)
    outputs = []
    for task in three_tasks.tasks:
        strategy.goal = 0.0 if task.id == 0 else 1.0  # task 1 meets its goal, later tasks cannot
        trainer.learn(task)
        outputs.append(task_outputs(strategy, net, three_tasks, task.id))
    info = strategy.info()
    assert info["expansions"] == [0, 2, 0]  # grow 0.5 of the initial width twice, then capped
    assert info["widths"] == [[20, 10], [40, 20], [40, 20]]
    assert net.widths == [40, 20] and net.parts[0].widths == [20, 10]
    assert info["parameters_total"][1] > info["parameters_total"][0]
    for t, after_t in enumerate(outputs):
        for j, scores in enumerate(after_t):
            assert torch.equal(scores, outputs[-1][j]), f"task {j} changed after task {t}"
    # at full width the goal is still missed: pruning is forced to 1 - round(1 / (R + 1), 1)
    assert info["pruned"][1] == 0.5 and info["pruned"][2] == 0.0  # R = 1 -> 0.5; last: R = 0


def test_compaction_prunes_until_the_goal_and_releases_weights(three_tasks: Stream) -> None:
    strategy = CPG(goal=0.0, prune_step=0.25, max_prune=0.9, prune_epochs=1)
    net, trainer = start(strategy, three_tasks, [16])
    task = three_tasks.tasks[0]
    trainer.learn(task)
    owner = net.owners()[0]
    assert strategy.info()["pruned"] == [0.9]  # a goal of 0 is always met: prune to max_prune
    assert int((owner == 0).sum()) == round(0.1 * owner.numel())
    assert torch.all(net.weights[0][owner == FREE] == 0)
    # an unreachable goal: the first pruning step already misses it, the unpruned model is kept
    strategy = CPG(goal=1.0, max_width=1.0, prune_step=0.25, max_prune=0.9, prune_epochs=1)
    net, trainer = start(strategy, three_tasks, [16], TrainConfig(epochs=1, lr=0.01))
    for task in three_tasks.tasks:
        trainer.learn(task)
    pruned = strategy.info()["pruned"]
    assert pruned[0] >= 0.5 and pruned[-1] == 0.0  # forced (R = 2 -> 1 - 0.3), last kept
    assert strategy.info()["expansions"] == [0, 0, 0]  # max_width 1: no growth possible


def test_goal_defaults_to_an_individual_model_trained_from_scratch(three_tasks: Stream) -> None:
    result = learn_stream(
        three_tasks, CPG(prune_step=0.3, max_prune=0.6, prune_epochs=1), hidden=[16], train=CONFIG
    )
    info = result.extra
    assert all(0.3 < goal <= 1.0 for goal in info["goal"])
    for goal, before, after in zip(
        info["goal"], info["accuracy_before_compaction"], info["accuracy"], strict=True
    ):
        assert after >= goal or before < goal  # compaction never drops below a goal once met
    assert result.metrics()["bwt"] == 0.0
    assert result.parameters == info["parameters_total"]
    assert all(len(row) == i + 1 for i, row in enumerate(info["parameters_used"]))


def test_cpg_settings_are_checked(three_tasks: Stream) -> None:
    with pytest.raises(ConfigError, match="goal"):
        create_strategy("cpg", {"goal": "1.5"})
    with pytest.raises(ConfigError, match="max_width"):
        create_strategy("cpg", {"max_width": "0.5"})
    assert create_strategy("cpg", {"goal": "0.9"}).goal == 0.9
    with pytest.raises(ConfigError, match="--model mlp"):
        learn_stream(three_tasks, "cpg", model="cnn", train=CONFIG)
    assert isinstance(CPG().prepare(build_model("mlp", three_tasks), three_tasks), CPGNet)
