"""What ``learn_stream`` guarantees from one run to the next: a strategy object serves one run, a
checkpoint resumes only the run that wrote it, your model keeps its ``requires_grad`` flags, the
strategy's prescribed training settings are not dropped unnoticed, and metrics that are true by
construction are marked so.

Deliberate bugs each test was run against: no reuse check in ``learn_stream`` (a second GEM run
on the same object starts with the first run's memories); ``Checkpoint.load`` ignoring ``run``;
no restore of the flags (PackNet leaves biases frozen); no warning in ``prescribed_settings``;
PNN's and CPG's ``not_applicable`` removed.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from lifelong import RunConfig, TrainConfig, learn_stream
from lifelong.errors import ConfigError
from lifelong.models import MLP
from lifelong.strategies import create_strategy
from lifelong.strategies.base import Strategy
from lifelong.streams import build_stream

CONFIG = TrainConfig(epochs=1, batch_size=16, lr=0.05)


@pytest.fixture(scope="module")
def task_stream():
    return build_stream(
        "split", "digits", tasks=3, scenario="task", train_samples=60, test_samples=30, seed=0
    )


def test_a_strategy_object_serves_one_run(task_stream) -> None:
    gem = create_strategy("gem", {"memory_per_task": 8})
    first = learn_stream(task_stream, gem, hidden=[16], train=CONFIG, seed=0)
    assert first.stored_examples == [8, 16, 24]
    with pytest.raises(ConfigError, match=r"already been through a run.*create a new one"):
        learn_stream(task_stream, gem, hidden=[16], train=CONFIG, seed=1)
    again = learn_stream(
        task_stream, create_strategy("gem", {"memory_per_task": 8}), hidden=[16], train=CONFIG
    )
    assert again.accuracy_matrix == first.accuracy_matrix  # a fresh object: the same run


def test_a_checkpoint_resumes_only_the_run_that_wrote_it(task_stream, tmp_path: Path) -> None:
    checkpoint = tmp_path / "run.pt"
    done = learn_stream(task_stream, "finetune", train=CONFIG, seed=0, checkpoint=checkpoint)
    for strategy, seed, what in (("replay", 0, "strategy"), ("finetune", 5, "seed")):
        with pytest.raises(ConfigError, match=f"written by another run \\({what}: [^;]*\\);"):
            learn_stream(task_stream, strategy, train=CONFIG, seed=seed, checkpoint=checkpoint)
    with pytest.raises(
        ConfigError,
        match=re.escape("another run (train.batch_size: 16 there, 10 here; train.lr: 0.05 there,"),
    ):
        learn_stream(task_stream, "finetune", train=TrainConfig(lr=0.5), checkpoint=checkpoint)
    # the same run finds every task done and trains nothing more
    same = learn_stream(task_stream, "finetune", train=CONFIG, seed=0, checkpoint=checkpoint)
    assert same.accuracy_matrix == done.accuracy_matrix
    # a checkpoint written before runs were named still resumes
    data = torch.load(checkpoint, weights_only=False)
    del data["run"]
    torch.save(data, checkpoint)
    older = learn_stream(task_stream, "finetune", train=CONFIG, seed=0, checkpoint=checkpoint)
    assert older.accuracy_matrix == done.accuracy_matrix


def test_your_model_keeps_its_requires_grad_flags(task_stream) -> None:
    model = MLP(64, (16,), task_stream.n_outputs)
    results = []
    for _ in range(2):
        results.append(
            learn_stream(task_stream, "packnet", model=model, train=CONFIG, seed=0).accuracy_matrix
        )
        assert all(p.requires_grad for p in model.parameters())
    assert results[0] == results[1]


class _Prescribing(Strategy):
    name = "prescribing"
    train_defaults: ClassVar[dict[str, Any]] = {"lr": 0.01, "batch_size": 7}


def test_prescribed_settings_are_used_or_their_loss_is_said(task_stream) -> None:
    assert learn_stream(task_stream, _Prescribing()).train["batch_size"] == 7
    with pytest.warns(UserWarning, match="prescribing: the train= given leaves"):
        used = learn_stream(task_stream, _Prescribing(), train=TrainConfig(epochs=2))
    assert used.train["batch_size"] == 10 and used.train["epochs"] == 2  # as given
    with warnings.catch_warnings():  # chosen by the user: no warning
        warnings.simplefilter("error")
        chosen = learn_stream(task_stream, _Prescribing(), train=TrainConfig(lr=0.01))
    assert chosen.train["lr"] == 0.01


@pytest.mark.parametrize("name", ["pnn", "cpg"])
def test_fwt_of_task_routed_networks_is_not_a_measurement(task_stream, name: str) -> None:
    params = {"prune_epochs": 1} if name == "cpg" else {}
    result = learn_stream(
        task_stream, create_strategy(name, params), hidden=[16], train=CONFIG, seed=0
    )
    matrix = result.accuracy_matrix
    assert all(matrix[j - 1][j] == matrix[0][j] for j in range(1, len(matrix) - 1))
    assert "0 by construction" in result.not_applicable["fwt"]
    assert result.metrics()["fwt"] is None and result.metrics()["bwt"] is not None


def test_run_config_takes_strategy_names() -> None:
    config = RunConfig(strategies=["ewc", {"name": "gem", "memory_per_task": 8}])
    assert [s.name for s in config.strategies] == ["ewc", "gem"]
    for bad in ("ewc", [3]):
        with pytest.raises(ConfigError, match="strategies must be a list of names"):
            RunConfig(strategies=bad)


def test_wrong_arguments_get_one_line_each(task_stream) -> None:
    cases = [
        (dict(stream=[1, 2]), "stream must be a lifelong stream"),
        (dict(strategy=Strategy), "got the class Strategy; pass Strategy"),
        (dict(strategy=3), "registered name or a lifelong.Strategy"),
        (dict(seed=-1), "seed must be an integer"),
        (dict(seed=2**70), "seed must be an integer"),
        (dict(seed=1.5), "seed must be an integer"),
        (dict(model=MLP(64, (8,), 9), hidden=[16]), "leave hidden out"),
    ]
    for change, message in cases:
        call = {"stream": task_stream, "strategy": "finetune", **change}
        with pytest.raises(ConfigError, match=message):
            learn_stream(call.pop("stream"), call.pop("strategy"), train=CONFIG, **call)
    import numpy as np

    assert learn_stream(task_stream, "finetune", train=CONFIG, seed=np.int64(3)).tasks_done == 3


def test_labels_that_would_share_a_file_are_refused() -> None:
    with pytest.raises(ConfigError, match="'ewc:lambda=1' and 'ewc/lambda=1' give the same file"):
        RunConfig(strategies=["ewc:lambda=1", "ewc/lambda=1"])
    RunConfig(strategies=["ewc:lambda=1", "ewc:lambda=10"])  # distinct names


def test_devices_other_than_cpu_and_cuda_are_refused(task_stream) -> None:
    for device in ("meta", "mps", "nonsense"):
        with pytest.raises(ConfigError, match="unknown device"):
            learn_stream(task_stream, "finetune", train=CONFIG, device=device)


def test_a_checkpoint_resumes_with_other_evaluation_settings(task_stream, tmp_path) -> None:
    checkpoint = tmp_path / "run.pt"
    done = learn_stream(task_stream, "finetune", train=CONFIG, seed=0, checkpoint=checkpoint)
    other = TrainConfig(epochs=1, batch_size=16, lr=0.05, eval_batch_size=64, eval_every=3)
    again = learn_stream(task_stream, "finetune", train=other, seed=0, checkpoint=checkpoint)
    assert again.accuracy_matrix == done.accuracy_matrix
