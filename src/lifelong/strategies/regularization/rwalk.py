"""Riemannian walk (RWalk): online Fisher (EWC++) plus a KL-normalised path score."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lifelong.errors import ConfigError
from lifelong.strategies.base import Batch, FitFn, register
from lifelong.strategies.regularization.anchor import (
    AnchoredStrategy,
    ParamDict,
    PathIntegral,
    QuadraticPenalty,
    check_fraction,
    check_positive,
    snapshot,
    trainable,
)
from lifelong.strategies.regularization.persample import (
    log_likelihood_loss,
    per_sample_gradient_sum,
)
from lifelong.streams.base import Stream, Task


def min_max_normalise(values: ParamDict) -> ParamDict:
    """Scale all tensors together to [0, 1] by their joint minimum and maximum."""
    low = min(float(v.min()) for v in values.values())
    high = max(float(v.max()) for v in values.values())
    span = high - low
    if span <= 0:
        return {name: torch.zeros_like(v) for name, v in values.items()}
    return {name: (v - low) / span for name, v in values.items()}


@register
class RWalk(AnchoredStrategy):
    """Riemannian walk (Chaudhry, Dokania, Ajanthan & Torr 2018, ECCV, "Riemannian Walk for
    Incremental Learning: Understanding Forgetting and Intransigence"), without its replay part.

    Two importances, both collected while training:

    * EWC++ (section 4.1): a moving average of the empirical Fisher,
      ``F ← α F_batch + (1 − α) F``, where ``F_batch`` is the Fisher of the current mini-batch:
      the mean of its *per-sample* squared log-likelihood gradients (``torch.func``; the paper's
      empirical Fisher; the authors' code estimates it differently, from mini-batch gradients).
      It is updated every ``update_every`` steps (the authors' ``fisher_update_after``, 10)
      rather than every step, which keeps the per-sample pass to one batch in ten.
    * The optimisation-path score (section 4.2): over each interval of ``update_every`` steps,
      the loss decrease each parameter caused, ``Σ −g_i Δθ_i`` (unregularised gradient, as in
      SI), divided by the KL divergence that interval moved the model's predictions along that
      parameter, ``½ F_i (θ_i(t + Δt) − θ_i(t))² + ε`` (F at the start of the interval); negative
      scores are set to zero, and the interval scores are summed over the task.

    After task k the task's score is averaged with the previous one, ``s ← ½ (s + s_k)`` (the
    first task's score is taken as is) so that the regularisation does not keep getting more
    rigid, and the next task minimises (eq. 9)

        L(θ) = L_{k+1}(θ) + λ Σ_i (F̂_i + ŝ_i) (θ_i − θ*_i)²,

    with θ* the parameters after task k. The Fisher and the score live on different scales, so
    each is min-max normalised to [0, 1] over all parameters before they are added (F̂, ŝ), as
    in the authors' implementation. The running Fisher carries over from task to task.

    Where the authors' code differs (the README's deviation table): its Fisher estimator (from
    mini-batch gradients, not per sample), the KL denominator (without the ½ written here,
    from the paper's second-order expansion of the KL) and the way scores of successive tasks
    are combined (here the paper's average ``½ (s + s_k)``). These follow the paper; the
    normalisation makes λ comparable between the two only roughly.

    Args:
        lambda_: λ. Default 5.0, the best of a grid on permuted MNIST in the GEM setting
            (SGD, lr 0.1; benchmarks/RESULTS.md); the importance is at most 2
            after normalisation, so λ · lr must stay below about 1/2 with plain SGD.
        alpha: α, the weight of the newest mini-batch Fisher in the moving average (the
            authors use 0.9).
        update_every: steps per Fisher update and per score interval (the authors use 10).
        epsilon: ε, keeps the score finite for parameters that did not move (the authors' code
            uses 1e-3).
    """

    name = "rwalk"
    description = "Riemannian walk: online Fisher (EWC++) plus KL-normalised path score"

    def __init__(
        self,
        lambda_: float = 5.0,
        alpha: float = 0.9,
        update_every: int = 10,
        epsilon: float = 1e-3,
    ) -> None:
        check_positive("rwalk: lambda", lambda_)
        check_fraction("rwalk: alpha", alpha, low_open=True)
        check_positive("rwalk: epsilon", epsilon, allow_zero=False)
        if update_every < 1:
            raise ConfigError(f"rwalk: update_every must be at least 1, got {update_every}")
        self.lambda_ = float(lambda_)
        self.alpha = float(alpha)
        self.update_every = int(update_every)
        self.epsilon = float(epsilon)
        self.path: PathIntegral | None = None
        self.interval_start: ParamDict = {}
        self.steps_in_interval = 0
        self.running_fisher: ParamDict | None = None
        self.task_score: ParamDict = {}
        self.score: ParamDict | None = None
        self.penalty: QuadraticPenalty | None = None

    @property
    def penalty_scale(self) -> float:
        return self.lambda_

    def prepare(self, model: nn.Module, stream: Stream) -> nn.Module:
        super().prepare(model, stream)
        self.path = PathIntegral(trainable(model))
        self.interval_start = snapshot(model)
        self.task_score = {name: torch.zeros_like(p) for name, p in self.interval_start.items()}
        return model

    # ---- per step ------------------------------------------------------------------------------
    def after_backward(self, model: nn.Module, batch: Batch, task: Task) -> None:
        self.path.before_step(self.path.parameters_of(model))  # unregularised gradient
        super().after_backward(model, batch, task)

    def after_step(self, model: nn.Module, batch: Batch, task: Task) -> None:
        self.path.after_step(self.path.parameters_of(model))
        self.steps_in_interval += 1
        if self.steps_in_interval >= self.update_every:
            self._end_interval(model, self.batch_fisher(model, batch, task))

    def batch_fisher(self, model: nn.Module, batch: Batch, task: Task) -> ParamDict:
        """Empirical Fisher of one mini-batch: mean of per-sample squared gradients."""
        sums = per_sample_gradient_sum(
            model, log_likelihood_loss(task.columns), [(batch.x, batch.y)], "square"
        )
        return {name: s.div_(len(batch)) for name, s in sums.items()}

    def _end_interval(self, model: nn.Module, batch_fisher: ParamDict | None) -> None:
        fisher = self.running_fisher if self.running_fisher is not None else batch_fisher
        now = snapshot(model)
        omega = self.path.as_dict()
        if fisher is not None:
            for name, theta in now.items():
                moved = (theta - self.interval_start[name]).square_().mul_(fisher[name]).mul_(0.5)
                self.task_score[name] += (omega[name] / moved.add_(self.epsilon)).clamp_(min=0)
        if batch_fisher is not None:
            self._update_fisher(batch_fisher)
        self.path.reset()
        self.interval_start = now
        self.steps_in_interval = 0

    def _update_fisher(self, batch_fisher: ParamDict) -> None:
        if self.running_fisher is None:
            self.running_fisher = batch_fisher
            return
        for name, f in self.running_fisher.items():
            f.mul_(1 - self.alpha).add_(batch_fisher[name], alpha=self.alpha)

    # ---- per task ------------------------------------------------------------------------------
    def after_task(self, task: Task, model: nn.Module, fit: FitFn) -> None:
        if self.steps_in_interval > 0:  # the last, partial interval (its Fisher is not updated)
            self._end_interval(model, None)
        if self.running_fisher is None:  # fewer steps than one interval: nothing measured yet
            return
        if self.score is None:
            self.score = {name: s.clone() for name, s in self.task_score.items()}
        else:
            self.score = {name: (s + self.task_score[name]) / 2 for name, s in self.score.items()}
        for s in self.task_score.values():
            s.zero_()
        fisher, score = min_max_normalise(self.running_fisher), min_max_normalise(self.score)
        importance = {name: f + score[name] for name, f in fisher.items()}
        self.penalty = QuadraticPenalty(importance, snapshot(model))

    def stored_values(self) -> int:
        kept: list[Tensor] = [
            *(self.running_fisher or {}).values(),
            *(self.score or {}).values(),
            *self.task_score.values(),
            *self.interval_start.values(),
        ]
        return (
            sum(t.numel() for t in kept)
            + (self.path.numel() if self.path else 0)
            + (super().stored_values())
        )
