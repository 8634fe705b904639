"""iCaRL (Rebuffi, Kolesnikov, Sperl & Lampert 2017, "iCaRL: Incremental Classifier and
Representation Learning", CVPR), for the class-incremental scenario.

* Representation learning (paper Alg. 3): train on the new classes' data together with the stored
  exemplars, with a sigmoid binary cross-entropy per class; for the new classes the targets are
  one-hot labels, for the old classes they are the previous network's sigmoid outputs
  (distillation).
* Exemplar management: a fixed budget ``K`` of exemplars, ``m = K / (classes seen)`` per class.
  New classes get exemplars by herding (Alg. 4): repeatedly pick the sample that brings the mean
  of the chosen feature vectors closest to the class mean, giving a prioritised list; old classes
  keep the first ``m`` of theirs (Alg. 5).
* Classification (Alg. 1): nearest mean of exemplars in the L2-normalised feature space.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.errors import ConfigError
from lifelong.resources import to_device
from lifelong.strategies.base import Batch, FitFn, Strategy, TrainSet, register
from lifelong.streams.base import Stream, Task, TaskData


def herding(features: Tensor, m: int) -> Tensor:
    """Indices of ``m`` exemplars chosen by herding (iCaRL Alg. 4), in order of priority.

    ``features`` are the L2-normalised feature vectors of one class. Step ``k`` picks
    ``argmin_x || mu - (phi(x) + sum_{j<k} p_j) / k ||`` over samples not chosen yet, ``mu`` the
    class mean. (The paper's loop does not exclude chosen samples; a set of exemplars is meant,
    so they are excluded here.)
    """
    n = len(features)
    m = min(m, n)
    mu = features.mean(0)
    chosen = torch.empty(m, dtype=torch.long, device=features.device)
    running = torch.zeros_like(mu)
    available = torch.ones(n, dtype=torch.bool, device=features.device)
    for k in range(m):
        distance = (mu - (features + running) / (k + 1)).norm(dim=1)
        distance[~available] = float("inf")
        pick = int(distance.argmin())
        chosen[k] = pick
        available[pick] = False
        running += features[pick]
    return chosen


class _FeatureTap:
    """Captures the input of the model's last ``nn.Linear`` (the feature vector ``phi(x)``)."""

    def __init__(self, model: nn.Module) -> None:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ConfigError("icarl needs a model whose last layer is an nn.Linear classifier")
        self.layer = linears[-1]
        self.value: Tensor | None = None

    def __enter__(self) -> _FeatureTap:
        self.handle = self.layer.register_forward_pre_hook(self._hook)
        return self

    def _hook(self, module: nn.Module, args: tuple[Tensor, ...]) -> None:
        self.value = args[0]

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


@register
class ICaRL(Strategy):
    """iCaRL (Rebuffi et al. 2017), class-incremental only.

    Args:
        memory_size: ``K``, the total number of exemplars, ``K / t`` per class once ``t``
            classes are known (paper Alg. 2; 2000 on iCIFAR-100). Default 500, replay's buffer,
            so that both keep the same number of examples; ``--memory N`` sets it for both (the
            paper's 2000 would hold the whole digits training set).

    The feature map ``phi`` is the input of the model's last ``nn.Linear`` (the penultimate
    layer), L2-normalised as in the paper. The loss sums the binary cross-entropy over the
    classes seen so far (paper Alg. 3) and averages it over the samples of a batch. The
    paper trains with lr 2.0, batch 128, 70 epochs and weight decay 1e-5 on CIFAR; set those
    through the training settings. ``predict`` scores each class by minus the distance to its
    exemplar mean (classes without exemplars: -inf); before any exemplar exists it falls back to
    the network's outputs.
    """

    name = "icarl"
    description = "iCaRL: herding exemplars, sigmoid distillation, nearest-mean-of-exemplars"
    family = "memory"
    scenarios = ("class",)
    memory_setting = "memory_size"

    def __init__(self, memory_size: int = 500) -> None:
        if memory_size < 1:
            raise ConfigError(f"icarl: memory_size must be at least 1, got {memory_size}")
        self.memory_size = memory_size
        self.exemplars: dict[int, Tensor] = {}  # class column -> [m, ...] inputs, in herding order
        self.exemplar_tasks: dict[int, int] = {}  # class column -> task id
        self.previous: nn.Module | None = None
        self.old_classes: list[int] = []
        self.new_classes: list[int] = []
        self.steps = 0
        self._means: Tensor | None = None
        self._means_step = -1

    def prepare(self, model: nn.Module, stream: Stream) -> nn.Module:
        super().prepare(model, stream)
        _FeatureTap(model)  # fail early on a model without a final linear layer
        return model

    # ---- training --------------------------------------------------------------------------------
    def before_task(self, task: Task, model: nn.Module) -> None:
        self.old_classes = sorted(self.exemplars)
        self.new_classes = sorted(set(task.train.y.unique().tolist()) - set(self.old_classes))
        self.previous = (
            copy.deepcopy(model).eval().requires_grad_(False) if self.old_classes else None
        )

    def training_data(self, task: Task, seen: list[Task]) -> TrainSet | None:
        parts: list[tuple[int, TaskData]] = [(task.id, task.train)]
        for tid in sorted(set(self.exemplar_tasks.values())):
            classes = [c for c, t in self.exemplar_tasks.items() if t == tid]
            x = torch.cat([self.exemplars[c] for c in classes])
            y = torch.cat(
                [
                    torch.full((len(self.exemplars[c]),), c, dtype=torch.long, device=x.device)
                    for c in classes
                ]
            )
            parts.append((tid, TaskData(x, y)))
        return TrainSet(parts, self.stream)

    def loss(self, model: nn.Module, batch: Batch, task: Task) -> Tensor:
        logits = self.forward(model, batch.x, batch.task_ids)
        seen = to_device(torch.tensor(self.old_classes + self.new_classes), logits.device)
        targets = F.one_hot(batch.y, logits.shape[1]).to(logits.dtype)
        if self.previous is not None and self.old_classes:
            old = to_device(torch.tensor(self.old_classes), logits.device)
            with torch.no_grad():
                targets[:, old] = torch.sigmoid(
                    self.forward(self.previous, batch.x, batch.task_ids)[:, old]
                )
        bce = F.binary_cross_entropy_with_logits(
            logits[:, seen], targets[:, seen], reduction="none"
        )
        return bce.sum(1).mean()

    def after_step(self, model: nn.Module, batch: Batch, task: Task) -> None:
        self.steps += 1

    # ---- exemplars -------------------------------------------------------------------------------
    def _features(self, model: nn.Module, x: Tensor, batch_size: int = 1024) -> Tensor:
        """L2-normalised ``phi(x)`` in eval mode, without gradients."""
        was_training = model.training
        model.eval()
        out = []
        try:
            with torch.no_grad(), _FeatureTap(model) as tap:
                for start in range(0, len(x), batch_size):
                    model(x[start : start + batch_size])
                    out.append(tap.value.flatten(1))
        finally:
            model.train(was_training)
        return F.normalize(torch.cat(out), dim=1)

    def after_task(self, task: Task, model: nn.Module, fit: FitFn) -> None:
        n_classes = len(self.old_classes) + len(self.new_classes)
        m = self.memory_size // max(n_classes, 1)
        for c in self.old_classes:  # Alg. 5: keep the first m of each prioritised list
            self.exemplars[c] = self.exemplars[c][:m].clone()
        y = task.train.y
        for c in self.new_classes:  # Alg. 4: herding on the current features
            rows = (y == c).nonzero().squeeze(1)
            x = task.train.inputs(rows)
            picked = herding(self._features(model, x), m)
            self.exemplars[c] = x[picked].clone()
            self.exemplar_tasks[c] = task.id
        self.previous = None
        self._means_step = -1

    # ---- classification --------------------------------------------------------------------------
    def class_means(self, model: nn.Module) -> Tensor:
        """``[n_outputs, d]`` normalised exemplar means (NaN rows for classes without exemplars)."""
        if self._means is not None and self._means_step == self.steps:
            return self._means
        means = None
        for c, x in self.exemplars.items():
            mu = F.normalize(self._features(model, x).mean(0), dim=0)
            if means is None:
                means = torch.full((self.stream.n_outputs, len(mu)), float("nan"), device=mu.device)
            means[c] = mu
        self._means, self._means_step = means, self.steps
        return means

    def predict(self, model: nn.Module, x: Tensor, task: Task) -> Tensor:
        if not self.exemplars:
            return super().predict(model, x, task)
        means = self.class_means(model)
        distance = torch.cdist(self._features(model, x), means.nan_to_num(0.0))
        missing = torch.isnan(means[:, 0])
        return (-distance).masked_fill(missing[None, :], float("-inf"))

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["_means"], state["_means_step"] = None, -1  # a cache, recomputed on demand
        return state

    def footprint(self, model: nn.Module) -> dict[str, int]:
        """The default walk, less the class-mean cache: the means are recomputed from the
        exemplars on demand (and dropped from checkpoints), so whether the cache is filled when
        the footprint is taken says nothing about what iCaRL keeps."""
        out = super().footprint(model)
        out.pop("means", None)
        return out

    def stored_examples(self) -> int:
        return sum(len(v) for v in self.exemplars.values())

    def info(self) -> dict[str, Any]:
        stored = self.stored_examples()
        nbytes = sum(v.element_size() * v.numel() for v in self.exemplars.values())
        return {
            "memory": {
                "stores": "real training samples (exemplar inputs), chosen by herding",
                "samples": stored,
                "capacity": self.memory_size,
                "bytes": nbytes,
                "per_class": {str(c): len(v) for c, v in sorted(self.exemplars.items())},
            },
        }
