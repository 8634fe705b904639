"""The strategy interface and registry.

A strategy is one continual-learning method. The training loop (:mod:`lifelong.train`) calls its
hooks at fixed points; every hook is optional and the defaults together are plain fine-tuning::

    prepare(model, stream) -> model       once, before the first task: wrap or grow the model
    before_task(task, model)              snapshot the old model, add a column, sample pseudo-data
    training_data(task, seen) -> TrainSet what the loop trains on (joint, cumulative, replay)
    loss(model, batch, task) -> Tensor    cross-entropy + penalty / distillation / replay
    after_backward(model, batch, task)    rewrite gradients (GEM, A-GEM projection; PackNet masks)
    after_step(model, batch, task)        running statistics after each optimizer step (SI, RWalk)
    after_task(task, model, fit)          consolidate importances, update memories, prune and
                                          retrain through the loop's own ``fit``
    predict(model, x, task) -> logits     route by task (PNN, PackNet), nearest-mean (iCaRL)
    parameters_to_train(model)            which parameters the optimizer updates
    state_dict() / load_state_dict(s)     everything needed for an exact resume
    info() -> dict                        facts for results.json (memory sizes, parameters used)

Hyperparameters are the keyword arguments of the class's ``__init__`` (with their defaults and
documentation there); ``--strategy ewc:lambda=100`` sets them. A keyword that is a Python keyword
takes a trailing underscore in code (``lambda_``) and none on the command line.

Checkpoints are written with one ``torch.save`` of the model and ``state_dict()`` together, so the
default ``state_dict`` (every instance attribute) keeps references between the strategy and the
model intact; override it only for attributes that cannot be pickled.

Randomness: every random draw a strategy makes comes from its own CPU ``torch.Generator``,
:attr:`Strategy.generator`, seeded from the run seed (:meth:`Strategy.seed`) and saved with its
state; draws are made on the CPU and moved to the data's device, so they do not depend on the
device either. Hooks that run once per task (``prepare``, ``before_task``, ``after_task``) run
inside :meth:`Strategy.own_rng`, so that what they draw implicitly from the global torch RNG
(initialising new modules, library samplers) comes from the strategy's generator too and never
shifts the model's own draws (dropout) in the training loop. A strategy therefore never changes
what another strategy of the same run trains on: same seed, same batches.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import inspect
import keyword
import math
import numbers
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.data
from torch import Tensor, nn

from lifelong.errors import ConfigError, LifelongError, UnknownNameError
from lifelong.resources import to_device
from lifelong.streams.base import Stream, Task, TaskData


@dataclass
class Batch:
    """One training mini-batch.

    Attributes:
        x: inputs. y: output-column labels. task_ids: the task of each sample.
        mask: ``[B, n_outputs]`` boolean mask of the columns each sample may predict, or ``None``
            when every sample may use every column (domain and class scenarios).
    """

    x: Tensor
    y: Tensor
    task_ids: Tensor
    mask: Tensor | None = None

    def __len__(self) -> int:
        return len(self.y)


class TrainSet:
    """The samples one call of ``fit`` trains on: one or more task splits, shuffled together.

    Args:
        parts: ``(task_id, split)`` pairs.
        stream: gives each sample's column mask.
    """

    MATERIALIZE_BYTES = 512 * 2**20  # gather inputs once per fit below this size, else per batch

    def __init__(self, parts: list[tuple[int, TaskData]], stream: Stream) -> None:
        if not parts:
            raise ValueError("a TrainSet needs at least one part")
        self.parts = parts
        self.stream = stream
        self.sizes = [len(data) for _, data in parts]
        self.total = sum(self.sizes)
        self.offsets = torch.tensor([0, *self.sizes]).cumsum(0)
        self._cache: list[Tensor] | None = None

    @classmethod
    def of(cls, tasks: list[Task], stream: Stream) -> TrainSet:
        return cls([(t.id, t.train) for t in tasks], stream)

    def __len__(self) -> int:
        return self.total

    def _inputs(self) -> list[Tensor] | None:
        if self._cache is None:
            probe = self.parts[0][1].inputs(slice(0, 1))
            nbytes = probe.element_size() * probe.numel() * len(self)
            if nbytes > self.MATERIALIZE_BYTES:
                return None
            self._cache = [data.inputs() for _, data in self.parts]
        return self._cache

    def batches(
        self, batch_size: int, shuffle: bool = True, generator: torch.Generator | None = None
    ) -> Iterator[Batch]:
        """Mini-batches over all parts, shuffled with ``generator`` (a CPU generator; the
        training loop passes its own, seeded from the run seed)."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        if any(hasattr(data, "dataset") for _, data in self.parts):
            yield from self._loader_batches(batch_size, order)
            return
        cache = self._inputs()
        full_columns = self.stream.scenario != "task"
        device = self.parts[0][1].y.device
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            if len(self.parts) == 1:
                task_id, data = self.parts[0]
                local = to_device(idx, device)
                x = cache[0][local] if cache is not None else data.inputs(local)
                y = data.y[local]
                tids = torch.full((len(idx),), task_id, dtype=torch.long, device=device)
            else:
                which = torch.searchsorted(self.offsets, idx, right=True) - 1
                xs, ys, ts = [], [], []
                for p in which.unique().tolist():
                    local = to_device(idx[which == p] - self.offsets[p], device)
                    task_id, data = self.parts[p]
                    xs.append(cache[p][local] if cache is not None else data.inputs(local))
                    ys.append(data.y[local])
                    ts.append(torch.full((len(local),), task_id, dtype=torch.long, device=device))
                x, y, tids = torch.cat(xs), torch.cat(ys), torch.cat(ts)
            mask = None if full_columns else self.stream.column_mask(tids)
            yield Batch(x, y, tids, mask)

    def _loader_batches(self, batch_size: int, order: Tensor) -> Iterator[Batch]:
        """Mini-batches through a ``DataLoader`` when a part reads a user's Dataset
        (:class:`~lifelong.streams.custom.DatasetData`): its items are read, and transformed,
        anew at every pass, in ``order``, with the Dataset's workers and pinned memory."""
        from torch.utils.data import DataLoader

        lazy = next(data for _, data in self.parts if hasattr(data, "dataset"))
        device = self.parts[0][1].y.device
        loader = DataLoader(
            _PartsDataset(self),
            batch_size=batch_size,
            sampler=order.tolist(),
            num_workers=lazy.num_workers,
            pin_memory=lazy.pin_memory and device.type == "cuda",
        )
        full_columns = self.stream.scenario != "task"
        try:
            for x, y, tids in loader:
                x = x.to(device, non_blocking=True)
                y, tids = y.to(device, non_blocking=True), tids.to(device, non_blocking=True)
                yield Batch(x, y, tids, None if full_columns else self.stream.column_mask(tids))
        except LifelongError as error:  # from a worker, torch prepends the worker's traceback
            message = str(error).rstrip()
            if "\n" not in message:
                raise
            raise type(error)(message.rpartition("\n")[2].partition(": ")[2]) from None


class _PartsDataset(torch.utils.data.Dataset):
    """The samples of a TrainSet as ``(x, column label, task id)`` items (CPU tensors)."""

    def __init__(self, train_set: TrainSet) -> None:
        self.parts, self.offsets = train_set.parts, train_set.offsets.tolist()

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        p = bisect.bisect_right(self.offsets, i) - 1
        task_id, data = self.parts[p]
        j = i - self.offsets[p]
        if hasattr(data, "sample"):
            x = data.sample(j)
        else:
            x = data.inputs(torch.tensor([j], device=data.y.device))[0].cpu()
        return x, data.y[j].cpu(), torch.tensor(task_id)


CLASS_FWT = (
    "class scenario: a task's classes are never a training target before it is learned, so "
    "every method scores about 0 on it then (FWT is the same for all by construction)"
)


def derived_seed(seed: int, purpose: str) -> int:
    """A seed for one ``purpose`` (``"batches"``, ``"strategy"``) derived from the run seed, so
    that generators seeded from the same run seed give independent streams (stable across
    processes, unlike ``hash``)."""
    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


FitFn = Callable[..., None]
"""``fit(data: TrainSet | None = None, epochs: int | None = None)``: train the current task again
through the loop (same optimizer settings and hooks); used by PackNet/CPG to retrain after pruning."""


def masked_logits(logits: Tensor, mask: Tensor | None) -> Tensor:
    """Logits with the columns a sample may not predict set to -inf (multi-head selection)."""
    return logits if mask is None else logits.masked_fill(~mask, float("-inf"))


def classification_loss(logits: Tensor, batch: Batch) -> Tensor:
    """Mean cross-entropy over the columns each sample may predict."""
    return F.cross_entropy(masked_logits(logits, batch.mask), batch.y)


class Strategy:
    """Plain fine-tuning; the base class of every method (override the hooks you need)."""

    name: ClassVar[str] = "finetune"
    description: ClassVar[str] = ""
    family: ClassVar[str] = "baseline"
    scenarios: ClassVar[tuple[str, ...]] = ("task", "domain", "class")

    memory_setting: ClassVar[str | None] = None
    """The hyperparameter that sets how many real training examples the strategy keeps (``None``:
    it keeps none). The run's ``--memory N`` sets it through :meth:`budget` unless the strategy
    spec sets it."""
    train_defaults: ClassVar[dict[str, Any]] = {}
    """Training settings the method's paper prescribes; they replace the run's own settings
    (``--lr``, ``--batch-size``, ...), and a strategy spec overrides them."""

    stream: Stream
    _generator: torch.Generator | None = None

    # ---- memory budget -------------------------------------------------------------------------
    @classmethod
    def budget(cls, memory: int, tasks: int) -> int:
        """The value of :attr:`memory_setting` that keeps at most ``memory`` examples over a
        stream of ``tasks`` tasks, split as the method's paper splits it (default: one memory of
        ``memory`` examples over the whole stream)."""
        return memory

    def stored_examples(self) -> int:
        """Real training examples the strategy keeps now (0: none)."""
        return 0

    @classmethod
    def check_scenario(cls, scenario: str, label: str | None = None) -> None:
        """Refuse a scenario the method does not run in, in one line that names the flag."""
        if scenario not in cls.scenarios:
            raise ConfigError(
                f"strategy {label or cls.name!r} works in the {', '.join(cls.scenarios)} "
                f"scenario(s), not {scenario!r}; use --scenario {cls.scenarios[0]} or leave it out"
            )

    # ---- randomness ----------------------------------------------------------------------------
    def seed(self, seed: int) -> None:
        """Seed :attr:`generator` from the run seed (the runner calls this before ``prepare``)."""
        self._generator = torch.Generator().manual_seed(derived_seed(seed, "strategy"))

    @property
    def generator(self) -> torch.Generator:
        """The CPU generator every random draw of this strategy uses (seed 0 until
        :meth:`seed` is called)."""
        if self._generator is None:
            self.seed(0)
        return self._generator

    @contextmanager
    def own_rng(self) -> Iterator[None]:
        """Run a block with the global torch RNG seeded from :attr:`generator`, restoring it
        afterwards: draws the block makes implicitly (``nn.Linear`` initialisation, ...) then
        come from the strategy's generator and do not shift anyone else's draws."""
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        devices = list(range(torch.cuda.device_count())) if cuda else []
        with torch.random.fork_rng(devices=devices):
            seed = int(torch.randint(2**62, (), generator=self.generator))
            torch.default_generator.manual_seed(seed)
            if cuda:
                torch.cuda.manual_seed_all(seed)
            yield

    # ---- hooks -------------------------------------------------------------------------------
    def prepare(self, model: nn.Module, stream: Stream) -> nn.Module:
        """Called once before the first task. Returns the model to train (possibly wrapped)."""
        self.stream = stream
        return model

    def before_task(self, task: Task, model: nn.Module) -> None:
        """Called before training on ``task``."""

    def training_data(self, task: Task, seen: list[Task]) -> TrainSet | None:
        """What the loop trains on for ``task`` (``seen`` = tasks 0..task.id). ``None``: skip."""
        return TrainSet.of([task], self.stream)

    def forward(self, model: nn.Module, x: Tensor, task_ids: Tensor) -> Tensor:
        """Training-time logits ``[B, n_outputs]`` (task-routed models override)."""
        return model(x)

    def loss(self, model: nn.Module, batch: Batch, task: Task) -> Tensor:
        """The objective minimised on one batch of ``task``."""
        return classification_loss(self.forward(model, batch.x, batch.task_ids), batch)

    def after_backward(self, model: nn.Module, batch: Batch, task: Task) -> None:
        """Called after ``loss.backward()`` and before the optimizer step."""

    def after_step(self, model: nn.Module, batch: Batch, task: Task) -> None:
        """Called after each optimizer step."""

    def after_task(self, task: Task, model: nn.Module, fit: FitFn) -> None:
        """Called after training on ``task`` and before it is evaluated."""

    def predict(self, model: nn.Module, x: Tensor, task: Task) -> Tensor:
        """Evaluation-time scores ``[B, n_outputs]`` for samples of ``task`` (argmax within its
        columns is the prediction). Runs under ``torch.inference_mode`` with ``model.eval()``."""
        return self.forward(model, x, torch.full((len(x),), task.id, device=x.device))

    def parameters_to_train(self, model: nn.Module) -> list[nn.Parameter]:
        """Parameters the optimizer updates for the current task."""
        return [p for p in model.parameters() if p.requires_grad]

    def info(self) -> dict[str, Any]:
        """Strategy-specific facts for results.json ``extra`` (memory sizes, parameters used)."""
        return {}

    def not_applicable(self, scenario: str) -> dict[str, str]:
        """Metrics that are undefined or true by construction for this strategy in
        ``scenario``, with the reason; they are stored as null and shown as n/a."""
        if scenario == "class":
            return {"fwt": CLASS_FWT}
        return {}

    def footprint(self, model: nn.Module) -> dict[str, int]:
        """Bytes kept, by kind: ``model`` (the parameters and buffers of the model trained, all
        its columns or parts included) and one entry per attribute of the strategy that holds
        tensors (copies of models, anchors, importances, buffers, generators, optimizer state),
        named after the attribute. Each storage counts once, in the first kind that holds it;
        the stream's own data never count. Override for state this walk cannot see."""
        seen = {_storage_key(t) for t in _stream_tensors(self)}
        out = {"model": _nbytes(model, seen, set())}
        for name, value in vars(self).items():
            if name in ("stream", "_generator"):
                continue
            n = _nbytes(value, seen, set())
            if n:
                out[name.lstrip("_")] = n
        return out

    # ---- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (default: every instance attribute but the stream).

        Store copies (``.clone()``), never views, of stream data: saving a view saves the whole
        tensor it views."""
        state = {k: v for k, v in vars(self).items() if k != "stream"}
        if self._generator is not None:
            state["_generator"] = self._generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        generator_state = state.pop("_generator", None)
        vars(self).update(state)
        if generator_state is not None:
            self._generator = torch.Generator()
            self._generator.set_state(generator_state.cpu())

    # ---- hyperparameters -----------------------------------------------------------------------
    @classmethod
    def hyperparameters(cls) -> dict[str, inspect.Parameter]:
        """The keyword arguments of ``__init__``, keyed by their command-line name."""
        params = inspect.signature(cls.__init__).parameters
        kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        return {_cli_name(n): p for n, p in params.items() if n != "self" and p.kind in kinds}

    def params(self) -> dict[str, Any]:
        """The hyperparameters this instance uses, by command-line name."""
        out = {}
        for cli_name, p in self.hyperparameters().items():
            value = getattr(self, p.name)
            out[cli_name] = (
                value if isinstance(value, int | float | str | bool | None) else str(value)
            )
        return out


def _storage_key(t: Tensor) -> tuple[str, int]:
    return (str(t.device), t.untyped_storage().data_ptr())


def _stream_tensors(strategy: Strategy) -> Iterator[Tensor]:
    stream = getattr(strategy, "stream", None)
    for task in getattr(stream, "tasks", ()):
        for split in (task.train, task.test, getattr(task, "valid", None)):
            for value in vars(split).values() if split is not None else ():
                if isinstance(value, Tensor):
                    yield value


def _nbytes(value: Any, seen: set[tuple[str, int]], visited: set[int]) -> int:
    """Bytes of the tensor storages reachable from ``value`` not in ``seen`` (which it extends):
    tensors, modules, optimizers, containers and the library's own objects."""
    if isinstance(value, Tensor):
        if value.is_meta or value.numel() == 0:
            return 0
        key = _storage_key(value)
        if key in seen:
            return 0
        seen.add(key)
        return value.untyped_storage().nbytes()
    if id(value) in visited or isinstance(value, str | bytes | int | float | bool | type(None)):
        return 0
    visited.add(id(value))
    if isinstance(value, nn.Module):
        items: Any = value.state_dict(keep_vars=True).values()
    elif isinstance(value, torch.optim.Optimizer):
        items = value.state.values()
    elif isinstance(value, dict):
        items = value.values()
    elif isinstance(value, list | tuple | set | frozenset):
        items = value
    elif type(value).__module__.startswith("lifelong") and hasattr(value, "__dict__"):
        items = vars(value).values()
    else:
        return 0
    return sum(_nbytes(v, seen, visited) for v in items)


def tensor_bytes(value: Any) -> int:
    """Bytes of the distinct tensor storages reachable from ``value`` (a model, a dict, ...)."""
    return _nbytes(value, set(), set())


STRATEGIES: dict[str, type[Strategy]] = {}


def _cli_name(name: str) -> str:
    """``lambda_`` -> ``lambda``: keyword-named hyperparameters drop the underscore on the CLI."""
    return name[:-1] if name.endswith("_") and keyword.iskeyword(name[:-1]) else name


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: register a strategy under its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in STRATEGIES and STRATEGIES[cls.name] is not cls:
        raise ValueError(f"strategy name {cls.name!r} registered twice")
    STRATEGIES[cls.name] = cls
    return cls


_BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True,
               "0": False, "false": False, "no": False, "off": False}  # fmt: skip
_KIND_NAMES = {
    "bool": "true or false",
    "int": "a whole number below 2**63",
    "float": "a number",
    "str": "text",
}


def _as_kind(value: Any, kind: str) -> tuple[bool, Any]:
    """``(True, value as kind)`` when ``value`` is one (a whole float as an int, an int as a float,
    0/1 as a bool, a number or true/false read from the command line as the text written);
    ``(False, None)`` otherwise."""
    from lifelong.train import value_of_kind

    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if kind == "bool":
        if isinstance(value, bool | np.bool_) or (
            isinstance(value, numbers.Integral) and value in (0, 1)
        ):
            return True, bool(value)
    elif kind == "int":
        with contextlib.suppress(ConfigError):  # the training settings' rule for whole numbers
            return True, value_of_kind(int, value, "")
    elif kind == "float":
        if real and math.isfinite(value):
            return True, float(value)
    elif kind == "str" and isinstance(value, str | bool | numbers.Real):
        from lifelong.config import format_value

        return True, value if isinstance(value, str) else format_value(value)  # as written
    return False, None


def _coerce(value: Any, annotation: Any, default: Any, where: str) -> Any:
    """``value`` as the declared type of a hyperparameter, or one :class:`ConfigError` naming it.

    The type comes from the annotation (``int``, ``float | None``, ``bool``, ...) or, when there
    is none, from the default's type. A string is read as the command line reads it
    (:func:`~lifelong.config.parse_value`; also yes/no/on/off for a bool; ``none``/``null`` give
    ``None`` where ``None`` is allowed). A whole float becomes an int and an int a float; anything
    else of the wrong type (``2.5`` or ``true`` for an int, text for a number, a whole number
    beyond 2**63) is refused; a text setting takes a number or true/false as written. Types other than bool, int, float and str are not checked.
    """
    from lifelong.config import parse_value

    text = str(annotation) if annotation is not inspect.Parameter.empty else ""
    if not text and default not in (None, inspect.Parameter.empty):
        text = type(default).__name__
    kinds = [k.strip() for k in text.split("|")]
    nullable = "None" in kinds or default is None
    checked = [k for k in kinds if k in _KIND_NAMES]
    if not checked:
        return value
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("none", "null") and nullable:
            return None
        if "bool" in checked and low in _BOOL_WORDS:
            return _BOOL_WORDS[low]
        if "str" not in checked:
            try:
                value = parse_value(value)
            except ConfigError as err:
                raise ConfigError(f"{where}: {err}") from None
    if value is None and nullable:
        return None
    for kind in checked:
        ok, converted = _as_kind(value, kind)
        if ok:
            return converted
    expected = " or ".join(_KIND_NAMES[k] for k in checked) + (" or none" if nullable else "")
    raise ConfigError(f"strategy setting {where} must be {expected}, got {value!r}")


def create_strategy(
    name: str,
    params: dict[str, Any] | None = None,
    *,
    memory: int | None = None,
    tasks: int | None = None,
) -> Strategy:
    """Instantiate a registered strategy; every value is checked against, and converted to, the
    declared type of its setting (:func:`_coerce`).

    ``memory`` (with the stream's number of ``tasks``): the run's budget of stored examples,
    applied to a strategy that stores examples unless ``params`` sets its own."""
    if name not in STRATEGIES:
        raise UnknownNameError("strategy", name, list(STRATEGIES))
    cls = STRATEGIES[name]
    declared = cls.hyperparameters()
    params = dict(params or {})
    setting = cls.memory_setting
    own = any(k.replace("-", "_") == setting for k in params)
    if memory is not None and setting is not None and not own:
        value = cls.budget(memory, tasks or 1)
        if value < 1:
            raise ConfigError(
                f"--memory {memory} leaves {name} less than one example per task over "
                f"{tasks} tasks; give --memory {tasks} or more, or set {name}:{setting}"
            )
        params[setting] = value
    kwargs = {}
    for key, value in params.items():
        cli_key = key.replace("-", "_")
        if cli_key not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise ConfigError(f"strategy {name!r} has no setting {key!r}; its settings: {known}")
        p = declared[cli_key]
        kwargs[p.name] = _coerce(value, p.annotation, p.default, f"{name}:{key}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"strategy {name!r}: {err}") from None
