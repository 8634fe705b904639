"""Text models on the babi stream: memnet (MemN2N) and lm (GRU language model)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from lifelong import text_models
from lifelong.errors import ConfigError, LifelongError
from lifelong.models import MODELS, build_model
from lifelong.runner import learn_stream
from lifelong.streams import Stream, build_stream
from lifelong.text_models import GRULanguageModel, MemN2N, position_encoding
from lifelong.train import TrainConfig

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def small(shared_data) -> Stream:
    """Tasks 1-3, 40 questions each, stories cut to their 10 most recent statements."""
    return build_stream(
        "babi", data_dir=shared_data, tasks=3, train_samples=40, test_samples=40, max_sentences=10
    )


def _batch(stream: Stream, per_task: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.cat([t.train.x[:per_task] for t in stream])
    y = torch.cat([t.train.y[:per_task] for t in stream])
    return x, y


def test_registered_for_tokens_only(small):
    assert MODELS["memnet"].input_kinds == ("tokens",) and MODELS["lm"].input_kinds == ("tokens",)
    with pytest.raises(ConfigError, match="does not take tokens"):
        build_model("mlp", small)
    digits = build_stream("split", "digits", tasks=2, scenario="task")
    with pytest.raises(ConfigError, match="does not take"):
        build_model("memnet", digits)
    with pytest.raises(ConfigError, match="one --hidden width"):
        build_model("lm", small, hidden=[64, 64])
    assert build_model("memnet", small, hidden=[20]).dim == 20


def test_position_encoding_matches_the_paper_formula():
    tokens = torch.tensor([[5, 7, 9, 0, 0]])
    a, b, k = position_encoding(tokens, dim=4)
    weights = a.unsqueeze(-1) - k * b.unsqueeze(-1)  # l_kj, [1, 5, 4]
    J, d = 3, 4
    for j in range(1, 4):
        for kk in range(1, 5):
            expected = (1 - j / J) - (kk / d) * (1 - 2 * j / J)
            assert weights[0, j - 1, kk - 1].item() == pytest.approx(expected)
    assert (weights[0, 3:] == 0).all()  # padding contributes nothing


@pytest.mark.parametrize("name", ["memnet", "lm"])
def test_scores_over_answer_columns_independent_of_batch(small, name, monkeypatch):
    torch.manual_seed(0)
    model = build_model(name, small).eval()
    x, _ = _batch(small)
    with torch.inference_mode():
        scores = model(x)
        assert scores.shape == (len(x), small.n_outputs) and scores.dtype == torch.float32
        # A sample's scores do not depend on the rest of its batch (trimming, packing).
        alone = torch.cat([model(x[i : i + 1]) for i in range(len(x))])
        torch.testing.assert_close(scores, alone, rtol=1e-4, atol=1e-5)
        monkeypatch.setattr(text_models, "EVAL_CHUNK", 5)
        torch.testing.assert_close(model(x), scores, rtol=1e-4, atol=1e-5)


def test_memnet_random_noise_only_while_training(small):
    torch.manual_seed(0)
    model = build_model("memnet", small)
    x, _ = _batch(small)
    model.train()
    assert not torch.equal(model(x), model(x))  # empty memories drawn per call
    model.eval()
    assert torch.equal(model(x), model(x))
    quiet = MemN2N(len(small.info["vocabulary"]), small.info["answer_ids"], 10, noise=0.0).train()
    assert torch.equal(quiet(x), quiet(x))


@pytest.mark.parametrize("name", ["memnet", "lm"])
def test_per_sample_gradients_under_vmap(small, name):
    """EWC, MAS and GEM take per-sample gradients with torch.func; the models must allow it."""
    torch.manual_seed(0)
    model = build_model(name, small).eval()
    x, y = _batch(small, 2)
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def one(p, xi, yi):
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    batched = vmap(grad(one), in_dims=(None, 0, 0))(params, x, y)
    for i in (0, len(x) - 1):
        single = grad(one)(params, x[i], y[i])
        for key in params:
            torch.testing.assert_close(batched[key][i], single[key], rtol=1e-4, atol=1e-6)
    with torch.no_grad():  # and the per-sample gradient is that of the ordinary forward pass
        loss = F.cross_entropy(model(x[:1]), y[:1])
    assert one(params, x[0], y[0]).item() == pytest.approx(loss.item(), rel=1e-5)


def test_memnet_learns_task_1(shared_data):
    stream = build_stream(
        "babi", data_dir=shared_data, order=[1], train_samples=500, test_samples=300
    )
    result = learn_stream(
        stream,
        "finetune",
        model="memnet",
        train=TrainConfig(epochs=8, batch_size=32, optimizer="adam", lr=0.01),
    )
    assert result.accuracy_matrix[0][0] < 0.4  # untrained: about chance over 6 places
    assert result.accuracy_matrix[1][0] > 0.85


def test_lm_sequences_and_decoding_round_trip(small):
    model = build_model("lm", small)
    words = small.info["vocabulary"]
    x = small.tasks[0].train.x[:3]
    tokens, lengths = model.context_tokens(x)
    first = tokens[0, : lengths[0]].tolist()
    assert first[-1] == model.ans and first.count(model.ans) == 1
    statements = [[words[t] for t in row if t] for row in x[0, :-1] if row.any()]
    assert first.count(model.sep) == len(statements)
    assert [words[t] for t in first[: first.index(model.sep)]] == statements[0]
    # Tokens as the language model generates them decode back to the same grids.
    answers = model.answer_ids[small.tasks[0].train.y[:3]]
    sampled = torch.zeros(3, tokens.shape[1] + 2, dtype=torch.long)
    for i in range(3):
        n = int(lengths[i])
        sampled[i, :n] = tokens[i, :n]
        sampled[i, n], sampled[i, n + 1] = answers[i], model.eos
    grids, decoded, ok = model.decode(sampled)
    assert ok.all() and torch.equal(grids, x) and torch.equal(decoded, answers)


@pytest.mark.parametrize(
    "broken",
    [
        "no_eos",
        "two_answer_markers",
        "empty_question",
        "no_statement",
        "special_token_in_sentence",
        "answer_is_not_a_word",
        "sentence_too_long",
    ],
)
def test_lm_decode_rejects_malformed_samples(small, broken):
    model = build_model("lm", small)
    w = list(range(2, 2 + small.info["sentence_length"] + 1))  # some word ids
    sep, ans, eos = model.sep, model.ans, model.eos
    good = [w[0], w[1], sep, w[2], ans, w[3], eos]
    cases = {
        "no_eos": [w[0], w[1], sep, w[2], ans, w[3]],
        "two_answer_markers": [w[0], sep, w[2], ans, ans, w[3], eos],
        "empty_question": [w[0], w[1], sep, ans, w[3], eos],
        "no_statement": [w[2], ans, w[3], eos],
        "special_token_in_sentence": [w[0], model.task0, sep, w[2], ans, w[3], eos],
        "answer_is_not_a_word": [w[0], sep, w[2], ans, sep, eos],
        "sentence_too_long": [*w, sep, w[2], ans, w[3], eos],
    }
    rows = [good, cases[broken]]
    width = max(map(len, rows))
    tokens = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    _, _, ok = model.decode(tokens)
    assert ok.tolist() == [True, False]


def test_lm_losses_and_sampling(small):
    torch.manual_seed(0)
    model: GRULanguageModel = build_model("lm", small)
    x, y = _batch(small)
    answers = model.answer_ids[y]
    task_ids = torch.arange(3).repeat_interleave(4)
    qa = model.qa_loss(x, answers)
    lm = model.lm_loss(x, answers, task_ids)
    n_tokens = model.n_tokens
    assert 0.5 * torch.log(torch.tensor(n_tokens)) < qa < 2 * torch.log(torch.tensor(n_tokens))
    assert torch.isfinite(lm) and lm > 0
    (qa + lm).backward()
    assert model.embedding.weight.grad[model.task0 : model.task0 + 3].abs().sum() > 0
    # The fused GRU and the step-by-step one (used under torch.func) agree.
    tokens, lengths = model.context_tokens(x)
    with torch.no_grad():
        fused = model._states(tokens, lengths)
        loop = model._states_unpacked(model.embedding(tokens), lengths)
    torch.testing.assert_close(fused, loop, rtol=1e-4, atol=1e-5)
    # Training runs the GRU densely over the padding, inference over packed sequences: the
    # states up to each row's length, and so the losses and scores, are the same.
    dense = model._states(tokens, lengths)
    assert dense.requires_grad
    torch.testing.assert_close(dense.detach(), fused, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(model.qa_loss(x, answers), qa.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(
            model.lm_loss(x, answers, task_ids), lm.detach(), rtol=1e-5, atol=1e-6
        )
    sampled = model.sample(torch.tensor([0, 1, 2, 2]), top_k=5)
    assert sampled.shape[0] == 4
    assert ((sampled == 0) | ((sampled >= 2) & (sampled < model.task0))).all()
    for row in sampled.tolist():  # nothing after the end token
        if model.eos in row:
            assert not any(row[row.index(model.eos) + 1 :])


def test_lm_learns_task_20(shared_data):
    stream = build_stream(
        "babi", data_dir=shared_data, order=[20], train_samples=500, test_samples=300
    )
    result = learn_stream(
        stream,
        "finetune",
        model="lm",
        train=TrainConfig(epochs=5, batch_size=32, optimizer="adam", lr=0.01),
    )
    assert result.accuracy_matrix[0][0] < 0.4
    assert result.accuracy_matrix[1][0] > 0.7


@pytest.mark.parametrize(
    ("model", "strategy"),
    [
        ("memnet", "cumulative"),
        ("memnet", "ewc"),
        ("memnet", "mas"),
        ("memnet", "si"),
        ("memnet", "replay"),
        ("memnet", "agem"),
        ("memnet", "gem"),
        ("memnet", "lwf"),
        ("lm", "ewc"),
        ("lm", "replay"),
        ("lm", "agem"),
        ("lm", "lwf"),
    ],
)
def test_existing_strategies_run_unchanged(shared_data, model, strategy):
    stream = build_stream(
        "babi", data_dir=shared_data, tasks=2, train_samples=24, test_samples=16, max_sentences=10
    )
    result = learn_stream(
        stream,
        strategy,
        model=model,
        train=TrainConfig(epochs=1, batch_size=8, optimizer="adam", lr=0.01),
    )
    assert result.status == "complete" and len(result.accuracy_matrix) == 3


@pytest.mark.parametrize(
    ("strategy", "message"),
    [
        ("generative-replay", "use replay"),
        ("pnn", "--model mlp"),
        ("cpg", "--model mlp"),
        ("packnet", "--model mlp"),
        ("icarl", "class scenario"),
    ],
)
def test_strategies_that_do_not_fit_text_say_so(small, strategy, message):
    with pytest.raises(LifelongError, match=message):
        learn_stream(small, strategy, model="memnet", train=TrainConfig(epochs=1, batch_size=8))
