"""Checkpoint files that cannot run code: ``torch.load(weights_only=True)`` with an allowlist.

A checkpoint is one ``torch.save`` of plain containers (dict, list, tuple, set), numbers,
strings, tensors, ``torch.Generator`` objects and instances of *safe types*: the ``nn.Module``
classes of ``torch.nn`` and of this library (models, strategy networks), ``torch.optim``
optimizers, and the library's own plain state holders (buffers, penalty anchors) listed below.
Loading uses PyTorch's restricted unpickler, which can build only those types and never calls
anything else, so a planted pickle payload is refused instead of executed. Anything that does
not load that way is refused with one line saying how to recover.

A plugin whose strategy keeps instances of its own classes in ``state_dict()`` registers them
with :func:`register_checkpoint_types` (only classes whose construction and ``__setstate__`` do
nothing but store data).
"""

from __future__ import annotations

import collections
import importlib
import io
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lifelong.errors import DataError

# The library's plain state holders kept in strategy state (module, class name): imported when a
# checkpoint is loaded, so this module imports no strategy code.
_LIBRARY_STATE_TYPES = (
    ("lifelong.strategies.regularization.anchor", "BoundParameters"),
    ("lifelong.strategies.regularization.anchor", "QuadraticPenalty"),
    ("lifelong.strategies.regularization.anchor", "PathIntegral"),
    ("lifelong.strategies.memory.buffer", "SampleBuffer"),
    ("lifelong.strategies.memory.buffer", "EpisodicMemory"),
)
_registered: list[type] = []


def register_checkpoint_types(*types: type) -> None:
    """Allow instances of ``types`` in checkpoints (for plugins' own strategy state classes)."""
    _registered.extend(t for t in types if t not in _registered)


def _subclasses(root: type) -> Iterable[type]:
    stack = [root]
    while stack:
        cls = stack.pop()
        yield cls
        stack.extend(cls.__subclasses__())


def safe_types(extra: Iterable[type] = ()) -> list[Any]:
    """Every type a checkpoint may contain besides plain data and tensors."""
    modules = [
        cls
        for cls in _subclasses(nn.Module)
        if cls.__module__.startswith(("torch.nn.", "lifelong."))
    ]
    optimizers = [
        cls
        for cls in _subclasses(torch.optim.Optimizer)
        if cls.__module__.startswith(("torch.optim.", "lifelong."))
    ]
    state = [getattr(importlib.import_module(m), name) for m, name in _LIBRARY_STATE_TYPES]
    plain = [collections.defaultdict, collections.OrderedDict, dict, list, set, torch.Generator]
    return [*plain, *modules, *optimizers, *state, *_registered, *extra]


def checkpoint_bytes(data: dict[str, Any]) -> bytes:
    """``data`` serialised by ``torch.save`` (one call, so shared references survive)."""
    buffer = io.BytesIO()
    torch.save(data, buffer)
    return buffer.getvalue()


def load_checkpoint(
    path: Path,
    device: torch.device | str = "cpu",
    *,
    trusted: Iterable[type] = (),
    keys: Iterable[str] = (),
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`checkpoint_bytes` without running any code from it.

    ``trusted``: classes this process already built for the run (the user's own model classes,
    a plugin strategy's modules), also allowed. ``keys``: entries the checkpoint must hold.
    Raises :class:`~lifelong.errors.DataError` with the recovery step when the file is truncated,
    damaged, from an incompatible version or holds anything outside the allowlist.
    """
    try:
        with torch.serialization.safe_globals(safe_types(trusted)), warnings.catch_warnings():
            warnings.simplefilter(
                "ignore"
            )  # the refusal below says all; torch's warnings repeat it
            data = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # any failure to load safely: truncated, random bytes, a payload
        raise DataError(_refusal(path, _reason(err))) from None
    missing = [k for k in keys if not isinstance(data, dict) or k not in data]
    if missing:
        raise DataError(_refusal(path, f"it lacks {', '.join(missing)}"))
    return data


_TORCH_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def _reason(err: BaseException) -> str:
    """The informative sentence of a failed safe load, without PyTorch's advice on loading the
    file unsafely."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    else:
        kept = [
            line for line in text.splitlines() if not line.strip().startswith(_TORCH_BOILERPLATE)
        ]
        text = " ".join(kept)
    text = " ".join(text.split()).split(" Check the documentation", 1)[0]
    text = text.split(". ", 1)[0].rstrip(". ")
    lowered = text.lower()
    if "global" in lowered and ("unsupported" in lowered or "not an allowed" in lowered):
        return f"it holds an object that is not plain data: {text[:120]}"
    if "unsupported operand" in lowered:
        return f"it is not a checkpoint this library wrote: {text[:80]}"
    return text[:160] or type(err).__name__


def _refusal(path: Path, reason: str) -> str:
    return (
        f"checkpoint {path} cannot be loaded safely ({reason}); it was not loaded. Delete it and "
        "resume again: that strategy then restarts from its first task (finished strategies "
        "are kept)"
    )
