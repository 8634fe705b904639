"""Tasks and streams: the values every stage after the data sources works with.

A stream is a list of tasks; each task has a train and a test split. Splits are stored without
copying the underlying data where the stream allows it (the 20 tasks of a permuted stream share
one uint8 copy of the images and differ only in a feature permutation applied batch by batch), so
a long stream of a large data set stays small in memory.

Labels are output *columns*: ``y`` indexes the model's logits directly, and ``Task.columns`` is the
range of columns a prediction for that task may use. That one convention covers the three
scenarios of van de Ven & Tolias (2019, "Three scenarios for continual learning"):

* task-incremental (``task``): each task owns its own columns (a multi-head output layer whose
  heads are disjoint column ranges); the task id selects the head;
* domain-incremental (``domain``): every task uses the same columns;
* class-incremental (``class``): every task predicts over all columns of all tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

SCENARIOS = ("task", "domain", "class")


@dataclass(frozen=True, eq=False)
class TaskData:
    """One split (train or test) of one task.

    Attributes:
        x: storage of inputs, first dimension = samples. May be shared between tasks. Either
            ``uint8`` (scaled to floats by ``scale``), floating point, or integer tokens.
        y: int64 output-column labels, one per sample of this split.
        rows: which rows of ``x`` form this split, in order (``None``: all rows of ``x``).
        features: permutation of the flattened features applied to every sample (permuted
            streams), or ``None``.
        scale: multiplier turning ``uint8`` storage into floats (``1 / max_value``); ``None``
            leaves the dtype as stored.
        shape: per-sample shape of the inputs handed to the model (``None``: as stored).
        feature_major: ``x`` is stored transposed, ``[features, samples]``. A feature
            permutation then gathers whole contiguous rows and the inputs come out as a
            transposed view that matrix products read without a copy: evaluation of a permuted
            task costs no more than evaluation of the unpermuted data.
    """

    x: Tensor
    y: Tensor
    rows: Tensor | None = None
    features: Tensor | None = None
    scale: float | None = None
    shape: tuple[int, ...] | None = None
    feature_major: bool = False

    def __post_init__(self) -> None:
        stored = self.x.shape[1] if self.feature_major else len(self.x)
        n = len(self.rows) if self.rows is not None else stored
        if len(self.y) != n:
            raise ValueError(f"TaskData has {n} inputs but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)

    def inputs(self, idx: Tensor | slice | None = None) -> Tensor:
        """Model-ready inputs of the samples ``idx`` (all when ``None``)."""
        rows = self.rows
        if idx is not None:
            rows = idx if rows is None else rows[idx]
        if self.feature_major:
            out = self._gather_feature_major(rows)
        else:
            out = self.x if rows is None else self.x[rows]
            if self.features is not None:
                # Gather rows first (still uint8), then permute features: one small copy each.
                out = out.reshape(len(out), -1)[:, self.features]
        if self.scale is not None:
            out = out.to(torch.float32).mul_(self.scale)  # keeps a transposed layout as it is
        if self.shape is not None:
            out = out.view(len(out), *self.shape)  # splitting one dimension: a view, no copy
        return out

    def _gather_feature_major(self, rows: Tensor | slice | None) -> Tensor:
        """``[samples, features]`` as a transposed view of a ``[features, samples]`` gather."""
        x = self.x
        if rows is None or isinstance(rows, slice):
            x = x if rows is None else x[:, rows]
            # index_select copies whole rows: about 2.5x faster than x[features] here.
            out = x if self.features is None else torch.index_select(x, 0, self.features)
        else:
            feats = (
                self.features
                if self.features is not None
                else torch.arange(len(x), device=x.device)
            )
            out = x[feats.unsqueeze(1), rows.unsqueeze(0)]
        return out.T

    def subset(self, idx: Tensor) -> TaskData:
        """The samples ``idx`` of this split (indices into it), sharing the storage."""
        rows = idx if self.rows is None else self.rows[idx]
        return replace(self, y=self.y[idx], rows=rows)

    def labels(self, idx: Tensor | slice | None = None) -> Tensor:
        return self.y if idx is None else self.y[idx]

    def materialize(self) -> tuple[Tensor, Tensor]:
        """All inputs and labels as plain tensors (a copy; use for small splits or memories)."""
        return self.inputs(), self.y

    def to(self, device: torch.device | str, cache: dict[int, Tensor] | None = None) -> TaskData:
        """This split on ``device``; storage shared by several splits is moved once via ``cache``."""
        cache = {} if cache is None else cache

        def move(t: Tensor | None) -> Tensor | None:
            if t is None:
                return None
            key = id(t)
            if key not in cache:
                cache[key] = t.to(device)
            return cache[key]

        return replace(
            self, x=move(self.x), y=move(self.y), rows=move(self.rows), features=move(self.features)
        )


@dataclass(eq=False)
class Task:
    """One task of a stream.

    Attributes:
        id: position in the stream, from 0.
        name: human-readable name ("permutation 3", "digits 4-5", "qa7 counting").
        train, test: the two splits.
        valid: samples held out of the training data for validation (``--validation``), or
            ``None``.
        classes: the original labels present in this task.
        columns: ``(start, stop)``, the output columns predictions for this task use.
    """

    id: int
    name: str
    train: TaskData
    test: TaskData
    classes: tuple[int, ...]
    columns: tuple[int, int]
    valid: TaskData | None = None

    def to(self, device: torch.device | str, cache: dict[int, Tensor] | None = None) -> Task:
        cache = {} if cache is None else cache
        valid = self.valid.to(device, cache) if self.valid is not None else None
        return replace(
            self, train=self.train.to(device, cache), test=self.test.to(device, cache), valid=valid
        )

    def split(self, name: str) -> TaskData | None:
        """The split called ``name``: ``train``, ``test`` or ``valid``."""
        return getattr(self, name)


def stratified_holdout(y: Tensor, fraction: float, generator: torch.Generator) -> Tensor:
    """Indices of a stratified random fraction of ``y``: ``round(fraction * n_c)`` samples of
    every label c (at least one when the label has two samples or more, never all of them)."""
    chosen = []
    for label in torch.unique(y.cpu()).tolist():
        idx = torch.nonzero(y.cpu() == label).flatten()
        k = round(fraction * len(idx))
        k = min(max(k, 1 if len(idx) > 1 else 0), len(idx) - 1)
        chosen.append(idx[torch.randperm(len(idx), generator=generator)[:k]])
    return torch.cat(chosen).sort().values if chosen else torch.zeros(0, dtype=torch.long)


@dataclass(eq=False)
class Stream:
    """A sequence of tasks in one scenario, with what a model needs to know about its inputs.

    Attributes:
        name: generator name ("permuted", "split", ...).
        data: data-source name ("digits", "mnist", ...).
        scenario: one of ``SCENARIOS``.
        tasks: the tasks, in training order.
        input_shape: per-sample input shape (``(1, 28, 28)`` for MNIST images).
        n_outputs: number of output columns of the model.
        input_kind: ``"image"``, ``"features"`` or ``"tokens"``; tells model builders what fits.
        info: anything a model or strategy needs beyond that (a vocabulary, for text streams).
    """

    name: str
    data: str
    scenario: str
    tasks: list[Task]
    input_shape: tuple[int, ...]
    n_outputs: int
    input_kind: str = "image"
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {SCENARIOS}, got {self.scenario!r}")
        masks = torch.zeros(len(self.tasks), self.n_outputs, dtype=torch.bool)
        for task in self.tasks:
            masks[task.id, task.columns[0] : task.columns[1]] = True
        self._column_masks = masks
        self._column_masks_on: dict[torch.device, Tensor] = {}  # copies on other devices

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self):
        return iter(self.tasks)

    def __getitem__(self, i: int) -> Task:
        return self.tasks[i]

    def column_mask(self, task_ids: Tensor | int) -> Tensor:
        """Boolean mask of the columns each sample may predict: ``[n_outputs]`` or ``[B, n_outputs]``."""
        masks = self._column_masks
        if isinstance(task_ids, Tensor) and task_ids.device != masks.device:
            # one copy per device, made once: a copy at every batch would make the host wait
            if task_ids.device not in self._column_masks_on:
                self._column_masks_on[task_ids.device] = masks.to(task_ids.device)
            masks = self._column_masks_on[task_ids.device]
        return masks[task_ids]

    def hold_out(self, fraction: float, seed: int) -> Stream:
        """This stream with a stratified fraction of every task's training data moved to the
        task's ``valid`` split (disjoint from ``train``). The draw uses its own generator seeded
        from ``seed`` and the task id, so it leaves every other random choice of the run as it is
        and is the same for every strategy of a seed."""
        tasks = []
        for task in self.tasks:
            seed_of_task = (1_000_003 * seed + task.id) % 2**64  # within what torch takes
            generator = torch.Generator().manual_seed(seed_of_task)
            held = stratified_holdout(task.train.y, fraction, generator)
            keep = torch.ones(len(task.train), dtype=torch.bool)
            keep[held] = False
            kept = torch.nonzero(keep).flatten()
            device = task.train.y.device
            tasks.append(
                replace(
                    task,
                    train=task.train.subset(kept.to(device)),
                    valid=task.train.subset(held.to(device)),
                )
            )
        return replace(self, tasks=tasks)

    def select(self, start: int, stop: int) -> Stream:
        """Only tasks ``start .. stop-1``, renumbered from 0 (the two parts of ``--tune-tasks``).

        The model keeps every output column; in the class scenario a task predicts over the
        columns of the selected tasks' labels only, as if the stream had begun at ``start``."""
        if not 0 <= start < stop <= len(self.tasks):
            raise ValueError(f"tasks {start}..{stop - 1} are not in a stream of {len(self)} tasks")
        chosen = self.tasks[start:stop]
        columns = None
        if self.scenario == "class":
            labels = torch.cat([torch.cat([t.train.y, t.test.y]) for t in chosen])
            columns = (int(labels.min()), int(labels.max()) + 1)
        tasks = [replace(t, id=i, columns=columns or t.columns) for i, t in enumerate(chosen)]
        return replace(self, tasks=tasks)

    def to(self, device: torch.device | str) -> Stream:
        cache: dict[int, Tensor] = {}
        moved = replace(self, tasks=[task.to(device, cache) for task in self.tasks])
        return moved

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary for results.json."""
        return {
            "name": self.name,
            "data": self.data,
            "scenario": self.scenario,
            "input_shape": list(self.input_shape),
            "n_outputs": self.n_outputs,
            "tasks": [
                {
                    "id": t.id,
                    "name": t.name,
                    "classes": list(t.classes),
                    "columns": list(t.columns),
                    "train_samples": len(t.train),
                    "test_samples": len(t.test),
                    **({"validation_samples": len(t.valid)} if t.valid is not None else {}),
                }
                for t in self.tasks
            ],
        }
