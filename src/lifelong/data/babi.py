"""The bAbI question-answering tasks (Weston et al. 2015, "Towards AI-Complete Question Answering:
A Set of Prerequisite Toy Tasks"), v1.2, English, 1k training examples per task.

File format (one file per task and split, ``qaN_<name>_{train,test}.txt``)::

    1 Mary moved to the bathroom.
    2 John went to the hallway.
    3 Where is Mary? <TAB>bathroom<TAB>1

Each line starts with its number inside the current story; the number restarts at 1 when a new
story begins. A statement line is a sentence of the story; a question line carries the question,
a TAB, the answer, a TAB and the numbers of the supporting statements. A question is asked about
every statement of its story that comes before it (questions are not part of the story).

Answers are single tokens; the two tasks with several-word answers (8 lists/sets: ``apple,milk``;
19 path finding: ``n,w``) keep the comma-joined answer as one token, as the memory-network papers
do (Weston et al. 2015; Sukhbaatar et al. 2015).

Tokenizer: lower-case, words are runs of letters, digits and apostrophes; the full stop and the
question mark are dropped (every statement ends with one and every question with the other).
The vocabulary is built from the 20 training files (story words, question words and answers);
index 0 is padding and index 1 stands for a word not seen in training (none occurs in the
official test files).

Encoding for models (:func:`encode_examples`): an int64 grid ``[N, S + 1, L]``: rows ``0..S-1``
hold the story's most recent ``S`` statements, oldest first and right-aligned (the last statement
is row ``S - 1``, unused rows at the top are all padding), row ``S`` holds the question; words are
left-aligned in each row and padded with 0. End-to-end memory networks use the 50 most recent
statements (Sukhbaatar et al. 2015, section 4.2), the default here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from lifelong.data.files import require_files, resolve_data_dir
from lifelong.errors import DataError

TASK_NAMES: tuple[str, ...] = (
    "qa1_single-supporting-fact",
    "qa2_two-supporting-facts",
    "qa3_three-supporting-facts",
    "qa4_two-arg-relations",
    "qa5_three-arg-relations",
    "qa6_yes-no-questions",
    "qa7_counting",
    "qa8_lists-sets",
    "qa9_simple-negation",
    "qa10_indefinite-knowledge",
    "qa11_basic-coreference",
    "qa12_conjunction",
    "qa13_compound-coreference",
    "qa14_time-reasoning",
    "qa15_basic-deduction",
    "qa16_basic-induction",
    "qa17_positional-reasoning",
    "qa18_size-reasoning",
    "qa19_path-finding",
    "qa20_agents-motivations",
)
"""The 20 tasks in the official order (file-name stems)."""

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
DEFAULT_MAX_SENTENCES = 50
"""Statements kept per story (the most recent), as in Sukhbaatar et al. (2015), section 4.2."""

_WORD = re.compile(r"[a-z0-9']+")


def tokenize(text: str) -> list[str]:
    """Lower-cased words of ``text``; punctuation (the full stop, the question mark) is dropped."""
    return _WORD.findall(text.lower())


def task_label(number: int) -> str:
    """Readable name of task ``number`` (1-20): ``"qa7 counting"``."""
    stem = TASK_NAMES[number - 1]
    head, _, rest = stem.partition("_")
    return f"{head} {rest.replace('-', ' ')}"


@dataclass(frozen=True)
class BabiExample:
    """One question with its story.

    Attributes:
        story: the statements of the story before the question, oldest first, as token tuples.
        story_lines: the line number (inside the story) of each statement of ``story``.
        question: the question's tokens.
        answer: the answer token (comma-joined for several-word answers).
        supporting: line numbers of the supporting statements.
        line: the question's own line number.
    """

    story: tuple[tuple[str, ...], ...]
    story_lines: tuple[int, ...]
    question: tuple[str, ...]
    answer: str
    supporting: tuple[int, ...]
    line: int


def parse_babi(text: str, source: str = "<text>") -> list[BabiExample]:
    """Parse the content of one bAbI task file.

    Raises :class:`DataError` (naming ``source`` and the line) for a line that is not in the
    format, a line number that does not follow the previous one, or a supporting fact that is not
    an earlier statement of the same story.
    """
    examples: list[BabiExample] = []
    story: list[tuple[str, ...]] = []
    story_lines: list[int] = []
    previous = 0
    for row, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        number_text, _, rest = line.partition(" ")
        if not number_text.isdigit() or not rest:
            raise DataError(f"{source}, line {row}: expected 'NUMBER text', got {raw[:60]!r}")
        number = int(number_text)
        if number == 1:
            story, story_lines = [], []
        elif number != previous + 1:
            raise DataError(
                f"{source}, line {row}: line number {number} does not follow {previous}; "
                "the file is corrupted, download it again"
            )
        previous = number
        if "\t" not in rest:
            story.append(tuple(tokenize(rest)))
            story_lines.append(number)
            continue
        fields = rest.split("\t")
        if len(fields) != 3:
            raise DataError(f"{source}, line {row}: a question line needs 3 TAB-separated fields")
        question, answer, support = fields
        try:
            supporting = tuple(int(s) for s in support.split())
        except ValueError:
            raise DataError(f"{source}, line {row}: bad supporting facts {support!r}") from None
        known = set(story_lines)
        if not supporting or any(s not in known for s in supporting):
            raise DataError(
                f"{source}, line {row}: supporting facts {list(supporting)} are not earlier "
                "statements of the story; the file is corrupted, download it again"
            )
        examples.append(
            BabiExample(
                story=tuple(story),
                story_lines=tuple(story_lines),
                question=tuple(tokenize(question)),
                answer=answer.strip().lower(),
                supporting=supporting,
                line=number,
            )
        )
    return examples


def read_babi_file(path: str | Path) -> list[BabiExample]:
    """Parse the task file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read bAbI file {path}: {err}") from None
    return parse_babi(text, str(path))


class Vocabulary:
    """Words and their indices: 0 is padding, 1 an unknown word, then the words in sorted order."""

    def __init__(self, words: Iterable[str]) -> None:
        specials = (PAD, UNK)
        self.words: tuple[str, ...] = specials + tuple(sorted(set(words) - set(specials)))
        self.index: dict[str, int] = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def id(self, word: str) -> int:
        return self.index.get(word, UNK_ID)

    def ids(self, words: Sequence[str]) -> list[int]:
        return [self.index.get(w, UNK_ID) for w in words]

    @classmethod
    def from_examples(cls, examples: Iterable[BabiExample]) -> Vocabulary:
        words: set[str] = set()
        for ex in examples:
            for sentence in ex.story:
                words.update(sentence)
            words.update(ex.question)
            words.add(ex.answer)
        return cls(words)


@dataclass(frozen=True)
class BabiTask:
    """One task: its number (1-20), file-name stem, and parsed train and test examples."""

    number: int
    name: str
    train: tuple[BabiExample, ...]
    test: tuple[BabiExample, ...]

    @property
    def label(self) -> str:
        return task_label(self.number)

    def answers(self) -> tuple[str, ...]:
        """The task's answer tokens (train and test), sorted."""
        return tuple(sorted({ex.answer for ex in self.train + self.test}))


@dataclass(frozen=True)
class BabiCorpus:
    """The 20 tasks and the vocabulary of their training files."""

    tasks: tuple[BabiTask, ...]
    vocabulary: Vocabulary

    def task(self, number: int) -> BabiTask:
        return self.tasks[number - 1]


def babi_paths(data_dir: str | Path | None = None) -> dict[tuple[int, str], Path]:
    """Paths of the 40 files keyed by ``(task number, "train" | "test")`` after the md5 check."""
    files = require_files("babi", data_dir)
    return {
        (n, split): files[f"{stem}_{split}.txt"]
        for n, stem in enumerate(TASK_NAMES, start=1)
        for split in ("train", "test")
    }


@lru_cache(maxsize=2)
def _load(data_dir: str) -> BabiCorpus:
    paths = babi_paths(data_dir)
    tasks = tuple(
        BabiTask(
            number=n,
            name=stem,
            train=tuple(read_babi_file(paths[n, "train"])),
            test=tuple(read_babi_file(paths[n, "test"])),
        )
        for n, stem in enumerate(TASK_NAMES, start=1)
    )
    vocabulary = Vocabulary.from_examples(ex for t in tasks for ex in t.train)
    return BabiCorpus(tasks, vocabulary)


def load_babi(data_dir: str | Path | None = None) -> BabiCorpus:
    """Parse the 20 tasks from ``DATA_DIR/babi/en`` (checked by md5; cached per process).

    Missing or corrupted files raise :class:`DataError` naming ``lifelong data download babi``.
    """
    return _load(str(resolve_data_dir(data_dir)))


def encode_examples(
    examples: Sequence[BabiExample],
    vocabulary: Vocabulary,
    max_sentences: int,
    sentence_length: int,
) -> Tensor:
    """The int64 grid ``[N, max_sentences + 1, sentence_length]`` of the examples (module doc).

    Stories longer than ``max_sentences`` keep their most recent statements. Raises
    :class:`ValueError` if a statement or question is longer than ``sentence_length``.
    """
    n, rows = len(examples), max_sentences + 1
    flat: list[int] = []
    flat_index: list[int] = []
    for i, ex in enumerate(examples):
        kept = ex.story[-max_sentences:] if max_sentences > 0 else ()
        first_row = max_sentences - len(kept)
        placed = [*((first_row + r, s) for r, s in enumerate(kept)), (max_sentences, ex.question)]
        for row, sentence in placed:
            if len(sentence) > sentence_length:
                raise ValueError(
                    f"a sentence has {len(sentence)} words, more than sentence_length={sentence_length}"
                )
            base = (i * rows + row) * sentence_length
            flat.extend(vocabulary.ids(sentence))
            flat_index.extend(range(base, base + len(sentence)))
    grid = torch.zeros(n * rows * sentence_length, dtype=torch.long)
    if flat:
        grid[torch.tensor(flat_index)] = torch.tensor(flat, dtype=torch.long)
    return grid.view(n, rows, sentence_length)


def longest(examples: Iterable[BabiExample]) -> tuple[int, int]:
    """``(most statements in a story, most words in a statement or question)``."""
    stories = words = 0
    for ex in examples:
        stories = max(stories, len(ex.story))
        words = max(words, len(ex.question), *(len(s) for s in ex.story))
    return stories, words


__all__ = [
    "DEFAULT_MAX_SENTENCES",
    "PAD_ID",
    "TASK_NAMES",
    "UNK_ID",
    "BabiCorpus",
    "BabiExample",
    "BabiTask",
    "Vocabulary",
    "babi_paths",
    "encode_examples",
    "load_babi",
    "longest",
    "parse_babi",
    "read_babi_file",
    "task_label",
    "tokenize",
]
