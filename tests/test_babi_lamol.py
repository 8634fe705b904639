"""LAMOL on the babi stream: settings, pseudo-samples from the model only, less forgetting (task
and domain scenarios)."""

from __future__ import annotations

import io
import math

import pytest
import torch

from lifelong.errors import ConfigError
from lifelong.models import build_model
from lifelong.runner import learn_stream
from lifelong.strategies import create_strategy
from lifelong.streams import Stream, build_stream
from lifelong.text_models import GRULanguageModel
from lifelong.train import TrainConfig

pytestmark = pytest.mark.shared_data

TRAIN = TrainConfig(epochs=5, batch_size=32, optimizer="adam", lr=0.01)


def _two_tasks(data_dir, order: list[int], scenario: str = "task") -> Stream:
    """Two bAbI tasks of 500 training and 200 test questions, stories cut to 10 statements."""
    return build_stream(
        "babi",
        data_dir=data_dir,
        order=order,
        scenario=scenario,
        train_samples=500,
        test_samples=200,
        max_sentences=10,
    )


@pytest.fixture(scope="module")
def two_tasks(shared_data) -> Stream:
    """Task 20 (learned well in a few epochs) then task 4."""
    return _two_tasks(shared_data, [20, 4])


@pytest.fixture(scope="module")
def finetune_run(two_tasks):
    return learn_stream(two_tasks, "finetune", model="lm", train=TRAIN, seed=0)


@pytest.fixture(scope="module")
def lamol_run(two_tasks):
    """A lamol run that records every sequence the model samples."""
    sampled: list[torch.Tensor] = []
    original = GRULanguageModel.sample

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        sampled.append(out.clone())
        return out

    GRULanguageModel.sample = spy
    try:
        strategy = create_strategy("lamol")
        result = learn_stream(two_tasks, strategy, model="lm", train=TRAIN, seed=0)
    finally:
        GRULanguageModel.sample = original
    return strategy, result, sampled


def test_lamol_needs_the_language_model(two_tasks):
    with pytest.raises(ConfigError, match="--model lm"):
        learn_stream(two_tasks, "lamol", model="memnet", train=TrainConfig(epochs=1))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"gamma": "-0.1"}, "gamma"),
        ({"lambda": "-1"}, "lambda"),
        ({"top_k": "0"}, "top_k"),
        ({"answers": "gold"}, "answers"),
    ],
)
def test_bad_settings(params, message):
    with pytest.raises(ConfigError, match=message):
        create_strategy("lamol", params)


def test_paper_defaults():
    strategy = create_strategy("lamol")
    assert strategy.params() == {
        "lambda": 0.25,
        "gamma": 0.2,
        "top_k": 20,
        "attempts": 3,
        "answers": "sampled",
        "keep": "task",
        "ans_weight": 1.0,
    }


def test_pseudo_samples_come_from_the_model_only(lamol_run, two_tasks):
    strategy, result, sampled = lamol_run
    info = result.extra
    assert info["stored_real_examples"] == 0
    assert sampled, "lamol generated nothing"
    # Before task 2: gamma * 500 = 100 pseudo samples of task 1, drawn with task 1's token.
    assert info["pseudo_generated"] == sum(len(s) for s in sampled) >= math.ceil(0.2 * 500)
    pseudo = strategy.pseudo[0]
    assert 0 < len(pseudo) <= 100
    assert 0.5 < info["well_formed_share"] <= 1 and 0.5 < info["consistent_share"] <= 1
    # Every kept grid is the decoding of a sampled sequence: no real example is stored.
    model_like = GRULanguageModel(
        len(two_tasks.info["vocabulary"]),
        two_tasks.info["answer_ids"],
        two_tasks.info["max_sentences"],
        two_tasks.info["sentence_length"],
        n_tasks=2,
    )
    decoded = torch.cat([model_like.decode(s)[0] for s in sampled])
    assert all((decoded == row).all(-1).all(-1).any() for row in pseudo.x)
    start, stop = two_tasks.tasks[0].columns
    assert ((pseudo.y >= start) & (pseudo.y < stop)).all()
    state = io.BytesIO()
    torch.save(strategy.state_dict(), state)  # the state is picklable for checkpoints


def test_lamol_forgets_less_than_finetune(finetune_run, lamol_run):
    _, lamol, _ = lamol_run
    ft = finetune_run.metrics()
    lm = lamol.metrics()
    assert finetune_run.accuracy_matrix[1][0] > 0.8  # task 1 was learned ...
    assert ft["bwt"] < -0.15  # ... and fine-tuning on task 2 forgets much of it
    assert lamol.accuracy_matrix[1][0] > 0.8
    assert lm["bwt"] > ft["bwt"] + 0.15


def test_gamma_zero_generates_nothing(two_tasks):
    strategy = create_strategy("lamol", {"gamma": 0})
    train = TrainConfig(epochs=1, batch_size=64, optimizer="adam", lr=0.01)
    result = learn_stream(two_tasks, strategy, model="lm", train=train)
    assert result.extra["pseudo_generated"] == 0 and result.extra["well_formed_share"] is None
    assert strategy.pseudo == {}


@pytest.fixture(scope="module")
def task20_model(shared_data) -> tuple[Stream, GRULanguageModel]:
    """The language model after learning task 20 with LAMOL's LM loss (it can generate it)."""
    stream = build_stream(
        "babi",
        data_dir=shared_data,
        order=[20],
        train_samples=500,
        test_samples=50,
        max_sentences=10,
    )
    model = build_model("lm", stream)
    learn_stream(stream, create_strategy("lamol", {"lambda": 1}), model=model, train=TRAIN)
    return stream, model


@pytest.mark.parametrize("answers", ["sampled", "model"])
def test_pseudo_answers_sampled_or_the_models_own(task20_model, answers):
    """``answers=model`` trains a pseudo example with the model's own QA answer; ``sampled``
    (the paper) with the answer token it sampled, which is not always the model's answer."""
    stream, model = task20_model
    variant = create_strategy("lamol", {"answers": answers, "attempts": 1, "top_k": 50})
    variant.prepare(model, stream)
    model.eval()
    torch.manual_seed(0)
    data = variant._generate(model, stream.tasks[0], 300, 1)
    assert len(data) > 100
    start, stop = stream.tasks[0].columns
    with torch.inference_mode():
        own = model(data.x)[:, start:stop].argmax(1) + start
    agree = (own == data.y).float().mean().item()
    if answers == "model":
        assert agree == 1.0
    else:
        assert agree < 0.99


@pytest.fixture(scope="module")
def answers_then_yes_no(shared_data) -> Stream:
    """Domain scenario: task 20 (places and motivations as answers), then task 6 (yes or no)."""
    return _two_tasks(shared_data, [20, 6], scenario="domain")


def test_in_the_domain_scenario_lamol_keeps_the_old_answers(answers_then_yes_no):
    """One answer vocabulary and no task id when answering (the paper's setting): fine-tuning on
    yes/no questions makes the model answer the old questions with yes or no; LAMOL's replay of
    its own pseudo examples keeps the old answers."""
    stream = answers_then_yes_no
    finetune = learn_stream(stream, "finetune", model="lm", train=TRAIN, seed=0)
    lamol = learn_stream(stream, create_strategy("lamol"), model="lm", train=TRAIN, seed=0)
    assert finetune.accuracy_matrix[1][0] > 0.8 and finetune.accuracy_matrix[2][0] < 0.2
    assert lamol.accuracy_matrix[1][0] > 0.8 and lamol.accuracy_matrix[2][0] > 0.6
    assert lamol.metrics()["bwt"] > finetune.metrics()["bwt"] + 0.4
