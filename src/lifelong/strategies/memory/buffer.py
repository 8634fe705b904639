"""Bounded sample memories shared by the memory-based strategies.

* :func:`reservoir_slots`: Vitter's Algorithm R (Vitter 1985, "Random sampling with a reservoir"),
  vectorised over a batch: after ``n`` samples have been offered, every one of them is in the
  buffer with the same probability ``capacity / n``.
* :func:`class_balanced_indices`: an equal share of a budget for every class, drawn uniformly
  within each class (the class-balanced memory of Chaudhry et al. 2019, "On Tiny Episodic
  Memories in Continual Learning", and of GDumb, Prabhu et al. 2020).
* :class:`SampleBuffer`: inputs, labels and task ids of stored samples as tensors. Stored inputs
  are always copies (``.clone()``), never views of stream data, so a checkpoint of the buffer
  holds the buffer alone and not the whole data set behind it.

Every random choice draws on the CPU from the ``generator`` passed in (the strategy's own,
:attr:`~lifelong.strategies.base.Strategy.generator`, saved in checkpoints), and the result is
moved to the data's device; ``None`` draws from the global torch RNG.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lifelong.resources import to_device


def reservoir_slots(
    seen: int,
    batch: int,
    capacity: int,
    device: torch.device | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Buffer slot of each of ``batch`` new samples under Algorithm R, ``-1`` = not stored.

    Sample number ``i`` (0-based over the whole stream, ``i = seen + k``) goes to slot ``i`` while
    the buffer fills (``i < capacity``); afterwards it draws ``j`` uniformly from ``0..i`` and
    replaces slot ``j`` when ``j < capacity``. When two samples of one batch draw the same slot
    the later one wins, exactly as in the sequential algorithm (see :func:`last_writer_wins`).
    """
    index = torch.arange(seen, seen + batch, device=device)
    uniform = torch.rand(batch, generator=generator, dtype=torch.float64).to(device)
    draw = (uniform * (index + 1)).floor().long()
    slots = torch.where(index < capacity, index, draw)
    return torch.where(slots < capacity, slots, torch.full_like(slots, -1))


def last_writer_wins(slots: Tensor) -> Tensor:
    """Boolean mask of the entries of ``slots`` (``-1`` = none) that are the last write to their
    slot, so that a vectorised scatter does what a sequential loop of writes would do (a stable
    sort groups each slot's writes in order; the last of each group wins)."""
    order = torch.argsort(slots, stable=True)
    ordered = slots[order]
    last = torch.ones_like(ordered, dtype=torch.bool)
    last[:-1] = ordered[:-1] != ordered[1:]
    keep = torch.empty_like(last)
    keep[order] = last & (ordered >= 0)
    return keep


def class_balanced_indices(
    labels: Tensor, budget: int, generator: torch.Generator | None = None
) -> Tensor:
    """Indices of at most ``budget`` samples with (as nearly as possible) equal counts per class.

    Every class present in ``labels`` gets ``budget // C`` slots; the remaining slots, and those
    of classes with too few samples, go one at a time to the classes with the most samples left
    (largest first, ties by class label). Within a class the samples are drawn uniformly at random
    without replacement. A uniform subsample of a uniform subsample is uniform, so repeating the
    selection over (old memory + new data) keeps each class's memory a uniform sample of it.
    """
    if budget <= 0 or len(labels) == 0:
        return torch.zeros(0, dtype=torch.long, device=labels.device)
    classes, counts = labels.unique(return_counts=True)
    quota = torch.zeros_like(counts)
    left = min(budget, len(labels))
    while left > 0:  # at most a few rounds: each gives every unfilled class an equal share
        room = counts - quota
        open_classes = (room > 0).nonzero().squeeze(1)
        share = max(left // len(open_classes), 1)
        give = room[open_classes].clamp(max=share)
        if share == 1 and int(give.sum()) > left:
            # fewer slots than classes: the classes with the most samples left get one each
            order = torch.argsort(room[open_classes], descending=True, stable=True)
            give = torch.zeros_like(give)
            give[order[:left]] = 1
        quota[open_classes] += give
        left -= int(give.sum())
    picked = []
    for cls, k in zip(classes.tolist(), quota.tolist(), strict=True):
        members = (labels == cls).nonzero().squeeze(1)
        order = torch.randperm(len(members), generator=generator).to(labels.device)
        picked.append(members[order[:k]])
    return torch.cat(picked).sort().values


class SampleBuffer:
    """A fixed-capacity memory of samples: inputs, labels and task ids as tensors.

    Fill it either online with :meth:`add_reservoir` (Algorithm R) or wholesale with
    :meth:`replace` (e.g. a class-balanced selection at the end of each task), not both.

    Args:
        capacity: the most samples it holds.

    Attributes:
        seen: samples offered to :meth:`add_reservoir` so far (Algorithm R's stream counter).
        size: samples stored now.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a buffer needs a capacity of at least 1, got {capacity}")
        self.capacity = capacity
        self.seen = 0
        self.size = 0
        self._x: Tensor | None = None
        self._y: Tensor | None = None
        self._t: Tensor | None = None

    def __len__(self) -> int:
        return self.size

    @property
    def x(self) -> Tensor | None:
        return None if self._x is None else self._x[: self.size]

    @property
    def y(self) -> Tensor | None:
        return None if self._y is None else self._y[: self.size]

    @property
    def task_ids(self) -> Tensor | None:
        return None if self._t is None else self._t[: self.size]

    def add_reservoir(
        self, x: Tensor, y: Tensor, task_ids: Tensor, generator: torch.Generator | None = None
    ) -> None:
        """Offer a batch to the reservoir (Algorithm R, drawing from ``generator``); the buffer
        stores copies."""
        if self._x is None:
            self._x = torch.zeros((self.capacity, *x.shape[1:]), dtype=x.dtype, device=x.device)
            self._y = torch.zeros(self.capacity, dtype=y.dtype, device=y.device)
            self._t = torch.zeros(self.capacity, dtype=torch.long, device=y.device)
        # The slots depend on the CPU generator alone: chosen on the host, they reach the
        # device as indices, and the host never waits for the device.
        slots = reservoir_slots(self.seen, len(y), self.capacity, torch.device("cpu"), generator)
        keep = last_writer_wins(slots)
        rows = to_device(keep.nonzero().squeeze(1), y.device)
        slots = to_device(slots[keep], y.device)
        self._x[slots] = x.detach()[rows].to(self._x.dtype)  # index assignment copies
        self._y[slots] = y[rows]
        self._t[slots] = task_ids[rows]
        self.seen += len(y)
        self.size = min(self.seen, self.capacity)

    def replace(self, x: Tensor, y: Tensor, task_ids: Tensor) -> None:
        """Replace the whole content with copies of ``x``, ``y``, ``task_ids``."""
        if len(y) > self.capacity:
            raise ValueError(f"{len(y)} samples do not fit a buffer of {self.capacity}")
        self._x, self._y, self._t = x.detach().clone(), y.clone(), task_ids.clone()
        self.size = len(y)

    def sample(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``n`` stored samples drawn uniformly without replacement from ``generator`` (all of
        them if fewer)."""
        if self.size <= n:
            return self.x, self.y, self.task_ids
        idx = to_device(torch.randperm(self.size, generator=generator)[:n], self._y.device)
        return self._x[idx], self._y[idx], self._t[idx]

    def nbytes(self) -> int:
        """Bytes held by the stored tensors (the allocated capacity)."""
        tensors = (self._x, self._y, self._t)
        return sum(t.element_size() * t.numel() for t in tensors if t is not None)

    def class_counts(self) -> dict[int, int]:
        """Stored samples per label."""
        if self.size == 0:
            return {}
        classes, counts = self.y.unique(return_counts=True)
        return dict(zip(classes.tolist(), counts.tolist(), strict=True))


class EpisodicMemory:
    """Per-task episodic memories of equal capacity, stacked as ``[tasks, per_task, ...]``.

    GEM and A-GEM keep one memory per task (Lopez-Paz & Ranzato 2017, Sec. 3). The stacked layout
    lets GEM compute the gradients of all past tasks in one vectorised call. Rows that are not
    filled yet hold a copy of the task's first stored sample and carry weight 0 in
    :meth:`weights`, so every row has a finite loss.

    Args:
        per_task: samples stored per task.

    Attributes:
        task_ids: the task id of each memory row, in the order the tasks were seen.
        counts: samples stored in each row.
    """

    def __init__(self, per_task: int) -> None:
        if per_task < 1:
            raise ValueError(f"the memory per task must be at least 1 sample, got {per_task}")
        self.per_task = per_task
        self.x: Tensor | None = None
        self.y: Tensor | None = None
        self.task_ids: list[int] = []
        self.counts: list[int] = []
        self.positions: list[int] = []  # next ring-buffer slot of each row

    def __len__(self) -> int:
        return sum(self.counts)

    def row(self, task_id: int) -> int:
        """The memory row of ``task_id``, allocating an empty one for a new task."""
        if task_id in self.task_ids:
            return self.task_ids.index(task_id)
        self.task_ids.append(task_id)
        self.counts.append(0)
        self.positions.append(0)
        return len(self.task_ids) - 1

    def _ensure_row(self, row: int, x: Tensor, y: Tensor) -> None:
        if self.x is None:
            self.x = torch.empty((0, self.per_task, *x.shape[1:]), dtype=x.dtype, device=x.device)
            self.y = torch.empty((0, self.per_task), dtype=y.dtype, device=y.device)
        while len(self.x) <= row:  # a new row starts as copies of the first sample
            self.x = torch.cat(
                [self.x, x[:1].detach().expand(1, self.per_task, *x.shape[1:]).clone()]
            )
            self.y = torch.cat([self.y, y[:1].expand(1, self.per_task).clone()])

    def write_recent(self, task_id: int, x: Tensor, y: Tensor) -> None:
        """Ring buffer: keep the most recent ``per_task`` samples of ``task_id`` (GEM's code)."""
        row = self.row(task_id)
        self._ensure_row(row, x, y)
        if len(y) > self.per_task:
            x, y = x[-self.per_task :], y[-self.per_task :]
        # The slots from positions[row] on, wrapping at the end: at most two contiguous copies
        # (an index tensor of slots made this 20x slower, a fifth of a millisecond a step).
        start, n = self.positions[row], len(y)
        head = min(n, self.per_task - start)
        x = x.detach().to(self.x.dtype)
        self.x[row, start : start + head] = x[:head]
        self.y[row, start : start + head] = y[:head]
        self.x[row, : n - head] = x[head:]
        self.y[row, : n - head] = y[head:]
        self.positions[row] = (start + n) % self.per_task
        self.counts[row] = min(self.counts[row] + len(y), self.per_task)

    def write_all(self, task_id: int, x: Tensor, y: Tensor) -> None:
        """Set the memory of ``task_id`` to (copies of) ``x``, ``y`` (at most ``per_task``)."""
        if len(y) > self.per_task:
            raise ValueError(f"{len(y)} samples do not fit a memory of {self.per_task} per task")
        row = self.row(task_id)
        self._ensure_row(row, x, y)
        self.x[row, : len(y)] = x.detach().to(self.x.dtype)
        self.y[row, : len(y)] = y
        self.counts[row] = len(y)
        self.positions[row] = len(y) % self.per_task

    def rows_except(self, task_id: int) -> list[int]:
        """Rows of every other task that has stored samples."""
        return [r for r, t in enumerate(self.task_ids) if t != task_id and self.counts[r] > 0]

    def weights(self, rows: list[int]) -> Tensor:
        """``[len(rows), per_task]`` weights: ``1 / count`` on stored samples, 0 on empty slots,
        so a weighted sum of per-sample losses is each task's mean memory loss."""
        counts = to_device(torch.tensor([self.counts[r] for r in rows]), self.y.device)
        slots = torch.arange(self.per_task, device=self.y.device)
        filled = (slots[None, :] < counts[:, None]).float()
        return filled / counts[:, None].clamp(min=1)

    def flat(self, rows: list[int]) -> tuple[Tensor, Tensor, Tensor]:
        """Stored samples of ``rows`` as flat tensors ``x``, ``y`` and their task ids."""
        xs, ys, ts = [], [], []
        for r in rows:
            n = self.counts[r]
            xs.append(self.x[r, :n])
            ys.append(self.y[r, :n])
            ts.append(torch.full((n,), self.task_ids[r], dtype=torch.long, device=self.y.device))
        return torch.cat(xs), torch.cat(ys), torch.cat(ts)

    def stored(self, rows: list[int]) -> int:
        """Samples stored in ``rows``."""
        return sum(self.counts[r] for r in rows)

    def gather(self, rows: list[int], index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``flat(rows)`` at the positions ``index``, copying only those samples (A-GEM draws 256
        of up to 19 x 256 stored samples per step; concatenating all of them first would copy
        every stored input at every step)."""
        device = self.y.device
        counts = to_device(torch.tensor([self.counts[r] for r in rows]), device)
        ends = counts.cumsum(0)
        which = torch.searchsorted(ends, index, right=True)
        slot = index - (ends - counts)[which]
        row = to_device(torch.tensor(rows), device)[which]
        tids = to_device(torch.tensor([self.task_ids[r] for r in rows]), device)[which]
        return self.x[row, slot], self.y[row, slot], tids

    def describe(self) -> dict[str, Any]:
        """What the memory holds, for results.json (fair comparisons of memory budgets)."""
        return {
            "stores": "real training samples (inputs and labels), per task",
            "samples": len(self),
            "per_task": self.per_task,
            "tasks": len(self.task_ids),
            "bytes": self.nbytes(),
        }

    def nbytes(self) -> int:
        """Bytes held by the stored tensors."""
        return sum(t.element_size() * t.numel() for t in (self.x, self.y) if t is not None)
