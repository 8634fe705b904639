"""Equal memory budgets (``--memory N``) and what every strategy keeps (``footprint``).

Watched failing: with ``GEM.budget`` returning ``memory`` (the whole budget per task) the
equal-storage test fails (gem keeps 5x as many examples); with ``create_strategy`` ignoring a
spec's own setting the override test fails; with ``Strategy.footprint`` not walking containers
(only direct tensor attributes) the EWC, independent and LwF footprints come out empty.
"""

from __future__ import annotations

import json

import pytest

from lifelong.cli import main
from lifelong.errors import ConfigError
from lifelong.runner import learn_stream
from lifelong.strategies import create_strategy
from lifelong.streams import build_stream
from lifelong.train import TrainConfig

RUN = ["run", "--data", "digits", "--stream", "split", "--scenario", "class", "--tasks", "5"]
RUN += ["--train-samples", "60", "--test-samples", "20", "--hidden", "16", "--quiet"]
RUN += ["--no-report"]


def _results(out) -> dict:
    return json.loads((out / "results.json").read_text())["strategies"]


def test_memory_gives_every_example_storing_strategy_the_same_number_of_examples(tmp_path):
    out = tmp_path / "run"
    strategies = ["replay", "gem", "agem", "icarl", "replay:memory_size=30", "finetune"]
    assert main([*RUN, "--memory", "100", "--out", str(out), "--strategy", *strategies]) == 0
    results = _results(out)
    stored = {label: r["stored_examples"][-1] for label, r in results.items()}
    assert stored == {
        "replay": 100,
        "gem": 100,  # 20 per task over 5 tasks (GEM Sec. 3: m = M / T)
        "agem": 100,
        "icarl": 100,  # 10 per class over 10 classes (iCaRL Alg. 2: m = K / t)
        "replay:memory_size=30": 30,  # a spec's own setting wins
        "finetune": 0,
    }
    assert results["gem"]["params"]["memory_per_task"] == 20
    assert [r for r in results["gem"]["stored_examples"]] == [20, 40, 60, 80, 100]
    config = json.loads((out / "config.json").read_text())
    assert config["memory"] == 100


def test_a_budget_below_one_example_per_task_is_one_clear_line():
    with pytest.raises(ConfigError, match="--memory 3 leaves gem less than one example per task"):
        create_strategy("gem", {}, memory=3, tasks=5)
    assert create_strategy("gem", {"memory_per_task": 7}, memory=3, tasks=5).memory_per_task == 7
    assert create_strategy("finetune", {}, memory=3, tasks=5).stored_examples() == 0


@pytest.fixture(scope="module")
def stream():
    return build_stream(
        "split", "digits", tasks=3, scenario="task", train_samples=40, test_samples=20, seed=0
    )


def _footprints(stream, name, params=None):
    result = learn_stream(
        stream, create_strategy(name, params or {}), hidden=[16], train=TrainConfig(batch_size=20)
    )
    return result


def test_footprint_counts_what_each_strategy_keeps(stream):
    finetune = _footprints(stream, "finetune")
    model = finetune.model_bytes
    assert model > 0
    assert finetune.footprint == [{"model": model}] * 3, "finetune keeps nothing but its model"

    ewc = _footprints(stream, "ewc").footprint
    # one Fisher and one anchor per task learned (float32, the model's weights and biases)
    params_bytes = model  # the MLP has no buffers
    assert [f["fishers"] for f in ewc] == [params_bytes, 2 * params_bytes, 3 * params_bytes]
    assert [f["anchors"] for f in ewc] == [params_bytes, 2 * params_bytes, 3 * params_bytes]

    independent = _footprints(stream, "independent").footprint
    assert [f["per_task"] for f in independent] == [model, 2 * model, 3 * model]

    # LwF's frozen copy lives while a task trains (tasks 2 and 3), and counts
    lwf = _footprints(stream, "lwf").footprint
    assert [f.get("previous", 0) for f in lwf] == [0, model, model]

    replay = _footprints(stream, "replay", {"memory_size": 10}).footprint
    assert replay[-1]["buffer"] == 10 * (64 * 4 + 8 + 8)  # float32 inputs, int64 label and task


def test_the_table_shows_examples_stored_and_extra_memory(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*RUN, "--memory", "50", "--out", str(out), "--strategy", "finetune", "gem"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("strategy"))
    assert "examples" in header and "extra" in header
    gem = next(line for line in lines if line.startswith("gem"))
    finetune = next(line for line in lines if line.startswith("finetune"))
    assert " 50 " in gem and " 0 " in finetune


@pytest.mark.slow
def test_generative_replay_with_its_own_solver_budget_beats_finetune_in_the_class_scenario():
    """The solver trains with its own iteration budget per task, as van de Ven & Tolias 2019
    (``Strategy.train_defaults``: Adam, lr 0.001, batch 128). At the defaults (2000 iterations)
    split digits, class scenario, seed 0 measured ACC 0.921 against finetune's 0.176
    (``lifelong run --data digits --stream split --scenario class --strategy finetune
    generative-replay``, 4 min of CPU); CI runs the same recipe at a tenth of the iterations.
    Watched failing with ``train_defaults`` empty (the run's 25 SGD steps per task: ACC ≈ 0.19).
    """
    stream = build_stream("split", "digits", tasks=5, scenario="class", seed=0)
    budget = {"iterations": 200}
    gr = create_strategy("generative-replay", {"generator_iterations": 200})
    config = TrainConfig(**{**gr.train_defaults, **budget})
    assert config.optimizer == "adam" and config.batch_size == 128 and config.lr == 0.001
    replayed = learn_stream(stream, gr, train=config, seed=0).metrics()["acc"]
    finetune = learn_stream(stream, "finetune", seed=0).metrics()["acc"]
    assert replayed >= finetune + 0.2, (replayed, finetune)
