"""What a new user touches first: top-level names, shell completion, tidy results.

Checked to fail: with ``__init__`` importing ``lifelong.runner`` eagerly, the cheap-import test
fails; with the accuracy rows dropped from ``tidy_records``, the table test fails; with
``learn_stream`` not giving its seed to the result, the seed test fails (seed None in every row).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import lifelong
from lifelong.cli import main
from lifelong.results import StrategyResult, load_records, tidy_records


def test_import_is_cheap_and_exports_are_lazy():
    code = (
        "import sys, lifelong; assert 'torch' not in sys.modules, 'torch imported'; "
        "lifelong.learn_stream; lifelong.TrainConfig; lifelong.build_stream; assert 'torch' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    for name in lifelong.__all__:
        assert getattr(lifelong, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'learn'"):
        lifelong.learn  # noqa: B018


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts_know_the_commands_and_flags(shell, capsys):
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    for word in ("show", "--optimizer", "--scheduler", "--log", "tensorboard"):
        assert word in script


def test_results_as_a_tidy_table(tmp_path, digits_stream):
    out = tmp_path / "run"
    args = ["run", "--data", "digits", "--tasks", "2", "--train-samples", "40", "--test-samples",
            "20", "--hidden", "8", "--seed", "2", "--strategy", "finetune", "ewc:lambda=10",
            "--quiet", "--no-report", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    rows = load_records(out)
    assert {tuple(sorted(r)) for r in rows} == {
        ("metric", "seed", "setting", "strategy", "task", "trained", "value")
    }
    ewc = [r for r in rows if r["setting"] == "ewc:lambda=10"]
    assert all(r["strategy"] == "ewc" and r["seed"] == 2 for r in ewc)
    matrix = results["strategies"]["ewc:lambda=10"]["accuracy_matrix"]
    accuracy = {(r["trained"], r["task"]): r["value"] for r in ewc if r["metric"] == "accuracy"}
    assert accuracy == {(i, j + 1): matrix[i][j] for i in range(3) for j in range(2)}
    (acc,) = [r for r in ewc if r["metric"] == "acc"]
    assert acc["value"] == results["strategies"]["ewc:lambda=10"]["acc"] and acc["task"] is None

    pd = pytest.importorskip("pandas")
    frame = lifelong.load_dataframe(out)
    assert isinstance(frame, pd.DataFrame) and len(frame) == len(rows)
    means = frame[frame.metric == "acc"].groupby("setting").value.mean()
    assert means["finetune"] == results["strategies"]["finetune"]["acc"]

    result = lifelong.learn_stream(digits_stream, "finetune", hidden=[8], seed=1)
    table = result.to_dataframe(seed=1)
    assert len(table[table.metric == "accuracy"]) == 4 * 3


def test_a_result_keeps_its_run_seed(digits_stream):
    result = lifelong.learn_stream(digits_stream, "finetune", hidden=[8], seed=7)
    assert result.seed == 7 and {r["seed"] for r in result.records()} == {7}
    assert {r["seed"] for r in result.records(seed=3)} == {3}
    saved = result.to_dict()
    assert StrategyResult.from_dict(saved).seed == 7
    assert {
        r["seed"] for r in tidy_records({"config": {"seed": 0}, "strategies": {"a": saved}})
    } == {7}
    old = {k: v for k, v in saved.items() if k != "seed"}  # a results.json from before
    assert StrategyResult.from_dict(old).seed is None
    assert {r["seed"] for r in tidy_records({"config": {"seed": 5}, "strategies": {"a": old}})} == {
        5
    }


def test_study_results_give_one_row_set_per_seed():
    entry = {"strategy": "ewc", "accuracy_matrix": [[0.1], [0.9]], "tasks_done": 1, "acc": 0.9}
    study = {"schema": 2, "strategies": {"ewc": {**entry, "seeds": {"0": entry, "1": entry}}}}
    rows = tidy_records(study)
    assert sorted({r["seed"] for r in rows}) == [0, 1] and len(rows) == 2 * 3
