"""Running strategies through a stream: the library entry point and the checkpointed experiment.

:func:`learn_stream` is the few-lines Python API (no files). :func:`run_experiment` runs every
strategy of a :class:`~lifelong.config.RunConfig`, writing results and a checkpoint after each task
so that ``--resume`` continues exactly where a run stopped.
"""

from __future__ import annotations

import json
import numbers
import random
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lifelong.callbacks import Callback, RunInfo
from lifelong.checkpoint import checkpoint_bytes, load_checkpoint
from lifelong.errors import ConfigError, TrainingDivergedError
from lifelong.models import build_model, count_parameters, default_model
from lifelong.resources import peak_device_mb, peak_rss_mb, reset_peak_memory
from lifelong.results import StrategyResult, atomic_write_bytes
from lifelong.strategies.base import Strategy, create_strategy, tensor_bytes
from lifelong.streams.base import Stream, Task
from lifelong.train import EVALUATION_KEYS, MAX_INT, TrainConfig, Trainer


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        # plain data only (checkpoints load with weights_only=True): the key array as a tensor
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; a CUDA request without CUDA is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda was asked for but no CUDA GPU is available; use --device cpu"
        )
    return dev


@dataclass
class Checkpoint:
    """What is saved after each task (one ``torch.save``, so shared references survive).

    Loaded with :func:`lifelong.checkpoint.load_checkpoint`: plain data, tensors and the
    library's own safe types only, so a planted pickle never runs. ``run`` names the run that
    wrote it (:func:`run_identity`); :meth:`load` refuses a checkpoint of another run."""

    model: nn.Module
    strategy: dict[str, Any]
    optimizer: dict[str, Any] | None  # optimizer and scheduler, when they carry over
    trainer: dict[str, Any]
    result: dict[str, Any]
    rng: dict[str, Any]
    run: str | None = None  # run_identity() of the run that wrote it (None: an older file)

    def save(self, path: Path) -> None:
        atomic_write_bytes(path, checkpoint_bytes(self.__dict__))

    @classmethod
    def load(
        cls, path: Path, device: torch.device, trusted: Iterable[type] = (), run: str | None = None
    ) -> Checkpoint:
        """Load safely; ``trusted``: classes this process built for the run (the user's model).
        ``run``: this run's :func:`run_identity`; a checkpoint written by another run (another
        strategy, setting, seed, stream or training settings) is refused with one line."""
        required = tuple(n for n in cls.__dataclass_fields__ if n != "run")
        data = load_checkpoint(path, device, trusted=trusted, keys=required)
        written = data.get("run")
        if run is not None and written is not None and written != run:
            raise ConfigError(_other_run(path, json.loads(written), json.loads(run)))
        return cls(**{k: data[k] for k in required}, run=written)


def run_identity(strategy: Strategy, seed: int, stream: Stream, train: TrainConfig) -> str:
    """What makes a run the same run for a resume, as canonical JSON: the strategy's name and
    settings, the seed, the stream's description and the training settings (not those of
    evaluation, :data:`~lifelong.train.EVALUATION_KEYS`, which a resume may change)."""
    identity = {
        "strategy": strategy.name,
        "params": strategy.params(),
        "seed": seed,
        "stream": stream.describe(),
        "train": {k: v for k, v in train.to_dict().items() if k not in EVALUATION_KEYS},
    }
    return json.dumps(identity, sort_keys=True, default=str)


def _other_run(path: Path, written: dict[str, Any], wanted: dict[str, Any]) -> str:
    differ = _differences(written, wanted)
    if differ and differ[0][0] == "strategy":  # another method: its settings differ by nature
        differ = [d for d in differ if not d[0].startswith("params.")]
    shown = "; ".join(f"{key}: {there} there, {here} here" for key, there, here in differ[:3])
    more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
    return (
        f"checkpoint {path} was written by another run ({shown}{more}); resume with that run's "
        "settings, or delete the checkpoint (or give another path) to start this run afresh"
    )


def _differences(there: Any, here: Any, key: str = "") -> list[tuple[str, str, str]]:
    """``(dotted key, value there, value here)`` of every setting that differs, in order."""
    if isinstance(there, dict) and isinstance(here, dict):
        order = ("strategy", "params", "seed", "stream", "train")
        keys = [k for k in order if k in there or k in here] if not key else []
        keys += [k for k in (*there, *here) if k not in keys]
        return [
            found
            for k in dict.fromkeys(keys)
            for found in _differences(there.get(k), here.get(k), f"{key}.{k}" if key else k)
        ]
    if there == here:
        return []
    return [(key, _short(there), _short(here))]


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def prescribed_settings(train: TrainConfig | None, strategy: Strategy) -> TrainConfig:
    """The training settings of a run: ``train`` as given, or, when it is ``None``, the settings
    the strategy's paper prescribes (``Strategy.train_defaults``) on :class:`TrainConfig`'s
    defaults. A ``train`` that leaves every prescribed field at TrainConfig's default (a
    run-wide ``TrainConfig(epochs=3)`` given to generative replay) most likely did not mean to
    drop them: that case is used as given, with a warning that says how to keep them."""
    prescribed = strategy.train_defaults
    if train is None:
        return TrainConfig(**prescribed)
    default = TrainConfig()
    if prescribed and all(
        getattr(train, k) == getattr(default, k) != v for k, v in prescribed.items()
    ):
        wanted = ", ".join(f"{k}={v!r}" for k, v in prescribed.items())
        warnings.warn(
            f"{strategy.name}: the train= given leaves its paper's settings ({wanted}) at "
            "TrainConfig's defaults, so they are not used (the command line uses them); set "
            "them in train=, or pass train=None",
            UserWarning,
            stacklevel=3,
        )
    return train


def check_arguments(
    stream: Any, strategy: Any, model: Any, hidden: list[int] | None, seed: Any
) -> None:
    """One line for each mistake in the arguments of :func:`learn_stream` a user can make."""
    if not isinstance(stream, Stream):
        raise ConfigError(
            "stream must be a lifelong stream (build_stream, from_tensors or from_datasets), "
            f"got {type(stream).__name__}"
        )
    if isinstance(strategy, type):
        raise ConfigError(
            f"strategy must be a strategy object or name, got the class {strategy.__name__}; "
            f"pass {strategy.__name__}(...) or its name"
        )
    if not isinstance(strategy, (str, Strategy)):
        raise ConfigError(
            f"strategy must be a registered name or a lifelong.Strategy, got {type(strategy).__name__}"
        )
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= MAX_INT:
        raise ConfigError(f"seed must be an integer between 0 and 2**63-1, got {seed!r}")
    if hidden is not None and isinstance(model, nn.Module):
        raise ConfigError(
            "hidden= sets the widths of a registered model; your own module has its own, so "
            "leave hidden out"
        )


def check_user_model(model: nn.Module, stream: Stream, device: torch.device) -> None:
    """One forward pass on one training sample before training: a model that does not take the
    stream's inputs or return ``[B, n_outputs]`` logits is refused with one line saying what it
    must take and return (evaluation mode, no gradient: nothing about the model changes)."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a registered name or an nn.Module, got {type(model)}")
    x = stream.tasks[0].train.inputs(slice(0, 1))
    need = (
        f"it must take inputs of shape [B, {', '.join(map(str, x.shape[1:]))}] ({x.dtype}) and "
        f"return [B, {stream.n_outputs}] logits, one column per output of the stream"
    )
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            out = model.to(device)(x.to(device))
    except Exception as err:  # the user's code: any failure is a mismatch to report in one line
        text = " ".join(str(err).split())[:200]
        raise ConfigError(
            f"your model fails on one sample ({type(err).__name__}: {text}); {need}"
        ) from None
    finally:
        model.train(was_training)
    shape = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
    if not isinstance(out, Tensor) or list(out.shape) != [1, stream.n_outputs]:
        raise ConfigError(f"your model returns {shape} for one sample; {need}")


def learn_stream(
    stream: Stream,
    strategy: Strategy | str,
    *,
    model: nn.Module | str | None = None,
    hidden: list[int] | None = None,
    train: TrainConfig | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    label: str | None = None,
    checkpoint: Path | None = None,
    on_task: Callable[[StrategyResult], None] | None = None,
    on_step: Callable[[int, float], None] | None = None,
    callbacks: Sequence[Callback] = (),
    init_model: bool = True,
) -> StrategyResult:
    """Train one model through ``stream`` with ``strategy``; return the accuracy matrix and metrics.

    Args:
        stream: the task stream.
        strategy: a strategy instance or registered name.
        model: a registered model name or your own ``nn.Module`` producing ``stream.n_outputs``
            logits (it is trained in place); ``None``: the default model for the stream's inputs
            (``mlp``; ``memnet`` for bAbI).
        hidden: hidden widths for a registered model.
        train: training settings, used as given; ``None``: :class:`~lifelong.train.TrainConfig`'s
            defaults with the settings the strategy's paper prescribes in their place
            (``Strategy.train_defaults``: generative replay's Adam, lr 0.001, batches of 128,
            2000 iterations per task), as on the command line (:func:`prescribed_settings`).
        seed: the run seed: it seeds the global generators before the model is built (model
            initialisation), the trainer's batch order and the strategy's own generator; a
            model you built yourself is
            re-initialised from it (every submodule's ``reset_parameters()``, as PyTorch's layers
            initialise themselves) unless ``init_model=False``, so the same seed gives the same
            run whatever the model held before.
        init_model: re-initialise your own ``model`` from ``seed`` (default); ``False`` trains
            the weights it has (a pretrained model). Parameters of modules without
            ``reset_parameters`` keep their values either way.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        label: the name used in messages (default: the strategy's name).
        checkpoint: if given, a checkpoint is written there after each task and, when the file
            exists, the run resumes from it.
        on_task: called with the partial result after each task (used to save results.json).
        on_step: called with (global step, loss) for each optimizer step, in order: on a CPU
            as the step ends, on a GPU at the loop's reads of its pending losses (every 0.25 s,
            :attr:`~lifelong.train.Trainer.LOSS_READ_SECONDS`), so the host never waits per step.
        callbacks: :class:`~lifelong.callbacks.Callback` objects (progress display, loggers)
            told of every step, task and the end of the run with the label, seed and task.

    A :class:`~lifelong.errors.TrainingDivergedError` is re-raised after the finished tasks'
    results are stored in the result passed to ``on_task`` (status ``failed``).
    """
    check_arguments(stream, strategy, model, hidden, seed)
    seed = int(seed)
    dev = resolve_device(device)
    strategy = create_strategy(strategy) if isinstance(strategy, str) else strategy
    if "stream" in vars(strategy):  # set by Strategy.prepare: this object has run before
        raise ConfigError(
            f"this {strategy.name} strategy object has already been through a run, and its state "
            "(memories, penalties, masks) would carry over into this one; create a new one for "
            f"each run (create_strategy({strategy.name!r}, ...)) or pass the strategy's name"
        )
    train = prescribed_settings(train, strategy)
    train.check_values(dev)  # every optimizer and scheduler, on the run's device
    label = label or strategy.name
    strategy.check_scenario(stream.scenario)
    seed_everything(seed)
    stream = stream.to(dev) if dev.type != "cpu" else stream
    if model is None:
        model = default_model(stream.input_kind)
    if isinstance(model, str):
        net = build_model(model, stream, hidden)
    else:
        check_user_model(model, stream, dev)
        net = model
    if not isinstance(model, str) and init_model:
        for module in net.modules():
            if callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
    model_bytes = tensor_bytes(net)
    trainable_flags = [(p, p.requires_grad) for p in net.parameters()]
    strategy.seed(seed)
    with strategy.own_rng():
        net = strategy.prepare(net.to(dev), stream)
    result = StrategyResult(
        strategy=strategy.name, params=strategy.params(), train=train.to_dict(), seed=seed
    )
    result.model_bytes = model_bytes
    result.not_applicable = strategy.not_applicable(stream.scenario)
    reset_peak_memory(dev)
    built = {type(m) for m in net.modules()}  # the user's own model classes may be resumed
    identity = run_identity(strategy, seed, stream, train)
    state = (
        Checkpoint.load(checkpoint, dev, built, run=identity)
        if checkpoint is not None and checkpoint.exists()
        else None
    )
    if state is not None:
        net = state.model
        strategy.load_state_dict(state.strategy)
    info = RunInfo(
        label=label,
        strategy=strategy.name,
        seed=seed,
        n_tasks=len(stream),
        settings={
            "strategy": strategy.name,
            "params": strategy.params(),
            "train": train.to_dict(),
            "seed": seed,
            "device": str(dev),
            "stream": stream.describe(),
        },
    )
    current = {"task": 0}

    def fit_started(task: Task, steps: int) -> None:
        current["task"] = task.id
        for cb in callbacks:
            cb.fit_start(info, task.id, steps)

    def stepped(step: int, loss: float) -> None:
        if on_step is not None:
            on_step(step, loss)
        for cb in callbacks:
            cb.step(info, current["task"], step, loss)

    trainer = Trainer(
        net,
        strategy,
        stream,
        train,
        label=label,
        on_step=stepped if on_step is not None or callbacks else None,
        on_fit=fit_started if callbacks else None,
        seed=seed,
    )
    validating = any(task.valid is not None for task in stream.tasks)
    if state is not None:
        done = StrategyResult.from_dict(state.result)
        result.accuracy_matrix, result.parameters = done.accuracy_matrix, done.parameters
        result.validation_matrix = done.validation_matrix
        result.stored_examples, result.footprint = done.stored_examples, done.footprint
        result.curves, result.extra = done.curves, done.extra
        trainer.step = state.trainer["step"]
        trainer.train_seconds, trainer.eval_seconds = (
            state.trainer["train_seconds"],
            state.trainer["eval_seconds"],
        )
        trainer.curves.step, trainer.curves.task = result.curves["step"], result.curves["task"]
        trainer.curves.accuracy = result.curves["accuracy"]
        if state.optimizer is not None:
            trainer.load_optimizer_state(state.optimizer)
        set_rng_state(state.rng)
    else:
        result.accuracy_matrix = [trainer.evaluate()]
        if validating:
            result.validation_matrix = [trainer.evaluate("valid")]

    def record() -> None:
        result.train_seconds, result.eval_seconds = trainer.train_seconds, trainer.eval_seconds
        result.peak_rss_mb, result.peak_device_mb = peak_rss_mb(), peak_device_mb(dev)
        result.curves = trainer.curves.to_dict()
        result.extra = strategy.info()

    for cb in callbacks:
        cb.run_start(info, result.tasks_done)
    try:
        for task in stream.tasks[result.tasks_done :]:
            try:
                trainer.learn(task)
            except TrainingDivergedError as err:
                record()
                result.status, result.error = "failed", str(err)
                if on_task is not None:
                    on_task(result)
                for cb in callbacks:
                    cb.run_end(info, result)
                raise
            except KeyboardInterrupt:
                for cb in callbacks:  # close files and displays; the checkpoint has what finished
                    cb.run_end(info, result)
                raise
            result.accuracy_matrix.append(trainer.evaluate())
            if validating:
                result.validation_matrix.append(trainer.evaluate("valid"))
            for cb in callbacks:
                cb.task_end(info, task.id, result.accuracy_matrix[-1])
            result.parameters.append(count_parameters(net))
            result.stored_examples.append(strategy.stored_examples())
            result.footprint.append(trainer.footprint)
            record()
            if task.id == len(stream) - 1:
                result.status = "complete"
            if checkpoint is not None:
                Checkpoint(
                    model=net,
                    strategy=strategy.state_dict(),
                    optimizer=trainer.optimizer_state(),
                    trainer={
                        "step": trainer.step,
                        "train_seconds": trainer.train_seconds,
                        "eval_seconds": trainer.eval_seconds,
                    },
                    result=result.to_dict(),
                    rng=rng_state(),
                    run=identity,
                ).save(checkpoint)
            if on_task is not None:
                on_task(result)
    finally:  # a strategy that freezes parameters (PackNet) leaves your model's flags as found
        for param, flag in trainable_flags:
            param.requires_grad_(flag)
    result.status = "complete"
    for cb in callbacks:
        cb.run_end(info, result)
    return result
