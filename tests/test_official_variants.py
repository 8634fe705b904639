"""The authors'-code variants offered as options (issue 12, item 4), each against a reference
computed here by hand. Each test was run once against a deliberate bug (named in its docstring)
and failed."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lifelong.errors import ConfigError
from lifelong.metrics import backward_transfer, forward_transfer, summarize
from lifelong.strategies import create_strategy
from lifelong.strategies.memory.gem import solve_gem_dual
from lifelong.streams.base import Task, TaskData
from lifelong.text_models import GRULanguageModel

R = [[0.1, 0.2, 0.3], [0.9, 0.4, 0.2], [0.7, 0.8, 0.5], [0.6, 0.7, 0.9]]


def test_bwt_and_fwt_averaged_over_t_as_in_gems_code() -> None:
    """Sums by hand: BWT terms (0.6-0.9) + (0.7-0.8) = -0.4, FWT terms (0.4-0.2) + (0.5-0.3) = 0.4.
    Deliberate bug: dividing by T-1 in the ``"t"`` branch fails."""
    assert backward_transfer(R) == pytest.approx(-0.4 / 2)
    assert backward_transfer(R, over="t") == pytest.approx(-0.4 / 3)
    assert forward_transfer(R) == pytest.approx(0.4 / 2)
    assert forward_transfer(R, over="t") == pytest.approx(0.4 / 3)
    assert summarize(R, over="t")["bwt"] == pytest.approx(-0.4 / 3)
    assert summarize(R, over="t")["fwt"] == pytest.approx(0.4 / 3)
    with pytest.raises(ValueError, match="over must be one of t-1, t, got 'T'"):
        backward_transfer(R, over="T")


def test_matrix_shape_error_names_rows_and_tasks() -> None:
    """Killed mutmut survivor: the message printed the task count twice."""
    with pytest.raises(ValueError, match="has 3 rows but only 1 tasks"):
        backward_transfer([[0.1], [0.2], [0.3]])


def test_batch_sizes_of_one_are_valid() -> None:
    """Killed mutmut survivors: ``batch_size >= 1`` and ``eval_batch_size >= 1`` mutated to
    ``> 1`` / ``>= 2``."""
    from lifelong.train import TrainConfig

    TrainConfig(batch_size=1, eval_batch_size=1)
    with pytest.raises(ConfigError, match=r"^--batch-size must be at least 1, got 0$"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match=r"^eval_batch_size must be at least 1$"):
        TrainConfig(eval_batch_size=0)


def test_gem_absolute_ridge_is_the_authors_eps() -> None:
    """One past task: the dual is ``min ½ v² (|G|² + e) + v G·g`` s.t. ``v >= margin``, so
    ``v = max(margin, -G·g / (|G|² + e))`` with ``e = eps`` (absolute, the authors' code) or
    ``e = eps |G|²`` (relative). Deliberate bug: ignoring ``relative=False`` fails."""
    g = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    past = torch.tensor([[-0.03, 0.02, 0.01]], dtype=torch.float64)  # a small gradient, |G|² ≈ 1e-3
    gg, dot = float(past[0] @ past[0]), float(past[0] @ g)
    for relative, e in ((False, 1e-3), (True, 1e-3 * gg)):
        v = max(0.0, -dot / (gg + e))
        expected = g + v * past[0]
        got = solve_gem_dual(g, past, margin=0.0, ridge=1e-3, relative=relative)
        torch.testing.assert_close(got, expected)
    strategy = create_strategy("gem", {"ridge": 1e-3, "absolute_ridge": True})
    assert strategy.absolute_ridge is True and strategy.params()["absolute_ridge"] is True


def test_si_clip_sets_negative_importance_to_zero() -> None:
    """``clip=true`` (Zenke et al.'s code): Ω = max(0, Ω + ω/(Δ² + ξ)) after each task; the
    default keeps negative values. ω is set by hand for three tasks, each weight moved by 1
    (so ω/(Δ² + ξ) = ω/2): weight 0 gets -2, 3, -1, so Ω_0 ends at 0 unclipped, 1 clipped (and
    3/2 if ω rather than Ω were clipped). Deliberate bug: clipping ω instead fails."""
    for clip in (False, True):
        model = nn.Linear(1, 2, bias=False).double()
        nn.init.zeros_(model.weight)
        strategy = create_strategy("si", {"xi": 1.0, "clip": clip})
        strategy.prepare(model, None)
        expected = torch.zeros(2, 1, dtype=torch.float64)
        for omega in ((-2.0, 2.0), (3.0, 2.0), (-1.0, 2.0)):
            with torch.no_grad():
                model.weight += 1.0
            value = torch.tensor(omega, dtype=torch.float64)[:, None]
            strategy.path.omega[0].copy_(value)
            expected = expected + value / (1 + 1)
            if clip:
                expected = expected.clamp(min=0)
            strategy.after_task(None, model, None)
            torch.testing.assert_close(strategy.importance["weight"], expected)
        assert float(strategy.importance["weight"][0, 0]) == (1.0 if clip else 0.0)


def _lm() -> GRULanguageModel:
    torch.manual_seed(0)
    return GRULanguageModel(
        vocab_size=12, answer_ids=[2, 3, 4, 5], n_sentences=2, sentence_length=3, n_tasks=2, dim=8
    )


def test_lamol_ans_weight_weighs_the_answer_marker_in_the_lm_loss() -> None:
    """With per-target losses ℓ and weight w on the ``ANS`` target (one per example), the loss is
    ``(S_o + w S_a) / (N_o + w B)``: two weights determine ``S_o`` and ``S_a`` (N_o counted by
    hand), and the third must follow. Deliberate bug: dropping ``weight=`` fails."""
    model = _lm()
    x = torch.tensor(
        [
            [[6, 7, 0], [8, 0, 0], [9, 10, 0]],
            [[0, 0, 0], [6, 6, 6], [11, 0, 0]],
        ]
    )
    answers, task_ids = torch.tensor([2, 5]), torch.tensor([0, 1])
    b = len(x)
    # targets: every word, one separator per non-empty sentence, ANS, answer, EOS
    n_all = int((x != 0).sum()) + int((x[:, :2] != 0).any(-1).sum()) + 3 * b
    n_other = n_all - b
    with torch.no_grad():
        l1, l5, l3 = (model.lm_loss(x, answers, task_ids, w) for w in (1.0, 5.0, 3.0))
    # l1 (n_other + b) = S_o + S_a ;  l5 (n_other + 5b) = S_o + 5 S_a
    s_a = (float(l5) * (n_other + 5 * b) - float(l1) * (n_other + b)) / 4
    s_o = float(l1) * (n_other + b) - s_a
    assert float(l3) == pytest.approx((s_o + 3 * s_a) / (n_other + 3 * b), rel=1e-5)
    assert not math.isclose(float(l1), float(l5), rel_tol=1e-3)


def test_lamol_keep_parsed_keeps_other_tasks_answers() -> None:
    """Three drawn examples with answers: the old task's word, another task's word, a word that
    answers nothing. ``keep=task`` keeps the first, ``keep=parsed`` (the authors' code keeps what
    parses) the first two. Deliberate bug: ignoring ``keep`` fails."""
    model = _lm()
    s, a, e = model.sep, model.ans, model.eos
    rows = [[6, 7, s, 8, a, w, e] for w in (3, 5, 9)]  # columns 1 (task 0), 3 (task 1), none
    model.sample = lambda task_ids, top_k=20, generator=None: torch.tensor(rows)
    empty = TaskData(torch.zeros(0, 3, 3, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    old = Task(0, "t0", empty, empty, (0, 1), (0, 2))
    for keep, labels in (("task", [1]), ("parsed", [1, 3])):
        strategy = create_strategy("lamol", {"attempts": 1, "keep": keep, "ans_weight": 5})
        data = strategy._generate(model, old, 3, 1)
        assert data.y.tolist() == labels


def test_official_variant_settings_are_checked() -> None:
    for params in ({"keep": "all"}, {"ans_weight": 0}):
        with pytest.raises(ConfigError):
            create_strategy("lamol", params)
