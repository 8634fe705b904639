"""GEM's picture: the new task's gradient g against the old tasks' gradients g¹ and g².

The lecture: when the gradient g of the new task points against the gradient gᵏ of an old task's
episodic memory (g · gᵏ < 0), a step along −g raises that task's loss. GEM (Lopez-Paz & Ranzato
2017) replaces g by the closest g′ with g′ · gᵏ ≥ 0 for every old task, a quadratic program;
A-GEM (Chaudhry et al. 2019) keeps only the constraint against the average memory gradient, in
closed form.

Here the model is the two-parameter logistic regression of :mod:`lifelong.figures.toy`, so its
gradients are 2-D and drawn as they are. Three tasks with true weights at different angles give
memories whose gradients at θ = 0 conflict with the new task's; every gradient is computed by
the library's GEM code (:func:`~lifelong.strategies.memory.gem.memory_gradients`), g′ by its
quadratic program (:func:`~lifelong.strategies.memory.gem.gem_project`, margin γ = 0: the
paper's exact projection) and A-GEM's g̃ by
:func:`~lifelong.strategies.memory.agem.agem_project`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lifelong.figures.toy import TwoWeights, logistic_task, polar
from lifelong.report.plots import _new_figure, save_figure
from lifelong.strategies.memory.agem import agem_project
from lifelong.strategies.memory.gem import gem_project, memory_gradients

ANGLES = (0.0, 50.0, 150.0)
"""Directions of the true weights of old task 1, old task 2 and the new task (degrees)."""

MEMORY = 256
"""Samples per episodic memory (GEM's MNIST setting); the new task's batch has as many."""


@dataclass
class GemPicture:
    """The vectors drawn (all 2-D).

    Attributes:
        g: the new task's gradient. old: ``[2, 2]``, the memories' gradients g¹, g².
        gem: GEM's g′. agem: A-GEM's g̃. reference: A-GEM's g_ref, the gradient of the loss on
            the union of the memories.
    """

    g: np.ndarray
    old: np.ndarray
    gem: np.ndarray
    agem: np.ndarray
    reference: np.ndarray


def compute(seed: int = 0) -> GemPicture:
    """Draw the three tasks' data and compute every gradient and both projections at θ = 0."""
    gen = torch.Generator().manual_seed(seed)
    data = [logistic_task(gen, MEMORY, (1.0, 1.0), polar(angle, 3.0)) for angle in ANGLES]
    model = TwoWeights((0.0, 0.0))
    x = torch.stack([d[0] for d in data])
    y = torch.stack([d[1] for d in data])
    weights = torch.full(y.shape, 1.0 / MEMORY)
    grads = memory_gradients(model, x, y, weights, None)  # [3, 2]: g¹, g², g
    old, g = grads[:2], grads[2]
    union = memory_gradients(
        model, x[:2].reshape(1, -1, 2), y[:2].reshape(1, -1), weights[:2].reshape(1, -1) / 2, None
    )[0]
    gem, _ = gem_project(g, old, margin=0.0)
    agem, _ = agem_project(g, union)
    return GemPicture(
        g=g.numpy(), old=old.numpy(), gem=gem.numpy(), agem=agem.numpy(), reference=union.numpy()
    )


def _arrow(axes, vector: np.ndarray, colour: str, label: str, width: float = 1.6) -> None:
    axes.annotate(
        "",
        xy=vector,
        xytext=(0, 0),
        arrowprops={"arrowstyle": "-|>", "color": colour, "lw": width, "shrinkA": 0, "shrinkB": 0},
    )
    axes.annotate(
        label,
        xy=vector,
        xytext=(6 * np.sign(vector[0] or 1), 6 * np.sign(vector[1] or 1)),
        textcoords="offset points",
        color=colour,
        fontsize=11,
        ha="left" if vector[0] >= 0 else "right",
        va="bottom" if vector[1] >= 0 else "top",
    )


def _half_plane(axes, normal: np.ndarray, extent: float, colour: str) -> None:
    """Shade {z : z · normal >= 0} within the box and draw its boundary."""
    n = np.linspace(-extent, extent, 161)
    mesh1, mesh2 = np.meshgrid(n, n)
    inside = (mesh1 * normal[0] + mesh2 * normal[1]) >= 0
    axes.contourf(
        mesh1, mesh2, inside.astype(float), levels=[0.5, 1.5], colors=[colour], alpha=0.12
    )
    direction = np.array([-normal[1], normal[0]]) / np.linalg.norm(normal)
    axes.plot(
        *np.stack([-extent * 2 * direction, extent * 2 * direction]).T,
        color=colour,
        ls="--",
        lw=0.8,
    )


def _dot(a: np.ndarray, b: np.ndarray) -> str:
    """``a · b`` to three decimals, without a "−0.000" for a round-off below the last digit."""
    return f"{round(float(a @ b), 3) + 0.0:+.3f}"


def draw(data: GemPicture, path: str | Path) -> Path:
    """GEM (left) and A-GEM (right): the vectors and the region each projection must land in."""
    figure = _new_figure(10.0, 5.0)
    left, right = figure.subplots(1, 2)
    extent = 1.25 * float(np.abs(np.concatenate([data.g, data.old.ravel()])).max())
    for k, colour in enumerate(("#1f77b4", "#9467bd")):
        _half_plane(left, data.old[k], extent, colour)
    _half_plane(right, data.reference, extent, "#8c564b")
    for axes in (left, right):
        _arrow(axes, data.g, "black", "g")
        for k, colour in enumerate(("#1f77b4", "#9467bd")):
            faint = axes is right
            _arrow(axes, data.old[k], colour, f"g{'¹²'[k]}", width=0.9 if faint else 1.6)
        axes.set_xlim(-extent, extent)
        axes.set_ylim(-extent, extent)
        axes.set_aspect("equal")
        axes.axhline(0, color="#bbbbbb", lw=0.5)
        axes.axvline(0, color="#bbbbbb", lw=0.5)
        axes.set_xlabel("∂L/∂w₁")
    left.set_ylabel("∂L/∂w₂")
    _arrow(left, data.gem, "#2ca02c", "g′", width=2.2)
    _arrow(right, data.reference, "#8c564b", "g_ref")
    _arrow(right, data.agem, "#ff7f0e", "g̃", width=2.2)
    dots = ", ".join(f"g′·g{'¹²'[k]} = {_dot(data.gem, data.old[k])}" for k in range(2))
    left.set_title(
        f"GEM: g′ = closest vector with g′·gᵏ ≥ 0 for every old task\n{dots}", fontsize=9
    )
    dots = ", ".join(f"g̃·g{'¹²'[k]} = {_dot(data.agem, data.old[k])}" for k in range(2))
    right.set_title(
        f"A-GEM: g̃ = g projected so that g̃·g_ref ≥ 0 (g_ref: all memories)\n{dots}", fontsize=9
    )
    return save_figure(figure, path)
