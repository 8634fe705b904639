"""The training loop and evaluation: steps, curves, multi-head masking, divergence, accuracy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lifelong.errors import ConfigError, TrainingDivergedError, UnknownNameError
from lifelong.evaluate import evaluate_stream
from lifelong.models import build_model
from lifelong.runner import learn_stream
from lifelong.strategies import Strategy, TrainSet, create_strategy
from lifelong.streams import build_stream, from_tensors
from lifelong.train import TrainConfig, Trainer

SMALL = TrainConfig(epochs=1, batch_size=10, lr=0.1)


def trainer_for(stream, strategy="finetune", config=SMALL, hidden=(16,), seed=0):
    torch.manual_seed(seed)
    strategy = create_strategy(strategy) if isinstance(strategy, str) else strategy
    model = strategy.prepare(build_model("mlp", stream, list(hidden)), stream)
    return Trainer(model, strategy, stream, config), model, strategy


# ---- configuration ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": -0.1}, "--lr must be positive"),
        ({"lr": 0.0}, "--lr must be positive"),
        ({"lr": math.nan}, "--lr must be positive"),
        ({"epochs": 0}, "--epochs"),
        ({"batch_size": 0}, "--batch-size"),
        ({"momentum": -1.0}, "momentum"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"eval_every": -1}, "--eval-every"),
        ({"epochs": 1.5}, r"^epochs must be a whole number, got 1.5$"),
        ({"batch_size": "16"}, r"^batch_size must be a whole number, got '16'$"),
        ({"lr": "0.1"}, r"^lr must be a number, got '0.1'$"),
        ({"eval_every": math.inf}, r"^eval_every must be a whole number, got inf$"),
        ({"reset_optimizer": "no"}, r"^reset_optimizer must be true or false, got 'no'$"),
        ({"iterations": 1e20}, r"^iterations must be a whole number below 2\*\*63, got 1e\+20$"),
    ],
)
def test_train_config_rejects_impossible_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**kwargs)


def test_train_config_takes_numbers_of_any_kind_as_its_fields_types():
    config = TrainConfig(epochs=np.int64(2), batch_size=16.0, lr=np.float32(0.5), momentum=0)
    assert (config.epochs, config.batch_size, config.lr, config.momentum) == (2, 16, 0.5, 0.0)
    assert [type(v) for v in (config.epochs, config.batch_size, config.lr)] == [int, int, float]


def test_train_config_unknown_optimizer_lists_known():
    with pytest.raises(UnknownNameError, match=r"known: .*\badamw\b.*\brmsprop\b.*\bsgd\b"):
        TrainConfig(optimizer="rmsprp")


# ---- the loop --------------------------------------------------------------------------------
def test_steps_per_task_and_epochs(digits_stream):
    config = TrainConfig(epochs=2, batch_size=32, lr=0.05)
    trainer, _, _ = trainer_for(digits_stream, config=config)
    trainer.learn(digits_stream.tasks[0])
    assert trainer.step == 2 * math.ceil(200 / 32)
    trainer.learn(digits_stream.tasks[1])
    assert trainer.step == 4 * math.ceil(200 / 32)
    assert trainer.train_seconds > 0


def test_training_improves_the_current_task(digits_stream):
    config = TrainConfig(epochs=3, optimizer="adam", lr=0.01)
    trainer, _, _ = trainer_for(digits_stream, config=config)
    before = trainer.evaluate()
    trainer.learn(digits_stream.tasks[0])
    after = trainer.evaluate()
    assert after[0] > before[0] + 0.4
    assert trainer.eval_seconds > 0


def test_reset_optimizer_controls_the_optimizer_across_tasks(digits_stream):
    fresh, _, _ = trainer_for(digits_stream)
    fresh.learn(digits_stream.tasks[0])
    first = fresh.optimizer
    fresh.learn(digits_stream.tasks[1])
    assert fresh.optimizer is not first
    config = TrainConfig(optimizer="adam", lr=0.01, reset_optimizer=False)
    kept, _, _ = trainer_for(digits_stream, config=config)
    kept.learn(digits_stream.tasks[0])
    first = kept.optimizer
    kept.learn(digits_stream.tasks[1])
    assert kept.optimizer is first


def test_optimizer_choice_matters(digits_stream):
    sgd = learn_stream(digits_stream, "finetune", hidden=[16], train=SMALL, seed=0)
    adam = learn_stream(
        digits_stream, "finetune", hidden=[16], train=TrainConfig(optimizer="adam", lr=0.01), seed=0
    )
    assert sgd.accuracy_matrix[0] == adam.accuracy_matrix[0]  # same initial model
    assert sgd.accuracy_matrix[1:] != adam.accuracy_matrix[1:]


def test_eval_every_records_curves_consistent_with_the_matrix(digits_stream):
    config = TrainConfig(epochs=1, batch_size=10, lr=0.1, eval_every=5)
    result = learn_stream(digits_stream, "finetune", hidden=[16], train=config, seed=0)
    curves = result.curves
    assert curves["step"] == list(range(5, 61, 5))  # 20 steps per task, 3 tasks
    assert curves["task"] == [0] * 4 + [1] * 4 + [2] * 4
    assert all(len(row) == 3 for row in curves["accuracy"])
    # the point at each task's last step is the row of R after that task
    for t in range(3):
        assert curves["accuracy"][4 * t + 3] == result.accuracy_matrix[t + 1]


def test_learn_stream_records_time_memory_and_parameters(digits_stream):
    result = learn_stream(digits_stream, "finetune", hidden=[16], train=SMALL, seed=0)
    assert result.status == "complete"
    assert np.array(result.accuracy_matrix).shape == (4, 3)
    assert result.train_seconds > 0 and result.eval_seconds > 0
    assert result.peak_rss_mb is not None and result.peak_rss_mb > 10
    assert result.parameters == [64 * 16 + 16 + 16 * 10 + 10] * 3
    assert result.train["lr"] == 0.1 and result.strategy == "finetune"


def test_learn_stream_same_seed_same_result(digits_stream):
    a = learn_stream(digits_stream, "finetune", hidden=[16], train=SMALL, seed=1)
    b = learn_stream(digits_stream, "finetune", hidden=[16], train=SMALL, seed=1)
    c = learn_stream(digits_stream, "finetune", hidden=[16], train=SMALL, seed=2)
    assert a.accuracy_matrix == b.accuracy_matrix
    assert a.accuracy_matrix != c.accuracy_matrix


def test_learn_stream_trains_a_users_module_in_place(digits_stream):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    before = net[1].weight.detach().clone()
    result = learn_stream(digits_stream, "finetune", model=net, train=SMALL, seed=0)
    assert not torch.equal(net[1].weight, before)
    assert result.accuracy_matrix[1][0] > 0.3  # chance: 0.1


class TaskOnly(Strategy):
    name = "task-only-test"
    scenarios = ("task",)


def test_strategy_scenario_is_checked(digits_stream):
    with pytest.raises(ConfigError, match="task scenario"):
        learn_stream(digits_stream, TaskOnly(), train=SMALL)


# ---- multi-head masking ----------------------------------------------------------------------
def test_task_scenario_loss_touches_only_the_tasks_head(split_task_stream):
    stream = split_task_stream
    torch.manual_seed(0)
    strategy = create_strategy("finetune")
    model = strategy.prepare(build_model("mlp", stream, [16]), stream)
    task = stream.tasks[1]  # classes 2 and 3 -> columns 2..3
    batch = next(TrainSet.of([task], stream).batches(32))
    assert batch.mask is not None and batch.mask.shape == (len(batch), 10)
    assert batch.mask[:, 2:4].all() and not batch.mask[:, :2].any() and not batch.mask[:, 4:].any()
    loss = strategy.loss(model, batch, task)
    with torch.no_grad():
        manual = F.cross_entropy(model(batch.x)[:, 2:4], batch.y - 2)
    assert loss.item() == pytest.approx(manual.item(), rel=1e-6)
    loss.backward()
    others = [c for c in range(10) if c not in (2, 3)]
    assert (model.head.weight.grad[others] == 0).all()
    assert (model.head.bias.grad[others] == 0).all()
    assert model.head.weight.grad[2:4].abs().sum() > 0


def test_task_scenario_training_leaves_other_heads_unchanged(split_task_stream):
    stream = split_task_stream
    trainer, model, _ = trainer_for(stream, config=TrainConfig(epochs=1, lr=0.1, batch_size=20))
    before = model.head.weight.detach().clone()
    trainer.learn(stream.tasks[2])  # columns 4..5
    after = model.head.weight.detach()
    others = [c for c in range(10) if c not in (4, 5)]
    assert torch.equal(after[others], before[others])
    assert not torch.equal(after[4:6], before[4:6])


def test_mixed_task_batches_get_each_samples_mask(split_task_stream):
    stream = split_task_stream
    data = TrainSet.of(stream.tasks[:3], stream)
    batch = next(data.batches(64))
    assert len(set(batch.task_ids.tolist())) > 1
    for tid, row, y in zip(batch.task_ids.tolist(), batch.mask, batch.y.tolist(), strict=True):
        start, stop = stream.tasks[tid].columns
        assert row.nonzero().flatten().tolist() == list(range(start, stop))
        assert start <= y < stop


def test_domain_scenario_batches_have_no_mask(digits_stream):
    batch = next(TrainSet.of(digits_stream.tasks[:1], digits_stream).batches(8))
    assert batch.mask is None and len(batch) == 8


# ---- divergence ------------------------------------------------------------------------------
class BadLoss(Strategy):
    """Fine-tuning whose loss turns ``value`` (nan or inf) from a given task and step on."""

    name = "bad-loss-test"

    def __init__(self, task_id: int = 1, after: int = 0, value: float = math.nan) -> None:
        self.task_id, self.after, self.value, self.calls = task_id, after, value, 0

    def loss(self, model, batch, task):
        loss = super().loss(model, batch, task)
        if task.id == self.task_id:
            self.calls += 1
            if self.calls > self.after:
                return loss * self.value
        return loss


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_loss_stops_naming_strategy_task_step_and_keeps_finished(digits_stream, value):
    seen = []
    with pytest.raises(TrainingDivergedError) as info:
        learn_stream(
            digits_stream,
            BadLoss(task_id=1, after=3, value=value),
            hidden=[16],
            train=SMALL,
            label="my-label",
            on_task=lambda r: seen.append((r.status, len(r.accuracy_matrix), r.error)),
        )
    message = str(info.value)
    assert "my-label" in message and "task 2" in message and "step 24" in message  # 20 + 3 + 1
    assert ("nan" if math.isnan(value) else "inf") in message
    assert "\n" not in message
    assert seen[0] == ("partial", 2, None)  # after task 1
    status, rows, error = seen[-1]
    assert (status, rows) == ("failed", 2) and error == message  # task 1's row kept


class BadLossThenFailingHook(BadLoss):
    """A hook that fails on the NaN gradients a diverged loss leaves (as GEM's QP would)."""

    name = "bad-loss-failing-hook-test"

    def after_backward(self, model, batch, task):
        if any(p.grad is not None and not torch.isfinite(p.grad).all() for p in model.parameters()):
            raise ValueError("a QP on NaN gradients")


@pytest.mark.parametrize("window", [0.0, math.inf])  # read every step (CPU), deferred (GPU)
def test_a_step_failing_after_a_diverged_loss_reports_the_divergence(
    digits_stream, window, monkeypatch
):
    monkeypatch.setattr(Trainer, "LOSS_READ_SECONDS", window)
    with pytest.raises(TrainingDivergedError, match="task 2, step 24") as info:
        learn_stream(digits_stream, BadLossThenFailingHook(1, 3), hidden=[16], train=SMALL)
    assert isinstance(info.value.__context__, ValueError)  # what failed because of it


def test_huge_learning_rate_diverges_with_a_clear_message(digits_stream):
    with pytest.raises(
        TrainingDivergedError, match=r"finetune: the loss became .* at task 1, step"
    ):
        learn_stream(digits_stream, "finetune", train=TrainConfig(lr=1e6), seed=0)


# ---- evaluation ------------------------------------------------------------------------------
class ConstantLogits(nn.Module):
    """Ignores its input: logit 100 for column ``hot``, 0 elsewhere."""

    def __init__(self, n_outputs: int, hot: int = 0) -> None:
        super().__init__()
        self.n_outputs, self.hot = n_outputs, hot
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        out = torch.zeros(len(x), self.n_outputs)
        out[:, self.hot] = 100.0
        return out


def test_evaluation_argmax_stays_within_each_tasks_columns(split_task_stream):
    stream = split_task_stream
    strategy = create_strategy("finetune")
    model = strategy.prepare(ConstantLogits(stream.n_outputs, hot=0), stream)
    got = evaluate_stream(strategy, model, stream, batch_size=7)
    # task t may only predict columns 2t..2t+1: column 0 wins in task 0, elsewhere the first
    expected = [(t.test.y == t.columns[0]).float().mean().item() for t in stream.tasks]
    assert got == pytest.approx(expected)
    assert all(0.3 < a < 0.7 for a in got)
    class_stream = build_stream("split", "digits", tasks=5, scenario="class", test_samples=60)
    strategy.prepare(model, class_stream)
    got = evaluate_stream(strategy, model, class_stream)
    assert got[0] == pytest.approx((class_stream.tasks[0].test.y == 0).float().mean().item())
    assert got[1:] == [0.0] * 4


def test_evaluation_matches_a_manual_count_and_restores_train_mode(digits_stream):
    torch.manual_seed(0)
    strategy = create_strategy("finetune")
    model = strategy.prepare(build_model("mlp", digits_stream, [16]), digits_stream)
    model.train()
    got = evaluate_stream(strategy, model, digits_stream, batch_size=7)
    assert model.training
    with torch.no_grad():
        manual = [
            (model(t.test.inputs()).argmax(1) == t.test.y).sum().item() / len(t.test)
            for t in digits_stream.tasks
        ]
    assert got == pytest.approx(manual, abs=1e-9)
    model.eval()
    evaluate_stream(strategy, model, digits_stream)
    assert not model.training


# ---- batch normalisation and batches of one sample ---------------------------------------------
def bn_stream(*sizes: int):
    """Random two-class tasks of ``sizes`` training samples each, 4x4 single-channel inputs."""
    gen = torch.Generator().manual_seed(0)
    tasks = []
    for n in sizes:
        x, y = torch.randn(n + 8, 1, 4, 4, generator=gen), torch.arange(n + 8) % 2
        tasks.append((x[:n], y[:n], x[n:], y[n:]))
    return from_tensors(tasks, scenario="domain")


BN_MODELS = {
    "bn-mlp": lambda: nn.Sequential(
        nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2)
    ),
    "bn-cnn": lambda: nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)
    ),
    "mlp": lambda: nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2)),
}


def test_a_last_batch_of_one_sample_for_batch_norm_is_one_line_naming_task_size_batch_size():
    """Task 2 (65 = 4 x 16 + 1 samples) ends on a batch of one, which batch norm refuses."""
    with pytest.raises(ConfigError) as info:
        learn_stream(
            bn_stream(64, 65),
            "finetune",
            model=BN_MODELS["bn-mlp"](),
            train=TrainConfig(batch_size=16),
        )
    message = str(info.value)
    assert message.startswith(
        "finetune: task 2 trains on 65 samples, so batch size 16 leaves a last batch of one "
        "sample, and the model's batch normalisation cannot train on one sample; choose another "
        "batch size, e.g. 17 (--batch-size)"
    )
    assert "\n" not in message and info.value.__suppress_context__  # no torch traceback


def test_a_methods_own_pass_of_one_sample_for_batch_norm_is_named_so():
    """GEM's memory of one sample per task is one training-mode pass of one sample."""
    gem = create_strategy("gem", {"memory_per_task": 1})
    with pytest.raises(ConfigError, match=r"^gem: task 2: one of the method's own training passes"):
        learn_stream(
            bn_stream(64, 64), gem, model=BN_MODELS["bn-mlp"](), train=TrainConfig(batch_size=16)
        )


@pytest.mark.parametrize(
    ("model", "sizes", "strategy"),
    [
        ("bn-mlp", (64, 66), "finetune"),  # the last batch has two samples
        ("bn-cnn", (64, 65), "finetune"),  # batch norm over 2x2 positions takes one sample
        ("mlp", (64, 65), "finetune"),  # no batch norm
        ("bn-mlp", (64, 65), "replay"),  # task 2's last batch gets a stored sample added
    ],
)
def test_batches_that_batch_norm_can_train_on_are_not_refused(model, sizes, strategy):
    result = learn_stream(
        bn_stream(*sizes), strategy, model=BN_MODELS[model](), train=TrainConfig(batch_size=16)
    )
    assert len(result.accuracy_matrix) == 3
