"""The bAbI stream from the command line: the default model, lamol, the report, missing data."""

from __future__ import annotations

import json

import pytest

from lifelong.cli import main


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


SMALL = ["--tasks", "2", "--train-samples", "60", "--test-samples", "40", "--epochs", "1"]
SMALL += ["--batch-size", "32", "--optimizer", "adam", "--lr", "0.01", "--quiet"]


@pytest.mark.shared_data
def test_babi_run_default_model_and_lamol_report(shared_data, tmp_path, capsys):
    out = tmp_path / "memnet"
    argv = ["run", "--data", "babi", "--data-dir", str(shared_data), "--stream", "babi", *SMALL]
    code, _, err = run_cli([*argv, "--strategy", "finetune", "--out", str(out)], capsys)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["model"] == "memnet"
    assert results["stream"]["name"] == "babi"

    out = tmp_path / "lm"
    argv += ["--model", "lm", "--strategy", "finetune", "joint", "lamol:gamma=0.5"]
    code, _, err = run_cli([*argv, "--out", str(out)], capsys)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert list(results["strategies"]) == ["finetune", "joint", "lamol:gamma=0.5"]
    lamol = results["strategies"]["lamol:gamma=0.5"]
    assert lamol["status"] == "complete" and len(lamol["accuracy_matrix"]) == 3
    assert lamol["extra"]["stored_real_examples"] == 0
    assert lamol["extra"]["pseudo_generated"] >= 30  # gamma x 60 before task 2
    assert (out / "plots" / "accuracy_matrices.png").is_file()
    assert "all strategies on one colour scale" in (out / "report.html").read_text()


def test_babi_without_files_says_how_to_download(tmp_path, capsys):
    empty = tmp_path / "data"
    empty.mkdir()
    argv = ["run", "--data", "babi", "--stream", "babi", "--data-dir", str(empty)]
    code, _, err = run_cli([*argv, "--out", str(tmp_path / "r"), "--quiet"], capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert "qa1_single-supporting-fact_train.txt" in line
    assert f"lifelong data download babi --data-dir {empty}" in line


def test_lamol_with_memnet_is_refused_in_one_line(shared_data, tmp_path, capsys):
    argv = ["run", "--data", "babi", "--data-dir", str(shared_data), "--stream", "babi", *SMALL]
    code, _, err = run_cli([*argv, "--strategy", "lamol", "--out", str(tmp_path / "r")], capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert "--model lm" in line
