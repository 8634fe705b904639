"""Streams from a user's own data: tensors, numpy arrays or torch ``Dataset`` objects per task."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from lifelong.errors import ConfigError
from lifelong.streams.base import SCENARIOS, Stream, Task, TaskData

ArrayLike = Tensor | np.ndarray


def _tensor(a: Any, what: str) -> Tensor:
    if isinstance(a, Tensor):
        return a.detach()
    if isinstance(a, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(a))
    raise ConfigError(f"{what} must be a torch tensor or numpy array, got {type(a).__name__}")


def dataset_to_tensors(dataset: Dataset) -> tuple[Tensor, Tensor]:
    """Read a map-style ``Dataset`` of ``(x, y)`` pairs once into two stacked tensors."""
    xs, ys = [], []
    for i in range(len(dataset)):  # type: ignore[arg-type]  # one pass at stream creation
        x, y = dataset[i]
        xs.append(torch.as_tensor(x))
        ys.append(int(y))
    if not xs:
        raise ConfigError("a task's Dataset is empty; every task needs at least one sample")
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long)


def from_tensors(
    tasks: Sequence[tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike]],
    scenario: str = "domain",
    *,
    names: Sequence[str] | None = None,
    name: str = "custom",
) -> Stream:
    """A stream from ``(x_train, y_train, x_test, y_test)`` per task.

    Labels are integer classes. In the ``task`` scenario each task's classes are renumbered
    ``0..k-1`` in sorted order and get their own head; in ``domain`` all tasks share columns
    ``0..max label``; in ``class`` labels are kept as given and index one shared head.
    Float inputs are used as they are (normalise them yourself); uint8 inputs are scaled by 1/255.
    """
    if scenario not in SCENARIOS:
        raise ConfigError(f"scenario must be one of {', '.join(SCENARIOS)}, got {scenario!r}")
    if not tasks:
        raise ConfigError("from_tensors needs at least one task")
    parts = []
    for t, task in enumerate(tasks):
        if len(task) != 4:
            raise ConfigError(f"task {t}: give (x_train, y_train, x_test, y_test)")
        xtr, ytr, xte, yte = (_tensor(a, f"task {t}") for a in task)
        if len(xtr) != len(ytr) or len(xte) != len(yte):
            raise ConfigError(f"task {t}: inputs and labels have different lengths")
        if xtr.shape[1:] != xte.shape[1:]:
            raise ConfigError(f"task {t}: train and test inputs have different shapes")
        parts.append((xtr, ytr.long(), xte, yte.long()))
    shape = tuple(parts[0][0].shape[1:])
    if any(tuple(p[0].shape[1:]) != shape for p in parts):
        raise ConfigError("every task's inputs must have the same per-sample shape")
    if min(int(torch.cat([p[1], p[3]]).min()) for p in parts) < 0:
        raise ConfigError("labels must be non-negative integers")
    n_max = max(int(torch.cat([p[1], p[3]]).max()) for p in parts) + 1
    heads = [torch.unique(torch.cat([p[1], p[3]])) for p in parts]
    n_out = sum(len(h) for h in heads) if scenario == "task" else n_max
    out, offset = [], 0
    for t, ((xtr, ytr, xte, yte), classes) in enumerate(zip(parts, heads, strict=True)):
        if scenario == "task":
            ytr = offset + torch.searchsorted(classes, ytr)
            yte = offset + torch.searchsorted(classes, yte)
            columns = (offset, offset + len(classes))
            offset += len(classes)
        else:
            columns = (0, n_max)
        scale = 1 / 255 if xtr.dtype == torch.uint8 else None
        out.append(
            Task(
                id=t,
                name=names[t] if names else f"task {t + 1}",
                train=TaskData(xtr, ytr, scale=scale),
                test=TaskData(xte, yte, scale=scale),
                classes=tuple(classes.tolist()),
                columns=columns,
            )
        )
    kind = "image" if len(shape) >= 2 else "features"
    return Stream(name, "custom", scenario, out, shape, n_out, input_kind=kind)


def from_datasets(
    tasks: Sequence[tuple[Dataset, Dataset]], scenario: str = "domain", **kwargs: Any
) -> Stream:
    """A stream from ``(train_dataset, test_dataset)`` per task, read once into tensors."""
    return from_tensors(
        [(*dataset_to_tensors(tr), *dataset_to_tensors(te)) for tr, te in tasks], scenario, **kwargs
    )
