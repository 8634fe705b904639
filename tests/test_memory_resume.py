"""Every memory strategy resumes exactly from a checkpoint written after a task."""

from __future__ import annotations

import pytest

from lifelong.runner import learn_stream
from lifelong.strategies import create_strategy
from lifelong.streams import build_stream
from lifelong.train import TrainConfig

CONFIG = TrainConfig(epochs=1, batch_size=16, lr=0.1)


class Interrupted(Exception):
    pass


def _run(stream, name, params, checkpoint=None, stop_after=None):
    def on_task(result):
        if stop_after is not None and result.tasks_done == stop_after:
            raise Interrupted

    strategy = create_strategy(name, params)
    try:
        return learn_stream(stream, strategy, train=CONFIG, checkpoint=checkpoint, on_task=on_task)
    except Interrupted:
        return None


@pytest.mark.parametrize(
    ("name", "params", "scenario"),
    [
        ("gem", {"memory_per_task": 32}, "task"),
        ("agem", {"memory_per_task": 32, "sample_size": 16}, "domain"),
        ("replay", {"memory_size": 50}, "class"),
        ("replay", {"memory_size": 50, "selection": "class-balanced"}, "task"),
        (
            "generative-replay",
            {"hidden": 32, "latent": 4, "generator_iterations": 10, "generator_batch_size": 16},
            "class",
        ),
        ("lwf", {}, "task"),
        ("icarl", {"memory_size": 30}, "class"),
    ],
)
def test_resume_continues_exactly(tmp_path, name, params, scenario):
    stream = build_stream("split", "digits", tasks=3, scenario=scenario, seed=0)
    full = _run(stream, name, params)
    path = tmp_path / "checkpoint.pt"
    assert _run(stream, name, params, checkpoint=path, stop_after=1) is None
    assert path.exists()
    resumed = _run(stream, name, params, checkpoint=path)
    assert resumed.accuracy_matrix == full.accuracy_matrix
    assert resumed.extra["memory"] == full.extra["memory"]
