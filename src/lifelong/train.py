"""The training loop: fits one model through a stream with a strategy's hooks.

The loop knows nothing of files or the command line; :mod:`lifelong.runner` drives it task by
task and saves what it measures. Data stay tensors in memory. Randomness is kept apart by
purpose, each part seeded from the run seed only: the batch order comes from the trainer's own
generator, every draw of a strategy from the strategy's generator
(:attr:`~lifelong.strategies.base.Strategy.generator`, also behind its per-task hooks), and
only the model's own draws (initialisation, dropout) from the global torch RNG. Two strategies
of one run therefore train on the same batches in the same order, and a checkpoint of the
generators resumes a run exactly.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from lifelong import optimizers
from lifelong.errors import ConfigError, TrainingDivergedError
from lifelong.evaluate import evaluate_stream
from lifelong.optimizers import OptimizerFactory, SchedulerFactory
from lifelong.strategies.base import Batch, Strategy, TrainSet, derived_seed
from lifelong.streams.base import Stream, Task

if TYPE_CHECKING:
    from torch.optim import Optimizer
    from torch.optim.lr_scheduler import LRScheduler


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (each can be overridden per strategy: ``finetune:lr=0.03``).

    Attributes:
        epochs: passes over each task's training data (GEM setting: 1).
        iterations: optimizer steps per task instead (0: ``epochs`` passes); the loop passes
            over the task's data, reshuffled each time, until that many steps (the protocol of
            van de Ven & Tolias 2019: 2000 iterations per task on split MNIST).
        batch_size: samples per optimizer step (GEM setting: 10).
        optimizer: any optimizer of ``torch.optim`` as ``NAME[:key=value,...]`` (``sgd``,
            ``adamw:weight_decay=0.01``, ``sgd:momentum=0.9,nesterov=true``; see
            :mod:`lifelong.optimizers`), or from Python a factory ``params -> Optimizer``. A
            spec's ``lr``, ``momentum`` or ``weight_decay`` is the field of that name: the field
            takes the spec's value (a different value given to both is refused). Every value is
            checked here, by building the optimizer and scheduler once on a dummy parameter.
        scheduler: ``none``, a learning-rate scheduler as ``NAME[:key=value,...]`` (``cosine``,
            ``step:step_size=100``, ``onecycle``, ``cosine:warmup=50``), or from Python a factory
            ``optimizer -> LRScheduler`` stepped after every optimizer step.
        lr: learning rate (GEM uses 0.1 with plain SGD on permuted MNIST).
        momentum: momentum, for optimizers that take one (SGD, RMSprop).
        weight_decay: weight decay of the optimizer (L2 for SGD/Adam, decoupled for AdamW).
        eval_every: also evaluate every task every N optimizer steps (0: only at task ends).
        eval_batch_size: most samples per forward pass during evaluation (on a CPU, passes are
            also kept to about 4 MiB of inputs: see :mod:`lifelong.evaluate`).
        reset_optimizer: start a fresh optimizer and scheduler at each task (the usual protocol,
            as in GEM and FACIL); when False both carry over and are checkpointed.
    """

    epochs: int = 1
    iterations: int = 0
    batch_size: int = 10
    optimizer: str | OptimizerFactory = "sgd"
    scheduler: str | SchedulerFactory = "none"
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    eval_every: int = 0
    eval_batch_size: int = 8192
    reset_optimizer: bool = True

    def __post_init__(self) -> None:
        optimizers.check_optimizer(self.optimizer)
        optimizers.check_scheduler(self.scheduler)
        for key in self.__dataclass_fields__:
            if key not in ("optimizer", "scheduler"):  # specs or factories, checked above
                object.__setattr__(self, key, train_value(key, getattr(self, key)))
        names = {
            "lr": "--lr",
            "momentum": "momentum (--momentum)",
            "weight_decay": "weight_decay (--weight-decay)",
        }
        in_spec = optimizers.spec_values(self.optimizer)
        for key, value in in_spec.items():  # the spec's value is the field's: recorded as used
            where = f"optimizer {self.optimizer!r}: "
            value = train_value(key, value, where)
            given = getattr(self, key)
            if given not in (value, getattr(TrainConfig, key)):
                raise ConfigError(f"{where}{key}={value}, but {key}={given}; give {key} once")
            object.__setattr__(self, key, value)
            names[key] = f"{key} in optimizer {self.optimizer!r}"
        top = optimizers.FLOAT32_MAX
        checks = [
            (self.iterations >= 0, f"iterations must be >= 0, got {self.iterations}"),
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (
                0 < self.lr <= top,
                f"{names['lr']} must be positive and at most {top:.4g}, got {self.lr}",
            ),
            (
                0 <= self.momentum <= top,
                f"{names['momentum']} must be a finite number >= 0 and at most {top:.4g}, "
                f"got {self.momentum}",
            ),
            (
                0 <= self.weight_decay <= top,
                f"{names['weight_decay']} must be a finite number >= 0 and at most {top:.4g}, "
                f"got {self.weight_decay}",
            ),
            (self.eval_every >= 0, f"--eval-every must be >= 0, got {self.eval_every}"),
            (self.eval_batch_size >= 1, "eval_batch_size must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self.check_values()

    def check_values(self, device: Any = None) -> None:
        """The optimizer's and scheduler's values, built once on a dummy parameter
        (:func:`~lifelong.optimizers.check_values`; with ``device``, every optimizer)."""
        optimizers.check_values(
            self.optimizer,
            self.scheduler,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            device=device,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["optimizer"] = optimizers.describe(self.optimizer)
        d["scheduler"] = optimizers.describe(self.scheduler)
        return d


TRAIN_KEYS = tuple(TrainConfig.__dataclass_fields__)
_KIND_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "a name"}
MAX_INT = 2**63 - 1  # no setting needs more; larger whole numbers overflow torch and NumPy
EVALUATION_KEYS = ("eval_every", "eval_batch_size")
"""Settings of when and in what batches evaluation runs: they change no number a run learns, so
a resume may change them."""


def train_value(key: str, value: Any, where: str = "") -> Any:
    """``value`` as the type of TrainConfig's field ``key`` (a whole float as an int, an int as
    a float); one :class:`ConfigError` naming the field for any other type."""
    return value_of_kind(type(getattr(TrainConfig, key)), value, f"{where}{key}")


def value_of_kind(kind: type, value: Any, what: str) -> Any:
    """``value`` as ``kind`` (bool, int, float or str; a whole float as an int, an int as a
    float); one :class:`ConfigError` ``WHAT must be ...`` for any other type."""
    if kind is bool:
        ok = isinstance(value, bool | np.bool_)
    elif kind in (int, float):
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if ok and kind is int and not isinstance(value, numbers.Integral):
            ok = math.isfinite(value) and float(value).is_integer()
        if ok and kind is int and abs(value) > MAX_INT:
            raise ConfigError(f"{what} must be a whole number below 2**63, got {value!r}")
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(f"{what} must be {_KIND_NAMES[kind]}, got {value!r}")
    return kind(value)


Pending = tuple[int, Tensor, "tuple[Tensor, Tensor] | None"]
"""A step not yet read by the host: its global number, its loss and the smallest and largest of
its floating-point inputs (both still on the device)."""


def _extremes(x: Tensor) -> tuple[Tensor, Tensor] | None:
    """``(min, max)`` of the inputs, on the device (no wait): both are finite exactly when every
    input is (a NaN propagates to both). ``None`` for integer inputs. One reduction, a tenth of
    the cost of ``isfinite(x).all()`` here."""
    return torch.aminmax(x) if x.is_floating_point() else None


def _finite(extremes: tuple[Tensor, Tensor] | None) -> bool:
    return extremes is None or all(math.isfinite(v.item()) for v in extremes)


ONE_VALUE_PER_CHANNEL = "Expected more than 1 value per channel when training"
"""How torch's batch norm refuses, in training mode, a batch with one value per channel (one
sample and no spatial positions)."""


def batch_size_for(sizes: set[int], near: int) -> int:
    """The batch size nearest ``near`` (the larger on a tie) that leaves no batch of one sample
    for any data set of ``sizes`` samples (each at least 2)."""
    candidates = sorted(range(2, max(sizes) + 2), key=lambda b: (abs(b - near), -b))
    return next(b for b in candidates if all(n % b != 1 for n in sizes))


@dataclass
class Curves:
    """Accuracy on every task recorded every ``eval_every`` steps while training."""

    step: list[int] = field(default_factory=list)
    task: list[int] = field(default_factory=list)
    accuracy: list[list[float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, list]:
        return {"step": self.step, "task": self.task, "accuracy": self.accuracy}


class Trainer:
    """Trains ``model`` through ``stream`` with ``strategy``; one instance per strategy run.

    Attributes:
        step: optimizer steps taken so far over the whole stream.
        train_seconds, eval_seconds: wall time spent training (hooks included) and evaluating.
        curves: accuracies recorded every ``config.eval_every`` steps.
        footprint: bytes the strategy keeps by kind (:meth:`Strategy.footprint`) for the last
            task learned: the larger of the values at the end of training (frozen copies held
            while the task trains included) and after ``after_task`` (consolidated state).
        generator: the CPU generator of the batch order. :meth:`learn` reseeds it at the start
            of every task from ``seed`` and the task alone, so a task's batches do not depend on
            what earlier tasks trained (a strategy that retrains after pruning, or trains more
            epochs, does not change the batches of later tasks).

    Reading a loss back (``loss.item()``) makes the host wait until the device has finished
    the step. On a GPU the loop therefore keeps each step's loss on the device and reads all
    pending ones at once, every :attr:`LOSS_READ_SECONDS`, at the end of every ``fit`` and when
    a step fails, so that the host queues steps ahead of the device. ``on_step`` gets every
    step's loss, in order, at those reads (on a CPU, where a read costs nothing, at the end of
    each step), and always before a curve point is evaluated. A loss that is not finite stops
    training at the next read and is reported with the step it occurred at (steps taken after
    it, at most one read window, are not undone: the run has failed).
    """

    LOSS_READ_SECONDS: float | None = None
    """Seconds between reads of the pending losses; ``None``: 0 on a CPU (every step), 0.25 on
    other devices (progress displays and loggers are updated this often)."""

    def __init__(
        self,
        model: nn.Module,
        strategy: Strategy,
        stream: Stream,
        config: TrainConfig,
        label: str = "",
        on_step: Callable[[int, float], None] | None = None,
        on_fit: Callable[[Task, int], None] | None = None,
        seed: int = 0,
    ) -> None:
        self.model, self.strategy, self.stream, self.config = model, strategy, stream, config
        self.label = label or strategy.name
        self.on_step = on_step
        self.on_fit = on_fit  # (task, optimizer steps of this fit): progress displays
        self.step = 0
        self.train_seconds = 0.0
        self.eval_seconds = 0.0
        self.curves = Curves()
        self.optimizer: Optimizer | None = None
        self.scheduler: LRScheduler | None = None
        self._interval = "step"
        self._params: list[nn.Parameter] = []
        self.footprint: dict[str, int] = {}
        self.seed = seed
        self.generator = torch.Generator().manual_seed(derived_seed(seed, "batches"))

    # ---- optimizer -----------------------------------------------------------------------------
    def _optimizer_for(self, params: list[nn.Parameter], steps: int = 1) -> Optimizer:
        """The optimizer (and scheduler) for one ``fit``: new unless ``reset_optimizer`` is off
        and the parameters are the same. ``steps``: optimizer steps of this fit."""
        same = [id(p) for p in params] == [id(p) for p in self._params]
        if self.optimizer is None or self.config.reset_optimizer or not same:
            c = self.config
            self.optimizer = optimizers.build_optimizer(
                c.optimizer,
                params,
                lr=c.lr,
                momentum=c.momentum,
                weight_decay=c.weight_decay,
                fast=c.scheduler == "none",
            )
            length = c.epochs if optimizers.scheduler_interval(c.scheduler) == "epoch" else steps
            self.scheduler, self._interval = optimizers.build_scheduler(
                c.scheduler, self.optimizer, length
            )
            self._params = params
        return self.optimizer

    def optimizer_state(self) -> dict[str, Any] | None:
        """Optimizer and scheduler state when they carry over between tasks (for checkpoints)."""
        if self.config.reset_optimizer or self.optimizer is None:
            return None
        scheduler = self.scheduler.state_dict() if self.scheduler is not None else None
        return {"optimizer": self.optimizer.state_dict(), "scheduler": scheduler}

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        params = self.strategy.parameters_to_train(self.model)
        self._optimizer_for(params)
        if "optimizer" not in state:  # a checkpoint written before schedulers existed
            state = {"optimizer": state, "scheduler": None}
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])

    # ---- evaluation ----------------------------------------------------------------------------
    def evaluate(self, split: str = "test") -> list[float]:
        """Accuracy on every task's ``split`` now (time counted as evaluation)."""
        start = time.perf_counter()
        accuracies = evaluate_stream(
            self.strategy, self.model, self.stream, self.config.eval_batch_size, split
        )
        self.eval_seconds += time.perf_counter() - start
        return accuracies

    # ---- training ------------------------------------------------------------------------------
    def fit(self, task: Task, data: TrainSet | None = None, epochs: int | None = None) -> None:
        """Run ``epochs`` passes of the strategy's objective over ``data`` (default: the task's
        training data as the strategy defines it). Strategies call this from ``after_task``."""
        if data is None:
            data = self.strategy.training_data(task, self.stream.tasks[: task.id + 1])
        if data is None or len(data) == 0:
            return
        params = self.strategy.parameters_to_train(self.model)
        if not params:
            return
        per_epoch = math.ceil(len(data) / self.config.batch_size)
        if epochs is None and self.config.iterations:
            steps = self.config.iterations  # passes over the data until that many steps
            epochs = math.ceil(steps / per_epoch)
        else:
            epochs = epochs or self.config.epochs
            steps = epochs * per_epoch
        optimizer = self._optimizer_for(params, steps)
        if self.on_fit is not None:
            self.on_fit(task, steps)
        scheduler, per_step = self.scheduler, self._interval == "step"
        model, strategy, eval_every = self.model, self.strategy, self.config.eval_every
        model.train()
        pending: list[Pending] = []  # steps whose loss is still on the device
        last_read, window = time.perf_counter(), self.LOSS_READ_SECONDS
        batch = None
        try:
            for _ in range(epochs):
                for batch in data.batches(self.config.batch_size, generator=self.generator):
                    if steps == 0:
                        break
                    steps -= 1
                    optimizer.zero_grad(set_to_none=True)
                    loss = strategy.loss(model, batch, task)
                    pending.append((self.step + 1, loss.detach(), _extremes(batch.x)))
                    if window is None:
                        window = 0.0 if loss.device.type == "cpu" else 0.25
                    loss.backward()
                    strategy.after_backward(model, batch, task)
                    optimizer.step()
                    if scheduler is not None and per_step:
                        scheduler.step()
                    strategy.after_step(model, batch, task)
                    self.step += 1
                    now = time.perf_counter()
                    if now - last_read >= window or len(pending) >= 1024:
                        self._read_losses(pending, task)
                        last_read = now
                    if eval_every and self.step % eval_every == 0:
                        self._read_losses(pending, task)  # no curve point of a diverged model
                        self._record_curve(task)
                if scheduler is not None and not per_step:
                    scheduler.step()
        except Exception as err:
            # A loss that diverged earlier in the window is what made a later step fail (a QP
            # on NaN gradients, say): report that instead. Any other failure of the read leaves
            # the step's own error to explain (as does an interrupt).
            try:
                self._read_losses(pending, task)
            except TrainingDivergedError:
                raise
            except Exception:
                pass
            if isinstance(err, ValueError) and str(err).startswith(ONE_VALUE_PER_CHANNEL):
                raise ConfigError(self._one_sample(task, len(data), batch)) from None
            raise
        self._read_losses(pending, task)

    def _read_losses(self, pending: list[Pending], task: Task) -> None:
        """Read the pending steps' losses back to the host in one synchronisation; hand them to
        ``on_step`` in order; stop at the first that is not finite."""
        if not pending:
            return
        taken = list(pending)
        pending.clear()  # read once, even if the read itself fails
        losses = [loss if loss.dim() == 0 else loss.reshape(()) for _, loss, _ in taken]
        values = [losses[0].item()] if len(losses) == 1 else torch.stack(losses).tolist()
        for (step, _, extremes), value in zip(taken, values, strict=True):
            if not math.isfinite(value):
                raise TrainingDivergedError(self._divergence(value, task, step, _finite(extremes)))
            if self.on_step is not None:
                self.on_step(step, value)

    def _divergence(self, value: float, task: Task, step: int, inputs_finite: bool) -> str:
        """Why the loss is not finite: inputs with NaN/inf are named, else the step size."""
        where = f"{self.label}: the loss became {value} at task {task.id + 1}, step {step}"
        if not inputs_finite:
            return f"{where}: the task's inputs contain NaN or infinite values; clean the data"
        return f"{where}; lower the learning rate or the method's strength"

    def _one_sample(self, task: Task, size: int, batch: Batch | None) -> str:
        """Why batch norm refused a training-mode pass of one sample, and what to do.

        Caught at the step rather than refused before training: whether a pass of one sample
        fails depends on the model (batch norm over spatial positions takes one sample), the
        strategy (replay adds stored samples to the batch; GEM and A-GEM pass memories of their
        own) and on whether the steps reach the last batch (``iterations``); the failing step
        alone knows all three. A batch of one sample is the batch size's doing; a larger batch
        means that one of the method's own passes had one sample."""
        where = f"{self.label}: task {task.id + 1}"
        reason = "the model's batch normalisation cannot train on one sample"
        if batch is None or len(batch) != 1:
            return (
                f"{where}: one of the method's own training passes had one sample, and {reason}; "
                "give the method more samples per pass (its memory) or use a model without "
                "batch normalisation"
            )
        if size == 1:
            return (
                f"{where} has one training sample, and {reason}; give the task more samples or "
                "use a model without batch normalisation"
            )
        batch_size = self.config.batch_size
        if batch_size == 1:
            what = "batch size 1 gives batches of one sample"
        else:
            what = f"batch size {batch_size} leaves a last batch of one sample"
        sizes = {size, *(n for n in (len(t.train) for t in self.stream.tasks) if n > 1)}
        return (
            f"{where} trains on {size} samples, so {what}, and {reason}; choose another batch "
            f"size, e.g. {batch_size_for(sizes, batch_size)} (--batch-size), or use a model "
            "without batch normalisation"
        )

    def _record_curve(self, task: Task) -> None:
        accuracies = self.evaluate()
        self.curves.step.append(self.step)
        self.curves.task.append(task.id)
        self.curves.accuracy.append(accuracies)

    def learn(self, task: Task) -> None:
        """Everything that happens for one task: the strategy's hooks around ``fit``."""
        start, eval_before = time.perf_counter(), self.eval_seconds
        self.generator.manual_seed(derived_seed(self.seed, f"batches of task {task.id}"))
        with self.strategy.own_rng():
            self.strategy.before_task(task, self.model)
        self.fit(task)
        during = self.strategy.footprint(self.model)
        with self.strategy.own_rng():
            self.strategy.after_task(
                task, self.model, lambda data=None, epochs=None: self.fit(task, data, epochs)
            )
        after = self.strategy.footprint(self.model)
        self.footprint = {k: max(during.get(k, 0), after.get(k, 0)) for k in {**during, **after}}
        self.train_seconds += time.perf_counter() - start - (self.eval_seconds - eval_before)
