"""Metric functions against matrices computed by hand (GEM 2017 Sec. 2; Chaudhry et al. 2018)."""

from __future__ import annotations

import numpy as np
import pytest

from lifelong import metrics
from lifelong.results import StrategyResult

# T = 2. Row 0: untrained model; row i: after learning task i.
R2 = [
    [0.10, 0.20],
    [0.90, 0.30],
    [0.60, 0.80],
]
# ACC = (0.6 + 0.8) / 2; BWT = 0.6 - 0.9; FWT = R[1,2] - R[0,2] = 0.3 - 0.2;
# forgetting = max(R[1,1]) - R[2,1] = 0.9 - 0.6; LA = (0.9 + 0.8) / 2.
R2_EXPECTED = {
    "acc": 0.70,
    "bwt": -0.30,
    "fwt": 0.10,
    "forgetting": 0.30,
    "learning_accuracy": 0.85,
}

# T = 3, built so that each convention matters:
# * R[0, 1] = 0.99 is high: a forgetting max that wrongly included row 0 would give f_1 = 0.29;
# * task 1 peaks after task 2 (0.85 > 0.80): the max over l = 1..T-1 differs from BWT's R[j, j];
# * task 2 ends higher than ever before (0.95 > 0.90): negative forgetting, which a max that
#   wrongly included row T would clip to 0;
# * FWT uses row 0 as the baseline (R[j-1, j] - R[0, j]), not zero.
R3 = [
    [0.99, 0.10, 0.10],
    [0.80, 0.20, 0.15],
    [0.85, 0.90, 0.30],
    [0.70, 0.95, 0.60],
]
R3_EXPECTED = {
    "acc": (0.70 + 0.95 + 0.60) / 3,  # 0.75
    "bwt": ((0.70 - 0.80) + (0.95 - 0.90)) / 2,  # -0.025
    "fwt": ((0.20 - 0.10) + (0.30 - 0.10)) / 2,  # 0.15
    "forgetting": ((0.85 - 0.70) + (0.90 - 0.95)) / 2,  # 0.05
    "learning_accuracy": (0.80 + 0.90 + 0.60) / 3,
}


def assert_metrics(got: dict, expected: dict) -> None:
    assert set(got) == {"acc", "bwt", "fwt", "forgetting", "learning_accuracy"}
    for key, value in expected.items():
        if value is None:
            assert got[key] is None, key
        else:
            assert got[key] == pytest.approx(value, abs=1e-12), key


@pytest.mark.parametrize(("matrix", "expected"), [(R2, R2_EXPECTED), (R3, R3_EXPECTED)])
def test_summarize_matches_hand_computation(matrix, expected):
    assert_metrics(metrics.summarize(matrix), expected)
    assert_metrics(metrics.summarize(np.array(matrix)), expected)  # numpy input too


def test_individual_functions_on_the_4x3_matrix():
    assert metrics.average_accuracy(R3) == pytest.approx(0.75)
    assert metrics.backward_transfer(R3) == pytest.approx(-0.025)
    assert metrics.forward_transfer(R3) == pytest.approx(0.15)
    assert metrics.forgetting(R3) == pytest.approx(0.05)
    assert metrics.learning_accuracy(R3) == pytest.approx((0.8 + 0.9 + 0.6) / 3)


def test_forgetting_max_runs_over_rows_1_to_t_minus_1_only():
    wrong_with_row0 = np.mean([max(0.99, 0.80, 0.85) - 0.70, max(0.10, 0.20, 0.90) - 0.95])
    wrong_with_last = np.mean([max(0.80, 0.85, 0.70) - 0.70, max(0.20, 0.90, 0.95) - 0.95])
    value = metrics.forgetting(R3)
    assert value != pytest.approx(wrong_with_row0)
    assert value != pytest.approx(wrong_with_last)
    assert value < 0.06  # the negative forgetting of task 2 is kept


def test_single_task_bwt_fwt_forgetting_undefined():
    got = metrics.summarize([[0.1], [0.9]])
    assert_metrics(
        got, {"acc": 0.9, "bwt": None, "fwt": None, "forgetting": None, "learning_accuracy": 0.9}
    )


def test_no_task_learned_yet_everything_undefined():
    got = metrics.summarize([[0.1, 0.2, 0.3]])
    assert all(v is None for v in got.values())


def test_partial_matrix_reports_the_tasks_learned_so_far():
    # R3 after 2 of 3 tasks: metrics over tasks 1..2 only (column 3 ignored).
    got = metrics.summarize(R3[:3])
    assert_metrics(
        got,
        {
            "acc": (0.85 + 0.90) / 2,
            "bwt": 0.85 - 0.80,
            "fwt": 0.20 - 0.10,
            "forgetting": 0.80 - 0.85,
            "learning_accuracy": (0.80 + 0.90) / 2,
        },
    )
    partial_t1 = metrics.summarize(R3[:2])
    assert partial_t1["acc"] == pytest.approx(0.80)
    assert partial_t1["bwt"] is None


@pytest.mark.parametrize(
    "bad",
    [
        [0.1, 0.2],  # 1-D
        np.zeros((0, 3)),  # no rows
        np.zeros((4, 2)),  # more rows than tasks + 1
        np.zeros((2, 2, 2)),  # 3-D
    ],
)
def test_bad_shapes_raise(bad):
    for fn in (
        metrics.average_accuracy,
        metrics.backward_transfer,
        metrics.forward_transfer,
        metrics.forgetting,
        metrics.learning_accuracy,
        metrics.summarize,
    ):
        with pytest.raises(ValueError, match="accuracy matrix"):
            fn(bad)


def test_strategy_result_metrics_follow_its_matrix():
    result = StrategyResult(strategy="finetune", params={}, train={}, accuracy_matrix=R3)
    assert result.tasks_done == 3
    assert_metrics(result.metrics(), R3_EXPECTED)
    as_dict = result.to_dict()
    assert as_dict["acc"] == pytest.approx(0.75) and as_dict["bwt"] == pytest.approx(-0.025)
    empty = StrategyResult(strategy="finetune", params={}, train={})
    assert empty.tasks_done == 0
    assert all(v is None for v in empty.metrics().values())
