"""Why forgetting happens, and where EWC keeps the parameters: two tasks' loss surfaces.

The lecture draws the loss of task 1 and of task 2 over two parameters: training on task 1 goes
from θ⁰ to θᵇ; training on task 2 from θᵇ with plain SGD goes to θ*, where task 2's loss is low
but task 1's is high again. EWC weighs the move of each parameter by its importance b_i for task
1 (the diagonal Fisher): it moves freely along a direction task 1 does not care about and holds
the one it does. L2 (b_i = 1 for every parameter) holds both and learns task 2 poorly.

Here the two parameters are the whole model (:class:`~lifelong.figures.toy.TwoWeights`), so both
surfaces are exact (the mean cross-entropy over each task's data on a grid), and the three paths
are the library's own ``finetune``, ``l2`` and ``ewc`` strategies trained through the ordinary
loop, one point per optimizer step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lifelong.figures.toy import TwoWeights, grid, logistic_task, loss_surface
from lifelong.report.plots import _new_figure, save_figure
from lifelong.runner import learn_stream
from lifelong.strategies import create_strategy
from lifelong.streams.custom import from_tensors
from lifelong.train import TrainConfig

THETA0 = (-1.0, -1.0)
"""θ⁰, the starting point, the same for every strategy."""

TASK1 = {"spread": (1.0, 0.15), "weights": (3.0, 0.0)}
"""Task 1 varies along x₁ only: its loss is steep in w₁ and almost flat in w₂."""

TASK2 = {"spread": (0.5, 1.0), "weights": (-1.0, 3.0)}
"""Task 2 wants w₂ ≈ 3 and, more weakly, w₁ ≈ −1: SGD on it undoes task 1's w₁."""

L2_LAMBDA = 0.1
"""λ of ``l2`` (λ Σ (θ − θᵇ)²): about the protection of task 1 that EWC gives below."""

EWC_LAMBDA = 10.0
"""λ of ``ewc`` ((λ/2) Σ F (θ − θᵇ)²)."""


@dataclass
class Landscape:
    """What the figure draws.

    Attributes:
        theta0, theta_b: the start and the end of task 1 (the same for every strategy).
        paths: per strategy label, the parameters after every optimizer step of task 2
            (``[steps + 1, 2]``, starting at θᵇ).
        end_losses: per label, the exact (task 1, task 2) losses at the end of its path.
        importance: EWC's b = F after task 1, one value per parameter.
        surfaces: the exact loss of task 1 and task 2 on ``mesh`` (``[n, n]`` each).
    """

    theta0: np.ndarray
    theta_b: np.ndarray
    task1_path: np.ndarray
    paths: dict[str, np.ndarray]
    end_losses: dict[str, tuple[float, float]]
    importance: np.ndarray
    mesh: tuple[np.ndarray, np.ndarray]
    surfaces: tuple[np.ndarray, np.ndarray]


def compute(seed: int = 0, samples: int = 1000, epochs: int = 3) -> Landscape:
    """Draw the two tasks, train SGD, L2 and EWC from θ⁰ through both, and evaluate the surfaces."""
    gen = torch.Generator().manual_seed(seed)
    tasks = [logistic_task(gen, samples, **TASK1), logistic_task(gen, samples, **TASK2)]
    stream = from_tensors([(x, y, x, y) for x, y in tasks], "domain", name="two-parameter")
    train = TrainConfig(epochs=epochs, batch_size=20, lr=0.5)
    strategies = {
        "SGD": ("finetune", {}),
        f"L2 (λ={L2_LAMBDA:g})": ("l2", {"lambda": L2_LAMBDA}),
        f"EWC (λ={EWC_LAMBDA:g})": ("ewc", {"lambda": EWC_LAMBDA}),
    }
    steps_per_task = epochs * -(-samples // train.batch_size)
    paths, importance, task1_path = {}, None, None
    for label, (name, params) in strategies.items():
        model = TwoWeights(THETA0)
        strategy = create_strategy(name, params)
        trace = [model.w.detach().clone()]
        learn_stream(
            stream,
            strategy,
            model=model,
            train=train,
            seed=seed,
            on_step=lambda _step, _loss, model=model, trace=trace: trace.append(
                model.w.detach().clone()
            ),
        )
        path = torch.stack(trace).numpy()
        task1_path = path[: steps_per_task + 1]
        paths[label] = path[steps_per_task:]
        if name == "ewc":
            importance = strategy.fishers[0]["w"].numpy().copy()
    assert importance is not None and task1_path is not None
    theta_b = task1_path[-1]
    ends = torch.tensor(np.stack([p[-1] for p in paths.values()]))
    end1, end2 = (loss_surface(x, y, ends) for x, y in tasks)
    end_losses = {label: (float(end1[k]), float(end2[k])) for k, label in enumerate(paths)}
    points = np.concatenate([task1_path, *paths.values()])
    centre = (points.min(0) + points.max(0)) / 2
    half = (points.max(0) - points.min(0)).max() / 2 + 1.0  # a square box around every path
    low, high = centre - half, centre + half
    mesh1, mesh2, flat = grid(low.tolist(), high.tolist())
    surfaces = tuple(loss_surface(x, y, flat).reshape(mesh1.shape).numpy() for x, y in tasks)
    return Landscape(
        theta0=np.array(THETA0),
        theta_b=theta_b,
        task1_path=task1_path,
        paths=paths,
        end_losses=end_losses,
        importance=importance,
        mesh=(mesh1.numpy(), mesh2.numpy()),
        surfaces=surfaces,  # type: ignore[arg-type]
    )


COLOURS = {"SGD": "#d62728", "L2": "#7f7f7f", "EWC": "#2ca02c"}


def draw(data: Landscape, path: str | Path) -> Path:
    """Contours of both losses, the paths, and EWC's importance as the ellipses of its penalty."""
    figure = _new_figure(6.4, 7.4)
    axes = figure.subplots()
    mesh1, mesh2 = data.mesh
    levels1 = np.quantile(data.surfaces[0], [0.02, 0.06, 0.12, 0.2, 0.3, 0.45, 0.6])
    levels2 = np.quantile(data.surfaces[1], [0.02, 0.06, 0.12, 0.2, 0.3, 0.45, 0.6])
    axes.contourf(
        mesh1, mesh2, data.surfaces[0], levels=[-np.inf, levels1[1]], colors=["#1f77b4"], alpha=0.15
    )
    axes.contourf(
        mesh1, mesh2, data.surfaces[1], levels=[-np.inf, levels2[1]], colors=["#ff7f0e"], alpha=0.15
    )
    c1 = axes.contour(
        mesh1, mesh2, data.surfaces[0], levels=np.unique(levels1), colors="#1f77b4", linewidths=0.9
    )
    c2 = axes.contour(
        mesh1, mesh2, data.surfaces[1], levels=np.unique(levels2), colors="#ff7f0e", linewidths=0.9
    )
    axes.clabel(c1, fontsize=6, fmt="%.2f")
    axes.clabel(c2, fontsize=6, fmt="%.2f")
    # EWC's penalty (λ/2) Σ b_i (θ_i − θᵇ_i)² = c: axis-aligned ellipses around θᵇ.
    b = np.maximum(data.importance, 1e-12)
    t = np.linspace(0, 2 * np.pi, 200)
    for c in (0.02, 0.08):
        r = np.sqrt(c * 2 / EWC_LAMBDA / b)
        axes.plot(
            data.theta_b[0] + r[0] * np.cos(t),
            data.theta_b[1] + r[1] * np.sin(t),
            color=COLOURS["EWC"],
            ls=":",
            lw=1.0,
        )
    axes.plot(
        *data.task1_path.T,
        color="#1f77b4",
        lw=1.0,
        alpha=0.8,
        label="task 1: θ⁰ → θᵇ (all strategies)",
    )
    for label, p in data.paths.items():
        colour = COLOURS[label.split(" ")[0]]
        l1, l2 = data.end_losses[label]
        axes.plot(
            *p.T, color=colour, lw=1.3, label=f"task 2, {label}: loss₁ {l1:.2f}, loss₂ {l2:.2f}"
        )
        axes.plot(*p[-1], "o", color=colour, ms=5)
    axes.plot(*data.theta0, "ks", ms=5)
    axes.annotate("θ⁰", data.theta0, xytext=(5, -12), textcoords="offset points")
    axes.plot(*data.theta_b, "k^", ms=6)
    axes.annotate("θᵇ", data.theta_b, xytext=(6, 4), textcoords="offset points")
    sgd_end = next(p[-1] for label, p in data.paths.items() if label == "SGD")
    axes.annotate("θ* (SGD)", sgd_end, xytext=(6, 4), textcoords="offset points")
    axes.set_xlabel("w₁")
    axes.set_ylabel("w₂")
    axes.set_aspect("equal", adjustable="box")
    axes.set_title(
        "exact loss of task 1 (blue) and of task 2 (orange) over the model's two parameters\n"
        f"EWC importance after task 1: b₁ = {data.importance[0]:.3f}, "
        f"b₂ = {data.importance[1]:.4f} (dotted: its penalty around θᵇ)",
        fontsize=9,
    )
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), frameon=False)
    return save_figure(figure, path)
