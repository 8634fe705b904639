"""bAbI parser, tokenizer, vocabulary and token grid; on the real task files where available."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lifelong.data.babi import (
    PAD_ID,
    TASK_NAMES,
    UNK_ID,
    BabiCorpus,
    Vocabulary,
    encode_examples,
    load_babi,
    parse_babi,
    task_label,
    tokenize,
)
from lifelong.errors import DataError

STORY = """1 Mary moved to the bathroom.
2 John went to the hallway.
3 Where is Mary? \tbathroom\t1
4 Daniel went back to the hallway.
5 Where is Daniel? \thallway\t4
1 The office is east of the hallway.
2 The kitchen is north of the office.
3 How do you go from the kitchen to the hallway?\ts,w\t2 1
"""


@pytest.fixture(scope="module")
def corpus(shared_data: Path) -> BabiCorpus:
    return load_babi(shared_data)


# ---- without files ---------------------------------------------------------------------------


def test_tokenize_lowercases_and_drops_punctuation():
    assert tokenize("Where is Mary? ") == ["where", "is", "mary"]
    assert tokenize("Sumit went back to the bedroom.") == [
        "sumit",
        "went",
        "back",
        "to",
        "the",
        "bedroom",
    ]


def test_parse_stories_questions_and_supporting_facts():
    examples = parse_babi(STORY)
    assert len(examples) == 3
    first, second, third = examples
    assert first.story == (
        ("mary", "moved", "to", "the", "bathroom"),
        ("john", "went", "to", "the", "hallway"),
    )
    assert first.question == ("where", "is", "mary")
    assert (first.answer, first.supporting, first.line) == ("bathroom", (1,), 3)
    # Questions are not statements of the story; the second question sees three statements.
    assert second.story_lines == (1, 2, 4)
    # A new story starts at line 1; a comma-joined answer stays one token.
    assert third.story_lines == (1, 2)
    assert (third.answer, third.supporting) == ("s,w", (2, 1))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 Mary moved.\n3 Where is Mary?\tbathroom\t1\n", "does not follow"),
        ("1 Mary moved.\n2 Where is Mary?\tbathroom\t5\n", "not earlier statements"),
        ("1 Mary moved.\n2 Where is Mary?\tbathroom\n", "3 TAB-separated"),
        ("x Mary moved.\n", "expected 'NUMBER text'"),
        ("1 Mary moved.\n2 Where is Mary?\tbathroom\tone\n", "bad supporting"),
    ],
)
def test_parse_rejects_corrupted_files(text, message):
    with pytest.raises(DataError, match=message):
        parse_babi(text, "qa1_test.txt")


def test_vocabulary_reserves_padding_and_unknown():
    vocab = Vocabulary.from_examples(parse_babi(STORY))
    assert vocab.words[:2] == ("<pad>", "<unk>")
    assert vocab.id("mary") >= 2 and vocab.words[vocab.id("mary")] == "mary"
    assert vocab.id("s,w") >= 2
    assert vocab.id("unseen") == UNK_ID


def test_grid_right_aligns_story_and_keeps_most_recent_statements():
    examples = parse_babi(STORY)
    vocab = Vocabulary.from_examples(examples)
    grid = encode_examples(examples, vocab, max_sentences=2, sentence_length=10)
    assert grid.shape == (3, 3, 10) and grid.dtype == torch.int64
    second = grid[1]  # story of three statements, two kept: the two most recent
    assert second[0, :2].tolist() == vocab.ids(["john", "went"])
    assert second[1, :5].tolist() == vocab.ids(["daniel", "went", "back", "to", "the"])
    assert second[2, :3].tolist() == vocab.ids(["where", "is", "daniel"])
    assert (second[2, 3:] == PAD_ID).all()
    wide = encode_examples(examples[:1], vocab, max_sentences=4, sentence_length=10)[0]
    assert (wide[:2] == PAD_ID).all()  # unused story rows come first
    assert wide[2, 0] == vocab.id("mary") and wide[3, 0] == vocab.id("john")
    with pytest.raises(ValueError, match="sentence_length"):
        encode_examples(examples, vocab, max_sentences=2, sentence_length=4)


def test_missing_files_name_the_download_command(tmp_path):
    with pytest.raises(DataError, match="lifelong data download babi"):
        load_babi(tmp_path)


def test_task_labels():
    assert len(TASK_NAMES) == 20
    assert task_label(7) == "qa7 counting"
    assert task_label(19) == "qa19 path finding"


# ---- the real files ----------------------------------------------------------------------------


@pytest.mark.shared_data
def test_every_file_has_1000_questions(corpus):
    assert [t.number for t in corpus.tasks] == list(range(1, 21))
    for task in corpus.tasks:
        assert len(task.train) == 1000, task.name
        assert len(task.test) == 1000, task.name


@pytest.mark.shared_data
def test_supporting_facts_point_to_earlier_statements(corpus):
    for task in corpus.tasks:
        for ex in task.train + task.test:
            assert ex.supporting, (task.name, ex)
            assert all(s < ex.line for s in ex.supporting)
            assert set(ex.supporting) <= set(ex.story_lines)
            assert list(ex.story_lines) == sorted(ex.story_lines)
            assert len(ex.story) == len(ex.story_lines) and ex.question


@pytest.mark.shared_data
def test_answers_are_in_the_vocabulary(corpus):
    vocab = corpus.vocabulary
    assert 150 < len(vocab) < 200
    for task in corpus.tasks:
        for ex in task.train:
            assert ex.answer in vocab
            assert all(w in vocab for s in ex.story for w in s)
            assert all(w in vocab for w in ex.question)
    # Every test word is a training word too; the one exception in the official files is a
    # three-object answer of task 8 that no training question has.
    unseen = {ex.answer for t in corpus.tasks for ex in t.test if ex.answer not in vocab}
    assert unseen == {"football,apple,milk"}
    test_words = {
        w for t in corpus.tasks for ex in t.test for s in (*ex.story, ex.question) for w in s
    }
    assert test_words <= set(vocab.words)


@pytest.mark.shared_data
def test_answer_sets_per_task(corpus):
    sizes = {t.number: len(t.answers()) for t in corpus.tasks}
    assert sizes[6] == 2 and sizes[9] == 2 and sizes[17] == 2 and sizes[18] == 2  # yes / no
    assert sizes[1] == 6  # the six places
    assert corpus.task(19).answers()[0].count(",") == 1  # two-step paths
