"""Figures of the lecture and papers, reproduced end to end (``lifelong figure NAME``).

:func:`plasticity` is Kirkpatrick et al. 2017 ("Overcoming catastrophic forgetting in neural
networks", PNAS), Fig. 2A, which the lecture shows: a network learns task A, then B, then C (three
pixel permutations); while it trains, the accuracy on each task is measured. Plain SGD forgets A
as soon as it learns B; an L2 pull towards the old weights (every weight equally important)
keeps A but can barely learn B and C; EWC keeps A and learns B and C.
"""

from __future__ import annotations

from pathlib import Path

from lifelong.report import build_report
from lifelong.report.plots import plasticity_figure
from lifelong.results import RunResults
from lifelong.runner import learn_stream
from lifelong.strategies import create_strategy
from lifelong.streams import build_stream
from lifelong.train import TrainConfig


def plasticity(
    out_dir: str | Path,
    data: str = "digits",
    *,
    data_dir: str | Path | None = None,
    seed: int = 0,
    tasks: int = 3,
    train_samples: int | None = None,
    test_samples: int | None = None,
    epochs: int = 3,
    lr: float = 0.03,
    batch_size: int = 10,
    eval_every: int = 20,
    l2_lambda: float = 1.0,
    ewc_lambda: float = 30.0,
) -> Path:
    """Train fine-tuning (SGD), L2 and EWC through a 3-task permuted stream, recording every
    task's accuracy every ``eval_every`` steps; write ``plasticity.png``, ``results.json`` and the
    HTML report into ``out_dir`` and return the PNG's path.

    Args:
        out_dir: output directory (created).
        data: ``digits`` (embedded, seconds), ``mnist`` or ``fashion-mnist`` (files in
            ``data_dir``; use ``train_samples`` to bound the time).
        data_dir: where the IDX files are (default: ``$LIFELONG_DATA`` or the user cache).
        seed: seeds the permutations and every strategy's training.
        tasks: number of tasks (the figure shows the first three).
        train_samples, test_samples: samples per task. ``None``: all of digits; for the
            MNIST-sized data sets 2000 and 1000 (a run of a minute or two on a CPU).
        epochs, lr, batch_size: SGD training per task.
        eval_every: optimizer steps between two accuracy measurements.
        l2_lambda: λ of ``l2`` (λ Σ (θ − θ*)²); large enough to show intransigence.
        ewc_lambda: λ of ``ewc`` ((λ/2) Σ F (θ − θ*)²).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if data != "digits":
        train_samples = 2000 if train_samples is None else train_samples
        test_samples = 1000 if test_samples is None else test_samples
    stream = build_stream(
        "permuted",
        data,
        data_dir=data_dir,
        tasks=tasks,
        train_samples=train_samples,
        test_samples=test_samples,
        seed=seed,
    )
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, eval_every=eval_every)
    strategies = {
        "SGD (finetune)": ("finetune", {}),
        f"L2 (lambda={l2_lambda:g})": ("l2", {"lambda": l2_lambda}),
        f"EWC (lambda={ewc_lambda:g})": ("ewc", {"lambda": ewc_lambda}),
    }
    results = RunResults(
        config={
            "figure": "plasticity",
            "stream": "permuted",
            "data": data,
            "tasks": tasks,
            "train_samples": train_samples,
            "test_samples": test_samples,
            "seed": seed,
            "train": config.to_dict(),
            "strategies": {label: {"name": n, **p} for label, (n, p) in strategies.items()},
        },
        stream=stream.describe(),
    )
    for label, (name, params) in strategies.items():
        results.strategies[label] = learn_stream(
            stream, create_strategy(name, params), train=config, seed=seed, label=label
        )
    results.save(out)
    path = out / "plasticity.png"
    plasticity_figure(results.to_dict(), tasks=(0, 1, 2), path=path)
    build_report(out)
    return path
