"""Pure metric functions over the accuracy matrix R.

R has shape (T+1) x T: ``R[0, j]`` is the accuracy of the untrained model on task j and
``R[i, j]`` (i >= 1) the accuracy on task j after learning tasks 1..i. With 1-based task indices
as in the papers (so that ``R[i, j]`` with i = j is the accuracy right after learning task j):

* ACC = (1/T) sum_j R[T, j]                           (Lopez-Paz & Ranzato 2017, GEM, Section 2)
* BWT = 1/(T-1) sum_{j=1}^{T-1} (R[T, j] - R[j, j])   (GEM Sec. 2)
* FWT = 1/(T-1) sum_{j=2}^{T} (R[j-1, j] - b_j)       (GEM Sec. 2), b_j = R[0, j], the untrained
  model's accuracy (GEM's "random initialisation" baseline)
* forgetting = 1/(T-1) sum_{j=1}^{T-1} f_j with f_j = max_{l in 1..T-1} R[l, j] - R[T, j]
  (Chaudhry et al. 2018, Riemannian Walk, Sec. 3 "forgetting measure": the max runs over every earlier row l >= 1,
  as written in the paper; row 0, the untrained model, is not a learning step)
* learning accuracy = (1/T) sum_j R[j, j] (accuracy on each task right after learning it)

BWT, FWT and forgetting average over T-1 tasks and are undefined (``None``) when T = 1.
Every function accepts a partial matrix (fewer than T+1 rows, when a run stopped early) and then
reports the metrics of the tasks learned so far: t = rows - 1 tasks, evaluated on tasks 1..t.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Matrix = Sequence[Sequence[float]] | np.ndarray


def _as_matrix(r: Matrix) -> tuple[np.ndarray, int]:
    """Validate R and return it with t, the number of tasks learned (rows - 1)."""
    m = np.asarray(r, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] < 1:
        raise ValueError(f"accuracy matrix must be 2-D with at least one row, got shape {m.shape}")
    t = m.shape[0] - 1
    if t > m.shape[1]:
        raise ValueError(f"accuracy matrix has {m.shape[0]} rows but only {m.shape[1]} tasks")
    return m, t


def average_accuracy(r: Matrix) -> float | None:
    """ACC: mean accuracy over the tasks learned so far, after the last one (GEM Sec. 2)."""
    m, t = _as_matrix(r)
    return None if t == 0 else float(m[t, :t].mean())


def backward_transfer(r: Matrix) -> float | None:
    """BWT: mean change in accuracy on earlier tasks since they were learned (GEM Sec. 2)."""
    m, t = _as_matrix(r)
    if t < 2:
        return None
    return float(np.mean([m[t, j - 1] - m[j, j - 1] for j in range(1, t)]))


def forward_transfer(r: Matrix) -> float | None:
    """FWT: accuracy on each task before learning it, minus the untrained model's (GEM Sec. 2)."""
    m, t = _as_matrix(r)
    if t < 2:
        return None
    return float(np.mean([m[j - 1, j - 1] - m[0, j - 1] for j in range(2, t + 1)]))


def forgetting(r: Matrix) -> float | None:
    """Average forgetting (Chaudhry et al. 2018, Sec. 3) over tasks 1..t-1."""
    m, t = _as_matrix(r)
    if t < 2:
        return None
    drops = [m[1:t, j - 1].max() - m[t, j - 1] for j in range(1, t)]
    return float(np.mean(drops))


def learning_accuracy(r: Matrix) -> float | None:
    """Mean accuracy on each task right after learning it (the diagonal R[j, j])."""
    m, t = _as_matrix(r)
    return None if t == 0 else float(np.mean([m[j, j - 1] for j in range(1, t + 1)]))


def summarize(r: Matrix) -> dict[str, float | None]:
    """All metrics of one accuracy matrix, keyed as in results.json."""
    return {
        "acc": average_accuracy(r),
        "bwt": backward_transfer(r),
        "fwt": forward_transfer(r),
        "forgetting": forgetting(r),
        "learning_accuracy": learning_accuracy(r),
    }
