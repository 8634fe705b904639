"""Run configuration: the validated form of the command-line flags or a TOML/YAML file.

Every bad value fails here, before any data is loaded or any model trained, with one line that
says what to do. A config file uses the flag names as keys (``batch-size`` or ``batch_size``)::

    data = "digits"
    stream = "permuted"
    tasks = 5
    hidden = [100, 100]
    strategy = ["finetune", "ewc:lambda=100", {name = "gem", memory_per_task = 256}]
"""

from __future__ import annotations

import itertools
import math
import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from lifelong.errors import ConfigError, UnknownNameError
from lifelong.optimizers import SHARED, merge_spec, spec_values
from lifelong.results import safe_filename
from lifelong.train import MAX_INT, TRAIN_KEYS, TrainConfig, train_value, value_of_kind


def parse_value(text: str) -> Any:
    """A command-line value: int, finite float, ``true``/``false``, ``[a, b]`` / ``a;b`` list, or
    the string itself. Unbalanced brackets, NaN, infinities and whole numbers beyond 2**63 are
    refused with one line (:class:`ConfigError`)."""
    text = text.strip()
    _check_brackets(text)
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [parse_value(v) for v in split_top_level(inner, ",")] if inner else []
    if ";" in text:
        return [parse_value(v) for v in text.split(";")]
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            number = kind(text)
        except ValueError:
            continue
        return check_number(number, text)  # ConfigError is a ValueError: checked outside the try
    return text


def check_number(value: Any, what: str = "") -> Any:
    """``value`` itself when it is a finite number within 64 bits (bools and others pass)."""
    shown = what or repr(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{shown} is not a finite number; give a number such as 0.5")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise ConfigError(f"{shown} is too large; whole numbers must be below 2**63")
    return value


def check_seed(seed: int, what: str = "--seed") -> None:
    """Refuse a seed outside 0..2**63-1 (what torch and NumPy take) in one line."""
    if not 0 <= seed <= MAX_INT:
        raise ConfigError(f"{what} must be between 0 and 2**63-1, got {seed}")


def _check_brackets(text: str) -> None:
    depth = 0
    for ch in text:
        depth += (ch == "[") - (ch == "]")
        if depth < 0:
            break
    if depth:
        raise ConfigError(f"unbalanced brackets in {text!r}; write a list as [a,b,c]")


def split_top_level(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside brackets: ``a=1,b=[1,2]`` -> ``["a=1", "b=[1,2]"]``."""
    _check_brackets(text)
    parts, depth, current = [], 0, []
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == sep and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def parse_named(spec: str, what: str) -> tuple[str, dict[str, Any]]:
    """``NAME`` or ``NAME:key=value,key=value`` -> (name, {key: value}); a key given twice is
    refused."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise ConfigError(f"empty {what} in {spec!r}; write NAME or NAME:key=value,key=value")
    options: dict[str, Any] = {}
    for item in split_top_level(rest, ",") if rest.strip() else []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"{what} {spec!r}: expected key=value, got {item!r}")
        key = key.strip().replace("-", "_")
        if key in options:
            raise ConfigError(f"{what} {spec!r} sets {key!r} twice; give each setting once")
        try:
            options[key] = parse_value(value)
        except ConfigError as err:
            raise ConfigError(f"{what} {spec!r}: {key}: {err}") from None
    return name, options


@dataclass(frozen=True)
class StrategySpec:
    """One entry of ``--strategy``: a label, a registered name, its settings and training overrides."""

    label: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    train_overrides: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str | dict[str, Any]) -> StrategySpec:
        if isinstance(spec, dict):
            spec = dict(spec)
            name = spec.pop("name", None)
            if not name:
                raise ConfigError(f"a strategy table needs a name, got {spec}")
            label = spec.pop("label", None)
            for key, value in (("name", name), ("label", label)):
                if value is not None and not isinstance(value, str):
                    raise ConfigError(f"a strategy table's {key} must be text, got {value!r}")
            if not all(isinstance(k, str) for k in spec):
                raise ConfigError(f"a strategy table's keys must be text, got {list(spec)}")
            options = {k.replace("-", "_"): v for k, v in spec.items()}
            text = name + (
                ":" + ",".join(f"{k}={v}" for k, v in options.items()) if options else ""
            )
            label = label or text
        else:
            label = spec.strip()
            name, options = parse_named(label, "strategy")
        train = {k: v for k, v in options.items() if _is_train_key(k)}
        params = {k: v for k, v in options.items() if not _is_train_key(k)}
        return cls(label=label, name=name, params=params, train_overrides=train)

    @property
    def options(self) -> dict[str, Any]:
        """Hyperparameters and training overrides together, as written."""
        return {**self.params, **self.train_overrides}

    @property
    def varied(self) -> dict[str, list[Any]]:
        """The keys given as a list of candidate values (``ewc:lambda=[1,10]``), in order."""
        return {k: v for k, v in self.options.items() if isinstance(v, list)}

    def candidates(self) -> list[StrategySpec]:
        """Every combination of the candidate values (cartesian product), each one spec labelled
        ``name:key=value,...``; ``[self]`` when no key has a list. A setting that itself takes a
        list is written as a list of lists: ``key=[[1,2],[3]]`` gives the candidates [1,2], [3]."""
        varied = self.varied
        if not varied:
            return [self]
        for key, values in varied.items():
            if not values:
                raise ConfigError(f"strategy {self.label!r}: {key}=[] gives no candidate value")
        out = []
        for combo in itertools.product(*varied.values()):
            options = {**self.options, **dict(zip(varied, combo, strict=True))}
            text = ",".join(f"{k}={format_value(v)}" for k, v in options.items())
            out.append(StrategySpec.parse(f"{self.name}:{text}"))
        return out


def format_value(value: Any) -> str:
    """A value as :func:`parse_value` reads it back (``0.01``, ``true``, ``[1,2]``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


def _is_train_key(key: str) -> bool:
    """A training override: a TrainConfig field or ``optimizer.KEY`` / ``scheduler.KEY``."""
    return key in TRAIN_KEYS or ("." in key and key.partition(".")[0] in ("optimizer", "scheduler"))


def _whole_number(value: Any, what: str) -> int:
    """``value`` as an int by the training settings' rule (:func:`~lifelong.train.value_of_kind`:
    ``10.0`` gives 10; ``2.5``, ``true`` and 2**63 or more are refused with one line naming
    ``what``); text is read as the command line reads it first."""
    return value_of_kind(int, parse_value(value) if isinstance(value, str) else value, what)


def _tuple_of_ints(value: Any, what: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    items = value if isinstance(value, list | tuple) else [value]
    return tuple(_whole_number(v, f"each of {what}") for v in items)


def _train_value(key: str, value: Any, where: str) -> Any:
    """A per-strategy training override converted to the type of its TrainConfig field."""
    if isinstance(getattr(TrainConfig, key), bool) and isinstance(value, str):
        value = parse_value(value)
    return train_value(key, value, where)


TEXT_KEYS = ("data", "data_dir", "stream", "scenario", "model", "device")
"""Settings that are one name or path: a number, list or table there is refused."""


def _check_device(device: str) -> None:
    """Refuse a device the library does not train on (``meta``, ``xla``, typos) in one line;
    ``cpu``, ``cuda``, ``cuda:N`` and ``auto`` pass."""
    kind, colon, index = device.partition(":")
    if device == "auto" or (kind in ("cpu", "cuda") and (not colon or index.isdigit())):
        return
    raise ConfigError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto")


@dataclass(frozen=True)
class RunConfig:
    """Every setting of ``lifelong run`` (defaults = the flags' defaults)."""

    data: str = "digits"
    data_dir: str | None = None
    stream: str = "permuted"
    stream_options: dict[str, Any] = field(default_factory=dict)
    scenario: str | None = None
    tasks: int | None = None
    train_samples: int | None = None
    test_samples: int | None = None
    model: str | None = None  # None: the stream's default (mlp for images, memnet for bAbI)
    hidden: tuple[int, ...] | None = None
    epochs: int = 1
    batch_size: int = 10
    optimizer: str = "sgd"
    scheduler: str = "none"
    # None: not given (the --optimizer spec's value, else TrainConfig's: 0.1 / 0 / 0)
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    seed: int = 0
    seeds: tuple[int, ...] | None = None  # a study: every strategy on every seed
    validation: float = 0.0  # fraction of each task's training data held out for validation
    tune_tasks: int = 0  # choose candidates on the first K tasks, report on the rest
    memory: int | None = None  # examples kept over the stream by every strategy that stores them
    task_range: tuple[int, int] | None = None  # only tasks start..stop-1 (units of --tune-tasks)
    device: str = "cpu"
    eval_every: int = 0
    eval_batch_size: int = 8192
    log: tuple[str, ...] = ()  # loggers: csv, tensorboard, wandb
    strategies: tuple[StrategySpec, ...] = (StrategySpec("finetune", "finetune"),)
    plugins: tuple[str, ...] = ()  # modules imported first: a user's strategies, streams, models

    def __post_init__(self) -> None:
        from lifelong.plugins import load_plugins

        if isinstance(self.data_dir, os.PathLike):
            object.__setattr__(self, "data_dir", os.fspath(self.data_dir))
        for key in TEXT_KEYS:  # before any lookup: a list or table is not a name
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{key} must be text (a name or path), got {value!r}")
        _check_device(self.device)
        load_plugins(self.plugins, "plugins")  # before the names below are looked up
        from lifelong.data import IMAGE_SOURCES
        from lifelong.models import MODELS
        from lifelong.strategies import STRATEGIES
        from lifelong.streams import SCENARIOS, STREAMS

        known_data = {d for entry in STREAMS.values() for d in entry.data} | set(IMAGE_SOURCES)
        if self.data not in known_data:
            raise UnknownNameError("data set", self.data, list(known_data))
        if self.stream not in STREAMS:
            raise UnknownNameError("stream", self.stream, list(STREAMS))
        if self.scenario is not None and self.scenario not in SCENARIOS:
            raise UnknownNameError("scenario", self.scenario, list(SCENARIOS))
        if self.model is None:
            from lifelong.models import default_model

            object.__setattr__(self, "model", default_model(STREAMS[self.stream].input_kind))
        if self.model not in MODELS:
            raise UnknownNameError("model", self.model, list(MODELS))
        if not self.strategies:
            raise ConfigError("no strategy given; use --strategy NAME [NAME ...]")
        if isinstance(self.strategies, (str, dict)) or not all(
            isinstance(s, (StrategySpec, str, dict)) for s in self.strategies
        ):
            raise ConfigError(
                "strategies must be a list of names ('ewc', 'ewc:lambda=10'), tables "
                f"({{'name': 'ewc', 'lambda': 10}}) or StrategySpec objects, got {self.strategies!r}"
            )
        specs = tuple(
            s if isinstance(s, StrategySpec) else StrategySpec.parse(s) for s in self.strategies
        )
        object.__setattr__(self, "strategies", specs)
        labels = [s.label for s in self.strategies]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"strategy labels must be distinct, got {labels}")
        files: dict[str, str] = {}  # checkpoints and study units are named after the labels
        for label in dict.fromkeys(c.label for s in self.strategies for c in (s, *s.candidates())):
            other = files.setdefault(safe_filename(label), label)
            if other != label:
                raise ConfigError(
                    f"strategy labels {other!r} and {label!r} give the same file name "
                    f"{safe_filename(label)!r}; make them differ in letters, digits or . _ = -"
                )
        self._settle_shared()
        self.train_config()  # the run's own training flags first: their message names the flag
        from lifelong.strategies import create_strategy

        for spec in (c for s in self.strategies for c in s.candidates()):
            if spec.name not in STRATEGIES:
                raise UnknownNameError("strategy", spec.name, list(STRATEGIES))
            self.train_config(spec)  # validates the overrides
            create_strategy(spec.name, spec.params)  # validates names and types of settings
        entry = STREAMS[self.stream]  # stream x data x strategy: costs nothing to check now
        entry.check_data(self.data)
        for spec in self.strategies:
            STRATEGIES[spec.name].check_scenario(self.scenario or entry.scenario, spec.label)
        self._check_study()
        for what, n in (("--tasks", self.tasks), ("--train-samples", self.train_samples),
                        ("--test-samples", self.test_samples)):  # fmt: skip
            if n is not None and n < 1:
                raise ConfigError(f"{what} must be at least 1, got {n}")
        check_seed(self.seed)
        if self.memory is not None and (isinstance(self.memory, bool) or self.memory < 1):
            raise ConfigError(
                f"--memory must be a whole number of examples >= 1, got {self.memory}"
            )
        from lifelong.callbacks import LOGGERS

        for name in self.log:
            if name not in LOGGERS:
                raise UnknownNameError("logger", name, list(LOGGERS))

    def _settle_shared(self) -> None:
        """``--lr`` and an ``--optimizer`` spec's ``lr=`` are one setting (so are momentum and
        weight decay). The spec's value fills the field when the field is not given or holds
        TrainConfig's default (which cannot be told from "not given": a config.json written
        before the two were one setting records the default there), so that a strategy that
        replaces the optimizer keeps it; a field given with another value than the spec's is
        refused; neither given fills in TrainConfig's default."""
        in_spec = spec_values(self.optimizer)
        for key in SHARED:
            given, default = getattr(self, key), getattr(TrainConfig, key)
            if key not in in_spec:
                if given is None:
                    object.__setattr__(self, key, default)
                continue
            if given is not None and given != default and given != in_spec[key]:
                raise ConfigError(
                    f"--{key.replace('_', '-')} {given} and --optimizer {self.optimizer!r} set "
                    f"{key} differently; give it once"
                )
            object.__setattr__(self, key, in_spec[key])

    def _check_study(self) -> None:
        if self.seeds is not None:
            if not self.seeds:
                raise ConfigError("--seeds needs at least one seed, e.g. --seeds 0 1 2")
            if min(self.seeds) < 0 or len(set(self.seeds)) != len(self.seeds):
                raise ConfigError(f"--seeds must be distinct and >= 0, got {list(self.seeds)}")
        if not 0 <= self.validation < 1:
            raise ConfigError(
                f"--validation is the fraction of training data held out, in [0, 1); "
                f"got {self.validation}"
            )
        if self.tune_tasks < 0:
            raise ConfigError(f"--tune-tasks must be >= 0, got {self.tune_tasks}")
        if self.tasks is not None and self.tune_tasks and self.tune_tasks >= self.tasks:
            raise ConfigError(
                f"--tune-tasks {self.tune_tasks} leaves no task to report on with --tasks "
                f"{self.tasks}; choose K < {self.tasks}"
            )
        if self.task_range is not None and not 0 <= self.task_range[0] < self.task_range[1]:
            raise ConfigError(
                f"task_range must be [start, stop) with start < stop, got {self.task_range}"
            )
        many = [s.label for s in self.strategies if len(s.candidates()) > 1]
        if many and not self.validation and not self.tune_tasks:
            raise ConfigError(
                f"{many[0]} has several candidate settings and nothing to choose them on; "
                "add --validation F (hold out a fraction F of training data) or --tune-tasks K"
            )

    @property
    def is_study(self) -> bool:
        """Several seeds, candidate settings or --tune-tasks: run as units, one per setting and
        seed (:mod:`lifelong.study`). Otherwise one ordinary run."""
        return (
            self.seeds is not None or self.tune_tasks > 0 or any(s.varied for s in self.strategies)
        )

    def train_config(self, spec: StrategySpec | None = None) -> TrainConfig:
        """Training settings for one strategy: the run's, replaced by the settings the method's
        paper prescribes (``Strategy.train_defaults``), with the strategy spec's overrides.

        ``lr``, ``momentum`` and ``weight_decay`` may also be set in an optimizer spec; the most
        specific setting wins (the strategy's ``lr=`` or ``optimizer.lr=``, then the method's
        prescribed settings, then the run's ``--lr`` or ``--optimizer`` spec) and is written
        into both the spec and the field, so that results record the value used. Two settings
        of one level that disagree are refused."""
        base = {k: getattr(self, k) for k in TRAIN_KEYS if getattr(self, k, None) is not None}
        prescribed: dict[str, Any] = {}
        if spec is not None:
            from lifelong.strategies import STRATEGIES

            if spec.name in STRATEGIES:
                prescribed = STRATEGIES[spec.name].train_defaults
        base.update(prescribed)
        overrides = dict(spec.train_overrides) if spec else {}
        where = f"strategy {spec.label!r}: " if spec and overrides else ""
        dotted = {k: overrides.pop(k) for k in list(overrides) if "." in k}
        converted = {k: _train_value(k, v, where) for k, v in overrides.items()}
        merged = {**base, **converted}
        try:
            for what in ("optimizer", "scheduler"):
                options = {k.partition(".")[2]: v for k, v in dotted.items() if k.startswith(what)}
                merged[what] = merge_spec(merged[what], options, what)
            # levels: 0 the run, 1 the method's prescribed settings, 2 the strategy spec
            spec_level = 2 if "optimizer" in converted else 1 if "optimizer" in prescribed else 0
            for key, value in spec_values(merged["optimizer"]).items():
                if key not in merged:
                    continue  # only the spec sets it: TrainConfig takes it
                in_spec = 2 if f"optimizer.{key}" in dotted else spec_level
                field_level = 2 if key in converted else 1 if key in prescribed else 0
                if field_level > in_spec:
                    merged["optimizer"] = merge_spec(
                        merged["optimizer"], {key: merged[key]}, "optimizer"
                    )
                elif field_level < in_spec:
                    del merged[key]  # TrainConfig takes the spec's
                elif merged[key] != value:
                    raise ConfigError(
                        f"{key}={merged[key]} and optimizer {merged['optimizer']!r} set {key} "
                        "differently; give it once"
                    )
            return TrainConfig(**merged)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}{err}") from None

    def stream_kwargs(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "data_dir": self.data_dir,
            "tasks": self.tasks,
            "train_samples": self.train_samples,
            "test_samples": self.test_samples,
            "scenario": self.scenario,
            "seed": self.seed,
            **self.stream_options,
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden) if self.hidden is not None else None
        for key in ("seeds", "task_range"):
            d[key] = list(d[key]) if d[key] is not None else None
        d["log"] = list(self.log)
        d["strategies"] = [s.label for s in self.strategies]
        d["plugins"] = list(self.plugins)
        return d

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        """Build from a dict of flag names (dashes or underscores); unknown keys are errors."""
        d = {k.replace("-", "_"): v for k, v in raw.items()}
        if "strategy" in d:
            d["strategies"] = d.pop("strategy")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(
                f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        if "strategies" in d:
            items = d["strategies"]
            items = [items] if isinstance(items, str | dict) else items
            if not isinstance(items, list | tuple) or not all(
                isinstance(s, str | dict | StrategySpec) for s in items
            ):
                raise ConfigError(
                    f"strategy must be NAME, NAME:key=value or a table with a name, got {items!r}"
                )
            d["strategies"] = tuple(
                s if isinstance(s, StrategySpec) else StrategySpec.parse(s) for s in items
            )
        plugins = d.get("plugins", ())
        plugins = [plugins] if isinstance(plugins, str) else plugins
        if not isinstance(plugins, list | tuple) or not all(isinstance(m, str) for m in plugins):
            raise ConfigError(f"plugins must be a list of module names, got {plugins!r}")
        d["plugins"] = tuple(plugins)
        if not isinstance(d.get("stream_options", {}), dict):
            raise ConfigError(f"stream_options must be a table, got {d['stream_options']!r}")
        if isinstance(d.get("stream"), str) and ":" in d["stream"]:
            name, options = parse_named(d["stream"], "stream")
            d["stream"], d["stream_options"] = name, {**options, **d.get("stream_options", {})}
        if d.get("data_dir") and isinstance(d["data_dir"], str | os.PathLike):
            # absolute, so that --resume works from any directory
            d["data_dir"] = str(Path(d["data_dir"]).expanduser().resolve())
        d["hidden"] = _tuple_of_ints(d.get("hidden"), "--hidden")
        d["seeds"] = _tuple_of_ints(d.get("seeds"), "--seeds")
        d["task_range"] = _tuple_of_ints(d.get("task_range"), "task_range")
        if d["task_range"] is not None and len(d["task_range"]) != 2:
            raise ConfigError(f"task_range must be [start, stop], got {list(d['task_range'])}")
        if "log" in d:
            log = [d["log"]] if isinstance(d["log"], str) else d["log"]
            if not isinstance(log, list | tuple) or not all(isinstance(v, str) for v in log):
                raise ConfigError(
                    f"log must be names of loggers (csv, tensorboard, wandb), got {log!r}"
                )
            d["log"] = tuple(log)
        for key in ("tasks", "train_samples", "test_samples", "epochs", "batch_size", "seed",
                    "eval_every", "eval_batch_size", "tune_tasks", "memory"):  # fmt: skip
            if d.get(key) is not None:
                d[key] = _whole_number(d[key], key)
        for key in ("lr", "momentum", "weight_decay", "validation"):
            value = d.get(key)
            if value is not None:
                try:
                    if isinstance(value, bool):
                        raise ValueError
                    d[key] = float(value)
                except (TypeError, ValueError, OverflowError):
                    raise ConfigError(f"{key} must be a number, got {value!r}") from None
                check_number(d[key], f"{key} {value!r}")
        return cls(**d)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) config file into a dict."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config file {p}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"config file {p} is not text (UTF-8); give a TOML or YAML file"
        ) from None
    try:
        if p.suffix == ".toml":
            data = tomllib.loads(text)
        elif p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file {p} must end in .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"config file {p} is not valid: {err}") from None
    except Exception as err:  # yaml.YAMLError and friends
        raise ConfigError(f"config file {p} is not valid: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a table of settings")
    return data
