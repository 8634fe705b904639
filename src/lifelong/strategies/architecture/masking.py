"""Per-weight ownership for PackNet and CPG: which task owns each weight, pruning, frozen entries.

Both methods give every weight of a shared layer an *owner*: the task that trained it and keeps
it (``FREE`` = released, zero and unused). A task trains only the entries it owns; every other
entry is frozen. Freezing is enforced twice: gradients of frozen entries are zeroed after the
backward pass (what the papers do), and their values are written back after the optimizer step,
so that weight decay or momentum carried over between tasks cannot move them either.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

FREE = -1
"""Owner index of a released (pruned or never assigned) weight."""

OWNER_DTYPE = torch.int16
"""Owner indices fit 32767 tasks at two bytes per weight."""


def smallest_magnitudes(weight: Tensor, eligible: Tensor, count: int) -> Tensor:
    """Boolean mask of the ``count`` eligible entries of ``weight`` with the smallest magnitude.

    Ties are broken by position, so exactly ``min(count, n_eligible)`` entries are selected.
    """
    flat_eligible = eligible.reshape(-1)
    positions = flat_eligible.nonzero().squeeze(1)
    selected = torch.zeros_like(flat_eligible)
    if count > 0 and len(positions):
        magnitudes = weight.detach().reshape(-1)[positions].abs()
        order = torch.sort(magnitudes, stable=True).indices
        selected[positions[order[:count]]] = True
    return selected.reshape(weight.shape)


def magnitude_prune(weight: Tensor, eligible: Tensor, fraction: float) -> Tensor:
    """The ``round(fraction * n)`` eligible entries of smallest ``|weight|`` (n = eligible count),
    as a boolean mask: PackNet prunes ``fraction`` of each layer's eligible weights (Mallya &
    Lazebnik 2018)."""
    return smallest_magnitudes(weight, eligible, round(fraction * int(eligible.sum())))


class FrozenEntries:
    """Keeps the entries of some parameters that the current task may not change.

    Args:
        trainable: for each parameter, a boolean mask of its entries the current task trains
            (same shape as the parameter).
    """

    def __init__(self, trainable: list[tuple[nn.Parameter, Tensor]]) -> None:
        self.trainable = trainable
        self.values = [p.detach().clone() for p, _ in trainable]

    def mask_gradients(self) -> None:
        """Zero the gradients of frozen entries (call between backward and the optimizer step)."""
        for p, mask in self.trainable:
            if p.grad is not None:
                p.grad.mul_(mask)

    @torch.no_grad()
    def restore(self) -> None:
        """Write the frozen entries back (call after the optimizer step)."""
        for (p, mask), value in zip(self.trainable, self.values, strict=True):
            p.data.copy_(torch.where(mask, p.data, value))
