"""Run configuration: value parsing, strategy specs, validation, config files, round trips."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lifelong.config import (
    RunConfig,
    StrategySpec,
    load_config_file,
    parse_named,
    parse_value,
    split_top_level,
)
from lifelong.errors import ConfigError, UnknownNameError
from lifelong.experiment import load_run_config, save_config
from lifelong.train import TrainConfig


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3", 3),
        ("0.5", 0.5),
        ("1e-3", 1e-3),
        ("true", True),
        ("False", False),
        ("[1, 2]", [1, 2]),
        ("[]", []),
        ("0.1;0.2", [0.1, 0.2]),
        ("[[1,2],3]", [[1, 2], 3]),
        ("online", "online"),
    ],
)
def test_parse_value(text, value):
    got = parse_value(text)
    assert got == value and type(got) is type(value)


def test_split_top_level_respects_brackets():
    assert split_top_level("a=1,b=[1,2],c=x", ",") == ["a=1", "b=[1,2]", "c=x"]


def test_parse_named():
    assert parse_named("finetune", "strategy") == ("finetune", {})
    assert parse_named("ewc:lambda=100,mode=online", "strategy") == (
        "ewc",
        {"lambda": 100, "mode": "online"},
    )
    assert parse_named("gem:memory-size=3", "strategy") == ("gem", {"memory_size": 3})
    assert parse_named("rotated:angles=[0,45]", "stream") == ("rotated", {"angles": [0, 45]})
    for bad in ("ewc:lambda", ":lr=1", "ewc:=3"):
        with pytest.raises(ConfigError):
            parse_named(bad, "strategy")


def test_strategy_spec_splits_settings_from_training_overrides():
    spec = StrategySpec.parse("finetune:lr=0.03,epochs=2")
    assert (spec.label, spec.name) == ("finetune:lr=0.03,epochs=2", "finetune")
    assert spec.params == {} and spec.train_overrides == {"lr": 0.03, "epochs": 2}
    table = StrategySpec.parse({"name": "finetune", "lr": 0.03})
    assert table.label == "finetune:lr=0.03" and table.train_overrides == {"lr": 0.03}
    labelled = StrategySpec.parse({"name": "finetune", "label": "slow", "batch-size": 5})
    assert labelled.label == "slow" and labelled.train_overrides == {"batch_size": 5}
    with pytest.raises(ConfigError, match="needs a name"):
        StrategySpec.parse({"lr": 0.1})


def test_run_config_from_dict_with_flag_names():
    config = RunConfig.from_dict(
        {
            "data": "digits",
            "stream": "split:classes_per_task=2",
            "scenario": "task",
            "tasks": "5",
            "train-samples": 100,
            "hidden": 50,
            "batch_size": 20,
            "lr": "0.05",
            "strategy": "finetune",
        }
    )
    assert config.stream == "split" and config.stream_options == {"classes_per_task": 2}
    assert config.tasks == 5 and config.train_samples == 100 and config.hidden == (50,)
    assert config.batch_size == 20 and config.lr == 0.05
    assert [s.label for s in config.strategies] == ["finetune"]
    assert config.stream_kwargs()["classes_per_task"] == 2


def test_training_overrides_apply_to_their_strategy_only():
    config = RunConfig.from_dict(
        {"lr": 0.1, "epochs": 2, "strategy": ["finetune", "finetune:lr=0.03,reset_optimizer=false"]}
    )
    plain, tuned = config.strategies
    assert config.train_config(plain).lr == 0.1
    tuned_train = config.train_config(tuned)
    assert tuned_train.lr == 0.03 and tuned_train.epochs == 2
    assert tuned_train.reset_optimizer is False
    assert config.train_config(plain).reset_optimizer is True


@pytest.mark.parametrize(
    ("raw", "error", "match"),
    [
        ({"data": "cifar"}, UnknownNameError, r"unknown data set 'cifar'; known: .*digits"),
        ({"stream": "shuffled"}, UnknownNameError, r"known: .*noisy, permuted, rotated, split"),
        ({"scenario": "both"}, UnknownNameError, "known: class, domain, task"),
        ({"model": "resnet"}, UnknownNameError, r"known: cnn, .*mlp"),
        (
            {"strategy": "nosuch"},
            UnknownNameError,
            r"known: .*cumulative, .*finetune, .*independent, joint",
        ),
        ({"strategy": ["finetune", "finetune"]}, ConfigError, "distinct"),
        ({"strategy": []}, ConfigError, "no strategy"),
        ({"strategy": "finetune:foo=1"}, ConfigError, "has no setting 'foo'"),
        ({"tasks": 0}, ConfigError, "--tasks must be at least 1"),
        ({"train_samples": -5}, ConfigError, "--train-samples"),
        ({"seed": -1}, ConfigError, "--seed"),
        ({"tasks": "five"}, ConfigError, "whole number"),
        ({"lr": "fast"}, ConfigError, "must be a number"),
        ({"hidden": ["a"]}, ConfigError, "each of --hidden must be a whole number"),
        ({"epochs": 1.5}, ConfigError, "epochs must be a whole number, got 1.5"),
        ({"tasks": True}, ConfigError, "tasks must be a whole number"),
        ({"lr": True}, ConfigError, "lr must be a number, got True"),
        ({"strategy": 3}, ConfigError, "strategy must be NAME, NAME:key=value or a table"),
        ({"strategy": ["finetune", 3]}, ConfigError, "strategy must be NAME"),
        ({"stream_options": 3}, ConfigError, "stream_options must be a table"),
        ({"learning_rate": 0.1}, ConfigError, r"unknown setting.*learning_rate.*known: .*lr"),
        ({"optimizer": "rmsprp"}, ConfigError, r"known: .*\brmsprop\b"),
        ({"scheduler": 3}, ConfigError, "scheduler must be none, NAME"),
    ],
)
def test_run_config_rejects_bad_input_with_one_line(raw, error, match):
    with pytest.raises(error, match=match) as info:
        RunConfig.from_dict(raw)
    assert "\n" not in str(info.value)


def test_run_wide_training_errors_name_the_flag_not_a_strategy():
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({"lr": -1.0, "strategy": "finetune"})
    assert str(info.value) == "--lr must be positive and at most 3.403e+38, got -1.0"


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("finetune:lr=-1", r"strategy 'finetune:lr=-1': --lr must be positive"),
        ("finetune:lr=abc", r"strategy 'finetune:lr=abc': lr must be a number, got 'abc'"),
        ("finetune:epochs=2.5", r"epochs must be a whole number, got 2.5"),
        ("finetune:reset_optimizer=maybe", r"reset_optimizer must be true or false"),
        ("finetune:optimizer=rmsprp", r"known: .*\brmsprop\b"),
        ("finetune:scheduler.eta_min=0.1", r"scheduler options .* given, but no scheduler"),
    ],
)
def test_bad_training_override_names_the_strategy(spec, match):
    with pytest.raises(ConfigError, match=match) as info:
        RunConfig.from_dict({"strategy": spec})
    assert "\n" not in str(info.value)


TOML = """
data = "digits"
stream = "permuted"
tasks = 3
train-samples = 50
hidden = [16]
lr = 0.05
strategy = ["finetune", {name = "finetune", label = "slow", lr = 0.01}]
"""
YAML = """
data: digits
stream: permuted
tasks: 3
train_samples: 50
hidden: [16]
lr: 0.05
strategy:
  - finetune
  - {name: finetune, label: slow, lr: 0.01}
"""


@pytest.mark.parametrize(("suffix", "text"), [(".toml", TOML), (".yaml", YAML), (".yml", YAML)])
def test_config_files(tmp_path, suffix, text):
    path = tmp_path / f"run{suffix}"
    path.write_text(text)
    config = RunConfig.from_dict(load_config_file(path))
    assert (config.tasks, config.train_samples, config.hidden, config.lr) == (3, 50, (16,), 0.05)
    assert [s.label for s in config.strategies] == ["finetune", "slow"]
    assert config.train_config(config.strategies[1]).lr == 0.01


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("bad.toml", "tasks = = 3", "is not valid"),
        ("bad.yaml", "tasks: [1, 2", "is not valid"),
        ("list.yaml", "- a\n- b\n", "must hold a table"),
        ("run.json", "{}", r"must end in \.toml, \.yaml or \.yml"),
    ],
)
def test_bad_config_files(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        load_config_file(path)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config_file(tmp_path / "missing.toml")


def test_saved_config_round_trips_for_resume(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(TOML)
    config = RunConfig.from_dict(
        {
            **load_config_file(path),
            "strategy": ["finetune:lr=0.03", {"name": "joint", "label": "mt"}],
        }
    )
    save_config(config, tmp_path)
    again = load_run_config(tmp_path)
    assert again == config
    assert [s.label for s in again.strategies] == ["finetune:lr=0.03", "mt"]
    with pytest.raises(ConfigError, match=r"no config\.json"):
        load_run_config(tmp_path / "elsewhere")


def test_a_config_json_of_the_previous_version_with_an_optimizer_spec_resumes() -> None:
    """Before ``--lr`` and a spec's ``lr=`` were one setting, config.json recorded lr 0.1 (the
    default) beside ``adam:lr=0.01``: it loads with the spec's value, and the recorded settings
    compare equal. (Watched failing with the refusal of any two differing values.)"""
    from lifelong.experiment import check_resume_config

    old = {"strategies": ["finetune"], "optimizer": "adam:lr=0.01", "lr": 0.1, "momentum": 0.0}
    config = RunConfig.from_dict(old)
    assert config.lr == 0.01
    check_resume_config(config, {**config.to_dict(), "lr": 0.1})
    with pytest.raises(ConfigError, match="set lr differently"):
        RunConfig.from_dict({**old, "lr": 0.05})


def test_a_strategy_that_replaces_the_optimizer_keeps_the_runs_lr() -> None:
    config = RunConfig.from_dict(
        {"strategies": ["ewc:optimizer=sgd"], "optimizer": "adam:lr=0.001"}
    )
    train = config.train_config(config.strategies[0])
    assert (train.optimizer, train.lr) == ("sgd", 0.001)


def test_numpy_bools_and_paths_are_taken() -> None:
    import numpy as np

    from lifelong.strategies import create_strategy

    assert TrainConfig(reset_optimizer=np.bool_(False)).reset_optimizer is False
    assert create_strategy("si", {"clip": np.True_}).params()["clip"] is True
    assert RunConfig(data_dir=Path("/tmp")).data_dir == "/tmp"


def test_checking_a_torch_optimizer_waits_for_the_runs_device() -> None:
    """Building one of torch.optim's classes imports torch._dynamo (1-2 s): a TrainConfig made
    by a process that does not train (a study's driver) does not pay it."""
    code = (
        "import sys\nfrom lifelong.train import TrainConfig\n"
        "TrainConfig(optimizer='adamw', scheduler='cosine')\n"
        "assert 'torch._dynamo' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
