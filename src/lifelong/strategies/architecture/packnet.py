"""PackNet (Mallya & Lazebnik 2018, "PackNet: Adding Multiple Tasks to a Single Network by
Iterative Pruning", CVPR).

One fixed network is shared by all tasks. Each task trains the weights still free, prunes a
fraction of them by magnitude (releasing them for later tasks), retrains the weights it keeps
and freezes them. Every weight of a shared layer carries the index of the task that owns it, so
the per-task binary masks of the paper are ``owner == t`` and are disjoint by construction; task
t is predicted with the weights of tasks ``<= t`` only, so later tasks never change it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from lifelong.errors import ConfigError
from lifelong.strategies.architecture.masking import (
    FREE,
    OWNER_DTYPE,
    FrozenEntries,
    magnitude_prune,
)
from lifelong.strategies.base import FitFn, Strategy, register
from lifelong.streams.base import Stream, Task

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@register
class PackNet(Strategy):
    """PackNet (Mallya & Lazebnik 2018): prune, retrain, freeze; one binary mask per task.

    For task t: the free weights of every shared layer (all Linear/Conv layers but the output
    layer) are trained for t; then, per layer, the fraction ``prune`` of them with the smallest
    magnitude is set to zero and released, the rest is retrained for ``retrain_epochs`` through
    the loop's ``fit`` and frozen (owner t). Gradients of weights t does not own are zeroed after
    each backward pass (and their values restored after each step, so that weight decay or
    momentum cannot move them). Prediction for task t uses the weights owned by tasks ``<= t``
    (the paper's masks), released weights being zero.

    Output layer: the paper gives every task its own classifier and does not prune it; here the
    rows of the output layer in task t's columns are that classifier (trained only during t).
    Biases (and any other parameter of the shared layers, e.g. batch norm) are trained with the
    first task and frozen afterwards, as in the paper (official scripts: "nobias-nobn").
    Weights released by pruning stay at zero when the next task starts training them, as in the
    official code.

    Args:
        prune: fraction of each layer's weights trained by the current task that is pruned
            after it. The paper prunes its initial ImageNet network by 0.5 and each added task
            by 0.75 (official scripts ``0.75,0.75,-1``); the default is 0.75 because
            every task here starts from scratch like an added task. A higher value leaves more
            free weights to later tasks (a fraction ``prune^t`` remains after t tasks).
        retrain_epochs: epochs of retraining after pruning (``None``: the loop's ``epochs``;
            0: no retraining). The paper trains 20 epochs, prunes and retrains 10 epochs at a
            tenth of the learning rate; here the loop's learning rate is used.
        prune_last: also prune after the stream's last task. The official scripts do not
            (``-1`` for the last task): nothing is left to release weights for.
    """

    name = "packnet"
    description = "prune each task's weights by magnitude, retrain, freeze (fixed size)"
    family = "architecture"
    scenarios = ("task",)

    def __init__(
        self, prune: float = 0.75, retrain_epochs: int | None = None, prune_last: bool = False
    ) -> None:
        if not 0.0 <= prune < 1.0:
            raise ConfigError(f"packnet: prune must be in [0, 1), got {prune}")
        if retrain_epochs is not None and retrain_epochs < 0:
            raise ConfigError(f"packnet: retrain_epochs must be >= 0, got {retrain_epochs}")
        self.prune = prune
        self.retrain_epochs = retrain_epochs
        self.prune_last = prune_last
        self.layers: list[str] = []  # names of the shared (prunable) weights
        self.head: list[str] = []  # names of the output layer's weight and bias
        self.owners: dict[str, Tensor] = {}  # per shared weight: owning task index or FREE
        self.current = -1
        self.parameters_total: list[int] = []
        self.parameters_used: list[list[int]] = []
        self.parameters_free: list[int] = []
        self._frozen: FrozenEntries | None = None

    # ---- setup ---------------------------------------------------------------------------------
    def prepare(self, model: nn.Module, stream: Stream) -> nn.Module:
        super().prepare(model, stream)
        modules = [(name, m) for name, m in model.named_modules() if isinstance(m, PRUNABLE)]
        if (
            not modules
            or not isinstance(modules[-1][1], nn.Linear)
            or (modules[-1][1].out_features != stream.n_outputs)
        ):
            raise ConfigError(
                "packnet needs a model whose last Linear/Conv layer is the output layer with one "
                f"column per output ({stream.n_outputs}); use --model mlp or --model cnn"
            )

        def prefix(name: str) -> str:
            return f"{name}." if name else ""

        head_name, head = modules[-1]
        self.layers = [f"{prefix(name)}weight" for name, _ in modules[:-1]]
        self.head = [f"{prefix(head_name)}weight"] + (
            [f"{prefix(head_name)}bias"] if head.bias is not None else []
        )
        params = dict(model.named_parameters())
        self.owners = {n: torch.full_like(params[n], FREE, dtype=OWNER_DTYPE) for n in self.layers}
        return model

    def before_task(self, task: Task, model: nn.Module) -> None:
        self.current = task.id
        for owner in self.owners.values():
            owner[owner == FREE] = task.id  # the free weights are trained for this task
        if task.id > 0:  # biases and other shared parameters: trained with the first task only
            trained = set(self.layers) | set(self.head)
            for name, p in model.named_parameters():
                if name not in trained:
                    p.requires_grad_(False)
        self._freeze(model, task)

    def _freeze(self, model: nn.Module, task: Task) -> None:
        """Record which entries ``task`` trains (and the values of all the others)."""
        params = dict(model.named_parameters())
        start, stop = task.columns
        trainable = [(params[n], self.owners[n] == task.id) for n in self.layers]
        for n in self.head:
            rows = torch.zeros_like(params[n], dtype=torch.bool)
            rows[start:stop] = True
            trainable.append((params[n], rows))
        if task.id == 0:
            shared = set(self.layers) | set(self.head)
            trainable += [
                (p, torch.ones_like(p, dtype=torch.bool))
                for n, p in params.items()
                if n not in shared
            ]
        self._frozen = FrozenEntries(trainable)

    # ---- training ------------------------------------------------------------------------------
    def parameters_to_train(self, model: nn.Module) -> list[nn.Parameter]:
        if self.current == 0:
            return list(model.parameters())
        names = set(self.layers) | set(self.head)
        return [p for n, p in model.named_parameters() if n in names]

    def forward(self, model: nn.Module, x: Tensor, task_ids: Tensor) -> Tensor:
        present = task_ids.unique().tolist()
        if present == [self.current]:  # the newest task: no weight of a later task exists yet
            return model(x)
        out = None
        for t in present:
            rows = task_ids == t
            z = self.masked_forward(model, x[rows], t)
            out = z.new_zeros(len(x), z.shape[1]) if out is None else out
            out[rows] = z
        return out

    def after_backward(self, model: nn.Module, batch: Any, task: Task) -> None:
        if self._frozen is not None:
            self._frozen.mask_gradients()

    def after_step(self, model: nn.Module, batch: Any, task: Task) -> None:
        if self._frozen is not None:
            self._frozen.restore()

    def after_task(self, task: Task, model: nn.Module, fit: FitFn) -> None:
        last = task.id == len(self.stream) - 1
        if self.prune > 0 and (self.prune_last or not last):
            params = dict(model.named_parameters())
            with torch.no_grad():
                for n in self.layers:
                    owner = self.owners[n]
                    remove = magnitude_prune(params[n], owner == task.id, self.prune)
                    params[n].masked_fill_(remove, 0.0)
                    owner[remove] = FREE
            self._freeze(model, task)
            if self.retrain_epochs != 0:
                fit(epochs=self.retrain_epochs)
        self._frozen = None
        self._record(model, task)

    # ---- prediction ----------------------------------------------------------------------------
    def masked_forward(self, model: nn.Module, x: Tensor, task_id: int) -> Tensor:
        """The network of task ``task_id``: shared weights owned by tasks ``<= task_id`` only."""
        params = dict(model.named_parameters())
        masked = {
            n: torch.where((owner >= 0) & (owner <= task_id), params[n], 0.0)
            for n, owner in self.owners.items()
        }
        return functional_call(model, masked, (x,))

    def predict(self, model: nn.Module, x: Tensor, task: Task) -> Tensor:
        return self.masked_forward(model, x, task.id)

    # ---- facts -----------------------------------------------------------------------------------
    def _record(self, model: nn.Module, task: Task) -> None:
        params = dict(model.named_parameters())
        shared = set(self.layers) | set(self.head)
        fixed = sum(p.numel() for n, p in params.items() if n not in shared)
        per_row = sum(params[n][0].numel() for n in self.head)
        used = []
        for j in range(task.id + 1):
            start, stop = self.stream.tasks[j].columns
            owned = sum(int(((o >= 0) & (o <= j)).sum()) for o in self.owners.values())
            used.append(owned + fixed + per_row * (stop - start))
        self.parameters_total.append(sum(p.numel() for p in params.values()))
        self.parameters_used.append(used)
        self.parameters_free.append(sum(int((o == FREE).sum()) for o in self.owners.values()))

    def info(self) -> dict[str, Any]:
        return {
            "parameters_total": list(self.parameters_total),
            "parameters_used": list(self.parameters_used),
            "parameters_free": list(self.parameters_free),
        }
