"""Streams from a user's own data: tensors, numpy arrays or torch ``Dataset`` objects per task."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset, TensorDataset

from lifelong.errors import ConfigError, DataError
from lifelong.streams.base import SCENARIOS, Stream, Task, TaskData

ArrayLike = Tensor | np.ndarray


MAX_EXACT_INT = 2**24  # integers a float32 input holds exactly
MAX_COLUMNS = 100_000  # more output columns than this is a labelling mistake, not a task
PROBES = 16  # items of a live Dataset read up front: their shapes and labels are checked


def _tensor(a: Any, what: str) -> Tensor:
    if isinstance(a, Tensor):
        return a.detach()
    if isinstance(a, np.ndarray):
        if a.dtype.kind not in "biuf":
            raise ConfigError(
                f"{what} has numpy dtype {a.dtype}; give numbers (integer class labels, "
                "numeric inputs)"
            )
        return torch.from_numpy(np.ascontiguousarray(a))
    raise ConfigError(f"{what} must be a torch tensor or numpy array, got {type(a).__name__}")


def model_inputs(x: Tensor, what: str) -> Tensor:
    """Inputs as models take them: uint8 kept (scaled later), float64 as float32, integers and
    booleans as float32 when it holds them exactly; NaN, infinities and 1-D inputs refused."""
    if x.dim() < 2:
        raise ConfigError(
            f"{what} inputs have shape {list(x.shape)}; give one row per sample, "
            "[samples, features] (one feature: x.reshape(-1, 1))"
        )
    if x.dim() and x.shape[0] > 1 and x.stride(0) == 0:  # one sample expanded (a live Dataset)
        return model_inputs(x[:1], what).expand(x.shape)
    if x.dtype == torch.uint8:
        return x
    if x.is_complex():
        raise ConfigError(f"{what} inputs are complex numbers; give real-valued inputs")
    if x.is_floating_point():
        if not torch.isfinite(x).all():
            raise ConfigError(f"{what} inputs contain NaN or infinite values; clean the data")
        return x.float() if x.dtype == torch.float64 else x
    if x.numel() and int(x.abs().max()) > MAX_EXACT_INT:
        raise ConfigError(
            f"{what} integer inputs reach {int(x.abs().max())}, more than float32 holds "
            "exactly; scale them and pass floats"
        )
    return x.float()


def class_labels(y: Tensor, what: str) -> Tensor:
    """Integer class indices, one per sample: whole-valued floats accepted, others refused."""
    if y.dim() == 2 and y.shape[1] > 1:
        raise ConfigError(
            f"{what} labels have shape {list(y.shape)} (one-hot?); give one class index per "
            "sample, e.g. y.argmax(1)"
        )
    y = y.reshape(-1) if y.dim() == 2 else y
    if y.dim() != 1:
        raise ConfigError(f"{what} labels have shape {list(y.shape)}; give one class per sample")
    if y.dtype == torch.bool or y.is_complex():
        raise ConfigError(f"{what} labels must be integer classes, got {y.dtype}")
    if y.is_floating_point():
        bad = ~torch.isfinite(y) | (y != y.round())
        if bad.any():
            raise ConfigError(
                f"{what} labels must be whole numbers (classes), got {y[bad][0].item()}"
            )
        if y.numel() and y.abs().max() > MAX_EXACT_INT:
            raise ConfigError(f"{what} labels reach {y.abs().max().item():g}; renumber 0..K-1")
    return y.long()


def _label(y: Any, where: str) -> int:
    """One label read from a Dataset item: an integer class, else one clear line."""
    size = y.numel() if isinstance(y, Tensor) else getattr(y, "size", None)
    value = y.item() if isinstance(y, Tensor | np.ndarray | np.generic) and size == 1 else y
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConfigError(
            f"{where} has label {y!r}; labels must be integer classes (map names to 0..K-1)"
        )
    if not float(value).is_integer():
        raise ConfigError(f"{where} has label {y!r}; labels must be whole numbers")
    return int(value)


def check_dataset(dataset: Any, what: str) -> tuple[Any, Any]:
    """The first ``(x, y)`` of a map-style ``Dataset``; one clear error for any other shape."""
    if isinstance(dataset, IterableDataset):
        raise ConfigError(
            f"{what} is an IterableDataset; a task needs a map-style Dataset (__len__ and "
            "__getitem__), e.g. read it into a list or tensors first"
        )
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise ConfigError(
            f"{what} must be a torch Dataset with __len__ and __getitem__, got {type(dataset).__name__}"
        )
    if len(dataset) == 0:
        raise ConfigError(f"{what} is empty; every task needs at least one sample")
    item = dataset[0]
    if not isinstance(item, tuple | list) or len(item) != 2:
        size = len(item) if isinstance(item, tuple | list) else 1
        hint = (
            " (the task is given by the Dataset's position in the list: one Dataset per task, "
            "returning (x, y))"
            if size == 3
            else ""
        )
        raise ConfigError(f"{what} must return (input, label) pairs, got {size} value(s){hint}")
    return item


def _input(x: Any, where: str) -> Tensor:
    """One input read from a Dataset item as a tensor, else one clear line."""
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(f"{where} has input {x!r}; give numbers") from None


def _check_shape(
    x: Tensor, shape: torch.Size, i: int, what: str, error: type[Exception] = ConfigError
) -> None:
    """One clear line (``error``) when sample ``i`` does not have the first sample's ``shape``."""
    if x.shape != shape:
        raise error(
            f"{what}, sample {i}, has shape {list(x.shape)} but sample 0 has {list(shape)}; "
            "give every sample one shape (resize, crop or pad in __getitem__)"
        )


def _probe(dataset: Dataset, shape: torch.Size, what: str) -> dict[int, int]:
    """The labels of a few items spread over ``dataset`` (first and last included), whose
    inputs are checked to have the first sample's ``shape``."""
    n = len(dataset)  # type: ignore[arg-type]
    rows = sorted({round(k * (n - 1) / (PROBES - 1)) for k in range(PROBES)})
    labels = {}
    for i in rows:
        x, y = dataset[i]
        _check_shape(_input(x, f"{what}, sample {i},"), shape, i, what)
        labels[i] = _label(y, f"{what}, sample {i},")
    return labels


def _may_transform_labels(dataset: Dataset) -> bool:
    """Whether ``__getitem__`` may change the labels ``dataset.targets`` holds: a
    ``target_transform``, or a joint ``transforms`` other than torchvision's pair of separate
    transforms without a target transform."""
    if getattr(dataset, "target_transform", None) is not None:
        return True
    joint = getattr(dataset, "transforms", None)
    return joint is not None and getattr(joint, "target_transform", True) is not None


def _labels(dataset: Dataset, probes: dict[int, int], what: str) -> Tensor:
    """Every label as the items give it. ``dataset.targets`` is read instead of every item only
    when the Dataset transforms no labels, the targets are valid class labels
    (:func:`class_labels`) and they agree with the ``probes`` (index -> label read from the
    item); otherwise every item is read once."""
    n = len(dataset)  # type: ignore[arg-type]
    targets = getattr(dataset, "targets", None)
    if targets is not None and not _may_transform_labels(dataset):
        try:
            y = class_labels(torch.as_tensor(targets), what)
        except (TypeError, ValueError, RuntimeError):  # ConfigError included: read the items
            y = None
        if y is not None and len(y) == n and all(int(y[i]) == v for i, v in probes.items()):
            return y
    return torch.tensor(
        [
            probes[i] if i in probes else _label(dataset[i][1], f"{what}, sample {i},")
            for i in range(n)
        ],
        dtype=torch.long,
    )


def dataset_to_tensors(dataset: Dataset, what: str = "a task's Dataset") -> tuple[Tensor, Tensor]:
    """Read a map-style ``Dataset`` of ``(x, y)`` pairs once into two stacked tensors."""
    check_dataset(dataset, what)
    xs, ys = [], []
    for i in range(len(dataset)):  # type: ignore[arg-type]  # one pass at stream creation
        x, y = dataset[i]
        xs.append(_input(x, f"{what}, sample {i},"))
        _check_shape(xs[-1], xs[0].shape, i, what)
        ys.append(_label(y, f"{what}, sample {i},"))
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long)


@dataclass(frozen=True, eq=False)
class DatasetData(TaskData):
    """A training split read from a user's ``Dataset`` on demand: every ``inputs`` call (and
    every epoch of training, through a ``DataLoader``) calls ``dataset[i]`` again, so random
    transforms give new samples each time. ``x`` holds one probe sample (shape and dtype);
    ``y`` the output columns of every sample, read once.

    Attributes:
        dataset: the user's map-style Dataset of ``(x, y)``.
        num_workers, pin_memory: ``torch.utils.data.DataLoader`` settings for training.
        what: the Dataset as error messages name it.
    """

    dataset: Any = None
    num_workers: int = 0
    pin_memory: bool = False
    what: str = "a training Dataset"

    def __post_init__(self) -> None:
        if len(self.y) != len(self.dataset):
            raise ValueError(
                f"DatasetData has {len(self.dataset)} samples but {len(self.y)} labels"
            )

    def sample(self, i: int) -> Tensor:
        """Sample ``i`` as the model gets it (the dataset's transform applied now); one clear
        line when its shape differs from the first sample's."""
        x = torch.as_tensor(self.dataset[i][0])
        _check_shape(x, self.x.shape[1:], i, self.what, DataError)  # one read between probes
        if self.scale is not None:
            return x.to(torch.float32).mul_(self.scale)
        return x if x.dtype == torch.float32 else x.to(torch.float32)  # float64, integers

    def inputs(self, idx: Tensor | slice | None = None) -> Tensor:
        if idx is None:
            rows = range(len(self))
        elif isinstance(idx, slice):
            rows = range(*idx.indices(len(self)))
        else:
            rows = idx.tolist()
        return torch.stack([self.sample(i) for i in rows]).to(self.y.device)

    def to(self, device: torch.device | str, cache: dict[int, Tensor] | None = None) -> TaskData:
        return replace(self, y=self.y.to(device))


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
    if names is not None and len(names) != len(tasks):
        raise ConfigError(f"names= has {len(names)} names for {len(tasks)} tasks; give one each")
    parts = []
    for t, task in enumerate(tasks):
        if not isinstance(task, tuple | list) or len(task) != 4:
            raise ConfigError(f"task {t}: give (x_train, y_train, x_test, y_test)")
        xtr, ytr, xte, yte = (_tensor(a, f"task {t}") for a in task)
        xtr, xte = model_inputs(xtr, f"task {t} training"), model_inputs(xte, f"task {t} test")
        ytr, yte = class_labels(ytr, f"task {t} training"), class_labels(yte, f"task {t} test")
        if len(xtr) != len(ytr) or len(xte) != len(yte):
            raise ConfigError(f"task {t}: inputs and labels have different lengths")
        if not len(xtr) or not len(xte):
            split = "training" if not len(xtr) else "test"
            raise ConfigError(f"task {t} has no {split} samples; every split needs some")
        if xtr.shape[1:] != xte.shape[1:]:
            raise ConfigError(f"task {t}: train and test inputs have different shapes")
        parts.append((xtr, ytr, xte, yte))
    shape = tuple(parts[0][0].shape[1:])
    if any(tuple(p[0].shape[1:]) != shape for p in parts):
        raise ConfigError("every task's inputs must have the same per-sample shape")
    if min(int(torch.cat([p[1], p[3]]).min()) for p in parts) < 0:
        raise ConfigError("labels must be non-negative integers")
    n_max = max(int(torch.cat([p[1], p[3]]).max()) for p in parts) + 1
    heads = [torch.unique(torch.cat([p[1], p[3]])) for p in parts]
    n_out = sum(len(h) for h in heads) if scenario == "task" else n_max
    if n_out > MAX_COLUMNS:
        distinct = len(torch.unique(torch.cat(heads)))
        raise ConfigError(
            f"labels up to {n_max - 1} would need {n_out:,} output columns for {distinct} "
            f"classes; renumber them 0..{distinct - 1} (torch.unique(y, return_inverse=True))"
        )
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
    tasks: Sequence[tuple[Dataset, Dataset]],
    scenario: str = "domain",
    *,
    loader: str = "auto",
    num_workers: int = 0,
    pin_memory: bool = False,
    **kwargs: Any,
) -> Stream:
    """A stream from ``(train_dataset, test_dataset)`` per task (map-style, ``(x, y)`` items).

    Args:
        loader: ``"auto"``: a ``TensorDataset`` is read into tensors (the fast in-memory path);
            any other training Dataset is trained through a ``torch.utils.data.DataLoader``, so
            its ``__getitem__`` (and random transforms) runs again every epoch. ``"tensors"``:
            read every Dataset once. ``"dataloader"``: always through a DataLoader.
        num_workers, pin_memory: the DataLoader's worker processes and pinned memory.

    Test Datasets are read once into tensors (evaluation is deterministic). Memories (replay,
    GEM, iCaRL) store the samples as read when they pick them. Other keywords: as
    :func:`from_tensors`.
    """
    if loader not in ("auto", "tensors", "dataloader"):
        raise ConfigError(f"loader must be auto, tensors or dataloader, got {loader!r}")
    if num_workers < 0:
        raise ConfigError(f"num_workers must be >= 0, got {num_workers}")
    parts, lazy = [], []
    for t, task in enumerate(tasks):
        if not isinstance(task, tuple | list) or len(task) != 2:
            raise ConfigError(f"task {t}: give (train_dataset, test_dataset)")
        train, test = task
        what = f"task {t}'s training Dataset"
        probe = check_dataset(train, what)
        live = loader == "dataloader" or (loader == "auto" and not isinstance(train, TensorDataset))
        if live:
            x0 = _input(probe[0], f"{what}, sample 0,")
            x_train = x0.unsqueeze(0).expand(len(train), *x0.shape)  # a view: no copy
            y_train = _labels(train, _probe(train, x0.shape, what), what)
        else:
            x_train, y_train = dataset_to_tensors(train, what)
        parts.append((x_train, y_train, *dataset_to_tensors(test, f"task {t}'s test Dataset")))
        lazy.append(train if live else None)
    stream = from_tensors(parts, scenario, **kwargs)
    for t, (task, dataset) in enumerate(zip(stream.tasks, lazy, strict=True)):
        if dataset is not None:
            task.train = DatasetData(
                x=task.train.x[:1].clone(),
                y=task.train.y,
                scale=task.train.scale,
                dataset=dataset,
                num_workers=num_workers,
                pin_memory=pin_memory,
                what=f"task {t}'s training Dataset",
            )
    return stream
