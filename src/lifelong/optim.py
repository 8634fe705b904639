"""SGD and Adam with exactly PyTorch's update rules, without ``torch.optim``'s start-up cost.

``torch.optim.Optimizer`` imports ``torch._dynamo`` when the first optimizer is built (about 1 s
and 70 MB on a 2-core machine), a cost paid by every short run of this library. These two classes
implement the same updates with ``torch._foreach`` kernels (tested against ``torch.optim`` to
1e-6) and the parts of the optimizer interface the loop and checkpoints use: ``zero_grad``,
``step``, ``param_groups``, ``state_dict`` and ``load_state_dict``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor


class _Optimizer:
    def __init__(self, params: list[Tensor], **defaults: Any) -> None:
        self.params = list(params)
        self.param_groups = [{"params": self.params, **defaults}]
        self.state: dict[str, Any] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def _with_grads(self) -> tuple[list[Tensor], list[Tensor], list[int]]:
        idx = [i for i, p in enumerate(self.params) if p.grad is not None]
        return [self.params[i] for i in idx], [self.params[i].grad for i in idx], idx

    def state_dict(self) -> dict[str, Any]:
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return {"state": self.state, "group": group}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = state["state"]
        self.param_groups[0].update(state["group"])


class SGD(_Optimizer):
    """Stochastic gradient descent as ``torch.optim.SGD`` (dampening 0, no Nesterov):
    g <- grad + weight_decay * p;  b <- momentum * b + g (b = g at the first step);
    p <- p - lr * (b if momentum else g)."""

    def __init__(
        self, params: list[Tensor], lr: float, momentum: float = 0.0, weight_decay: float = 0.0
    ) -> None:
        # torch.optim.SGD's checks, with its messages
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.state = {"momentum": [None] * len(self.params)}

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        params, grads, idx = self._with_grads()
        if not params:
            return
        if group["weight_decay"]:
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
        if group["momentum"]:
            buffers = self.state["momentum"]
            for i, g in zip(idx, grads, strict=True):
                b = buffers[i]
                buffers[i] = g.detach().clone() if b is None else b.mul_(group["momentum"]).add_(g)
            grads = [buffers[i] for i in idx]
        torch._foreach_add_(params, grads, alpha=-group["lr"])


class Adam(_Optimizer):
    """Adam (Kingma & Ba 2015) as ``torch.optim.Adam`` (betas 0.9, 0.999; eps 1e-8; L2 weight decay
    added to the gradient; bias-corrected moments)."""

    def __init__(
        self,
        params: list[Tensor],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        # torch.optim.Adam's checks, with its messages (and a length for betas)
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not eps >= 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if len(betas) != 2:
            raise ValueError(f"betas must be two numbers, e.g. (0.9, 0.999), got {betas}")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        n = len(self.params)
        self.state = {"step": [0] * n, "exp_avg": [None] * n, "exp_avg_sq": [None] * n}

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        beta1, beta2 = group["betas"]
        params, grads, idx = self._with_grads()
        if group["weight_decay"]:
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
        for p, g, i in zip(params, grads, idx, strict=True):
            if self.state["exp_avg"][i] is None:
                self.state["exp_avg"][i] = torch.zeros_like(p)
                self.state["exp_avg_sq"][i] = torch.zeros_like(p)
            self.state["step"][i] += 1
            t = self.state["step"][i]
            m, v = self.state["exp_avg"][i], self.state["exp_avg_sq"][i]
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            step_size = group["lr"] / (1 - beta1**t)
            denom = (v.sqrt() / math.sqrt(1 - beta2**t)).add_(group["eps"])
            p.addcdiv_(m, denom, value=-step_size)
