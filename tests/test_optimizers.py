"""Optimizers and schedulers: every torch.optim optimizer by spec, the fast SGD/Adam equal to
torch.optim, schedules restarted per task, per-strategy overrides and an exact resume.

Checked to fail (each run once): with the fast SGD's momentum buffer not started at the first
gradient, ``test_fast_optimizers_equal_torch_optim`` fails; with ``scheduler.step()`` removed
from the loop, the cosine test fails; with the scheduler state left out of checkpoints, the
resume test fails.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from lifelong import optim
from lifelong.cli import main
from lifelong.config import RunConfig
from lifelong.errors import ConfigError, UnknownNameError
from lifelong.optimizers import build_optimizer
from lifelong.runner import learn_stream
from lifelong.train import TrainConfig


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))


@pytest.mark.parametrize(
    ("fast", "reference"),
    [
        (lambda p: optim.SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
        (
            lambda p: optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01),
            lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01),
        ),
        (
            lambda p: optim.Adam(p, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
            lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
        ),
    ],
)
def test_fast_optimizers_equal_torch_optim(fast, reference):
    a, b = _model(), _model()
    opt_a, opt_b = fast(list(a.parameters())), reference(list(b.parameters()))
    gen = torch.Generator().manual_seed(1)
    for _ in range(30):
        x, y = torch.randn(10, 8, generator=gen), torch.randint(0, 3, (10,), generator=gen)
        for model, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-6)


def test_specs_build_torch_optim_classes_with_the_run_settings():
    params = list(_model().parameters())
    adamw = build_optimizer("adamw:weight_decay=0.01", params, lr=0.003)
    assert type(adamw) is torch.optim.AdamW
    assert adamw.param_groups[0]["weight_decay"] == 0.01 and adamw.param_groups[0]["lr"] == 0.003
    nesterov = build_optimizer("sgd:momentum=0.9,nesterov=true", params, lr=0.1)
    assert type(nesterov) is torch.optim.SGD and nesterov.param_groups[0]["nesterov"] is True
    rms = build_optimizer("rmsprop", params, lr=0.01, momentum=0.5)
    assert type(rms) is torch.optim.RMSprop and rms.param_groups[0]["momentum"] == 0.5
    assert type(build_optimizer("sgd", params, lr=0.1)) is optim.SGD  # the exact fast path
    assert type(build_optimizer("sgd", params, lr=0.1, fast=False)) is torch.optim.SGD
    betas = build_optimizer("adam:betas=[0.8,0.9]", params, lr=0.1, fast=False)
    assert betas.param_groups[0]["betas"] == (0.8, 0.9)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"optimizer": "adamm"}, UnknownNameError, "unknown optimizer 'adamm'; known: .*adamw"),
        ({"optimizer": "adamw:nesterov=true"}, ConfigError, "AdamW has no setting nesterov"),
        ({"optimizer": "lbfgs"}, ConfigError, "needs a closure"),
        ({"scheduler": "cosinus"}, UnknownNameError, "unknown scheduler 'cosinus'.*cosine"),
        ({"scheduler": "step:size=3"}, ConfigError, "StepLR has no setting size"),
        ({"scheduler": "cosine:interval=task"}, ConfigError, "interval must be step or epoch"),
        # values: checked by building (and stepping) once on a dummy parameter, every optimizer
        # (torch.optim's on the run's device, TrainConfig.check_values)
        ({"optimizer": "adam:lr=-1"}, ConfigError, r"lr in optimizer 'adam:lr=-1' must be posi"),
        ({"optimizer": "sgd:momentum=-3"}, ConfigError, "momentum in optimizer 'sgd:momentum=-3'"),
        ({"optimizer": "adam:eps=-1"}, ConfigError, "Invalid epsilon value: -1"),  # fast Adam
        ({"optimizer": "adam:eps=-1", "scheduler": "cosine"}, ConfigError, "Invalid epsilon"),
        ({"optimizer": "adam:betas=[0.9,1.5]"}, ConfigError, "Invalid beta parameter at index 1"),
        ({"optimizer": "adam:betas=[0.9]"}, ConfigError, r"betas must be two numbers in \[0, 1\)"),
        ({"optimizer": "adamw:betas=7"}, ConfigError, "betas must be two numbers"),
        ({"optimizer": "adagrad:lr_decay=-1"}, ConfigError, "Invalid lr_decay value: -1"),
        ({"optimizer": "sgd:momentum=abc"}, ConfigError, "momentum must be a number, got 'abc'"),
        ({"optimizer": "adamw:eps=abc"}, ConfigError, "eps must be a number, got 'abc'"),
        ({"optimizer": "rmsprop:centered=1"}, ConfigError, "centered must be true or false"),
        ({"optimizer": "adam:eps=1e300"}, ConfigError, "eps must be at most 3.403e\\+38"),
        ({"lr": 1e300}, ConfigError, r"--lr must be positive and at most 3.403e\+38, got 1e\+300"),
        ({"weight_decay": 1e300}, ConfigError, r"weight_decay \(--weight-decay\) must be a fin"),
        ({"scheduler": "step:step_size=0"}, ConfigError, "step_size must be at least 1, got 0"),
        ({"scheduler": "cosine:T_max=0"}, ConfigError, "T_max must be at least 1, got 0"),
        ({"scheduler": "cosine:warmup=1.5"}, ConfigError, "warmup must be a whole number"),
        ({"scheduler": "onecycle:max_lr=-1"}, ConfigError, "sets the learning rate to -"),
        ({"scheduler": "exponential:gamma=abc"}, ConfigError, "gamma must be a number"),
    ],
)
def test_bad_specs_fail_before_training_with_one_line(kwargs, error, match):
    """Refused when the TrainConfig is made, or, for torch.optim's classes (whose building
    imports torch._dynamo), when the run checks them on its device before it writes anything."""
    with pytest.raises(error, match=match) as info:
        TrainConfig(**kwargs).check_values("cpu")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        ("SGD", {"lr": -0.1}),
        ("SGD", {"lr": 0.1, "momentum": -1.0}),
        ("SGD", {"lr": 0.1, "weight_decay": -1.0}),
        ("Adam", {"lr": -0.1}),
        ("Adam", {"lr": 0.1, "eps": -1.0}),
        ("Adam", {"lr": 0.1, "betas": (1.0, 0.999)}),
        ("Adam", {"lr": 0.1, "betas": (0.9, -0.5)}),
        ("Adam", {"lr": 0.1, "weight_decay": -1.0}),
    ],
)
def test_fast_optimizers_refuse_the_values_torch_optim_refuses(cls, kwargs):
    params = list(_model().parameters())
    with pytest.raises(ValueError) as torch_says:
        getattr(torch.optim, cls)(params, **kwargs)
    with pytest.raises(ValueError, match=re.escape(str(torch_says.value))):
        getattr(optim, cls)(params, **kwargs)


def test_the_most_specific_lr_wins_and_is_what_the_optimizer_uses():
    """A strategy's lr (lr= or optimizer.lr=) beats the run's --optimizer spec, which beats
    TrainConfig's default; the value is written into the spec and the field alike (so a
    strategy that replaces the optimizer keeps the run's lr), and the optimizer built from the
    config uses it. Two settings of one level that disagree: refused (a field at TrainConfig's
    default yields to the spec: the default cannot be told from "not given")."""
    config = RunConfig.from_dict(
        {
            "optimizer": "adam:lr=0.001",
            "strategies": [
                "finetune",
                "finetune:lr=0.5",
                "finetune:optimizer.lr=0.3",
                "finetune:optimizer=sgd",
                "finetune:momentum=0.5,optimizer=sgd",
                "generative-replay",  # its paper's Adam at 0.001, whatever the run's
            ],
        }
    )
    assert config.lr == 0.001  # given in the spec only: recorded in the field too
    expected = [
        ("adam:lr=0.001", 0.001),
        ("adam:lr=0.5", 0.5),
        ("adam:lr=0.3", 0.3),
        ("sgd", 0.001),  # the run's optimizer replaced, its lr kept
        ("sgd", 0.001),
        ("adam", 0.001),
    ]
    params = list(_model().parameters())
    for spec, (optimizer, lr) in zip(config.strategies, expected, strict=True):
        train = config.train_config(spec)
        assert (train.optimizer, train.lr) == (optimizer, lr), spec.label
        built = build_optimizer(train.optimizer, params, lr=train.lr, momentum=train.momentum)
        assert built.param_groups[0]["lr"] == lr, spec.label
    assert RunConfig.from_dict({"optimizer": "adam:lr=0.01", "lr": 0.01}).lr == 0.01
    sgd = RunConfig.from_dict({"optimizer": "sgd:momentum=0.9", "lr": 0.05}).train_config()
    assert (sgd.lr, sgd.momentum) == (0.05, 0.9)  # the spec's momentum, recorded in the field
    with pytest.raises(ConfigError, match=r"--lr 0.05 and --optimizer 'adam:lr=0.001' set lr"):
        RunConfig.from_dict({"optimizer": "adam:lr=0.001", "lr": 0.05})
    assert RunConfig.from_dict({"optimizer": "adam:lr=0.001", "lr": 0.1}).lr == 0.001
    with pytest.raises(ConfigError, match=r"--momentum 0.5 and --optimizer 'sgd:momentum=0.9'"):
        RunConfig.from_dict({"optimizer": "sgd:momentum=0.9", "momentum": 0.5})
    with pytest.raises(ConfigError, match=r"'finetune:lr=0.5,optimizer.lr=0.3': lr=0.5 and"):
        RunConfig.from_dict({"strategies": ["finetune:lr=0.5,optimizer.lr=0.3"]})
    assert TrainConfig(optimizer="adam:lr=0.001").lr == 0.001
    with pytest.raises(ConfigError, match=r"'adam:lr=0.001': lr=0.001, but lr=0.5; give lr once"):
        TrainConfig(optimizer="adam:lr=0.001", lr=0.5)


def test_results_record_the_lr_each_strategy_trained_with(tmp_path):
    """The reviewer's run: with --optimizer adam:lr=0.001, per-strategy lr= used to be ignored
    (three identical matrices) while results.json recorded it."""
    import json

    args = ["run", "--data", "digits", "--tasks", "2", "--train-samples", "50",
            "--test-samples", "30", "--epochs", "2", "--optimizer", "adam:lr=0.001",
            "--strategy", "finetune:lr=0.5", "finetune:lr=0.0001", "finetune",
            "--quiet", "--no-report", "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(args) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    runs = results["strategies"]
    lrs = {label: r["train"]["lr"] for label, r in runs.items()}
    assert lrs == {"finetune:lr=0.5": 0.5, "finetune:lr=0.0001": 0.0001, "finetune": 0.001}
    assert runs["finetune:lr=0.5"]["train"]["optimizer"] == "adam:lr=0.5"
    matrices = [r["accuracy_matrix"] for r in runs.values()]
    assert matrices[0] != matrices[2] and matrices[1] != matrices[2]
    assert results["config"]["lr"] == 0.001 and results["config"]["optimizer"] == "adam:lr=0.001"


def test_an_optimizer_without_momentum_refuses_the_momentum_flag():
    with pytest.raises(ConfigError, match="optimizer 'adam' takes no momentum"):
        TrainConfig(optimizer="adam", momentum=0.9, lr=0.01)  # before anything trains


def _lrs(stream, config: TrainConfig) -> list[float]:
    """The learning rate after every optimizer step (the one the next step uses), two tasks."""
    from lifelong.strategies import create_strategy
    from lifelong.train import Trainer

    strategy = create_strategy("finetune")
    torch.manual_seed(0)
    model = strategy.prepare(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), stream)
    seen: list[float] = []
    trainer = Trainer(
        model,
        strategy,
        stream,
        config,
        on_step=lambda step, loss: seen.append(trainer.optimizer.param_groups[0]["lr"]),
    )
    for task in stream.tasks[:2]:
        trainer.learn(task)
    return seen


def test_cosine_schedule_follows_each_task_and_restarts(digits_stream):
    lrs = _lrs(digits_stream, TrainConfig(batch_size=20, lr=0.1, scheduler="cosine"))
    n = 10  # 200 samples / 20 per batch, one epoch
    expected = [0.05 * (1 + math.cos(math.pi * i / n)) for i in range(1, n + 1)]
    assert lrs == pytest.approx(expected * 2)  # restarted at the second task


def test_warmup_then_step_schedule_and_the_epoch_interval(digits_stream):
    lrs = _lrs(
        digits_stream, TrainConfig(batch_size=20, lr=0.1, scheduler="constant:warmup=4,factor=1.0")
    )
    assert lrs[:5] == pytest.approx([0.05, 0.075, 0.1, 0.1, 0.1])  # steps 1-4 ramp from 0.025
    per_epoch = TrainConfig(
        epochs=2, batch_size=20, lr=0.1, scheduler="step:step_size=1,gamma=0.5,interval=epoch"
    )
    lrs = _lrs(digits_stream, per_epoch)
    assert lrs[:20] == pytest.approx([0.1] * 10 + [0.05] * 10)  # stepped after each epoch


def test_a_python_factory_is_used_as_given(digits_stream):
    made = []

    def factory(params):
        made.append(torch.optim.Adagrad(params, lr=0.05))
        return made[-1]

    config = TrainConfig(
        optimizer=factory, scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, 5)
    )
    result = learn_stream(digits_stream, "finetune", hidden=[8], train=config)
    assert len(made) == 3 and result.status == "complete"
    assert result.train["optimizer"].startswith("<python: ")


def test_strategy_overrides_of_optimizer_and_scheduler():
    config = RunConfig.from_dict(
        {
            "optimizer": "sgd:momentum=0.9",
            "scheduler": "cosine",
            "strategies": [
                "finetune",
                "finetune:optimizer=adamw,optimizer.weight_decay=0.01,optimizer.eps=1e-6,scheduler=none",
                "ewc:optimizer.nesterov=true,scheduler.eta_min=0.001",
            ],
        }
    )
    plain, adamw, ewc = (config.train_config(s) for s in config.strategies)
    assert (plain.optimizer, plain.scheduler) == ("sgd:momentum=0.9", "cosine")
    assert (adamw.optimizer, adamw.scheduler) == ("adamw:weight_decay=0.01,eps=1e-06", "none")
    assert ewc.optimizer == "sgd:momentum=0.9,nesterov=true"
    assert ewc.scheduler == "cosine:eta_min=0.001"
    with pytest.raises(ConfigError, match="AdamW has no setting nesterov"):
        RunConfig.from_dict({"strategies": ["finetune:optimizer=adamw,optimizer.nesterov=true"]})


def test_cli_adamw_cosine_resumes_exactly(tmp_path):
    """Stopped in its second strategy after the second task (where the scheduler and AdamW
    state carry over between tasks), the run resumes to exactly the numbers of an uninterrupted one."""
    import json

    args = ["run", "--data", "digits", "--stream", "permuted", "--tasks", "3",
            "--train-samples", "100", "--test-samples", "50", "--hidden", "16",
            "--optimizer", "adamw:weight_decay=0.01", "--scheduler", "cosine", "--lr", "0.01",
            "--strategy", "finetune", "finetune:reset_optimizer=false",
            "--quiet", "--no-report"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "full")]) == 0

    from lifelong import runner

    calls = {"n": 0}
    original = runner.Checkpoint.save

    def stop_after_two_tasks(self, path):
        original(self, path)
        calls["n"] += 1
        if calls["n"] == 5:  # the second strategy's second task
            raise KeyboardInterrupt

    runner.Checkpoint.save = stop_after_two_tasks
    try:
        assert main([*args, "--out", str(tmp_path / "cut")]) == 130
    finally:
        runner.Checkpoint.save = original
    partial = json.loads((tmp_path / "cut" / "results.json").read_text())["strategies"]
    assert partial["finetune:reset_optimizer=false"]["status"] == "partial"
    assert main(["run", "--resume", str(tmp_path / "cut"), "--quiet", "--no-report"]) == 0
    full, cut = (
        json.loads((tmp_path / d / "results.json").read_text())["strategies"]
        for d in ("full", "cut")
    )
    for label in full:
        assert cut[label]["accuracy_matrix"] == full[label]["accuracy_matrix"], label
        assert cut[label]["train"]["optimizer"] == "adamw:weight_decay=0.01"
