"""LAMOL: language modelling for lifelong language learning (Sun, Ho & Lee, ICLR 2020)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.errors import ConfigError
from lifelong.strategies.base import Batch, Strategy, TrainSet, register
from lifelong.streams.base import Stream, Task, TaskData
from lifelong.text_models import GRULanguageModel


@register
class Lamol(Strategy):
    """LAMOL (Sun, Ho & Lee 2020, "LAMOL: LAnguage MOdeling for Lifelong Language Learning").

    The QA model is a language model (``--model lm``). Section 3 of the paper:

    * Training objective: ``L = L_QA + lambda * L_LM``. ``L_QA`` is the cross-entropy of
      generating ``answer EOS`` after ``context question ANS``; ``L_LM`` the cross-entropy of
      generating the whole example ``context question ANS answer EOS`` after a start token. Both
      are over the whole token set, as in the paper (not only over the answer columns).
    * Before training on task ``t > 1`` the model samples ``gamma * |D_t|`` pseudo examples of
      the earlier tasks (top-k sampling) and trains on them mixed with the real data of task
      ``t``, with both losses. With task-specific start tokens (the LAMOL_TASK variant, used
      here) each example starts with its task's token and the pseudo examples are split evenly
      among the earlier tasks (as the authors' code does; at least one per task here). No real
      example of an earlier task is kept: the pseudo examples are regenerated before every task
      from the current model and replace the previous ones.

    The paper's QA model answers without being told the task (its input is ``context question
    ANS``; the task token only starts the generation of pseudo examples): that is the domain
    scenario here (``--scenario domain``, one answer vocabulary for all tasks), where a model
    that forgets a task also forgets which words answer it. In the task scenario the answer is
    read over the task's own answer words, as for every other strategy.

    A pseudo example is kept only when it is well-formed (see
    :meth:`lifelong.text_models.GRULanguageModel.decode`) and its answer is one of its task's
    answer words; the others are discarded and drawn again, at most ``attempts`` rounds. The
    paper uses GPT-2 (117M) on decaNLP tasks; here the language model is the small GRU of
    ``--model lm`` and the tasks are the bAbI tasks.

    Where the authors' code (the source of the paper's numbers) differs, and how to get it:
    it draws once and keeps every pseudo example that parses (``attempts=1,keep=parsed``; here
    the answer must still be an answer word of some task, since labels are output columns), and
    it weighs the ``ANS`` token five times in the cross-entropy (``ans_weight=5``). Our defaults
    (3 rounds, the task's own answer words, weight 1) are kept because the small GRU draws few
    well-formed examples, and an example whose answer belongs to another task teaches the
    old task a wrong answer (benchmarks/RESULTS.md, section 5, was measured with them).

    Args:
        lambda_: weight of the LM loss (paper: 0.25).
        gamma: pseudo examples generated per real example of the new task (paper: 0.05 and
            0.2; 0.2 is the better setting and the default). The quota is shared by all earlier
            tasks, so on long streams each gets less: to give each of ``t - 1`` old tasks the
            share 0.2 gives each of the paper's 4, use ``gamma = 0.05 * (t - 1)`` (1 for the 20
            bAbI tasks; training time grows with ``1 + gamma``).
        top_k: top-k sampling of the generation (paper: 20).
        attempts: sampling rounds to fill the quota of well-formed pseudo examples (1 = keep
            only the first draw, as the paper and the authors' code do). Default 3.
        keep: which well-formed pseudo examples are kept: ``"task"`` (default) those whose
            answer is an answer word of the task they were generated for; ``"parsed"`` any
            whose answer is an answer word of the stream (the authors' code keeps everything
            that parses).
        ans_weight: weight of the ``ANS`` marker as a target of the LM loss (the authors' code:
            5, its ``tokens_weight``; the paper does not mention it). Default 1.
        answers: the answer a pseudo example is trained with. ``"sampled"`` (the paper): the
            answer token the model sampled with the rest of the example. ``"model"``: the
            model's own QA answer to the sampled story and question (the argmax of its answer
            scores over the task's answers when the example is generated), as Generative Replay
            (Shin et al. 2017) labels its generated inputs with the previous solver; a variant
            for small language models whose answer distribution is too flat for top-k sampling
            to return their own answer (see ``consistent_share``). On the 20 bAbI tasks with
            ``--model lm`` it kept clearly more of the old tasks than ``sampled`` did
            (benchmarks/RESULTS.md, section 5).

    ``info()`` reports how many pseudo examples were drawn, the share that was well-formed
    (``well_formed_share``), the share of those whose sampled answer equals the model's own
    answer (argmax of its QA scores on the sampled story and question) when they were generated
    (``consistent_share``), the share of all draws that are both, and per generation round the
    counts (``generation``).
    """

    name = "lamol"
    description = "LM that replays pseudo-samples of old tasks it generates itself (no stored data)"
    family = "text"
    scenarios = ("task", "domain")

    def __init__(
        self,
        lambda_: float = 0.25,
        gamma: float = 0.2,
        top_k: int = 20,
        attempts: int = 3,
        answers: str = "sampled",
        keep: str = "task",
        ans_weight: float = 1.0,
    ) -> None:
        if lambda_ < 0 or not math.isfinite(lambda_):
            raise ValueError(f"lambda must be >= 0, got {lambda_}")
        if gamma < 0 or not math.isfinite(gamma):
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        if answers not in ("sampled", "model"):
            raise ValueError(f"answers must be 'sampled' or 'model', got {answers!r}")
        self.lambda_, self.gamma, self.top_k, self.attempts = lambda_, gamma, top_k, attempts
        if keep not in ("task", "parsed"):
            raise ValueError(f"keep must be 'task' or 'parsed', got {keep!r}")
        if ans_weight <= 0 or not math.isfinite(ans_weight):
            raise ValueError(f"ans_weight must be > 0, got {ans_weight}")
        self.answers = answers
        self.keep, self.ans_weight = keep, float(ans_weight)
        self.pseudo: dict[int, TaskData] = {}
        self.history: list[dict[str, int]] = []

    # ---- hooks -------------------------------------------------------------------------------
    def prepare(self, model: nn.Module, stream: Stream) -> nn.Module:
        if not isinstance(model, GRULanguageModel):
            raise ConfigError(
                "lamol needs a model that is a language model; use --model lm (on --stream babi)"
            )
        return super().prepare(model, stream)

    def before_task(self, task: Task, model: nn.Module) -> None:
        self.pseudo = {}
        earlier = self.stream.tasks[: task.id]
        if not earlier or self.gamma == 0:
            return
        total = math.ceil(self.gamma * len(task.train))
        each = max(1, total // len(earlier))
        was_training = model.training
        model.eval()
        try:
            for old in earlier:
                self.pseudo[old.id] = self._generate(model, old, each, task.id)
        finally:
            model.train(was_training)

    def training_data(self, task: Task, seen: list[Task]) -> TrainSet | None:
        parts = [(task.id, task.train)]
        parts += [(tid, data) for tid, data in sorted(self.pseudo.items()) if len(data)]
        return TrainSet(parts, self.stream)

    def loss(self, model: nn.Module, batch: Batch, task: Task) -> Tensor:
        answers = model.answer_ids[batch.y]
        loss = model.qa_loss(batch.x, answers)
        if self.lambda_ > 0:
            loss = loss + self.lambda_ * model.lm_loss(
                batch.x, answers, batch.task_ids, self.ans_weight
            )
        return loss

    # ---- generation ----------------------------------------------------------------------------
    def _generate(self, model: GRULanguageModel, old: Task, count: int, now: int) -> TaskData:
        """``count`` well-formed pseudo examples of task ``old`` (fewer if ``attempts`` run out)."""
        start, stop = old.columns
        first, last = (start, stop) if self.keep == "task" else (0, len(model.answer_ids))
        words = model.answer_ids[first:last].tolist()
        column_of = {int(w): first + i for i, w in enumerate(words)}
        device = model.answer_ids.device
        xs: list[Tensor] = []
        ys: list[int] = []
        drawn = well_formed = consistent = 0
        for _ in range(self.attempts):
            missing = count - len(ys)
            if missing <= 0:
                break
            task_ids = torch.full((missing,), old.id, device=device)
            # runs without autograd
            tokens = model.sample(task_ids, top_k=self.top_k, generator=self.generator)
            x, answers, _ = model.decode(tokens.cpu())
            drawn += missing
            keep = [i for i, a in enumerate(answers.tolist()) if a in column_of]
            if not keep:
                continue
            x = x[keep].to(device)
            y = torch.tensor([column_of[a] for a in answers[keep].tolist()], device=device)
            with torch.inference_mode():
                own = model(x)[:, start:stop].argmax(1) + start
            well_formed += len(keep)
            consistent += int((own == y).sum())
            xs.append(x.clone())
            ys.extend((own if self.answers == "model" else y).tolist())
        self.history.append(
            {
                "before_task": now,
                "task": old.id,
                "generated": drawn,
                "well_formed": well_formed,
                "consistent": consistent,
            }
        )
        if xs:
            x_all = torch.cat(xs)
        else:
            grid = old.train.x.shape[1:]
            x_all = torch.zeros(0, *grid, dtype=torch.long, device=device)
        return TaskData(x_all, torch.tensor(ys, dtype=torch.long, device=device))

    # ---- reporting -----------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        generated = sum(h["generated"] for h in self.history)
        well_formed = sum(h["well_formed"] for h in self.history)
        consistent = sum(h["consistent"] for h in self.history)
        return {
            "pseudo_generated": generated,
            "pseudo_well_formed": well_formed,
            "well_formed_share": well_formed / generated if generated else None,
            "consistent_share": consistent / well_formed if well_formed else None,
            "well_formed_and_consistent_share": consistent / generated if generated else None,
            "pseudo_in_memory": sum(len(d) for d in self.pseudo.values()),
            "stored_real_examples": 0,
            "generation": list(self.history),
        }
