"""Progressive Neural Networks (Rusu et al. 2016, "Progressive Neural Networks", arXiv:1606.04671).

A new *column* (a fresh MLP) per task; the columns of earlier tasks are frozen and feed the new
column through lateral connections, so learning a task never changes what an earlier task
computes (no forgetting by construction) while it may reuse their features. The price is model
size: with the paper's non-linear adapters (Eq. 2) the lateral parameters of column k grow with
k, so the whole network grows quadratically in the number of tasks.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.errors import ConfigError
from lifelong.models import MLP
from lifelong.strategies.base import FitFn, Strategy, register
from lifelong.streams.base import Stream, Task

ALPHA_INIT_MAX = 0.1
"""Adapter scalars start uniform in [0, ALPHA_INIT_MAX): the paper only says "initialized by a
random small value" (Sec. 2, paragraph "Adapters")."""


def mlp_widths(model: nn.Module, strategy: str) -> tuple[int, list[int]]:
    """Input size and hidden widths of our :class:`~lifelong.models.MLP`, read from its layers."""
    if not isinstance(model, MLP):
        raise ConfigError(
            f"{strategy} builds its own fully connected network from the given MLP's widths; "
            f"use --model mlp (got {type(model).__name__})"
        )
    hidden = [m for m in model.features if isinstance(m, nn.Linear)]
    in_features = hidden[0].in_features if hidden else model.head.in_features
    return in_features, [m.out_features for m in hidden]


def route_by_task(
    x: Tensor,
    task_ids: Tensor,
    n_outputs: int,
    logits_of: Callable[[Tensor, int], Tensor | None],
    columns: Callable[[int], tuple[int, int]],
) -> Tensor:
    """``[B, n_outputs]`` scores where each sample gets ``logits_of(its inputs, its task)`` in its
    task's output columns and 0 elsewhere (``logits_of`` returns ``None`` for a task that has no
    network yet: its samples score 0 everywhere, i.e. chance).

    Samples are grouped by task, so a batch of one task runs exactly the computation that task's
    network would run alone (bit-identical outputs whatever else the batch holds).
    """
    present = task_ids.unique().tolist()
    out: Tensor | None = None
    for t in present:
        whole = len(present) == 1
        rows = None if whole else task_ids == t
        z = logits_of(x if whole else x[rows], t)
        if z is None:
            continue
        start, stop = columns(t)
        if whole:
            return F.pad(z, (start, n_outputs - stop))
        if out is None:
            out = z.new_zeros(len(x), n_outputs)
        out[rows, start:stop] = z
    return out if out is not None else x.new_zeros(len(x), n_outputs, dtype=torch.float32)


UNLEARNED_TASK_FWT = (
    "a task not yet learned has no network of its own and scores 0 in every column, as before "
    "training (0 by construction)"
)
"""Why FWT is undefined for strategies that route each task to its own network
(:func:`route_by_task`): ``R[j-1, j]`` equals the untrained ``R[0, j]`` exactly."""


class LateralAdapter(nn.Module):
    """The non-linear lateral adapter of Eq. 2 into layer i of column k (k >= 2, 1-based).

    ``U σ(V (α · [h_{i-1}^(1); ...; h_{i-1}^(k-1)]))``: the previous columns' activations are
    concatenated, scaled by the learned scalar α, projected by V onto an ``n_{i-1}``-dimensional
    space (V is ``n_{i-1} x (k-1) n_{i-1}``, as in the paper), passed through the ReLU and mapped
    by U to layer i's width. V has a bias and U none (the paper omits biases from its equations;
    layer i's own W carries the bias of the sum).
    """

    def __init__(self, n_previous: int, in_width: int, out_width: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.rand(()) * ALPHA_INIT_MAX)
        self.project = nn.Linear(n_previous * in_width, in_width)
        self.lateral = nn.Linear(in_width, out_width, bias=False)

    def forward(self, previous: list[Tensor]) -> Tensor:
        return self.lateral(F.relu(self.project(self.alpha * torch.cat(previous, dim=1))))


class Column(nn.Module):
    """One task's column: the MLP layers (W of Eq. 1) and the adapters from earlier columns.

    Layer 0 reads the input, which every column shares, so it has no lateral connection; every
    later layer i (the output layer included) has one adapter from all earlier columns.
    """

    def __init__(self, widths: list[int], n_out: int, n_previous: int) -> None:
        super().__init__()
        sizes = [*widths, n_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.adapters = (
            nn.ModuleList(
                LateralAdapter(n_previous, sizes[i], sizes[i + 1])
                for i in range(1, len(self.layers))
            )
            if n_previous
            else nn.ModuleList()
        )


class ProgressiveNet(nn.Module):
    """A progressive network of MLP columns, one per task, each writing its task's output columns.

    Args:
        in_features: size of one flattened input.
        hidden: hidden widths of every column (the given MLP's).
        n_outputs: output columns of the whole model (all tasks' heads).

    ``forward(x, task_ids)`` routes each sample to its task's column; without ``task_ids`` every
    sample goes to the newest column.
    """

    def __init__(self, in_features: int, hidden: list[int], n_outputs: int) -> None:
        super().__init__()
        self.widths = [in_features, *hidden]
        self.n_outputs = n_outputs
        self.columns = nn.ModuleList()
        self.output_columns: list[tuple[int, int]] = []
        self.register_buffer("anchor", torch.empty(0), persistent=False)  # device and dtype

    def add_column(self, output_columns: tuple[int, int]) -> Column:
        """Freeze every existing column and append a new one for the next task."""
        for column in self.columns:
            column.requires_grad_(False)
        start, stop = output_columns
        column = Column(self.widths, stop - start, len(self.columns))
        self.columns.append(column.to(self.anchor.device))
        self.output_columns.append((start, stop))
        return column

    def column_logits(self, x: Tensor, k: int) -> Tensor:
        """Column k's outputs (its task's columns only), Eq. 1 with Eq. 2's adapters."""
        inputs = [x.flatten(1)] * (k + 1)  # input of the current layer, per column 0..k
        last = len(self.widths) - 1
        for i in range(last):
            outputs = []
            for j in range(k + 1):
                column = self.columns[j]
                z = column.layers[i](inputs[j])
                if i > 0 and j > 0:
                    z = z + column.adapters[i - 1](inputs[:j])
                outputs.append(F.relu(z))
            inputs = outputs
        column = self.columns[k]
        z = column.layers[last](inputs[k])
        if last > 0 and k > 0:
            z = z + column.adapters[last - 1](inputs[:k])
        return z

    def forward(self, x: Tensor, task_ids: Tensor | None = None) -> Tensor:
        if task_ids is None:
            task_ids = torch.full((len(x),), len(self.columns) - 1, device=x.device)
        return route_by_task(
            x,
            task_ids,
            self.n_outputs,
            lambda xs, t: self.column_logits(xs, t) if 0 <= t < len(self.columns) else None,
            lambda t: self.output_columns[t],
        )


@register
class PNN(Strategy):
    """Progressive Neural Networks (Rusu et al. 2016).

    ``prepare`` replaces the given MLP by a :class:`ProgressiveNet` with the same input size and
    hidden widths; each task adds a column (Eq. 1: ``h_i^(k) = f(W_i^(k) h_{i-1}^(k) +
    Σ_{j<k} U_i^(k:j) h_{i-1}^(j))``) whose lateral connections are the paper's non-linear
    adapters (Eq. 2, :class:`LateralAdapter`, with the learned scalar α). Earlier columns are
    frozen: only the new column (with its adapters) is trained, and a task is predicted by its
    own column, which reads only earlier columns. Each column's output layer has its task's
    output columns only (the paper's per-task policy/value heads).

    Documented choices: the paper gives α's initial value only as "a random small value" (here
    U[0, 0.1)); the input layer has no lateral connection (every column sees the same input);
    biases are kept in W and V (the paper omits them from its equations); a task with no column
    yet (the untrained row of the accuracy matrix) scores 0 on every class. The parameter count
    after task t is ``t P + Σ_{k<t} A(k)`` with ``A(k)`` growing linearly in k (V reads all k
    earlier columns), i.e. quadratic in the number of tasks.

    No hyperparameters: the columns take the widths of the given MLP (``--hidden``).
    """

    name = "pnn"
    description = "progressive networks: a frozen column per task, lateral adapters (grows)"
    family = "architecture"
    scenarios = ("task",)

    def __init__(self) -> None:
        self.current = -1
        self.parameters_total: list[int] = []
        self.parameters_used: list[list[int]] = []

    def prepare(self, model: nn.Module, stream: Stream) -> nn.Module:
        super().prepare(model, stream)
        in_features, hidden = mlp_widths(model, self.name)
        device = next(model.parameters()).device
        return ProgressiveNet(in_features, hidden, stream.n_outputs).to(device)

    def before_task(self, task: Task, model: nn.Module) -> None:
        net = _progressive(model)
        while len(net.columns) <= task.id:
            net.add_column(self.stream.tasks[len(net.columns)].columns)
        self.current = task.id

    def forward(self, model: nn.Module, x: Tensor, task_ids: Tensor) -> Tensor:
        return model(x, task_ids)

    def parameters_to_train(self, model: nn.Module) -> list[nn.Parameter]:
        return list(_progressive(model).columns[self.current].parameters())

    def after_task(self, task: Task, model: nn.Module, fit: FitFn) -> None:
        net = _progressive(model)
        per_column = [sum(p.numel() for p in c.parameters()) for c in net.columns]
        self.parameters_total.append(sum(per_column))
        self.parameters_used.append([sum(per_column[: j + 1]) for j in range(task.id + 1)])

    def not_applicable(self, scenario: str) -> dict[str, str]:
        return {"fwt": UNLEARNED_TASK_FWT}

    def info(self) -> dict[str, Any]:
        return {
            "parameters_total": list(self.parameters_total),
            "parameters_used": list(self.parameters_used),
        }


def _progressive(model: nn.Module) -> ProgressiveNet:
    if not isinstance(model, ProgressiveNet):
        raise ConfigError("pnn: the model must be the one returned by PNN.prepare")
    return model
