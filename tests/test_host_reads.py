"""The training step does not wait for the device (issue 17, item 6).

On a GPU, reading a tensor's value on the host (``.item()``, ``.tolist()``, ``bool(t)``, ...)
blocks until the device has finished everything queued before it. On a CPU nothing waits, so
these tests count what would: every host read of a tensor's value while ``Trainer.fit`` runs,
with the window between reads of the pending losses made endless (as on a GPU, where it is
0.25 s), so that the loop itself reads once, at the end of each fit.

Allowed, by design: the batch order's host-made indices (which part of a replay or joint
training set a batch's rows come from); GEM reads once per step whether a constraint is violated (the QP is solved
on the host, Lopez-Paz & Ranzato 2017) and the QP's inputs when it is; the factored per-sample
gradients check themselves against autograd once per model (:mod:`lifelong.strategies.samplewise`).
Not covered: PNN, PackNet and CPG read which tasks a batch holds to route each sample through
its task's network (one read per step).

Deliberate bugs they were run against: the loop's former ``loss.item()`` at every step (a read
per step in ``fit``); A-GEM's former ``if dot >= 0`` branch (a read per constrained step); the
reservoir's former ``keep.any()`` (a read per replay step); on_step fed from a window that drops
its last losses (the deferred losses differ from the per-step ones).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from lifelong.runner import learn_stream
from lifelong.strategies import STRATEGIES, create_strategy
from lifelong.streams import build_stream
from lifelong.train import TrainConfig, Trainer

READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy", "cpu")
ROUTING = {"pnn", "packnet", "cpg"}  # which tasks a batch holds is read at every step
SMALL = {
    "gem": {"memory_per_task": 16},
    "agem": {"memory_per_task": 16, "sample_size": 8},
    "replay": {"memory_size": 20},
    "icarl": {"memory_size": 20},
    "generative-replay": {"hidden": 16, "latent": 2, "generator_iterations": 4},
    "ewc": {"fisher_samples": 20},
    "online-ewc": {"fisher_samples": 20},
    "rwalk": {"update_every": 2},
    "scp": {"slices": 4},
}
CONFIG = TrainConfig(epochs=1, batch_size=16, lr=0.05)


class HostReads:
    """Host reads of tensor values made inside ``Trainer.fit``: ``(kind, file, function)``."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str, str]] = []
        self.fits = 0
        self.active = False

    def others(self, *allowed_functions: str) -> list[tuple[str, str, str]]:
        """The reads not made by the loop's end-of-fit read or by ``allowed_functions``."""
        allowed = {"_read_losses", *allowed_functions}
        return [r for r in self.log if r[2] not in allowed]


@pytest.fixture
def host_reads(monkeypatch) -> HostReads:
    reads = HostReads()
    for kind in READS:
        original = getattr(torch.Tensor, kind)

        def probe(self, *args, _original=original, _kind=kind, **kwargs):
            if reads.active:
                caller = sys._getframe(1).f_code
                reads.log.append((_kind, Path(caller.co_filename).name, caller.co_name))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, kind, probe)
    fit = Trainer.fit

    def probed_fit(self, *args, **kwargs):
        reads.active, reads.fits = True, reads.fits + 1
        try:
            return fit(self, *args, **kwargs)
        finally:
            reads.active = False

    monkeypatch.setattr(Trainer, "fit", probed_fit)
    monkeypatch.setattr(Trainer, "LOSS_READ_SECONDS", math.inf)
    return reads


def two_tasks(name: str):
    scenarios = STRATEGIES[name].scenarios
    scenario = "domain" if "domain" in scenarios else scenarios[0]
    kind = "permuted" if scenario == "domain" else "split"
    return build_stream(
        kind, "digits", tasks=2, train_samples=60, test_samples=20, scenario=scenario, seed=0
    )


def strategy(name: str):
    return STRATEGIES[name](**SMALL[name]) if name in SMALL else create_strategy(name)


@pytest.mark.parametrize(
    "name", sorted(n for n in STRATEGIES if n not in ROUTING | {"gem", "lamol"})
)
def test_training_steps_do_not_read_the_device(name, host_reads):
    learn_stream(two_tasks(name), strategy(name), hidden=[16], train=CONFIG)
    loop_reads = [r for r in host_reads.log if r[2] == "_read_losses"]
    assert 1 <= len(loop_reads) <= host_reads.fits  # one read of all losses per fit with steps
    others = host_reads.others("batches")  # which part a batch's rows come from: host indices
    checks = [r for r in others if r[1] == "samplewise.py"]  # once per model, the first pass
    assert [r for r in others if r not in checks] == []
    assert len(checks) <= 4  # the MLP's two layers' weight and bias


def test_gem_reads_only_whether_to_solve_its_qp(host_reads, monkeypatch):
    gem = strategy("gem")
    learn_stream(two_tasks("gem"), gem, hidden=[16], train=CONFIG)
    assert gem.constrained_steps > 0
    others = host_reads.others("solve_gem_dual", "batches")
    others = [r for r in others if r[1] != "samplewise.py"]
    assert others == [("__bool__", "gem.py", "after_backward")] * gem.constrained_steps


@pytest.mark.parametrize("name", ["finetune", "agem"])
def test_deferred_losses_are_the_per_step_losses_in_order(name, monkeypatch):
    def losses(window: float) -> list[tuple[int, float]]:
        monkeypatch.setattr(Trainer, "LOSS_READ_SECONDS", window)
        seen: list[tuple[int, float]] = []
        learn_stream(
            two_tasks(name),
            strategy(name),
            hidden=[16],
            train=CONFIG,
            on_step=lambda step, loss: seen.append((step, loss)),
        )
        return seen

    every_step, deferred = losses(0.0), losses(math.inf)
    assert [s for s, _ in every_step] == list(range(1, len(every_step) + 1))
    assert deferred == every_step


# ---- what the deferred read must keep from the per-step read (found in review) ---------------
WINDOWS = [0.0, math.inf]  # every step (a CPU), one read per fit (as on a GPU)


@pytest.mark.parametrize("window", WINDOWS)
def test_nan_inputs_read_through_a_dataloader_are_named(window, monkeypatch):
    from torch.utils.data import TensorDataset

    from lifelong.errors import TrainingDivergedError
    from lifelong.streams import from_datasets

    monkeypatch.setattr(Trainer, "LOSS_READ_SECONDS", window)
    x, y = torch.rand(40, 6), torch.arange(40) % 2
    test = TensorDataset(x[:8].clone(), y[:8])  # a test set is read (and checked) up front
    x[7, 2] = float("nan")  # a training sample, read lazily, batch by batch
    stream = from_datasets([(TensorDataset(x, y), test)], loader="dataloader")
    with pytest.raises(TrainingDivergedError, match="inputs contain NaN") as info:
        learn_stream(stream, "finetune", hidden=[8], train=CONFIG)
    assert "learning rate" not in str(info.value)


class OneElementLoss(STRATEGIES["finetune"]):
    """A loss of shape ``[1]`` (``backward`` and ``.item()`` accept it)."""

    name = "one-element-loss-test"

    def loss(self, model, batch, task):
        return super().loss(model, batch, task).reshape(1)


@pytest.mark.parametrize("window", WINDOWS)
def test_a_one_element_loss_is_read_as_a_number(window, monkeypatch):
    monkeypatch.setattr(Trainer, "LOSS_READ_SECONDS", window)
    seen: list[float] = []
    learn_stream(
        two_tasks("finetune"),
        OneElementLoss(),
        hidden=[16],
        train=CONFIG,
        on_step=lambda step, loss: seen.append(loss),
    )
    assert seen and all(isinstance(v, float) and math.isfinite(v) for v in seen)


class NanFromStep(STRATEGIES["finetune"]):
    """Fine-tuning whose loss is NaN from the ``at``-th step of the second task on."""

    name = "nan-from-step-test"

    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0

    def loss(self, model, batch, task):
        loss = super().loss(model, batch, task)
        if task.id == 1:
            self.calls += 1
            if self.calls >= self.at:
                return loss * math.nan
        return loss


@pytest.mark.parametrize("window", WINDOWS)
def test_no_curve_point_is_measured_after_the_loss_diverged(window, monkeypatch):
    from lifelong.errors import TrainingDivergedError

    monkeypatch.setattr(Trainer, "LOSS_READ_SECONDS", window)
    results = []
    config = TrainConfig(epochs=1, batch_size=16, lr=0.05, eval_every=2)
    with pytest.raises(TrainingDivergedError, match="step 7"):  # 4 steps of task 1, then 3
        learn_stream(
            two_tasks("finetune"), NanFromStep(3), hidden=[16], train=config, on_task=results.append
        )
    curve_steps = results[-1].curves["step"]
    assert curve_steps and max(curve_steps) < 7
