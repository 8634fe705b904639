"""Models for image and feature streams, and the model registry.

Every model maps a batch of inputs to ``stream.n_outputs`` logits. A multi-head output layer (the
task-incremental scenario) is the same final linear layer split into disjoint column ranges, one
per task (``Task.columns``): with the other heads' logits masked out, the loss and the prediction
of a task involve only its own head's weights, exactly as with separate head modules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import Tensor, nn

from lifelong.errors import ConfigError, UnknownNameError
from lifelong.resources import ensure_memory
from lifelong.streams.base import Stream


class MLP(nn.Module):
    """Fully connected ReLU network: flatten, ``hidden`` layers, linear output.

    Args:
        in_features: size of one flattened input (784 for MNIST, 64 for digits).
        hidden: widths of the hidden layers (GEM and most permuted-MNIST papers: ``(100, 100)``;
            EWC used ``(400, 400)`` / ``(1000, 1000)``).
        n_outputs: number of output columns (all heads together).
    """

    def __init__(self, in_features: int, hidden: Sequence[int], n_outputs: int) -> None:
        super().__init__()
        widths = [in_features, *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in pairwise(widths):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(widths[-1], n_outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class CNN(nn.Module):
    """Small convolutional network: two 3x3 conv + ReLU + 2x2 max-pool blocks, then an MLP.

    Args:
        in_shape: ``(channels, height, width)`` of one input.
        n_outputs: number of output columns.
        channels: output channels of the two conv blocks (default ``(32, 64)``).
        hidden: widths of the fully connected layers after the conv blocks (default ``(128,)``).
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        n_outputs: int,
        channels: Sequence[int] = (32, 64),
        hidden: Sequence[int] = (128,),
    ) -> None:
        super().__init__()
        c, h, w = in_shape
        blocks: list[nn.Module] = []
        for out in channels:
            blocks += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c, h, w = out, h // 2, w // 2
        if h < 1 or w < 1:
            raise ConfigError(
                f"cnn: inputs of {tuple(in_shape)} are too small for {len(channels)} pools"
            )
        self.conv = nn.Sequential(*blocks)
        self.mlp = MLP(c * h * w, hidden, n_outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(self.conv(x))


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    build: Callable[[Stream, Sequence[int] | None], nn.Module]
    input_kinds: tuple[str, ...]


MODELS: dict[str, ModelEntry] = {}


def register_model(
    name: str, description: str, input_kinds: tuple[str, ...] = ("image", "features")
):
    """Register ``build(stream, hidden) -> nn.Module`` under ``name``."""

    def decorate(build: Callable[[Stream, Sequence[int] | None], nn.Module]):
        MODELS[name] = ModelEntry(name, description, build, input_kinds)
        return build

    return decorate


@register_model("mlp", "fully connected ReLU network (--hidden widths, default 100 100)")
def _mlp(stream: Stream, hidden: Sequence[int] | None) -> nn.Module:
    n_in = math.prod(stream.input_shape)
    return MLP(n_in, tuple(hidden) if hidden is not None else (100, 100), stream.n_outputs)


@register_model(
    "cnn", "two conv blocks + MLP (--hidden sets the MLP widths, default 128)", ("image",)
)
def _cnn(stream: Stream, hidden: Sequence[int] | None) -> nn.Module:
    shape = stream.input_shape if len(stream.input_shape) == 3 else (1, *stream.input_shape)
    if len(shape) != 3:
        raise ConfigError("cnn needs image inputs (channels, height, width); use --model mlp")
    return CNN(shape, stream.n_outputs, hidden=tuple(hidden) if hidden is not None else (128,))


def default_model(input_kind: str) -> str:
    """The model used when none is named: the first registered one that takes ``input_kind``
    (``mlp`` for images and features, ``memnet`` for tokens)."""
    for entry in MODELS.values():
        if input_kind in entry.input_kinds:
            return entry.name
    raise ConfigError(f"no registered model takes {input_kind} inputs; pass your own nn.Module")


def build_model(name: str, stream: Stream, hidden: Sequence[int] | None = None) -> nn.Module:
    """Build a registered model for ``stream`` (initialised from the global torch RNG)."""
    check_model(name, stream, hidden)
    return MODELS[name].build(stream, hidden)


def check_model(name: str, stream: Stream, hidden: Sequence[int] | None = None) -> None:
    """Everything :func:`build_model` refuses, checked without building the model."""
    if name not in MODELS:
        raise UnknownNameError("model", name, list(MODELS))
    entry = MODELS[name]
    if stream.input_kind not in entry.input_kinds:
        fitting = [m.name for m in MODELS.values() if stream.input_kind in m.input_kinds]
        raise ConfigError(
            f"model {name!r} does not take {stream.input_kind} inputs; use one of: {', '.join(fitting)}"
        )
    if hidden is not None and any(h <= 0 for h in hidden):
        raise ConfigError(f"--hidden widths must be positive, got {list(hidden)}")
    ensure_model_fits(name, stream, hidden)


def ensure_model_fits(name: str, stream: Stream, hidden: Sequence[int] | None) -> None:
    """Count the model's parameters on the ``meta`` device (nothing allocated, no random draw)
    and refuse when its weights and gradients alone would exceed the available memory."""
    try:
        with torch.device("meta"):
            probe = MODELS[name].build(stream, hidden)
    except ConfigError:
        raise
    except Exception:  # a builder that needs real tensors: no estimate, build as usual
        return
    n = count_parameters(probe)
    ensure_memory(8 * n, f"model {name} with {n:,} parameters", "use smaller --hidden widths")


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters of a module."""
    return sum(p.numel() for p in module.parameters())


# The text models (``memnet``, ``lm``) register themselves on import; importing them here makes
# ``build_model("memnet", ...)`` work without importing the strategies first.
from lifelong import text_models  # noqa: E402, F401
