"""The stream registry: generators register themselves by name with their defaults."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifelong.errors import ConfigError, UnknownNameError
from lifelong.streams.base import SCENARIOS, Stream


@dataclass(frozen=True)
class StreamSpec:
    """Everything a generator needs, with defaults already resolved.

    Attributes:
        data: data-source name.
        data_dir: where file-based sources live (``None``: ``$LIFELONG_DATA`` or the user cache).
        tasks: number of tasks.
        tasks_given: whether ``tasks`` came from the user (rather than the stream's default).
        train_samples, test_samples: samples per task (``None``: every available sample).
        scenario: ``task``, ``domain`` or ``class``.
        seed: seed of every random choice the generator makes.
        options: generator-specific options (documented on each generator).
    """

    data: str
    data_dir: Path | None
    tasks: int
    tasks_given: bool
    train_samples: int | None
    test_samples: int | None
    scenario: str
    seed: int
    options: dict[str, Any] = field(default_factory=dict)

    def option(self, name: str, kind: type, default: Any = None) -> Any:
        """Option ``name`` checked as ``kind`` (``bool``, ``int`` or ``float``; a list of them
        when ``default`` or the value is a list); one clear line when it is not."""
        value = self.options.get(name, default)
        if value is None:
            return None
        if isinstance(value, list | tuple):
            return [self._one(name, kind, v) for v in value]
        return self._one(name, kind, value)

    def _one(self, name: str, kind: type, value: Any) -> Any:
        spelled = {
            bool: "true or false",
            int: "a whole number (integers only)",
            float: "a finite number",
        }
        spelled = spelled[kind]
        if isinstance(value, str) and kind is bool and value.lower() in ("true", "false"):
            return value.lower() == "true"
        ok = (
            isinstance(value, bool)
            if kind is bool
            else isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and (kind is float or float(value).is_integer())
            and abs(value) < 2**63
        )
        if not ok:
            raise ConfigError(f"stream option {name} must be {spelled}, got {value!r}")
        return kind(value)


@dataclass(frozen=True)
class StreamEntry:
    name: str
    description: str
    build: Callable[[StreamSpec], Stream]
    tasks: int
    scenario: str
    data: tuple[str, ...]
    options: tuple[str, ...] | None  # accepted option names (None: the generator checks)
    input_kind: str = "image"  # what its tasks' inputs are; picks the default model

    def check_data(self, data: str) -> None:
        """Refuse a data set this stream does not work on, naming the ones it does."""
        if data not in self.data:
            raise ConfigError(
                f"stream {self.name!r} does not work on data {data!r}; "
                f"use one of: {', '.join(self.data)}"
            )


STREAMS: dict[str, StreamEntry] = {}
IMAGE_DATA = ("digits", "mnist", "fashion-mnist")


def register_stream(
    name: str,
    description: str,
    *,
    tasks: int,
    scenario: str = "domain",
    data: tuple[str, ...] = IMAGE_DATA,
    options: tuple[str, ...] | None = None,
    input_kind: str = "image",
) -> Callable[[Callable[[StreamSpec], Stream]], Callable[[StreamSpec], Stream]]:
    """Register a generator under ``name`` with its defaults, data sets and option names."""

    def decorate(fn: Callable[[StreamSpec], Stream]) -> Callable[[StreamSpec], Stream]:
        STREAMS[name] = StreamEntry(
            name, description, fn, tasks, scenario, data, options, input_kind
        )
        return fn

    return decorate


def build_stream(
    name: str,
    data: str | None = None,
    *,
    data_dir: str | Path | None = None,
    tasks: int | None = None,
    train_samples: int | None = None,
    test_samples: int | None = None,
    scenario: str | None = None,
    seed: int = 0,
    **options: Any,
) -> Stream:
    """Build a registered stream; unspecified settings take the stream's defaults.

    >>> stream = build_stream("permuted", "digits", tasks=3, seed=0)
    """
    if name not in STREAMS:
        raise UnknownNameError("stream", name, list(STREAMS))
    entry = STREAMS[name]
    data = data or entry.data[0]
    entry.check_data(data)
    scenario = scenario or entry.scenario
    if scenario not in SCENARIOS:
        raise UnknownNameError("scenario", scenario, list(SCENARIOS))
    for what, n in (("--train-samples", train_samples), ("--test-samples", test_samples)):
        if n is not None and n <= 0:
            raise ConfigError(f"{what} must be a positive number of samples per task, got {n}")
    if entry.options is not None:
        unknown = sorted(set(options) - set(entry.options))
        if unknown:
            accepted = ", ".join(entry.options) or "none"
            raise ConfigError(
                f"stream {name!r} has no option {', '.join(unknown)}; its options: {accepted}"
            )
    if tasks is not None and tasks < 1:
        raise ConfigError(f"--tasks must be at least 1, got {tasks}")
    spec = StreamSpec(
        data=data,
        data_dir=Path(data_dir) if data_dir else None,
        tasks=tasks if tasks is not None else entry.tasks,
        tasks_given=tasks is not None,
        train_samples=train_samples,
        test_samples=test_samples,
        scenario=scenario,
        seed=seed,
        options=dict(options),
    )
    return entry.build(spec)
