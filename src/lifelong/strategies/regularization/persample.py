"""Per-sample gradient statistics with ``torch.func`` (``functional_call`` + ``vmap(grad)``).

EWC's Fisher and MAS's importance are averages over samples of a *per-sample* function of the
gradient (its square, its absolute value). Neither equals the same function of the mini-batch
gradient: squaring the batch mean lets per-sample gradients of opposite sign cancel and makes the
estimate depend on the batch size. Here every sample gets its own gradient: ``vmap`` over
``grad`` of a one-sample loss evaluates a whole chunk of samples at once, with no Python loop
over samples.

Three exact routes. When every trainable parameter sits in a plain ``nn.Linear`` layer (and the
loss has a batched form): no ``torch.func`` at all, one ordinary forward and backward pass per
chunk gives every sample's ``δ_n`` and ``a_n`` (:mod:`lifelong.strategies.samplewise`; checked
once per model against the parameters' own gradients), and the sums below are one matrix product
per layer. Otherwise, chosen per parameter:

* Generic (any module): the per-sample gradients themselves, ``[chunk, *shape]`` per parameter,
  are materialised, reduced in place (square or abs) and summed. Chunks are sized so that they
  take about :data:`CHUNK_BYTES`.
* ``nn.Linear`` layers applied once per sample to a vector: the per-sample gradient of the weight
  is an outer product ``δ_n a_nᵀ`` (δ_n: gradient w.r.t. the layer's output, a_n: its input), and
  an elementwise square or absolute value of an outer product is the outer product of the squares
  or absolute values. So ``Σ_n (δ_n a_nᵀ)² = (δ²)ᵀ (a²)``: the same ``vmap(grad)`` returns δ_n
  (the gradient w.r.t. a zero "probe" added to the layer's output) and a_n (returned alongside),
  and one matrix product per layer gives the exact sum without ever holding ``chunk × weights``
  numbers. For the 784-100-100-10 MLP this is an order of magnitude faster than the generic
  route. Whether a layer qualifies is checked on every chunk (called exactly once, on inputs of
  shape ``[1, in]`` per sample, with weight and bias registered once, i.e. not tied to another
  module, and used nowhere else: on the first chunk the summed outer products must equal the
  ordinary gradient of the weight); otherwise the whole computation falls back to the generic
  route.

The model is put in eval mode while gradients are taken (a per-sample forward pass must not
update batch-norm statistics or draw dropout masks).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.resources import to_device
from lifelong.strategies.regularization.anchor import ParamDict, trainable
from lifelong.strategies.samplewise import linear_inputs_and_output_grads, samplewise_linears
from lifelong.streams.base import TaskData

CHUNK_BYTES = 24 * 2**20
"""Target size of one chunk of materialised per-sample gradients (generic route)."""

MAX_CHUNK = 1024
"""Most samples per ``vmap`` call (bounds the activations kept for the backward pass)."""

SampleLoss = Callable[[Tensor, Tensor], Tensor]
"""``(outputs of one sample [n_outputs], its target) -> scalar`` whose gradient is taken."""


class _NotFactorisable(Exception):
    """A Linear layer was not applied exactly once to a ``[1, in]`` input of one sample."""


def _factorisable_linears(model: nn.Module, params: dict[str, Tensor]) -> dict[str, nn.Linear]:
    """Plain ``nn.Linear`` modules whose trainable parameters can use the outer-product route.

    A layer whose weight or bias is registered more than once (tied weights: the same tensor
    shared with another module, or the module itself registered under two names) is left to the
    generic route: its gradient has a term from every use, and the outer product sees only one.
    """
    uses: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        uses[id(p)] = uses.get(id(p), 0) + 1
    found = {}
    for name, module in model.named_modules():
        if type(module) is nn.Linear:
            prefix = f"{name}." if name else ""
            own = [p for p in (module.weight, module.bias) if p is not None]
            if f"{prefix}weight" in params and all(uses.get(id(p), 0) == 1 for p in own):
                found[prefix] = module
    return found


def _reduce(values: list[Tensor], reduce: str) -> list[Tensor]:
    """Squares or absolute values, out of place (autograd outputs may alias inputs or each other)."""
    return torch._foreach_mul(values, values) if reduce == "square" else torch._foreach_abs(values)


def _generic_sums(
    model: nn.Module,
    sample_loss: SampleLoss,
    params: dict[str, Tensor],
    buffers: dict[str, Tensor],
    chunks: Iterable[tuple[Tensor, Tensor]],
    reduce: str,
) -> ParamDict:
    from torch.func import functional_call, grad, vmap  # first use imports torch._dynamo

    names = list(params)

    def one_sample(p: ParamDict, x: Tensor, target: Tensor) -> Tensor:
        outputs = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return sample_loss(outputs[0], target)

    per_sample_grads = vmap(grad(one_sample), in_dims=(None, 0, 0))
    per_sample_bytes = sum(p.numel() * p.element_size() for p in params.values())
    size = max(1, CHUNK_BYTES // max(per_sample_bytes, 1))
    totals = [torch.zeros_like(p) for p in params.values()]
    for x_all, target_all in chunks:
        for start in range(0, len(x_all), size):
            grads = per_sample_grads(
                params, x_all[start : start + size], target_all[start : start + size]
            )
            values = _reduce([grads[name] for name in names], reduce)
            torch._foreach_add_(totals, [v.sum(0) for v in values])
    return dict(zip(names, totals, strict=True))


def _check_sole_use(
    model: nn.Module,
    sample_loss: SampleLoss,
    params: dict[str, Tensor],
    buffers: dict[str, Tensor],
    batch: tuple[Tensor, Tensor],
    found: dict[str, tuple[Tensor, Tensor]],
) -> None:
    """Raise :class:`_NotFactorisable` unless ``Σ_n δ_n a_nᵀ`` (and ``Σ_n δ_n``) of each layer
    equal the full gradient of its weight (and bias) over ``batch``: a weight also used outside
    its module (``F.linear(x, layer.weight)`` in a ``forward``) has a gradient term that the
    layer's hook never sees. One ordinary forward and backward pass over the first chunk."""
    from torch.func import functional_call, vmap

    x, target = batch
    leaves = {
        name: params[name].detach().requires_grad_()
        for prefix in found
        for name in (f"{prefix}weight", f"{prefix}bias")
        if name in params
    }
    outputs = functional_call(model, ({**params, **leaves}, buffers), (x,))
    total = vmap(sample_loss)(outputs, target).sum()
    found_grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
    grads = dict(zip(leaves, found_grads, strict=True))
    for prefix, (a, delta) in found.items():
        expected = {f"{prefix}weight": delta.T @ a, f"{prefix}bias": delta.sum(0)}
        for name, want in expected.items():
            if name not in grads:
                continue
            got, tol = grads[name], 1e-4 * float(want.abs().max()) + 1e-12
            if got is None or not torch.allclose(got, want, rtol=1e-3, atol=tol):
                raise _NotFactorisable(prefix)


def _factorised_sums(
    model: nn.Module,
    sample_loss: SampleLoss,
    params: dict[str, Tensor],
    buffers: dict[str, Tensor],
    chunks: Iterable[tuple[Tensor, Tensor]],
    reduce: str,
    linears: dict[str, nn.Linear],
    verify: bool = False,
) -> ParamDict:
    from torch.func import functional_call, grad, vmap  # first use imports torch._dynamo

    covered = {f"{prefix}{kind}" for prefix in linears for kind in ("weight", "bias")}
    generic = {name: p for name, p in params.items() if name not in covered}
    fixed = {name: p for name, p in params.items() if name in covered}
    probes = {
        prefix: torch.zeros(m.out_features, dtype=m.weight.dtype, device=m.weight.device)
        for prefix, m in linears.items()
    }

    calls = dict.fromkeys(linears, 0)  # filled while vmap runs the function (once per chunk)

    def one_sample(
        g: ParamDict, probe: dict[str, Tensor], x: Tensor, target: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        inputs: dict[str, Tensor] = {}

        def hook_for(prefix: str):
            def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> Tensor:
                inputs[prefix] = args[0]
                calls[prefix] += 1
                return output + probe[prefix]

            return hook

        handles = [m.register_forward_hook(hook_for(prefix)) for prefix, m in linears.items()]
        try:
            outputs = functional_call(model, ({**fixed, **g}, buffers), (x.unsqueeze(0),))
        finally:
            for handle in handles:
                handle.remove()
        return sample_loss(outputs[0], target), inputs

    per_sample = vmap(grad(one_sample, argnums=(0, 1), has_aux=True), in_dims=(None, None, 0, 0))
    per_sample_bytes = sum(p.numel() * p.element_size() for p in generic.values())
    size = min(MAX_CHUNK, max(1, CHUNK_BYTES // max(per_sample_bytes, 1)))
    totals = {name: torch.zeros_like(p) for name, p in params.items()}
    for x_all, target_all in chunks:
        for start in range(0, len(x_all), size):
            x, target = x_all[start : start + size], target_all[start : start + size]
            calls.update(dict.fromkeys(linears, 0))
            (generic_grads, output_grads), inputs = per_sample(generic, probes, x, target)
            if generic:
                values = _reduce([generic_grads[name] for name in generic], reduce)
                torch._foreach_add_([totals[n] for n in generic], [v.sum(0) for v in values])
            found = {}
            for prefix in linears:
                a = inputs.get(prefix)
                if calls[prefix] != 1 or a is None or a.dim() != 3 or a.shape[1] != 1:
                    raise _NotFactorisable(prefix)
                found[prefix] = (a[:, 0, :], output_grads[prefix])
            if verify:
                _check_sole_use(model, sample_loss, params, buffers, (x, target), found)
                verify = False
            for prefix, (a, delta) in found.items():
                _accumulate(totals, prefix, a, delta, reduce)
    return totals


def _accumulate(totals: ParamDict, prefix: str, a: Tensor, delta: Tensor, reduce: str) -> None:
    """Add a Linear layer's per-sample terms to ``totals``: ``Σ_n r(δ_n) r(a_n)ᵀ`` to its weight
    and ``Σ_n r(δ_n)`` to its bias (``r`` = square or abs, which factorise over the product)."""
    a, delta = _reduce([a, delta], reduce)
    if f"{prefix}weight" in totals:
        totals[f"{prefix}weight"].addmm_(delta.T, a)
    if f"{prefix}bias" in totals:
        totals[f"{prefix}bias"].add_(delta.sum(0))


def _autograd_sums(
    model: nn.Module,
    sample_loss: SampleLoss,
    params: dict[str, Tensor],
    chunks: Iterable[tuple[Tensor, Tensor]],
    reduce: str,
    linears: dict[str, nn.Linear],
) -> ParamDict | None:
    """The outer-product sums from an ordinary forward and backward pass per chunk
    (:mod:`lifelong.strategies.samplewise`), no ``torch.func``; ``None`` when a layer does not
    qualify (each layer must take a ``[samples, in]`` input)."""
    batched = sample_loss.batched  # type: ignore[attr-defined]
    totals = {name: torch.zeros_like(p) for name, p in params.items()}
    for x_all, target_all in chunks:
        for start in range(0, len(x_all), MAX_CHUNK):
            x, target = x_all[start : start + MAX_CHUNK], target_all[start : start + MAX_CHUNK]
            with torch.enable_grad():
                found = linear_inputs_and_output_grads(
                    model, x, lambda out, t=target: batched(out, t).sum(), linears
                )
            if found is None:
                return None
            inputs, deltas = found
            for prefix in linears:
                a, delta = inputs[prefix], deltas[prefix]
                if a.dim() != 2:
                    return None
                if delta is not None:
                    _accumulate(totals, prefix, a, delta, reduce)
    return totals


def per_sample_gradient_sum(
    model: nn.Module,
    sample_loss: SampleLoss,
    chunks: Iterable[tuple[Tensor, Tensor]],
    reduce: str = "square",
    factorise: bool = True,
) -> ParamDict:
    """``Σ_n r(∂ sample_loss(f(x_n), t_n) / ∂θ)`` with ``r`` = square or abs, per parameter.

    Args:
        model: the network; gradients are taken w.r.t. its trainable parameters.
        sample_loss: the one-sample function to differentiate.
        chunks: ``(inputs, targets)`` chunks (targets may be dummies the loss ignores); any size,
            they are split as each route needs.
        reduce: ``"square"`` (Fisher) or ``"abs"`` (MAS).
        factorise: use the outer-product route for plain Linear layers (exact; the generic route
            is used when False or when a layer does not qualify).
    """
    if reduce not in ("square", "abs"):
        raise ValueError(f"reduce must be 'square' or 'abs', got {reduce!r}")
    params = {name: p.detach() for name, p in trainable(model).items()}
    buffers = {name: b.detach() for name, b in model.named_buffers()}
    linears = _factorisable_linears(model, params) if factorise else {}
    was_training = model.training
    model.eval()
    try:
        iterator = iter(chunks)
        first = next(iterator, None)
        if first is None:
            return {name: torch.zeros_like(p) for name, p in params.items()}
        plain = samplewise_linears(model, trainable(model)) if factorise else None
        if plain is not None and hasattr(sample_loss, "batched"):
            # Every parameter in a plain Linear layer: no torch.func at all. Whether every layer
            # qualifies is structural: the first chunk decides.
            totals = _autograd_sums(model, sample_loss, params, [first], reduce, plain)
            if totals is not None:
                rest = _autograd_sums(model, sample_loss, params, iterator, reduce, plain)
                if rest is not None:
                    return {name: t.add_(rest[name]) for name, t in totals.items()}
                raise RuntimeError("a later chunk left the outer-product route")
        if linears:
            # Whether every layer qualifies is structural: the first chunk decides.
            args = (model, sample_loss, params, buffers)
            try:
                totals = _factorised_sums(*args, [first], reduce, linears, verify=True)
            except _NotFactorisable:
                totals = None
            if totals is not None:
                rest = _factorised_sums(*args, iterator, reduce, linears)
                return {name: t.add_(rest[name]) for name, t in totals.items()}
        chunks = itertools.chain([first], iterator)
        return _generic_sums(model, sample_loss, params, buffers, chunks, reduce)
    finally:
        model.train(was_training)


def _batch_columns(outputs: Tensor, columns: tuple[int, int] | None) -> Tensor:
    return outputs if columns is None else outputs[:, columns[0] : columns[1]]


def _columns(outputs: Tensor, columns: tuple[int, int] | None) -> Tensor:
    return outputs if columns is None else outputs[columns[0] : columns[1]]


def log_likelihood_loss(columns: tuple[int, int] | None) -> SampleLoss:
    """``−log p(y | x)`` under the softmax over the task's output ``columns`` (y = column index)."""
    start = 0 if columns is None else columns[0]

    def loss(outputs: Tensor, y: Tensor) -> Tensor:
        log_p = F.log_softmax(_columns(outputs, columns), dim=0)
        return -log_p.gather(0, (y - start).unsqueeze(0)).squeeze(0)

    def batched(outputs: Tensor, y: Tensor) -> Tensor:
        log_p = F.log_softmax(_batch_columns(outputs, columns), dim=1)
        return -log_p.gather(1, (y - start).unsqueeze(1)).squeeze(1)

    loss.batched = batched  # type: ignore[attr-defined]
    return loss


def squared_output_norm(columns: tuple[int, int] | None) -> SampleLoss:
    """``‖f(x)‖²`` over the task's output ``columns`` (MAS, Aljundi et al. 2018, eq. 4)."""

    def loss(outputs: Tensor, _: Tensor) -> Tensor:
        return _columns(outputs, columns).square().sum()

    def batched(outputs: Tensor, _: Tensor) -> Tensor:
        return _batch_columns(outputs, columns).square().sum(1)

    loss.batched = batched  # type: ignore[attr-defined]
    return loss


def pick_samples(
    n: int, samples: int | None, device: torch.device, generator: torch.Generator | None = None
) -> Tensor:
    """All indices ``0..n-1`` in order, or ``samples`` of them drawn without replacement (from
    the CPU ``generator``; ``None``: the global torch RNG)."""
    if samples is None or samples >= n:
        return torch.arange(n, device=device)
    return torch.randperm(n, generator=generator)[:samples].sort().values.to(device)


def sample_labels(
    model: nn.Module,
    x: Tensor,
    columns: tuple[int, int] | None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One label per input drawn from the model's predictive distribution over ``columns``
    (drawn on the CPU from ``generator``; ``None``: the global torch RNG).

    The draw is ``torch.multinomial``'s own method for one sample, ``argmax(p / q)`` with
    ``q ~ Exp(1)`` per class, with ``q`` drawn on the CPU and the rest done where ``p`` is: on a
    CPU the labels equal ``torch.multinomial(p, 1, generator=generator)`` bit for bit, and on a
    GPU the host never waits for ``p``."""
    start, stop = columns if columns is not None else (0, None)
    with torch.no_grad():
        probs = F.softmax(model(x)[:, start:stop], dim=1)
    q = torch.empty(probs.shape, dtype=probs.dtype).exponential_(generator=generator)
    return (probs / to_device(q, probs.device)).argmax(1) + start


def task_chunks(
    model: nn.Module,
    data: TaskData,
    idx: Tensor,
    targets: str,
    columns: tuple[int, int] | None,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Chunks of ``data[idx]`` with targets: ``"labels"`` (true), ``"sampled"`` (from the model,
    drawn from ``generator``), or ``"none"`` (zeros, for losses that use no target)."""
    for start in range(0, len(idx), MAX_CHUNK):
        part = idx[start : start + MAX_CHUNK]
        x = data.inputs(part)
        if targets == "labels":
            y = data.y[part]
        elif targets == "sampled":
            y = sample_labels(model, x, columns, generator)
        else:
            y = torch.zeros(len(part), dtype=torch.long, device=x.device)
        yield x, y


def diagonal_fisher(
    model: nn.Module,
    data: TaskData,
    columns: tuple[int, int] | None,
    *,
    labels: str = "true",
    samples: int | None = None,
    generator: torch.Generator | None = None,
) -> ParamDict:
    """Diagonal Fisher ``F_i = 1/N Σ_n (∂ log p(y_n | x_n) / ∂θ_i)²`` over ``data``.

    Args:
        labels: ``"true"``: y_n drawn from the model's predictive distribution p(y | x_n) (the
            Fisher information itself); ``"empirical"``: y_n the data's labels (the empirical
            Fisher).
        samples: how many samples of ``data`` to use (drawn without replacement); ``None``: all.
        generator: the CPU generator of every draw (samples, sampled labels); strategies pass
            their own, ``None`` draws from the global torch RNG.
    """
    if labels not in ("true", "empirical"):
        raise ValueError(f"labels must be 'true' or 'empirical', got {labels!r}")
    device = next(iter(trainable(model).values())).device
    idx = pick_samples(len(data), samples, device, generator)
    targets = "sampled" if labels == "true" else "labels"
    was_training = model.training
    model.eval()  # the labels are sampled from the evaluation-mode network too
    try:
        chunks = task_chunks(model, data, idx, targets, columns, generator)
        sums = per_sample_gradient_sum(model, log_likelihood_loss(columns), chunks, "square")
    finally:
        model.train(was_training)
    return {name: s.div_(len(idx)) for name, s in sums.items()}
