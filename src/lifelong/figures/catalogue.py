"""The registered figures: what each runs, draws and reports, in the lecture's order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lifelong.figures import FigureOptions, Made, register_figure
from lifelong.results import atomic_write_text


@register_figure(
    "forgetting",
    "The first example: a task forgotten once the next is learned",
    "A network learns task 1 (noisy digits: 90 % on task 1, 96 % on task 2), then task 2 (clean "
    "digits): task 1 falls to 80 % while task 2 rises to 97 %. Trained on both at once it scores "
    "89 % and 98 %: the network can do both; learning them in sequence forgets.",
)
def forgetting(out: Path, options: FigureOptions) -> Made:
    from lifelong.figures import forgetting as first

    seeds = [options.seed + k for k in range(len(first.SEEDS))]
    data = first.run_first_example(out / "first-example", seeds=seeds)
    png = first.draw(data, out / "forgetting.png")
    atomic_write_text(
        out / "first-example" / "summary.json", json.dumps(data.to_dict(), indent=1) + "\n"
    )
    line = first.summary_line(data)
    return Made("forgetting", png, line[0].upper() + line[1:] + ".")


@register_figure(
    "landscape",
    "Why forgetting happens: two tasks' loss surfaces",
    "Training on task 1 takes the parameters from θ⁰ to θᵇ, where task 1's loss is low. "
    "Training on task 2 from θᵇ with plain SGD goes to θ*, low for task 2 but high again for "
    "task 1. EWC moves each parameter according to its importance b_i for task 1: freely along "
    "a direction task 1 does not care about, little along the one it does; L2 (every b_i = 1) "
    "holds every direction and learns task 2 poorly.",
)
def landscape(out: Path, options: FigureOptions) -> Made:
    from lifelong.figures import landscape as land

    data = land.compute(seed=options.seed)
    png = land.draw(data, out / "landscape.png")
    losses = "; ".join(
        f"{label}: task-1 loss {l1:.2f}, task-2 loss {l2:.2f}"
        for label, (l1, l2) in data.end_losses.items()
    )
    return Made(
        "landscape",
        png,
        "A two-parameter logistic model (both losses exact), trained by the library's finetune, "
        f"l2 and ewc strategies. EWC's importance after task 1: b₁ = {data.importance[0]:.3f}, "
        f"b₂ = {data.importance[1]:.4f}. End of task 2 — {losses}.",
    )


@register_figure(
    "plasticity",
    "SGD, L2 and EWC on tasks A, B, C",
    "Plain SGD forgets task A as soon as it learns B; an L2 pull towards the old weights keeps "
    "A but can hardly learn B and C (intransigence); EWC keeps A and learns B and C "
    "(Kirkpatrick et al. 2017, Fig. 2A).",
)
def plasticity_figure(out: Path, options: FigureOptions) -> Made:
    from lifelong.figures.plasticity import plasticity
    from lifelong.report import read_results

    folder = out / "plasticity"
    png = plasticity(folder, data=options.data, data_dir=options.data_dir, seed=options.seed)
    results = read_results(folder)
    ends = "; ".join(
        f"{label}: A {100 * entry['accuracy_matrix'][-1][0]:.0f} %, "
        f"C {100 * entry['accuracy_matrix'][-1][2]:.0f} %"
        for label, entry in results["strategies"].items()
    )
    return Made(
        "plasticity",
        png,
        f"Three permuted-{options.data} tasks, seed {options.seed}; accuracy after task C — {ends}.",
    )


@register_figure(
    "gem",
    "GEM: a gradient that does not hurt the old tasks",
    "When the new task's gradient g points against an old task's gradient gᵏ (g·gᵏ < 0), a step "
    "raises that task's loss. GEM replaces g by the closest g′ with g′·gᵏ ≥ 0 for every old task "
    "(a quadratic program); A-GEM only keeps g̃ from opposing the average of the old tasks' "
    "gradients.",
)
def gem(out: Path, options: FigureOptions) -> Made:
    from lifelong.figures import gem as picture

    data = picture.compute(seed=options.seed)
    png = picture.draw(data, out / "gem.png")
    before = ", ".join(f"g·g{'¹²'[k]} = {picture._dot(data.g, data.old[k])}" for k in range(2))
    gem_dots = ", ".join(f"g′·g{'¹²'[k]} = {picture._dot(data.gem, data.old[k])}" for k in range(2))
    agem_dots = ", ".join(
        f"g̃·g{'¹²'[k]} = {picture._dot(data.agem, data.old[k])}" for k in range(2)
    )
    return Made(
        "gem",
        png,
        "Gradients of a two-parameter model on three tasks' memories, by the library's GEM code "
        f"(margin 0): {before}; GEM's quadratic program gives {gem_dots}; A-GEM's projection "
        f"{agem_dots} (it only guarantees the average).",
    )


@register_figure(
    "evaluation",
    "Evaluation: the accuracy matrix and what ACC, BWT and FWT read from it",
    "R[i, j] is the accuracy on task j after learning task i. ACC averages the last row; BWT "
    "averages how much each task changed between just after it was learned and the end "
    "(negative: forgetting); FWT averages how much the earlier tasks helped a task before it was "
    "learned, against the untrained model.",
)
def evaluation(out: Path, options: FigureOptions) -> Made:
    from lifelong.figures import evaluation as picture

    data, result = picture.compute(seed=options.seed)
    png = picture.draw(data, out / "evaluation.png")
    v, m = data.values, result.metrics()
    return Made(
        "evaluation",
        png,
        f"Fine-tuning through 4 rotated-digit tasks (seed {options.seed}): ACC "
        f"{100 * v['acc']:.1f} %, BWT {100 * v['bwt']:+.1f}, FWT {100 * v['fwt']:+.1f} points, "
        f"from the marked cells; the library's metrics give ACC {100 * m['acc']:.1f} %, BWT "
        f"{100 * m['bwt']:+.1f}, FWT {100 * m['fwt']:+.1f}.",
    )


@register_figure(
    "qa",
    "20 question-answering tasks: sequential vs multitask",
    "Learned one after another, each bAbI task is answered well right after it is learned and "
    "forgotten as the next ones are; the same model trained on all 20 at once answers most of "
    "them.",
)
def qa(out: Path, options: FigureOptions) -> Made:
    from lifelong.figures import qa as picture
    from lifelong.report import read_results

    if options.results is not None:
        results = read_results(options.results)
        source = f"from {options.results}"
    else:
        from lifelong.config import RunConfig
        from lifelong.experiment import run_experiment

        raw = {**picture.RUN, "seed": options.seed}
        if options.data_dir is not None:
            raw["data_dir"] = options.data_dir
        config = RunConfig.from_dict(raw)
        run_dir = out / "qa-run"
        # the figure's own run folder, rebuilt on every call
        results = run_experiment(config, run_dir, overwrite=True).to_dict()
        source = f"from a run of memnet in {run_dir}"
    data = picture.compute(results)
    png = picture.draw(data, out / "qa.png")

    def mean(values) -> float:
        return 100 * float(np.nanmean(values))

    return Made(
        "qa",
        png,
        f"{data.description}, {source}: {data.labels[0]} answers {mean(data.just_learned):.0f} % "
        f"of a task's questions right after learning it and {mean(data.after_all):.0f} % at the "
        f"end; the multitask model ({data.labels[1]}) {mean(data.multitask):.0f} %.",
    )
