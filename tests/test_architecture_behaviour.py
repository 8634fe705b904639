"""PNN, PackNet and CPG on the task scenario of split digits: no forgetting, better than
fine-tuning, parameter counts as the papers describe, and exact checkpoint/resume."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from lifelong.runner import learn_stream
from lifelong.strategies import create_strategy
from lifelong.streams import Stream, build_stream
from lifelong.train import TrainConfig

# Ten epochs at lr 0.1: fine-tuning learns each pair of digits and forgets the earlier ones.
CONFIG = TrainConfig(epochs=10, batch_size=16, lr=0.1)
SPECS = {
    "pnn": {},
    "packnet": {},
    "cpg": {"prune_epochs": 2},  # the paper's compaction, with shorter retraining per step
}


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def split_task() -> Stream:
    return build_stream("split", "digits", scenario="task", seed=0)


@pytest.fixture(scope="module")
def finetune_acc(split_task: Stream) -> float:
    result = learn_stream(split_task, "finetune", train=CONFIG)
    assert result.metrics()["bwt"] < -0.03  # the baseline does forget here
    return result.metrics()["acc"]


@pytest.mark.parametrize("name", list(SPECS))
def test_no_forgetting_and_clearly_better_than_finetune(
    name: str, split_task: Stream, finetune_acc: float
) -> None:
    result = learn_stream(split_task, create_strategy(name, SPECS[name]), train=CONFIG)
    metrics = result.metrics()
    assert metrics["bwt"] >= -0.01
    assert metrics["acc"] >= finetune_acc + 0.03, (metrics["acc"], finetune_acc)
    counts = result.parameters
    steps = [b - a for a, b in itertools.pairwise(counts)]
    if name == "pnn":  # a column per task whose adapters read every earlier column: quadratic
        second = [b - a for a, b in itertools.pairwise(steps)]
        assert all(s > 0 for s in steps) and len(set(second)) == 1 and second[0] > 0
    elif name == "packnet":  # one fixed network
        assert steps == [0] * (len(split_task) - 1)
    else:  # per-task biases and heads, plus growth when a goal is missed; never shrinks
        assert all(s > 0 for s in steps)
    used = result.extra["parameters_used"]
    assert [len(row) for row in used] == list(range(1, len(split_task) + 1))
    assert all(u <= total for row, total in zip(used, counts, strict=True) for u in row)


@pytest.mark.parametrize("name", list(SPECS))
def test_checkpoint_resume_is_exact(name: str, tmp_path: Path) -> None:
    stream = build_stream("split", "digits", scenario="task", tasks=3, seed=0)
    config = TrainConfig(epochs=2, batch_size=32, lr=0.1)
    params = {**SPECS[name], **({"prune_epochs": 1, "prune_step": 0.4} if name == "cpg" else {})}
    steps = {"straight": 0, "resumed": 0}

    def count(key: str):
        def on_step(step: int, loss: float) -> None:
            steps[key] += 1

        return on_step

    straight = learn_stream(
        stream, create_strategy(name, params), train=config, on_step=count("straight")
    )

    def stop_after_two(result) -> None:
        if result.tasks_done == 2 and result.status != "complete":
            raise Interrupted

    checkpoint = tmp_path / "run.pt"
    with pytest.raises(Interrupted):
        learn_stream(
            stream,
            create_strategy(name, params),
            train=config,
            checkpoint=checkpoint,
            on_task=stop_after_two,
        )
    resumed = learn_stream(
        stream,
        create_strategy(name, params),
        train=config,
        checkpoint=checkpoint,
        on_step=count("resumed"),
    )
    assert 0 < steps["resumed"] < steps["straight"] / 2  # only the third task was trained again
    assert resumed.accuracy_matrix == straight.accuracy_matrix
    assert resumed.parameters == straight.parameters
    assert resumed.extra == straight.extra
