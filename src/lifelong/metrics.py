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
GEM's code (``metrics.py`` of facebookresearch/GradientEpisodicMemory), which produced the
paper's tables, divides the same sums by T instead (a zero term for the last task in BWT, for the
first in FWT), so its BWT and FWT are (T-1)/T times the paper's; ``over="t"`` computes that
variant (the default ``"t-1"`` is the paper's definition, which does not shrink with T).
Every function accepts a partial matrix (fewer than T+1 rows, when a run stopped early) and then
reports the metrics of the tasks learned so far: t = rows - 1 tasks, evaluated on tasks 1..t.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Matrix = Sequence[Sequence[float]] | np.ndarray

AVERAGES = ("t-1", "t")
"""Denominators of BWT and FWT: the paper's T-1 (default) or T, as GEM's code averages."""


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


def _transfer_mean(terms: list[float], t: int, over: str) -> float:
    if over not in AVERAGES:
        raise ValueError(f"over must be one of {', '.join(AVERAGES)}, got {over!r}")
    return float(np.sum(terms) / (t - 1 if over == "t-1" else t))


def backward_transfer(r: Matrix, over: str = "t-1") -> float | None:
    """BWT: mean change in accuracy on earlier tasks since they were learned (GEM Sec. 2).

    ``over="t"`` divides the sum by T, as GEM's code does, instead of the paper's T-1."""
    m, t = _as_matrix(r)
    if t < 2:
        return None
    return _transfer_mean([m[t, j - 1] - m[j, j - 1] for j in range(1, t)], t, over)


def forward_transfer(r: Matrix, over: str = "t-1") -> float | None:
    """FWT: accuracy on each task before learning it, minus the untrained model's (GEM Sec. 2).

    ``over="t"`` divides the sum by T, as GEM's code does, instead of the paper's T-1."""
    m, t = _as_matrix(r)
    if t < 2:
        return None
    return _transfer_mean([m[j - 1, j - 1] - m[0, j - 1] for j in range(2, t + 1)], t, over)


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


def summarize(r: Matrix, over: str = "t-1") -> dict[str, float | None]:
    """All metrics of one accuracy matrix, keyed as in results.json (``over``: BWT and FWT's
    denominator, see :data:`AVERAGES`)."""
    return {
        "acc": average_accuracy(r),
        "bwt": backward_transfer(r, over),
        "fwt": forward_transfer(r, over),
        "forgetting": forgetting(r),
        "learning_accuracy": learning_accuracy(r),
    }
