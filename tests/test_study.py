"""Studies: seeds, validation splits, candidate settings chosen on validation data, schema 2.

Each test was checked to fail when the behaviour it guards is broken (see the docstrings).
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import torch

from lifelong import experiment
from lifelong.cli import main
from lifelong.config import RunConfig, StrategySpec
from lifelong.strategies import STRATEGIES, Strategy
from lifelong.streams import build_stream
from lifelong.study import choose, load_study

SMALL = ["--data", "digits", "--stream", "split", "--scenario", "domain", "--tasks", "3"]
SMALL += ["--train-samples", "120", "--test-samples", "60", "--hidden", "16", "--quiet"]


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def results_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


# ---- seeds ---------------------------------------------------------------------------------------
def test_seeds_run_every_strategy_on_every_seed_exactly_as_seed_would(tmp_path, capsys):
    """Each seed's result equals `--seed N` alone; mean, sample std and n are over the seeds.
    (Fails when a unit ignores its seed, or when std is the population std.)"""
    out = tmp_path / "study"
    argv = ["run", *SMALL, "--seeds", "0", "1", "--strategy", "finetune", "--out", str(out)]
    code, stdout, stderr = run_cli([*argv, "--no-report"], capsys)
    assert code == 0, stderr
    study = results_of(out)
    assert study["schema"] == 2 and study["seeds"] == [0, 1]
    entry = study["strategies"]["finetune"]
    for seed in (0, 1):
        single = tmp_path / f"seed{seed}"
        argv = ["run", *SMALL, "--seed", str(seed), "--strategy", "finetune", "--out", str(single)]
        assert run_cli([*argv, "--no-report"], capsys)[0] == 0
        alone = results_of(single)
        assert alone["schema"] == 1  # --seed alone: an ordinary run, as before
        same = alone["strategies"]["finetune"]
        assert entry["seeds"][str(seed)]["accuracy_matrix"] == same["accuracy_matrix"]
    accs = [entry["seeds"][s]["acc"] for s in ("0", "1")]
    assert accs[0] != accs[1]
    assert entry["n"] == 2 and entry["status"] == "complete"
    assert entry["mean"]["acc"] == pytest.approx(statistics.fmean(accs))
    assert entry["std"]["acc"] == pytest.approx(statistics.stdev(accs))
    assert entry["acc"] == entry["mean"]["acc"]  # the schema-1 keys hold the means
    assert f"{100 * entry['mean']['acc']:.2f} ± {100 * entry['std']['acc']:.2f}" in stdout
    (row,) = csv.DictReader((out / "metrics.csv").open())
    assert float(row["acc_mean"]) == pytest.approx(entry["mean"]["acc"])
    assert float(row["acc_std"]) == pytest.approx(entry["std"]["acc"])
    assert row["n"] == "2"
    # `lifelong summarize` of a study reads its units, not the aggregate a second time
    from lifelong.sweep import summarize

    (group,) = summarize(out).groups
    assert sorted(group.seeds) == [0, 1]


def test_seed_and_seeds_together_are_refused(tmp_path, capsys):
    code, _, err = run_cli(["run", *SMALL, "--seed", "1", "--seeds", "0", "1"], capsys)
    assert code == 2 and "not both" in err and len(err.strip().splitlines()) == 1


def test_config_file_accepts_seeds(tmp_path, capsys):
    """`seeds = [...]` in a config file makes a study like --seeds."""
    file = tmp_path / "study.toml"
    file.write_text(
        'data = "digits"\nstream = "split"\nscenario = "domain"\ntasks = 2\n'
        "train-samples = 60\ntest-samples = 30\nhidden = [8]\nseeds = [3, 4]\n"
        'strategy = ["finetune"]\n'
    )
    out = tmp_path / "study"
    code, _, err = run_cli(["run", "--config", str(file), "--out", str(out), "--quiet",
                            "--no-report"], capsys)  # fmt: skip
    assert code == 0, err
    assert results_of(out)["seeds"] == [3, 4]
    assert sorted(p.name for p in (out / "units" / "finetune").iterdir()) == ["seed=3", "seed=4"]


# ---- validation split ----------------------------------------------------------------------------
def test_validation_split_is_stratified_disjoint_and_seeded():
    """The held-out rows are a per-class fraction of each task's training rows, disjoint from
    the rows trained on, the same for the same seed and different for another seed. (Fails
    without stratification: a plain random draw of 10% misses the per-class counts.)"""
    stream = build_stream("split", "digits", tasks=5, scenario="class", seed=0)
    a, b, c = stream.hold_out(0.1, 0), stream.hold_out(0.1, 0), stream.hold_out(0.1, 1)
    for full, task, same, other in zip(stream.tasks, a.tasks, b.tasks, c.tasks, strict=True):
        original = full.train.rows if full.train.rows is not None else torch.arange(len(full.train))
        train = set(task.train.rows.tolist())
        valid = set(task.valid.rows.tolist())
        assert not train & valid
        assert train | valid == set(original.tolist())
        for label in full.train.y.unique():
            n = int((full.train.y == label).sum())
            assert int((task.valid.y == label).sum()) == round(0.1 * n)
        assert torch.equal(task.valid.rows, same.valid.rows)
        assert not torch.equal(task.valid.rows, other.valid.rows)
        assert torch.equal(task.test.y, full.test.y)  # test data untouched


def test_hold_out_leaves_the_global_generator_alone():
    """The split draws from its own generator: every later random choice of the run (batch
    order, strategies' draws) is the same as without --validation."""
    stream = build_stream("split", "digits", tasks=2, scenario="domain", seed=0)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    stream.hold_out(0.2, 0)
    assert torch.equal(torch.get_rng_state(), before)


def test_select_renumbers_tasks_and_keeps_their_classes():
    """The reported part of --tune-tasks: tasks K.. renumbered from 0; in the class scenario
    they predict over their own classes only."""
    stream = build_stream("split", "digits", tasks=5, scenario="class", seed=0)
    part = stream.select(2, 5)
    assert [t.id for t in part.tasks] == [0, 1, 2]
    assert [t.classes for t in part.tasks] == [(4, 5), (6, 7), (8, 9)]
    assert all(t.columns == (4, 10) for t in part.tasks)
    assert part.column_mask(0).tolist() == [False] * 4 + [True] * 6
    task = build_stream("split", "digits", tasks=5, scenario="task", seed=0).select(3, 5)
    assert [t.columns for t in task.tasks] == [(6, 8), (8, 10)]


def test_validation_accuracy_matrix_is_recorded(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", *SMALL, "--validation", "0.2", "--strategy", "finetune", "--out", str(out)]
    assert run_cli([*argv, "--no-report"], capsys)[0] == 0
    results = results_of(out)
    entry = results["strategies"]["finetune"]
    assert len(entry["validation_matrix"]) == 4 and len(entry["validation_matrix"][0]) == 3
    assert entry["validation_matrix"] != entry["accuracy_matrix"]
    task = results["stream"]["tasks"][0]
    assert task["validation_samples"] + task["train_samples"] == 120
    assert abs(task["validation_samples"] - 24) <= 2  # 20% of each class, rounded


# ---- candidates and the choice -------------------------------------------------------------------
def test_candidates_are_the_cartesian_product():
    spec = StrategySpec.parse("ewc:lambda=[1,10],lr=[0.01,0.1],epochs=2")
    labels = [c.label for c in spec.candidates()]
    assert labels == [
        "ewc:lambda=1,lr=0.01,epochs=2", "ewc:lambda=1,lr=0.1,epochs=2",
        "ewc:lambda=10,lr=0.01,epochs=2", "ewc:lambda=10,lr=0.1,epochs=2",
    ]  # fmt: skip
    assert spec.candidates()[3].params == {"lambda": 10}
    assert spec.candidates()[3].train_overrides == {"lr": 0.1, "epochs": 2}
    assert StrategySpec.parse("ewc:lambda=10").candidates() == [StrategySpec.parse("ewc:lambda=10")]
    nested = StrategySpec.parse("x:k=[[1,2],[3]]").candidates()
    assert [c.params["k"] for c in nested] == [[1, 2], [3]]


def test_choose_reads_only_the_validation_score():
    cands = [{"validation_score": 0.5, "acc": 0.9}, {"validation_score": 0.7, "acc": 0.1},
             {"validation_score": 0.7, "acc": 0.99}, {"validation_score": None, "acc": 1.0}]  # fmt: skip
    assert choose(cands) == 1  # highest score, first on ties; test accuracy plays no part
    assert choose([{"validation_score": None}]) is None


def test_candidates_without_validation_data_are_refused(tmp_path, capsys):
    code, _, err = run_cli(["run", *SMALL, "--strategy", "ewc:lambda=[1,10]"], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "--validation F" in err and "--tune-tasks K" in err


def _shuffle_test_labels(monkeypatch) -> None:
    """Every stream a run builds gets random test labels (the test data made meaningless)."""
    real = experiment.build_stream

    def build(*args, **kwargs):
        stream = real(*args, **kwargs)
        g = torch.Generator().manual_seed(123)
        for task in stream.tasks:
            perm = torch.randperm(len(task.test.y), generator=g)
            object.__setattr__(task.test, "y", task.test.y[perm].clone())
        return stream

    monkeypatch.setattr(experiment, "build_stream", build)


@pytest.mark.parametrize("protocol", [["--validation", "0.2"], ["--tune-tasks", "1", "--validation", "0.2"]])  # fmt: skip
def test_the_choice_does_not_depend_on_test_data(tmp_path, capsys, monkeypatch, protocol):
    """Shuffling every test label changes the test metrics but neither the validation scores nor
    the chosen setting. (Fails when the score reads the test accuracy matrix.)"""
    argv = ["run", *SMALL, "--seeds", "0", "1", *protocol, "--no-report"]
    argv += ["--strategy", "finetune:lr=[0.001,0.3]"]
    assert run_cli([*argv, "--out", str(tmp_path / "a")], capsys)[0] == 0
    _shuffle_test_labels(monkeypatch)
    assert run_cli([*argv, "--out", str(tmp_path / "b")], capsys)[0] == 0
    a = results_of(tmp_path / "a")["strategies"]["finetune:lr=[0.001,0.3]"]
    b = results_of(tmp_path / "b")["strategies"]["finetune:lr=[0.001,0.3]"]
    assert a["chosen"] == b["chosen"] == "finetune:lr=0.3"
    assert [c["validation_scores"] for c in a["candidates"]] == [
        c["validation_scores"] for c in b["candidates"]
    ]
    assert a["mean"]["acc"] != b["mean"]["acc"]


def test_tune_tasks_chooses_on_the_first_tasks_and_reports_the_rest(tmp_path, capsys):
    """With --tune-tasks 1 the candidates learn task 1 only; the chosen setting then learns
    tasks 2..3 from scratch and only those are reported."""
    out = tmp_path / "study"
    argv = ["run", *SMALL, "--seeds", "0", "--tune-tasks", "1", "--out", str(out), "--no-report"]
    code, stdout, err = run_cli([*argv, "--strategy", "finetune:lr=[0.001,0.3]", "joint"], capsys)
    assert code == 0, err
    study = results_of(out)
    entry = study["strategies"]["finetune:lr=[0.001,0.3]"]
    assert entry["chosen"] == "finetune:lr=0.3"
    tuned = results_of(out / "units" / "tune" / "finetune_lr=0.001" / "seed=0")
    assert len(tuned["stream"]["tasks"]) == 1
    # the score without a validation split: the tuning task's test accuracy, never reported
    score = tuned["strategies"]["finetune:lr=0.001"]["acc"]
    assert entry["candidates"][0]["validation_score"] == pytest.approx(score)
    reported = entry["seeds"]["0"]
    assert len(reported["accuracy_matrix"]) == 3 and len(reported["accuracy_matrix"][0]) == 2
    assert [t["name"] for t in study["stream"]["tasks"]] == [
        t["name"] for t in build_stream("split", "digits", tasks=3, scenario="domain").describe()["tasks"][1:]
    ]  # fmt: skip
    assert study["strategies"]["joint"]["n"] == 1  # one setting: no tuning units, reported as is
    assert not (out / "units" / "tune" / "joint").exists()
    assert "first 1 tasks" in stdout


def test_tune_tasks_must_leave_tasks_to_report(tmp_path, capsys):
    code, _, err = run_cli(["run", *SMALL, "--tune-tasks", "3", "--seeds", "0"], capsys)
    assert code == 2 and "--tune-tasks 3" in err and len(err.strip().splitlines()) == 1


# ---- resume and schema ---------------------------------------------------------------------------
def test_resume_continues_per_unit(tmp_path, capsys, monkeypatch):
    """A study interrupted after its first unit resumes: finished units are not run again and the
    results equal an uninterrupted study's. (Fails when resume re-runs or skips units.)"""
    argv = [
        "run",
        *SMALL,
        "--seeds",
        "0",
        "1",
        "--strategy",
        "finetune",
        "l2:lambda=1",
        "--no-report",
    ]
    assert run_cli([*argv, "--out", str(tmp_path / "whole")], capsys)[0] == 0
    real, calls, stop_at = experiment.run_experiment, [], [2]

    def interrupt_second(config, run_dir, **kwargs):
        calls.append(run_dir)
        if len(calls) in stop_at:
            raise KeyboardInterrupt
        return real(config, run_dir, **kwargs)

    monkeypatch.setattr(experiment, "run_experiment", interrupt_second)
    out = tmp_path / "cut"
    code, _, err = run_cli([*argv, "--out", str(out)], capsys)
    assert code == 130 and f"lifelong run --resume {out}" in err
    assert results_of(out)["strategies"]["finetune"]["status"] == "partial"
    calls.clear()
    stop_at.clear()
    code, _stdout, err = run_cli(["run", "--resume", str(out), "--quiet", "--no-report"], capsys)
    assert code == 0, err
    assert len(calls) == 3  # the three units that had not finished; the first is skipped
    whole, cut = results_of(tmp_path / "whole"), results_of(out)
    for label in ("finetune", "l2:lambda=1"):
        for seed in ("0", "1"):
            assert (
                cut["strategies"][label]["seeds"][seed]["accuracy_matrix"]
                == whole["strategies"][label]["seeds"][seed]["accuracy_matrix"]
            )


class Boom(Strategy):
    """A strategy whose unit raises before it records anything."""

    name = "boom-study"

    def before_task(self, task, model):
        raise RuntimeError("boom at the first task")


def test_a_unit_that_raises_is_reported_and_the_others_finish(tmp_path, capsys, monkeypatch):
    """The reason of a unit that raised reaches stderr and results.json; the other strategies
    finish. (Fails when the study drops the engine's failure reasons.)"""
    monkeypatch.setitem(STRATEGIES, Boom.name, Boom)
    out = tmp_path / "study"
    argv = ["run", *SMALL, "--seeds", "0", "1", "--strategy", Boom.name, "finetune"]
    code, _, err = run_cli([*argv, "--out", str(out), "--no-report"], capsys)
    assert code == 1
    assert err.count("boom at the first task") == 2
    entries = results_of(out)["strategies"]
    assert entries[Boom.name]["status"] == "failed"
    assert "seed 1: RuntimeError: boom at the first task" in entries[Boom.name]["error"]
    assert entries["finetune"]["status"] == "complete" and entries["finetune"]["n"] == 2


def test_a_finished_study_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "study"
    argv = [
        "run",
        *SMALL,
        "--seeds",
        "0",
        "--strategy",
        "finetune",
        "--out",
        str(out),
        "--no-report",
    ]
    assert run_cli(argv, capsys)[0] == 0
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "--resume" in err
    # a unit folder whose settings differ from the study's is refused, not silently reused
    unit = out / "units" / "finetune" / "seed=0" / "config.json"
    unit.write_text(unit.read_text().replace('"epochs": 1', '"epochs": 2'))
    code, _, err = run_cli(["run", "--resume", str(out), "--quiet", "--no-report"], capsys)
    assert code == 2 and "other settings" in err and len(err.strip().splitlines()) == 1


def test_a_study_into_a_folder_that_holds_one_is_refused_and_overwrite_replaces_it(
    tmp_path, capsys
):
    """A killed study (units written, no results.json yet) is not replaced by a study with other
    settings; --overwrite deletes its files, unit folders included, and keeps the user's. (Fails
    when run_study refuses only a folder with results.json, or ignores --overwrite.)"""
    out = tmp_path / "study"
    argv = ["run", *SMALL, "--seeds", "0", "1", "--no-report", "--out", str(out)]
    assert run_cli([*argv, "--strategy", "finetune"], capsys)[0] == 0
    (out / "results.json").unlink()  # as after kill -9 of a study whose units exist
    (out / "notes.txt").write_text("mine")
    config = (out / "config.json").read_text()
    code, _, err = run_cli([*argv, "--strategy", "l2:lambda=1"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "already holds a study" in err and "--resume" in err and "--overwrite" in err
    assert (out / "config.json").read_text() == config
    code, _, err = run_cli([*argv, "--strategy", "l2:lambda=1", "--overwrite"], capsys)
    assert code == 0, err
    assert [p.name for p in (out / "units").iterdir()] == ["l2_lambda=1"]
    assert list(results_of(out)["strategies"]) == ["l2:lambda=1"]
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--stream", "rotated:angle=[0,90]"], "has no option angle"),
        (["--data", "mnist", "--data-dir", "/nonexistent/lifelong"], "files missing"),
        (["--stream", "split:classes_per_task=7", "--tasks", "2"], "need 14 classes"),
        (["--stream", "permuted", "--train-samples", "5", "--validation", "0.5",
          "--strategy", "finetune:lr=[0.1,0.01]"],
         "--validation 0.5 holds out nothing of task 1"),
    ],
)  # fmt: skip
def test_a_study_refuses_bad_settings_before_it_writes_anything(tmp_path, capsys, flags, message):
    """As a single run does: one line, exit status 2, no folder (fails when the study checks
    streams only per unit, after config.json and the unit folders are written)."""
    out = tmp_path / "study"
    argv = ["run", *SMALL, "--seeds", "0", "1", "--no-report", "--out", str(out), *flags]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_run_refuses_a_validation_split_that_holds_out_nothing(tmp_path, capsys):
    """Five training samples of ten classes: no class has two, so --validation 0.9 holds out
    none (fails when the run goes on with an empty validation split)."""
    out = tmp_path / "run"
    argv = ["run", *SMALL, "--stream", "permuted", "--train-samples", "5", "--validation", "0.9"]
    code, _, err = run_cli([*argv, "--out", str(out)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--validation 0.9 holds out nothing of task 1" in err and "--train-samples" in err
    assert not out.exists()


def test_load_study_reads_schema_1_as_one_seed(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "run",
        *SMALL,
        "--seed",
        "2",
        "--strategy",
        "finetune",
        "--out",
        str(out),
        "--no-report",
    ]
    assert run_cli(argv, capsys)[0] == 0
    study = load_study(out)
    entry = study["strategies"]["finetune"]
    assert study["schema"] == 2 and study["seeds"] == [2]
    assert entry["n"] == 1 and entry["std"]["acc"] is None
    assert entry["mean"]["acc"] == results_of(out)["strategies"]["finetune"]["acc"]


def test_done_when_command_prints_mean_std_with_the_chosen_values(tmp_path, capsys):
    """Issue 11's command, small: split digits, domain scenario, 5 tasks, 3 seeds, validation 0.1,
    candidates for EWC, SI and MAS; the table shows mean ± std and the chosen values, and the
    report renders the study."""
    out = tmp_path / "study"
    argv = ["run", "--data", "digits", "--stream", "split", "--scenario", "domain", "--tasks", "5"]
    argv += ["--train-samples", "60", "--test-samples", "30", "--hidden", "16", "--quiet"]
    argv += ["--seeds", "0", "1", "2", "--validation", "0.1", "--out", str(out), "--strategy"]
    argv += ["finetune", "ewc:lambda=[1,1000]", "si:c=[0.1,10]", "mas:lambda=[0.1,10]"]
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0, err
    study = results_of(out)
    for label, entry in study["strategies"].items():
        assert entry["n"] == 3
        line = next(row for row in stdout.splitlines() if row.startswith(label + " "))
        assert f"{100 * entry['mean']['acc']:.2f} ± {100 * entry['std']['acc']:.2f}" in line
        if label != "finetune":
            (key,) = entry["chosen_values"]
            assert f"{key}={entry['chosen_values'][key]}" in line
            assert sum(c["chosen"] for c in entry["candidates"]) == 1
    html = (out / "report.html").read_text()
    assert "Study: seeds and chosen settings" in html and "ewc:lambda=[1,1000]" in html


def test_config_round_trip_keeps_study_settings(tmp_path):
    config = RunConfig.from_dict(
        {
            "seeds": [0, 1],
            "validation": 0.1,
            "tune_tasks": 1,
            "tasks": 3,
            "strategy": ["ewc:lambda=[1,10]"],
        }
    )
    experiment.save_config(config, tmp_path)
    again = experiment.load_run_config(tmp_path)
    assert again == config and again.is_study
    assert [c.label for c in again.strategies[0].candidates()] == ["ewc:lambda=1", "ewc:lambda=10"]


def test_study_table_shows_examples_and_extra_memory_per_strategy(tmp_path, capsys):
    """Issue 11 item 4: a study's table shows the examples each strategy stores and the memory it
    keeps beyond the model. Seen to fail with the ``KEPT`` columns removed from the table."""
    out = tmp_path / "study"
    argv = ["run", *SMALL, "--seeds", "0", "1", "--memory", "30", "--no-report"]
    argv += ["--strategy", "finetune", "replay", "--out", str(out)]
    code, stdout, _ = run_cli(argv, capsys)
    assert code == 0
    header = next(line for line in stdout.splitlines() if line.startswith("strategy"))
    assert "examples" in header.split() and "extra" in header.split()
    rows = {line.split()[0]: line for line in stdout.splitlines() if line.strip()}
    start = header.index("examples")  # a right-aligned column as wide as its header
    assert rows["replay"][start : start + len("examples")].strip() == "30"
    assert rows["finetune"][start : start + len("examples")].strip() == "0"
    strategies = results_of(out)["strategies"]
    assert strategies["replay"]["mean"]["examples"] == 30
    assert (
        strategies["replay"]["mean"]["extra_bytes"] > strategies["finetune"]["mean"]["extra_bytes"]
    )
