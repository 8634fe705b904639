"""Per-sample gradients of plain ``nn.Linear`` layers from one ordinary forward and backward pass.

When every sample's loss depends only on that sample's own forward pass (no batch statistics),
the gradient of the *summed* loss w.r.t. a layer's output ``z_n`` is the gradient of sample
``n``'s own loss: ``∂(Σ_m L_m)/∂z_n = ∂L_n/∂z_n = δ_n``. A Linear layer applied once to a vector
``a_n`` has the per-sample weight gradient ``δ_n a_nᵀ`` and bias gradient ``δ_n``. So one forward
pass over a whole batch, with hooks recording each layer's input, and one backward pass to the
layers' outputs give every per-sample gradient in factored form, with no ``torch.func`` (whose
first ``grad`` call imports ``torch._dynamo``: about 90 MB and seconds of one-off cost) and in a
few large matrix products. GEM sums them per task (:mod:`.memory.gem`); EWC and MAS square them or
take absolute values (:mod:`.regularization.persample`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch import Tensor, nn

_VERIFIED: weakref.WeakKeyDictionary[nn.Module, frozenset[int]] = weakref.WeakKeyDictionary()
"""Models whose Linear weights were checked to be used only through their modules (by layer)."""


def samplewise_linears(model: nn.Module, params: dict[str, Tensor]) -> dict[str, nn.Linear] | None:
    """The plain ``nn.Linear`` layers owning the trainable ``params`` (by name), or ``None`` when
    the model does not fit the factored route: some parameter belongs to another kind of module
    or is registered twice (tied weights: its gradient has a term from every use), or a module
    normalises over the batch (batch norm mixes samples)."""
    uses: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        uses[id(p)] = uses.get(id(p), 0) + 1
    linears: dict[str, nn.Linear] = {}
    owned: set[str] = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._NormBase):
            return None
        if type(module) is nn.Linear:
            prefix = f"{name}." if name else ""
            names = [f"{prefix}{kind}" for kind in ("weight", "bias")]
            if any(n in params for n in names):
                linears[prefix] = module
                owned.update(names)
    if not set(params) <= owned or any(uses.get(id(p), 0) != 1 for p in params.values()):
        return None
    return linears


def linear_inputs_and_output_grads(
    model: nn.Module,
    x: Tensor,
    total_loss: Callable[[Tensor], Tensor],
    linears: dict[str, nn.Linear],
) -> tuple[dict[str, Tensor], dict[str, Tensor | None]] | None:
    """``(inputs a, output gradients δ)`` of every layer in ``linears`` on the batch ``x``, for
    the scalar ``total_loss(model(x))`` (a sum of per-sample losses); ``None`` when a layer was
    not called exactly once on all ``len(x)`` samples, or its input or output was changed in place
    (then δ would not be the gradient at the value the layer produced). ``δ`` is ``None`` for a
    layer whose output does not reach the loss."""
    seen: dict[str, list] = {prefix: [] for prefix in linears}

    def hook_for(prefix: str):
        def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
            seen[prefix].append((args[0], output, args[0]._version, output._version))

        return hook

    handles = [m.register_forward_hook(hook_for(prefix)) for prefix, m in linears.items()]
    try:
        loss = total_loss(model(x))
    finally:
        for handle in handles:
            handle.remove()
    n = len(x)
    for record in seen.values():
        if len(record) != 1:
            return None
        a, z, a_version, z_version = record[0]
        if a.shape[0] != n or z.shape[0] != n or a._version != a_version:
            return None
        if z._version != z_version:
            return None
    prefixes = list(linears)
    outputs = [seen[p][0][1] for p in prefixes]
    inputs = {p: seen[p][0][0].detach() for p in prefixes}
    if not loss.requires_grad:
        return inputs, dict.fromkeys(prefixes)
    key = frozenset(id(m) for m in linears.values())
    if _VERIFIED.get(model) == key:
        deltas = torch.autograd.grad(loss, outputs, allow_unused=True)
        return inputs, dict(zip(prefixes, deltas, strict=True))
    # First use with this model: also take the parameters' own gradients once and check that
    # Σ_n δ_n a_nᵀ equals them. A weight also used outside its module (``F.linear(h,
    # layer.weight)`` in a ``forward``, tying it to another computation) has a gradient term no
    # hook sees; such a model is left to the caller's general route.
    weights = {p: [t for t in (m.weight, m.bias) if t is not None and t.requires_grad]
               for p, m in linears.items()}  # fmt: skip
    flat = [t for p in prefixes for t in weights[p]]
    found = torch.autograd.grad(loss, outputs + flat, allow_unused=True)
    deltas, full = found[: len(outputs)], iter(found[len(outputs) :])
    for prefix, delta in zip(prefixes, deltas, strict=True):
        module, a = linears[prefix], inputs[prefix]
        for t in weights[prefix]:
            want = next(full)
            if delta is None:
                got = torch.zeros_like(t)
            elif t is module.weight:
                got = delta.reshape(-1, delta.shape[-1]).T @ a.reshape(-1, a.shape[-1])
            else:
                got = delta.reshape(-1, delta.shape[-1]).sum(0)
            want = torch.zeros_like(t) if want is None else want
            if not torch.allclose(
                got, want, rtol=1e-4, atol=1e-6 * max(float(want.abs().max()), 1.0)
            ):
                return None
    _VERIFIED[model] = key
    return inputs, dict(zip(prefixes, deltas, strict=True))
