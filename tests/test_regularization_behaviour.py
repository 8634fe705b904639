"""Behaviour on permuted digits (5 tasks, seed 0): protection, and L2's intransigence.

Training: 3 epochs per task, SGD lr 0.03, batch 10. Strengths are explicit here (the defaults are
the papers' values for other settings); each is the largest of a coarse grid that trains stably
at this learning rate, found once by hand and never tuned against these assertions' margins.
"""

from __future__ import annotations

import pytest

from lifelong.runner import learn_stream
from lifelong.strategies import create_strategy
from lifelong.streams import build_stream
from lifelong.train import TrainConfig

CONFIG = TrainConfig(epochs=3, batch_size=10, lr=0.03)
PROTECTING = {
    "ewc": {"lambda": 30},
    "online-ewc": {"lambda": 30},
    "si": {"c": 1.0, "xi": 0.1},
    "mas": {"lambda": 0.3},
    "rwalk": {"lambda": 10},
    "scp": {"lambda": 100},
}
MARGIN = 0.1  # "clearly above": BWT at least 0.1 (10 accuracy points) above fine-tuning's
LEARNS = 0.6  # learning accuracy (mean of R[j, j]) every protecting method must reach
# Measured (seeds 0-2): fine-tuning 0.86, the six methods 0.69-0.82, intransigent L2 0.33-0.36.
# Deliberate bug: the task's gradient discarded once a penalty exists (p.grad zeroed before the
# penalty's gradient is added): ewc, online-ewc and mas still beat fine-tuning's BWT, and fail
# only on learning accuracy (0.20).


@pytest.fixture(scope="module")
def stream():
    return build_stream("permuted", "digits", tasks=5, seed=0)


@pytest.fixture(scope="module")
def finetune(stream):
    return learn_stream(stream, "finetune", train=CONFIG, seed=0)


@pytest.mark.parametrize("name", list(PROTECTING))
def test_method_forgets_clearly_less_than_finetuning(name: str, stream, finetune) -> None:
    result = learn_stream(stream, create_strategy(name, PROTECTING[name]), train=CONFIG, seed=0)
    bwt, reference = result.metrics()["bwt"], finetune.metrics()["bwt"]
    assert reference < -0.3, "fine-tuning should forget a lot here"
    assert bwt > reference + MARGIN, f"{name}: BWT {bwt:.3f} vs fine-tuning {reference:.3f}"
    learned = result.metrics()["learning_accuracy"]
    assert learned > LEARNS, f"{name}: learning accuracy {learned:.3f}, it stopped learning"


@pytest.mark.slow
def test_si_forgets_less_over_three_seeds() -> None:
    """SI is the noisy one here (BWT margin 0.13 and 0.11 on seeds 1 and 2 against fine-tuning,
    measured once): over seeds 0-2 (stream and run) the mean BWT margin must be clearly above
    and SI must learn on every seed. Deliberate bug: SI's Ω left at zero (``+= 0 * ω`` in
    ``after_task``, i.e. fine-tuning) fails on seed 0 already."""
    margins, learned = [], []
    for seed in range(3):
        stream = build_stream("permuted", "digits", tasks=5, seed=seed)
        si = learn_stream(stream, create_strategy("si", PROTECTING["si"]), train=CONFIG, seed=seed)
        base = learn_stream(stream, "finetune", train=CONFIG, seed=seed)
        margins.append(si.metrics()["bwt"] - base.metrics()["bwt"])
        learned.append(si.metrics()["learning_accuracy"])
        assert margins[-1] > 0, f"seed {seed}: SI forgets as much as fine-tuning"
    assert sum(margins) / 3 > MARGIN, f"BWT margins over seeds 0-2: {margins}"
    assert min(learned) > LEARNS, f"learning accuracy over seeds 0-2: {learned}"


def test_l2_is_intransigent(stream, finetune) -> None:
    """b_i = 1 for every weight: old tasks are kept, but the newest task is learned poorly."""
    result = learn_stream(stream, create_strategy("l2", {"lambda": 1.0}), train=CONFIG, seed=0)
    newest, reference = result.accuracy_matrix[-1][-1], finetune.accuracy_matrix[-1][-1]
    assert newest < reference - 0.2, f"l2 newest-task accuracy {newest:.3f} vs {reference:.3f}"
    assert result.metrics()["bwt"] > finetune.metrics()["bwt"]  # it does not forget, though
