"""Elastic weight consolidation (EWC) and its online variant.

Both weigh each parameter by the diagonal of the Fisher information of the task's
log-likelihood, computed per sample (:func:`~.persample.diagonal_fisher`), never as the square of
a mini-batch gradient.
"""

from __future__ import annotations

from torch import nn

from lifelong.errors import ConfigError
from lifelong.strategies.base import FitFn, register
from lifelong.strategies.regularization.anchor import (
    AnchoredStrategy,
    ParamDict,
    QuadraticPenalty,
    check_fraction,
    check_positive,
    snapshot,
)
from lifelong.strategies.regularization.persample import diagonal_fisher
from lifelong.streams.base import Task

FISHER_KINDS = ("true", "empirical")


def _check_fisher(name: str, fisher: str, samples: int) -> None:
    if fisher not in FISHER_KINDS:
        raise ConfigError(f"{name}: fisher must be 'true' or 'empirical', got {fisher!r}")
    if samples < 0:
        raise ConfigError(f"{name}: fisher_samples must be >= 0 (0 = all samples), got {samples}")


class _FisherStrategy(AnchoredStrategy):
    fisher: str
    fisher_samples: int

    def task_fisher(self, task: Task, model: nn.Module) -> ParamDict:
        """Diagonal Fisher of ``task``'s training data at the current parameters."""
        return diagonal_fisher(
            model,
            task.train,
            task.columns,
            labels=self.fisher,
            samples=self.fisher_samples or None,
            generator=self.generator,
        )


@register
class EWC(_FisherStrategy):
    """Elastic weight consolidation (Kirkpatrick et al. 2017, PNAS 114(13), "Overcoming
    catastrophic forgetting in neural networks").

    After task k the diagonal Fisher ``F_k,i = E_x E_{y~p_θ(y|x)} [(∂ log p_θ(y|x) / ∂θ_i)²]``
    is computed at the task's solution θ*_k, and every later task minimises (eq. 3, with "a
    penalty per past task", as the paper does for more than two tasks)

        L(θ) = L_t(θ) + Σ_{k<t} (λ/2) Σ_i F_k,i (θ_i − θ*_k,i)².

    The expectation over x is the mean over the task's training samples; the Fisher is the mean
    of per-sample squared gradients (``torch.func``), with the output restricted to the task's
    columns (its head in the task-incremental scenario). The per-task Fishers and anchors are
    kept, and their penalties are summed exactly into one quadratic
    (:meth:`QuadraticPenalty.combine`; the paper notes the same: "the sum of two quadratic
    penalties is itself a quadratic penalty"), so a step costs the same after 20 tasks as after
    one.

    Args:
        lambda_: λ, the importance of old tasks relative to the new one. The paper tunes it per
            experiment and gives no value for this setting; default 1.0, the best of a grid on
            permuted MNIST in the GEM setting (SGD, lr 0.1; see
            benchmarks/RESULTS.md). With plain SGD, λ · lr · max F must stay
            well below 2 or the penalty's own step overshoots; the per-task Fisher sum grows with
            the number of tasks, so long streams need a smaller λ (λ = 10 diverged at task 14
            of 20 there).
        fisher: ``"true"``: labels drawn from the model's predictive distribution (the Fisher
            information, as the paper defines it; default); ``"empirical"``: the data's labels
            (the "empirical Fisher" most libraries compute).
        fisher_samples: training samples the Fisher is averaged over, drawn at random; 0 (the
            default) uses all of them.
    """

    name = "ewc"
    description = "elastic weight consolidation: Fisher-weighted pull, one penalty per past task"

    def __init__(self, lambda_: float = 1.0, fisher: str = "true", fisher_samples: int = 0) -> None:
        check_positive("ewc: lambda", lambda_)
        _check_fisher("ewc", fisher, fisher_samples)
        self.lambda_ = float(lambda_)
        self.fisher = fisher
        self.fisher_samples = int(fisher_samples)
        self.fishers: list[ParamDict] = []
        self.anchors: list[ParamDict] = []
        self.penalty: QuadraticPenalty | None = None

    @property
    def penalty_scale(self) -> float:
        return self.lambda_ / 2

    def after_task(self, task: Task, model: nn.Module, fit: FitFn) -> None:
        self.fishers.append(self.task_fisher(task, model))
        self.anchors.append(snapshot(model))
        self.penalty = QuadraticPenalty.combine(list(zip(self.fishers, self.anchors, strict=True)))

    def stored_values(self) -> int:
        per_task = sum(t.numel() for f in (*self.fishers, *self.anchors) for t in f.values())
        return per_task + super().stored_values()


@register
class OnlineEWC(_FisherStrategy):
    """Online EWC (Schwarz et al. 2018, ICML, "Progress & Compress: A scalable framework for
    continual learning", section 2.1 and eq. 4).

    One running Fisher instead of one per task: after task k, ``F*_k = γ F*_{k−1} + F_k``, and
    task k + 1 minimises

        L(θ) = L_{k+1}(θ) + (λ/2) Σ_i γ F*_k,i (θ_i − θ*_k,i)²,

    anchored at the latest solution θ*_k only. The decay γ appears twice (in the update and in
    the penalty) as in the paper's equations. Memory and cost do not grow with the number of tasks.

    Args:
        lambda_: λ (default 5.0, the best of a grid in the GEM setting, as for :class:`EWC`).
        gamma: γ in [0, 1], how much of the old running Fisher is kept (1: none forgotten; P&C
            uses γ < 1 to forget gracefully). Default 1.0.
        fisher: ``"true"`` (default) or ``"empirical"``, as for :class:`EWC`.
        fisher_samples: as for :class:`EWC` (0: all samples).
    """

    name = "online-ewc"
    description = "online EWC: one running Fisher with decay gamma (Progress & Compress)"

    def __init__(
        self,
        lambda_: float = 5.0,
        gamma: float = 1.0,
        fisher: str = "true",
        fisher_samples: int = 0,
    ) -> None:
        check_positive("online-ewc: lambda", lambda_)
        check_fraction("online-ewc: gamma", gamma)
        _check_fisher("online-ewc", fisher, fisher_samples)
        self.lambda_ = float(lambda_)
        self.gamma = float(gamma)
        self.fisher = fisher
        self.fisher_samples = int(fisher_samples)
        self.running_fisher: ParamDict | None = None
        self.penalty: QuadraticPenalty | None = None

    @property
    def penalty_scale(self) -> float:
        return self.lambda_ / 2

    def after_task(self, task: Task, model: nn.Module, fit: FitFn) -> None:
        new = self.task_fisher(task, model)
        if self.running_fisher is None:
            self.running_fisher = new
        else:
            self.running_fisher = {
                name: old.mul(self.gamma).add_(new[name])
                for name, old in self.running_fisher.items()
            }
        decayed = {name: f.mul(self.gamma) for name, f in self.running_fisher.items()}
        self.penalty = QuadraticPenalty(decayed, snapshot(model))

    def stored_values(self) -> int:
        running = sum(t.numel() for t in (self.running_fisher or {}).values())
        return running + super().stored_values()
