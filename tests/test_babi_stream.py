"""The babi stream: task order, scenarios, sizes, sampling and its errors (real files)."""

from __future__ import annotations

import pytest
import torch

from lifelong.errors import ConfigError
from lifelong.streams import Stream, build_stream

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def full(shared_data) -> Stream:
    return build_stream("babi", data_dir=shared_data)


def _decode(stream: Stream, grid: torch.Tensor) -> list[list[str]]:
    words = stream.info["vocabulary"]
    return [[words[i] for i in row.tolist() if i] for row in grid]


def test_default_stream_is_the_20_tasks_in_official_order(full):
    assert len(full) == 20 and full.scenario == "task" and full.input_kind == "tokens"
    assert full.tasks[0].name == "qa1 single supporting fact"
    assert full.tasks[19].name == "qa20 agents motivations"
    assert full.info["task_numbers"] == list(range(1, 21))
    assert full.input_shape == (51, 11)  # 50 statements + the question, 11 words at most
    for task in full:
        for split in (task.train, task.test):
            assert len(split) == 1000
            assert split.x.dtype == torch.int64 and split.scale is None and split.rows is None
            assert tuple(split.inputs(slice(0, 2)).shape[1:]) == full.input_shape


def test_task_scenario_gives_each_task_its_own_answer_columns(full):
    stop = 0
    for task in full:
        start, end = task.columns
        assert start == stop and end > start  # contiguous, disjoint heads
        stop = end
        for split in (task.train, task.test):
            assert ((split.y >= start) & (split.y < end)).all()
    assert stop == full.n_outputs == len(full.info["answer_words"]) == len(full.info["answer_ids"])
    words = full.info["vocabulary"]
    assert [words[i] for i in full.info["answer_ids"][:6]] == full.info["answer_words"][:6]
    yes_no = full.tasks[5]
    assert [full.info["answer_words"][c] for c in range(*yes_no.columns)] == ["no", "yes"]


def test_grid_and_label_match_the_file(full):
    task = full.tasks[0]
    rows = _decode(full, task.train.x[0])
    assert rows[-1] == ["where", "is", "mary"]
    assert rows[-3:-1] == [
        ["mary", "moved", "to", "the", "bathroom"],
        ["john", "went", "to", "the", "hallway"],
    ]
    assert all(not r for r in rows[:-3])
    assert full.info["answer_words"][task.train.y[0]] == "bathroom"


def test_domain_scenario_shares_one_head(shared_data):
    stream = build_stream("babi", data_dir=shared_data, tasks=3, scenario="domain", test_samples=50)
    assert {t.columns for t in stream} == {(0, stream.n_outputs)}
    assert stream.info["answer_words"] == sorted(stream.info["answer_words"])
    assert stream.n_outputs == 6  # tasks 1-3 all answer with the six places
    assert all(len(t.test) == 50 for t in stream)


def test_order_option_and_tasks(shared_data):
    stream = build_stream("babi", data_dir=shared_data, order=[19, "qa1", "counting"])
    assert stream.info["task_numbers"] == [19, 1, 7]
    assert [t.name.split()[0] for t in stream] == ["qa19", "qa1", "qa7"]
    assert stream.tasks[1].columns[0] == len(range(*stream.tasks[0].columns))
    first_two = build_stream("babi", data_dir=shared_data, order="19 1 7", tasks=2)
    assert first_two.info["task_numbers"] == [19, 1]
    assert first_two.input_shape == (11, 10)  # the grid fits the chosen tasks (10 statements)
    three = build_stream("babi", data_dir=shared_data, tasks=3, max_sentences=20)
    assert three.input_shape == (21, 7)


def test_samples_are_seeded(shared_data):
    def draw(seed: int) -> Stream:
        return build_stream(
            "babi", data_dir=shared_data, tasks=2, train_samples=30, test_samples=20, seed=seed
        )

    a, b, c = draw(3), draw(3), draw(4)
    assert len(a.tasks[0].train) == 30 and len(a.tasks[1].test) == 20
    assert torch.equal(a.tasks[0].train.x, b.tasks[0].train.x)
    assert torch.equal(a.tasks[1].train.y, b.tasks[1].train.y)
    assert not torch.equal(a.tasks[0].train.x, c.tasks[0].train.x)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scenario": "class"}, "task and domain scenarios"),
        ({"order": [1, 1]}, "repeats a task"),
        ({"order": [21]}, "unknown task"),
        ({"order": "qa99"}, "unknown task"),
        ({"order": [1, 2], "tasks": 3}, "names only 2 tasks"),
        ({"tasks": 21}, "between 1 and 20"),
        ({"train_samples": 1001}, "at most 1000"),
        ({"max_sentences": 0}, "max_sentences"),
        ({"sentences": 3}, "no option"),
    ],
)
def test_bad_settings_fail_with_one_line(shared_data, kwargs, message):
    with pytest.raises(ConfigError, match=message) as err:
        build_stream("babi", data_dir=shared_data, **kwargs)
    assert "\n" not in str(err.value)
