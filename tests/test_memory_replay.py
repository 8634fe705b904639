"""Replay, generative replay, LwF and iCaRL: behaviour on split digits and their reports."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from lifelong.errors import ConfigError
from lifelong.models import build_model
from lifelong.runner import learn_stream
from lifelong.strategies import Batch, create_strategy
from lifelong.strategies.memory.generative import VAE
from lifelong.strategies.memory.lwf import distillation_loss
from lifelong.streams import build_stream
from lifelong.train import TrainConfig

# 20 passes over ~250 digits per task: enough steps for the solver of generative replay, whose
# current-task loss has weight 1/t.
CLASS_CONFIG = TrainConfig(epochs=20, batch_size=32, lr=0.1)
SMALL_VAE = {"hidden": 100, "latent": 10, "generator_iterations": 500, "generator_batch_size": 64}


@pytest.fixture(scope="module")
def class_stream():
    return build_stream("split", "digits", tasks=5, scenario="class", seed=0)


@pytest.fixture(scope="module")
def class_runs(class_stream):
    specs = {
        "finetune": ("finetune", {}),
        "replay": ("replay", {"memory_size": 200}),
        "replay-balanced": ("replay", {"memory_size": 200, "selection": "class-balanced"}),
        "generative-replay": ("generative-replay", SMALL_VAE),
        "icarl": ("icarl", {"memory_size": 200}),
    }
    return {
        label: learn_stream(class_stream, create_strategy(name, params), train=CLASS_CONFIG)
        for label, (name, params) in specs.items()
    }


def test_finetune_collapses_in_the_class_scenario(class_runs):
    acc = class_runs["finetune"].metrics()["acc"]
    assert acc < 0.3  # about one task's worth out of five


@pytest.mark.parametrize("label", ["replay", "replay-balanced", "generative-replay", "icarl"])
def test_memory_methods_beat_finetune_in_the_class_scenario(class_runs, label):
    finetune = class_runs["finetune"].metrics()["acc"]
    acc = class_runs[label].metrics()["acc"]
    assert acc > finetune + 0.25, (label, acc, finetune)


def test_memory_reports_are_json_and_fair(class_runs):
    for label, run in class_runs.items():
        json.dumps(run.extra)
        if label == "finetune":
            continue
        memory = run.extra["memory"]
        assert "stores" in memory
        if label == "generative-replay":
            assert memory["samples"] == 0 and memory["generator_parameters"] > 0
        else:
            assert memory["samples"] == 200
    assert set(class_runs["replay-balanced"].extra["memory"]["per_class"].values()) == {20}
    assert set(class_runs["icarl"].extra["memory"]["per_class"].values()) == {20}


def test_icarl_only_runs_in_the_class_scenario():
    stream = build_stream("split", "digits", tasks=2, scenario="task", seed=0)
    with pytest.raises(ConfigError):
        learn_stream(stream, "icarl", train=TrainConfig(epochs=1))


def test_icarl_predicts_by_nearest_mean_of_exemplars(class_stream):
    model = build_model("mlp", class_stream)
    strategy = create_strategy("icarl", {"memory_size": 40})
    learn_stream(class_stream, strategy, model=model, train=TrainConfig(epochs=2, batch_size=32))
    assert {c: len(x) for c, x in strategy.exemplars.items()} == dict.fromkeys(range(10), 4)
    model.eval()
    with torch.inference_mode():

        def phi(x):
            return F.normalize(model.features(x), dim=1)  # the MLP's penultimate layer

        means = torch.stack(
            [F.normalize(phi(strategy.exemplars[c]).mean(0), dim=0) for c in range(10)]
        )
        for task in class_stream.tasks[:2]:
            x = task.test.inputs()
            predicted = strategy.predict(model, x, task).argmax(1)
            assert torch.equal(predicted, torch.cdist(phi(x), means).argmin(1))


def test_lwf_beats_finetune_in_the_task_scenario():
    stream = build_stream("split", "digits", tasks=5, scenario="task", seed=0)
    config = TrainConfig(epochs=20, batch_size=32, lr=0.1)  # enough training to forget
    finetune = learn_stream(stream, "finetune", train=config).metrics()
    lwf = learn_stream(stream, "lwf", train=config).metrics()
    assert finetune["bwt"] < -0.04, finetune
    assert lwf["bwt"] > finetune["bwt"] + 0.04, (lwf, finetune)
    assert lwf["acc"] > finetune["acc"], (lwf, finetune)


def test_distillation_loss_is_minimal_at_the_teacher():
    teacher = torch.randn(8, 5)
    student = teacher.clone().requires_grad_(True)
    distillation_loss(student, teacher, 2.0).backward()
    assert student.grad.abs().max() < 1e-6
    assert distillation_loss(teacher + torch.randn(8, 5), teacher, 2.0) > distillation_loss(
        teacher, teacher, 2.0
    )


def test_generative_replay_stores_no_real_data(class_stream):
    strategy = create_strategy("generative-replay", {**SMALL_VAE, "generator_iterations": 5})
    learn_stream(class_stream, strategy, train=TrainConfig(epochs=1, batch_size=64))
    state = strategy.state_dict()
    tensors = [v for k, v in state.items() if isinstance(v, torch.Tensor) and k != "_generator"]
    assert not tensors  # only modules (generator), optimizer, counters and the RNG state
    assert strategy.previous_solver is None and strategy.previous_vae is None
    sample = strategy.vae.sample(4, class_stream.input_shape)
    assert sample.shape == (4, *class_stream.input_shape)
    assert ((sample >= 0) & (sample <= 1)).all()


def test_generative_replay_soft_labels_train_toward_the_teacher(class_stream):
    strategy = create_strategy("generative-replay", {**SMALL_VAE, "labels": "soft"})
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    strategy.prepare(model, class_stream)
    task = class_stream.tasks[1]
    strategy.before_task(task, model)
    x = task.train.inputs(slice(0, 8))
    y = task.train.y[:8]
    loss = strategy.loss(model, Batch(x, y, torch.ones(8, dtype=torch.long)), task)
    assert torch.isfinite(loss)
    loss.backward()
    assert model[1].weight.grad.abs().sum() > 0


def test_vae_elbo_decreases_with_training():
    torch.manual_seed(0)
    vae = VAE(16, hidden=32, latent=4)
    prototypes = (torch.rand(2, 16) > 0.5).float()
    x = prototypes[torch.randint(0, 2, (64,))]  # two patterns: a structure the VAE can learn
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-2)
    first = vae.loss(x).mean().item()
    for _ in range(100):
        optimizer.zero_grad()
        vae.loss(x).mean().backward()
        optimizer.step()
    assert vae.loss(x).mean().item() < 0.5 * first


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("replay", {"selection": "fifo"}),
        ("replay", {"memory_size": 0}),
        ("generative-replay", {"labels": "fuzzy"}),
        ("generative-replay", {"ratio": 2.0}),
        ("lwf", {"temperature": 0}),
        ("icarl", {"memory_size": 0}),
    ],
)
def test_bad_settings_raise_config_error(name, params):
    with pytest.raises(ConfigError):
        create_strategy(name, params)
