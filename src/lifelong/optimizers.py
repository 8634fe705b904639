"""Optimizers and learning-rate schedulers: every one of ``torch.optim``, chosen by a spec.

A spec is ``NAME`` or ``NAME:key=value,...`` read with the library's one value parser
(:func:`lifelong.config.parse_named`)::

    --optimizer sgd:momentum=0.9,nesterov=true     torch.optim.SGD
    --optimizer adamw:weight_decay=0.01            torch.optim.AdamW
    --optimizer rmsprop:alpha=0.9                  torch.optim.RMSprop
    --scheduler cosine                             CosineAnnealingLR over each task's steps
    --scheduler step:step_size=100,gamma=0.5       StepLR
    --scheduler onecycle:max_lr=0.1                OneCycleLR over each task's steps
    --scheduler cosine:warmup=50                   linear warm-up for 50 steps, then cosine

Optimizer names are the lower-cased class names of ``torch.optim`` (``sgd``, ``adam``, ``adamw``,
``rmsprop``, ``adagrad``, ``adadelta``, ``adamax``, ``nadam``, ``radam``, ``asgd``, ``rprop``,
...). ``lr``, ``momentum`` and ``weight_decay`` are the run's settings of those names, given as
flags or in the spec (the most specific wins: see :meth:`lifelong.config.RunConfig.train_config`),
and apply where the optimizer takes them. Every value is checked before training, by building the
optimizer and its scheduler once on a dummy parameter and stepping them (:func:`check_values`). Scheduler names are the short names below or any class name of
``torch.optim.lr_scheduler``. A scheduler steps after every optimizer step (``interval=epoch``:
after every epoch); lengths it needs (``T_max``, ``total_steps``, ``total_iters``) default to the
length of the training it schedules. The optimizer and its scheduler start afresh for every task
unless ``reset_optimizer=false`` (then both carry over and are checkpointed).

``torch.optim`` is imported only when a run builds its first optimizer; see ``benchmarks/RESULTS.md``
for what that costs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lifelong.errors import ConfigError, UnknownNameError

if TYPE_CHECKING:
    from torch import nn
    from torch.optim import Optimizer
    from torch.optim.lr_scheduler import LRScheduler

OptimizerFactory = Callable[[list["nn.Parameter"]], "Optimizer"]
"""From Python: ``lambda params: torch.optim.AdamW(params, lr=1e-3)``."""
SchedulerFactory = Callable[["Optimizer"], "LRScheduler"]
"""From Python: ``lambda opt: torch.optim.lr_scheduler.StepLR(opt, 100)``; stepped per step."""

# Short names users know (Lightning / timm spelling) -> torch.optim.lr_scheduler class names.
SCHEDULER_ALIASES = {
    "step": "StepLR",
    "multistep": "MultiStepLR",
    "exponential": "ExponentialLR",
    "cosine": "CosineAnnealingLR",
    "cosine-restarts": "CosineAnnealingWarmRestarts",
    "linear": "LinearLR",
    "constant": "ConstantLR",
    "polynomial": "PolynomialLR",
    "onecycle": "OneCycleLR",
    "cyclic": "CyclicLR",
    "lambda": "LambdaLR",
}
# The library's own SGD and Adam (lifelong.optim) for the settings where they are exactly
# torch.optim's update (tested to 1e-6): building them skips the torch._dynamo import that the
# first torch.optim optimizer triggers (measured in benchmarks/RESULTS.md).
FAST = {
    "sgd": ("SGD", {"lr", "momentum", "weight_decay"}),
    "adam": ("Adam", {"lr", "betas", "eps", "weight_decay"}),
}
# Length arguments filled in with the number of scheduler steps of the training scheduled.
_LENGTH_KEYS = ("T_max", "total_steps", "total_iters")
# Optimizers that cannot run in a plain step loop (closure, sparse gradients only).
_UNSUPPORTED = {"lbfgs": "it needs a closure", "sparseadam": "it needs sparse gradients"}
# Schedulers that take what a spec cannot give (functions, a metric, other schedulers).
_NO_SPEC = ("LambdaLR", "MultiplicativeLR", "ReduceLROnPlateau", "SequentialLR", "ChainedScheduler")
# The optimizer settings that are also TrainConfig fields (and the run's flags).
SHARED = ("lr", "momentum", "weight_decay")
# Scheduler lengths: a zero divides by zero at the first step.
_LENGTHS = ("step_size", "step_size_up", "T_0", *_LENGTH_KEYS)
FLOAT32_MAX = 3.4028234663852886e38
"""The largest float32: a larger step size or decay cannot be applied to float32 parameters."""


def optimizer_classes() -> dict[str, type]:
    """Every optimizer class of ``torch.optim`` by lower-cased name (imports torch.optim)."""
    import torch.optim

    out = {}
    for attr in dir(torch.optim):
        obj = getattr(torch.optim, attr)
        if (
            inspect.isclass(obj)
            and issubclass(obj, torch.optim.Optimizer)
            and obj is not torch.optim.Optimizer
            and attr.lower() not in _UNSUPPORTED
        ):
            out[attr.lower()] = obj
    return out


def scheduler_classes() -> dict[str, type]:
    """Every usable scheduler by short name and by lower-cased class name."""
    from torch.optim import lr_scheduler

    out = {}
    for attr in dir(lr_scheduler):
        obj = getattr(lr_scheduler, attr)
        if (
            inspect.isclass(obj)
            and issubclass(obj, lr_scheduler.LRScheduler)
            and attr not in _NO_SPEC
            and attr != "LRScheduler"
            and not attr.startswith("_")
        ):
            out[attr.lower()] = obj
    for short, attr in SCHEDULER_ALIASES.items():
        if attr.lower() in out:
            out[short] = out[attr.lower()]
    return out


def _split(spec: str, what: str) -> tuple[str, dict[str, Any]]:
    from lifelong.config import parse_named

    name, options = parse_named(spec, what)
    betas = options.get("betas")
    if "betas" in options and not (
        isinstance(betas, list)
        and len(betas) == 2
        and all(isinstance(b, int | float) and not isinstance(b, bool) for b in betas)
    ):
        raise ConfigError(
            f"{what} {spec!r}: betas must be two numbers in [0, 1), e.g. betas=[0.9,0.999]; "
            f"got {betas!r}"
        )
    # lists from the value parser become the tuples torch expects (betas, milestones stay lists)
    return name.lower(), {k: tuple(v) if k == "betas" else v for k, v in options.items()}


def spec_values(spec: Any) -> dict[str, Any]:
    """The settings of :data:`SHARED` (``lr``, ``momentum``, ``weight_decay``) that an optimizer
    spec sets; none for a factory."""
    if not isinstance(spec, str):
        return {}
    return {k: v for k, v in _split(spec, "optimizer")[1].items() if k in SHARED}


def _check_keys(cls: type, options: dict[str, Any], what: str, spec: str, extra=()) -> None:
    params = inspect.signature(cls.__init__).parameters
    known = [n for n in params if n not in ("self", "params", "optimizer", "verbose")]
    unknown = sorted(set(options) - set(known) - set(extra))
    if unknown:
        raise ConfigError(
            f"{what} {spec!r}: {cls.__name__} has no setting {', '.join(unknown)}; "
            f"its settings: {', '.join([*known, *extra])}"
        )
    from lifelong.train import value_of_kind

    for key, value in options.items():  # the kind of its default (or annotation): number, bool
        param = params.get(key)
        default = None if param is None else param.default
        if param is not None and default is param.empty:
            default = {"float": 0.0, "int": 0, "bool": False}.get(str(param.annotation))
        kind = (
            bool
            if isinstance(default, bool)
            else float
            if isinstance(default, int | float)
            else None
        )
        if kind is not None:
            value_of_kind(kind, value, f"{what} {spec!r}: {key}")
        if isinstance(value, float) and abs(value) > FLOAT32_MAX:
            raise ConfigError(
                f"{what} {spec!r}: {key} must be at most {FLOAT32_MAX:.4g}, got {value}"
            )


def check_optimizer(spec: str | OptimizerFactory) -> None:
    """Validate a spec before any training (unknown name or key: one line)."""
    if callable(spec):
        return
    if not isinstance(spec, str):
        raise ConfigError(f"optimizer must be NAME or NAME:key=value,..., got {spec!r}")
    name, options = _split(spec, "optimizer")
    if name in _UNSUPPORTED:
        raise ConfigError(f"optimizer {name!r} cannot be used here: {_UNSUPPORTED[name]}")
    classes = optimizer_classes()
    if name not in classes:
        raise UnknownNameError("optimizer", name, list(classes))
    _check_keys(classes[name], options, "optimizer", spec)


def check_scheduler(spec: str | SchedulerFactory | None) -> None:
    if spec is None or callable(spec) or spec == "none":
        return
    if not isinstance(spec, str):
        raise ConfigError(f"scheduler must be none, NAME or NAME:key=value,..., got {spec!r}")
    name, options = _split(spec, "scheduler")
    classes = scheduler_classes()
    if name not in classes:
        short = [n for n in classes if n in SCHEDULER_ALIASES or n not in _lower_aliases()]
        raise UnknownNameError("scheduler", name, [*sorted(set(short)), "none"])
    _check_keys(classes[name], options, "scheduler", spec, extra=("interval", "warmup"))
    if options.get("interval", "step") not in ("step", "epoch"):
        raise ConfigError(f"scheduler {spec!r}: interval must be step or epoch")
    from lifelong.train import value_of_kind

    for key in (*_LENGTHS, "warmup"):
        if key in options:
            n = value_of_kind(int, options[key], f"scheduler {spec!r}: {key}")
            if n < (0 if key == "warmup" else 1):
                least = "0" if key == "warmup" else "1"
                raise ConfigError(f"scheduler {spec!r}: {key} must be at least {least}, got {n}")


def check_values(
    optimizer: str | OptimizerFactory,
    scheduler: str | SchedulerFactory | None,
    *,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    device: Any = None,
) -> None:
    """Build the optimizer of ``optimizer`` (as training will: the fast SGD/Adam without a
    scheduler) and the scheduler of ``scheduler`` once on a dummy parameter on ``device`` and
    step both twice: a value either refuses (torch's own checks, or a failing step) is one
    :class:`ConfigError` naming the spec, before anything trains. Python factories are not
    called. Without a ``device`` only the fast SGD/Adam is checked this way: building one of
    ``torch.optim``'s classes imports ``torch._dynamo`` (1-2 s), which a process that does not
    train (a study's or sweep's driver) should not pay; the run checks them with its device."""
    if callable(optimizer):
        return
    import torch

    no_scheduler = scheduler is None or scheduler == "none"
    if device is None and not _takes_fast(*_split(optimizer, "optimizer"), no_scheduler):
        return
    param = torch.nn.Parameter(torch.zeros(2, 2, device=device))
    try:
        built = build_optimizer(
            optimizer,
            [param],
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            fast=no_scheduler,
        )
        param.grad = torch.ones_like(param)
        built.step()
    except ConfigError:
        raise
    except Exception as err:  # torch's own refusals come in several types
        raise ConfigError(f"optimizer {optimizer!r}: {_first_line(err)}") from None
    if no_scheduler or callable(scheduler):
        return
    try:
        schedule, _ = build_scheduler(scheduler, built, 2)
        for _ in range(2):
            built.step()
            schedule.step()
            rates = [group["lr"] for group in built.param_groups]
            if not all(0 <= float(r) <= FLOAT32_MAX for r in rates):
                raise ValueError(f"it sets the learning rate to {rates[0]}; check its settings")
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError(f"scheduler {scheduler!r}: {_first_line(err)}") from None


def _takes_fast(name: str, options: dict[str, Any], fast: bool) -> bool:
    """Whether :func:`build_optimizer` builds the library's SGD/Adam for these settings."""
    return fast and name in FAST and set(options) <= FAST[name][1]


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0]


def scheduler_interval(spec: str | SchedulerFactory | None) -> str:
    """``step`` or ``epoch``: when the scheduler of ``spec`` steps."""
    if not isinstance(spec, str) or spec == "none":
        return "step"
    return str(_split(spec, "scheduler")[1].get("interval", "step"))


def _lower_aliases() -> set[str]:
    return {v.lower() for v in SCHEDULER_ALIASES.values()}


def build_optimizer(
    spec: str | OptimizerFactory,
    params: list[nn.Parameter],
    *,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    fast: bool = True,
) -> Optimizer:
    """The optimizer of ``spec`` over ``params``; ``lr``/``momentum``/``weight_decay`` apply where
    the optimizer takes them and the spec does not set them (a :class:`TrainConfig` holds the
    spec's values in its fields, so the two agree). ``fast``: use the
    library's exactly equivalent SGD/Adam where the settings allow (not with a scheduler, which
    needs a ``torch.optim.Optimizer``)."""
    if callable(spec):
        return spec(params)
    check_optimizer(spec)
    name, options = _split(spec, "optimizer")
    cls = optimizer_classes()[name]
    accepted = inspect.signature(cls.__init__).parameters
    defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}
    for key, value in defaults.items():
        if key in options:
            continue
        if key in accepted:
            options[key] = value
        elif value:
            raise ConfigError(f"optimizer {name!r} takes no {key} (given {value})")
    try:
        if _takes_fast(name, options, fast):
            from lifelong import optim

            return getattr(optim, FAST[name][0])(params, **options)
        return cls(params, **options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"optimizer {spec!r}: {err}") from None


def build_scheduler(
    spec: str | SchedulerFactory | None, optimizer: Optimizer, length: int
) -> tuple[LRScheduler | None, str]:
    """The scheduler of ``spec`` on ``optimizer`` and its interval (``step`` or ``epoch``).

    ``length``: scheduler steps in the training it schedules (the default of ``T_max``,
    ``total_steps``, ``total_iters``). ``warmup=N`` prepends N steps of linear warm-up, at
    ``lr * (i + 1) / N`` for step i (``torch.optim.lr_scheduler.SequentialLR``)."""
    if spec is None or spec == "none":
        return None, "step"
    if callable(spec):
        return spec(optimizer), "step"
    check_scheduler(spec)
    from torch.optim import lr_scheduler

    name, options = _split(spec, "scheduler")
    interval = options.pop("interval", "step")
    warmup = int(options.pop("warmup", 0))
    cls = scheduler_classes()[name]
    accepted = inspect.signature(cls.__init__).parameters
    for key in _LENGTH_KEYS:
        if key in accepted and key not in options:
            options[key] = max(length - warmup, 1)
    if cls is lr_scheduler.OneCycleLR and "max_lr" not in options:
        options["max_lr"] = [g["lr"] for g in optimizer.param_groups]
    try:
        main = cls(optimizer, **options)
        if warmup <= 1:
            return main, interval
        ramp = lr_scheduler.LinearLR(optimizer, start_factor=1 / warmup, total_iters=warmup - 1)
        return lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup]), interval
    except (TypeError, ValueError) as err:
        raise ConfigError(f"scheduler {spec!r}: {err}") from None


def _render(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_render(v) for v in value) + "]"
    return str(value)


def merge_spec(spec: str, options: dict[str, Any], what: str) -> str:
    """``spec`` with ``options`` set (per-strategy ``optimizer.KEY=VALUE`` overrides)."""
    if not options:
        return spec
    if spec == "none":
        raise ConfigError(f"{what} options {sorted(options)} given, but no {what}; set {what}=NAME")
    name, current = _split(spec, what)
    merged = {**current, **options}
    return name + ":" + ",".join(f"{k}={_render(v)}" for k, v in merged.items())


def describe(spec: Any) -> Any:
    """A spec for results.json: the text itself, or a factory's qualified name."""
    if spec is None or isinstance(spec, str):
        return spec
    return f"<python: {getattr(spec, '__qualname__', type(spec).__name__)}>"
