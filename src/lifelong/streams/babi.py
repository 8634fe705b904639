"""The ``babi`` stream: the 20 bAbI question-answering tasks (Weston et al. 2015) one after another.

Every task is one bAbI task (train: its 1000 training questions; test: its 1000 test questions).
Inputs are int64 token grids ``[max_sentences + 1, sentence_length]`` (the story's statements,
right-aligned, then the question; see :mod:`lifelong.data.babi`), ``input_kind="tokens"``.

Output columns are answer words:

* ``task`` scenario (default): each task owns the columns of its own answer words (a multi-head
  output whose heads are disjoint column ranges); a word answering several tasks has one column
  in each of their heads.
* ``domain`` scenario: one head over the union of the answer words of the chosen tasks.

``stream.info`` holds what text models need: ``vocabulary`` (index -> word; 0 is padding),
``answer_words`` and ``answer_ids`` (the word and its vocabulary index of every output column),
``max_sentences``, ``sentence_length`` and ``task_numbers`` (the official number of each task).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lifelong.data.babi import (
    DEFAULT_MAX_SENTENCES,
    TASK_NAMES,
    BabiTask,
    encode_examples,
    load_babi,
    longest,
    task_label,
)
from lifelong.errors import ConfigError
from lifelong.streams.base import Stream, Task, TaskData
from lifelong.streams.registry import StreamSpec, register_stream


def _task_number(item: object) -> int:
    """A task given as its number (1-20, also as text) or its name (``qa7``, ``qa7_counting``)."""
    text = str(item).strip().lower()
    if text.isdigit() and 1 <= int(text) <= len(TASK_NAMES):
        return int(text)
    for number, stem in enumerate(TASK_NAMES, start=1):
        if text in (stem, stem.split("_")[0], stem.split("_", 1)[1]):
            return number
    raise ConfigError(
        f"babi: unknown task {item!r} in order; use task numbers 1-20 or names like qa7"
    )


def _parse_order(value: object) -> list[int]:
    """``order`` as a list of task numbers; accepts a list or a text like ``"3,1,2"`` / ``"3 1 2"``."""
    if isinstance(value, int):
        value = [value]
    if isinstance(value, str):
        items: Sequence[object] = [
            v for v in value.replace(",", " ").replace(";", " ").split() if v
        ]
    elif isinstance(value, Sequence):
        items = value
    else:
        raise ConfigError(f"babi: order must be a list of task numbers 1-20, got {value!r}")
    numbers = [_task_number(v) for v in items]
    if not numbers:
        raise ConfigError("babi: order is empty; give task numbers 1-20, e.g. order=[1,2,3]")
    if len(set(numbers)) != len(numbers):
        raise ConfigError(f"babi: order repeats a task: {numbers}; name each task once")
    return numbers


def _rows(n_available: int, n: int | None, what: str, gen: torch.Generator) -> Tensor | None:
    """Sorted indices of ``n`` samples drawn without replacement (``None``: keep all)."""
    if n is None or n == n_available:
        return None
    if n > n_available:
        raise ConfigError(
            f"babi: {what} asks for {n} samples per task but a task has only {n_available}; "
            f"use at most {n_available}"
        )
    return torch.randperm(n_available, generator=gen)[:n].sort().values


def _chosen_tasks(spec: StreamSpec) -> list[int]:
    options = spec.options
    if options.get("order") is not None:
        numbers = _parse_order(options["order"])
        if spec.tasks_given and spec.tasks != len(numbers):
            if spec.tasks > len(numbers):
                raise ConfigError(
                    f"babi: --tasks {spec.tasks} but order names only {len(numbers)} tasks; "
                    "drop --tasks or name more tasks"
                )
            numbers = numbers[: spec.tasks]
        return numbers
    if not 1 <= spec.tasks <= len(TASK_NAMES):
        raise ConfigError(
            f"babi: --tasks must be between 1 and {len(TASK_NAMES)}, got {spec.tasks}"
        )
    return list(range(1, spec.tasks + 1))


@register_stream(
    "babi",
    "the 20 bAbI QA tasks (Weston et al. 2015) one after another",
    tasks=20,
    scenario="task",
    data=("babi",),
    input_kind="tokens",
)
def babi(spec: StreamSpec) -> Stream:
    """The bAbI tasks in the official order, or ``--tasks N`` (the first N) / ``order``.

    Options:
        order (list of task numbers or names, default 1..20): the tasks and their order, e.g.
            ``order=[3,1,2]`` or ``order="qa1,qa2"``; with ``--tasks N`` the first N of them.
        max_sentences (int, default 50): statements kept per story, the most recent ones
            (Sukhbaatar et al. 2015 limit the memory to 50); the grid has as many story rows as
            the longest kept story of the chosen tasks.

    ``--train-samples`` / ``--test-samples`` draw that many questions per task (seeded).
    """
    if spec.scenario not in ("task", "domain"):
        raise ConfigError(
            f"babi streams work in the task and domain scenarios, not {spec.scenario!r}; "
            "use --scenario task or --scenario domain"
        )
    unknown = set(spec.options) - {"order", "max_sentences"}
    if unknown:
        raise ConfigError(
            f"babi has no option {sorted(unknown)[0]!r}; its options: order, max_sentences"
        )
    max_sentences = int(spec.options.get("max_sentences", DEFAULT_MAX_SENTENCES))
    if max_sentences < 1:
        raise ConfigError(f"babi: max_sentences must be at least 1, got {max_sentences}")
    numbers = _chosen_tasks(spec)
    corpus = load_babi(spec.data_dir)
    vocabulary = corpus.vocabulary
    chosen: list[BabiTask] = [corpus.task(n) for n in numbers]
    gen = torch.Generator().manual_seed(spec.seed)

    # Draw the samples first: the grid size depends only on what the stream holds.
    picked = []
    for task in chosen:
        train_rows = _rows(len(task.train), spec.train_samples, "--train-samples", gen)
        test_rows = _rows(len(task.test), spec.test_samples, "--test-samples", gen)
        train = task.train if train_rows is None else tuple(task.train[i] for i in train_rows)
        test = task.test if test_rows is None else tuple(task.test[i] for i in test_rows)
        picked.append((task, train, test))
    most_sentences, sentence_length = longest(ex for _, tr, te in picked for ex in tr + te)
    n_sentences = max(1, min(max_sentences, most_sentences))

    answers_per_task = [task.answers() for task in chosen]
    if spec.scenario == "domain":
        answer_words = sorted({a for answers in answers_per_task for a in answers})
    else:
        answer_words = [a for answers in answers_per_task for a in answers]
    tasks: list[Task] = []
    offset = 0
    for t, ((task, train, test), answers) in enumerate(zip(picked, answers_per_task, strict=True)):
        if spec.scenario == "domain":
            column_of = {a: answer_words.index(a) for a in answers}
            columns = (0, len(answer_words))
        else:
            column_of = {a: offset + i for i, a in enumerate(answers)}
            columns = (offset, offset + len(answers))
            offset += len(answers)

        def split(examples, column_of=column_of) -> TaskData:
            x = encode_examples(examples, vocabulary, n_sentences, sentence_length)
            y = torch.tensor([column_of[ex.answer] for ex in examples], dtype=torch.long)
            return TaskData(x, y)

        tasks.append(
            Task(
                id=t,
                name=task_label(task.number),
                train=split(train),
                test=split(test),
                classes=tuple(vocabulary.id(a) for a in answers),
                columns=columns,
            )
        )
    info = {
        "vocabulary": list(vocabulary.words),
        "answer_words": list(answer_words),
        "answer_ids": [vocabulary.id(a) for a in answer_words],
        "max_sentences": n_sentences,
        "sentence_length": sentence_length,
        "task_numbers": numbers,
        "pad_id": 0,
    }
    return Stream(
        name="babi",
        data="babi",
        scenario=spec.scenario,
        tasks=tasks,
        input_shape=(n_sentences + 1, sentence_length),
        n_outputs=len(answer_words),
        input_kind="tokens",
        info=info,
    )
