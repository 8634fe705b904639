"""Models for token streams (the bAbI tasks): an end-to-end memory network and a small language model.

Both read the token grid of :mod:`lifelong.streams.babi` (``[B, S + 1, L]``: ``S`` story rows,
right-aligned, then the question row; 0 is padding) and return ``[B, n_outputs]`` scores over the
stream's answer columns (``stream.info["answer_ids"]`` gives each column's word), so every
strategy runs on them unchanged.

* ``memnet``: end-to-end memory network, MemN2N (Sukhbaatar, Szlam, Weston & Fergus 2015).
* ``lm``: a GRU language model that answers by generating the answer token after
  "story, question, answer marker" and can sample whole examples after a task token (the setup
  of LAMOL, Sun, Ho & Lee 2020; see :mod:`lifelong.strategies.text.lamol`).

Importing this module registers both with :func:`lifelong.models.register_model`;
:mod:`lifelong.models` imports it, so ``build_model("memnet", ...)`` needs nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lifelong.errors import ConfigError
from lifelong.models import register_model
from lifelong.streams.base import Stream

EVAL_CHUNK = 1024
"""Samples per forward pass when no gradient is needed (bounds evaluation memory)."""


def _chunked(forward, x: Tensor) -> Tensor:
    """``forward(x)`` in chunks of ``EVAL_CHUNK`` samples when no gradient is recorded."""
    if torch.is_grad_enabled() or len(x) <= EVAL_CHUNK:
        return forward(x)
    return torch.cat([forward(part) for part in x.split(EVAL_CHUNK)])


def _stream_sizes(stream: Stream, model: str) -> tuple[int, list[int], int, int]:
    info = stream.info
    needed = ("vocabulary", "answer_ids", "max_sentences", "sentence_length")
    if stream.input_kind != "tokens" or any(k not in info for k in needed):
        raise ConfigError(
            f"model {model!r} needs a token stream with a vocabulary, e.g. --stream babi"
        )
    return (
        len(info["vocabulary"]),
        list(info["answer_ids"]),
        info["max_sentences"],
        info["sentence_length"],
    )


def _width(hidden: Sequence[int] | None, default: int, model: str) -> int:
    if hidden is None:
        return default
    if len(hidden) != 1:
        raise ConfigError(
            f"model {model!r} takes one --hidden width (its embedding size), got {list(hidden)}"
        )
    return int(hidden[0])


# ---------------------------------------------------------------------------------------------
# End-to-end memory network
# ---------------------------------------------------------------------------------------------


def position_encoding(tokens: Tensor, dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """Position-encoding weights of Sukhbaatar et al. (2015), section 4.1.

    ``l_kj = (1 - j/J) - (k/d)(1 - 2j/J)`` for word ``j`` of ``J`` words (1-based) and embedding
    component ``k`` of ``d``, written as ``a_j - (k/d) b_j``. Returns ``a`` and ``b`` (shape of
    ``tokens``, zero on padding, ``J`` counted per sentence) and ``k/d`` (``[dim]``), so that
    ``sum_j l_j * e_j = sum_j a_j e_j - (k/d) * sum_j b_j e_j``.
    """
    present = tokens != 0
    length = present.sum(-1, keepdim=True).clamp(min=1).to(torch.float32)
    j = torch.arange(1, tokens.shape[-1] + 1, device=tokens.device, dtype=torch.float32)
    a = (1 - j / length) * present
    b = (1 - 2 * j / length) * present
    k = torch.arange(1, dim + 1, device=tokens.device, dtype=torch.float32) / dim
    return a, b, k


def _used_extent(story: Tensor, question: Tensor) -> tuple[int, int] | None:
    """First story row and number of word columns a batch uses (rows are right-aligned, words
    left-aligned), or ``None`` inside ``torch.func`` transforms (no data-dependent sizes there)."""
    try:
        rows = (story != 0).any(-1).any(0).to(torch.uint8)
        columns = torch.cat([story.flatten(0, -2), question]).ne(0).any(0).to(torch.uint8)
        first_row = int(rows.argmax()) if bool(rows.any()) else len(rows) - 1
        words = len(columns) - int(columns.flip(0).argmax()) if bool(columns.any()) else 1
    except RuntimeError:
        return None
    return first_row, words


class MemN2N(nn.Module):
    """End-to-end memory network (Sukhbaatar et al. 2015, "End-To-End Memory Networks").

    Per hop ``k`` (section 2): memories ``m_i = sum_j l_j * A^k x_ij + T_A^k(i)``, outputs
    ``c_i = sum_j l_j * C^k x_ij + T_C^k(i)``, attention ``p = softmax(u^T m)`` (eq. 1),
    ``o = sum_i p_i c_i`` (eq. 2), ``u^{k+1} = u^k + o^k`` (section 2.2); the answer scores are
    ``W u^{K+1}`` (eq. 3). Position encoding ``l`` (PE, section 4.1), temporal encoding
    ``T(i)`` indexed by recency (TE, section 4.1), adjacent weight tying (section 2.2:
    ``A^{k+1} = C^k``, ``B = A^1``, ``W^T = C^K``; the temporal matrices are tied the same way),
    so ``hops + 1`` embedding matrices in all. Only the rows of ``W`` of the stream's answer words
    are scored (one per output column). Empty story slots are left out of the softmax.

    Random noise (RN, section 4.1): while training, 10% empty memories are inserted at random
    positions of each story (they hold only a temporal embedding and shift the time index of the
    older memories). The draw is skipped inside ``torch.func.vmap`` (random operations are not
    allowed there), i.e. per-sample gradient computations see the noise-free model.

    Args:
        vocab_size: words in the vocabulary (index 0 is padding).
        answer_ids: vocabulary index of the word of each output column.
        n_sentences: story rows of the input grid (``S``).
        dim: embedding size ``d`` (paper: 20 for one task, 50 for joint training; default 50).
        hops: memory hops ``K`` (paper: 3).
        noise: share of empty memories added while training (paper: 0.1; 0 turns RN off).
        init_std: standard deviation of the Gaussian initialisation (paper: 0.1).

    Not part of the model: linear start (LS, a training schedule that removes the softmax until
    the validation loss stops falling) and the paper's SGD schedule (lr 0.01 halved every 25
    epochs, gradient norms clipped to 40); the training loop's settings apply instead.
    """

    def __init__(
        self,
        vocab_size: int,
        answer_ids: Sequence[int],
        n_sentences: int,
        dim: int = 50,
        hops: int = 3,
        noise: float = 0.1,
        init_std: float = 0.1,
    ) -> None:
        super().__init__()
        if hops < 1:
            raise ConfigError(f"memnet needs at least one hop, got {hops}")
        self.n_sentences, self.dim, self.hops, self.noise = n_sentences, dim, hops, noise
        # Layer 0 = B = A^1; layer k = C^k = A^{k+1}; layer hops = W^T. Stored word-major so one
        # gather embeds a sentence with every layer at once.
        self.embeddings = nn.Parameter(torch.randn(vocab_size, hops + 1, dim) * init_std)
        # Time slots: noise can shift a memory by up to S empty slots.
        self.temporal = nn.Parameter(torch.randn(hops + 1, 2 * n_sentences, dim) * init_std)
        self.register_buffer("answer_ids", torch.tensor(list(answer_ids), dtype=torch.long))

    def _encode(self, tokens: Tensor, layers: slice) -> Tensor:
        """PE-weighted bags of words ``[..., n_layers, d]`` of ``tokens`` ``[..., L]``.

        Computed as (position-weighted bag-of-words matrix) @ (embeddings), which is faster on
        CPU than gathering one embedding per word."""
        a, b, k = position_encoding(tokens, self.dim)
        weight = self.embeddings[:, layers]
        flat = tokens.reshape(-1, tokens.shape[-1])
        bags = torch.zeros(2, len(flat), len(weight), device=flat.device).scatter_add(
            2, flat.expand(2, -1, -1), torch.stack([a, b]).reshape(2, *flat.shape)
        )
        sums = (bags @ weight.flatten(1)).unflatten(-1, weight.shape[1:])
        return (sums[0] - k * sums[1]).reshape(*tokens.shape[:-1], *weight.shape[1:])

    def _noise(self, present: Tensor) -> tuple[Tensor, Tensor] | None:
        """Recency shift of each memory and the mask of inserted empty memories (RN), or None."""
        if not (self.training and self.noise > 0):
            return None
        try:
            draw = torch.rand(present.shape, device=present.device)
        except RuntimeError:  # inside torch.func.vmap: no random draws
            return None
        inserted = (draw < self.noise) & present
        # The last row is the most recent memory (time 0): count insertions from the end.
        shift = inserted.flip(-1).cumsum(-1).flip(-1)
        return shift, inserted

    def _forward(self, x: Tensor) -> Tensor:
        s = self.n_sentences
        story, question = x[..., :s, :], x[..., s, :]
        extent = _used_extent(story, question)
        if extent is not None:  # skip the all-padding rows and columns of this batch
            first_row, words = extent
            story, question = story[..., first_row:, :words], question[..., :words]
        n = story.shape[-2]
        present = (story != 0).any(-1)
        time = torch.arange(n - 1, -1, -1, device=x.device).expand_as(present)
        noise = self._noise(present)
        u = self._encode(question, slice(0, 1))[..., 0, :]
        encoded = self._encode(story, slice(None))  # [..., n, hops + 1, d]
        mask = present
        if noise is not None:
            shift, inserted = noise
            time = time + shift
            # An inserted empty memory sits just after its memory in time.
            empty_time = (time - 1).clamp(min=0)
            mask = torch.cat([present, inserted], -1)
        for hop in range(self.hops):
            memory = encoded[..., hop, :] + self.temporal[hop][time]
            output = encoded[..., hop + 1, :] + self.temporal[hop + 1][time]
            if noise is not None:
                memory = torch.cat([memory, self.temporal[hop][empty_time]], -2)
                output = torch.cat([output, self.temporal[hop + 1][empty_time]], -2)
            scores = (memory * u.unsqueeze(-2)).sum(-1).masked_fill(~mask, -1e30)
            attention = scores.softmax(-1)
            u = u + (attention.unsqueeze(-1) * output).sum(-2)
        return u @ self.embeddings[self.answer_ids, self.hops].T

    def forward(self, x: Tensor) -> Tensor:
        """Scores ``[B, n_outputs]`` over the answer columns."""
        return _chunked(self._forward, x)


@register_model(
    "memnet",
    "end-to-end memory network, 3 hops, PE + TE + RN (--hidden sets the embedding size, default 50)",
    input_kinds=("tokens",),
)
def _memnet(stream: Stream, hidden: Sequence[int] | None) -> nn.Module:
    vocab_size, answer_ids, n_sentences, _ = _stream_sizes(stream, "memnet")
    return MemN2N(vocab_size, answer_ids, n_sentences, dim=_width(hidden, 50, "memnet"))


# ---------------------------------------------------------------------------------------------
# GRU language model
# ---------------------------------------------------------------------------------------------


def _concrete(t: Tensor) -> int | None:
    """``int(t)``, or ``None`` inside ``torch.func.vmap`` (no data-dependent values there)."""
    try:
        return int(t)
    except RuntimeError:
        return None


def _transformed(tensor: Tensor) -> bool:
    """Whether ``tensor`` is wrapped by a ``torch.func`` transform (``grad``, ``vmap``), under
    which the packed-sequence GRU kernel cannot run."""
    check = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return bool(check(tensor)) if check is not None else False


def pack_left(tokens: Tensor) -> tuple[Tensor, Tensor]:
    """Non-padding tokens of each row moved to the front, in order; returns them (trimmed to the
    longest row outside ``vmap``) and the number of tokens per row."""
    keep = tokens != 0
    order = torch.sort((~keep).to(torch.uint8), dim=-1, stable=True).indices
    lengths = keep.sum(-1)
    packed = tokens.gather(-1, order)
    width = _concrete(lengths.max()) if lengths.numel() else 1
    return (packed if width is None else packed[..., : max(width, 1)]), lengths


class GRULanguageModel(nn.Module):
    """A word-level GRU language model over bAbI examples that answers by generating.

    One example is the token sequence ``story . story . ... question ANS answer EOS`` (``.`` a
    sentence separator, ``ANS`` the answer marker), as in LAMOL (Sun, Ho & Lee 2020, section 3),
    where the QA model is itself the language model. The QA scores (``forward``) are the
    next-token logits after ``story, question, ANS`` restricted to the answer columns' words; the
    language-modelling view prefixes the example with the task's own token (``__task_t__``, the
    LAMOL_TASK variant) and learns to generate it whole, so :meth:`sample` can produce pseudo
    examples of a task from its token alone. Input and output embeddings are tied (as in GPT-2,
    LAMOL's model).

    With ``attention`` (the default) every position also reads the GRU states of all positions
    up to itself with one causal dot-product attention head, added to its own state before the
    output layer (an attentive RNN language model in the spirit of Daniluk et al. 2017,
    "Frustratingly Short Attention Spans in Neural Language Modeling"): it stays a left-to-right
    language model, but can look a fact up in the story instead of carrying every fact in one
    state vector, which plain LSTM readers of bAbI fail at (Weston et al. 2015).

    Args:
        vocab_size: words in the vocabulary (0 is padding); the separator, answer marker, end
            token and one token per task follow them.
        answer_ids: vocabulary index of the word of each output column.
        n_sentences, sentence_length: the grid the stream uses (``S``, ``L``).
        n_tasks: number of task tokens.
        dim: embedding, GRU and attention width (default 128).
        layers: stacked GRU layers (default 1).
        attention: add the causal attention read-out (default True).
    """

    def __init__(
        self,
        vocab_size: int,
        answer_ids: Sequence[int],
        n_sentences: int,
        sentence_length: int,
        n_tasks: int,
        dim: int = 128,
        layers: int = 1,
        attention: bool = True,
    ) -> None:
        super().__init__()
        self.n_words, self.n_tasks, self.dim = vocab_size, n_tasks, dim
        self.n_sentences, self.sentence_length = n_sentences, sentence_length
        # Special tokens after the words: separator, answer marker, end, one start token per task.
        self.sep, self.ans, self.eos, self.task0 = (vocab_size + i for i in range(4))
        self.n_tokens = vocab_size + 3 + n_tasks
        self.embedding = nn.Embedding(self.n_tokens, dim, padding_idx=0)
        nn.init.normal_(self.embedding.weight, std=dim**-0.5)
        with torch.no_grad():
            self.embedding.weight[0].zero_()
        self.rnn = nn.GRU(dim, dim, num_layers=layers, batch_first=True)
        projections = ("query", "key", "value", "out")
        self.attention = (
            nn.ModuleDict({p: nn.Linear(dim, dim, bias=False) for p in projections})
            if attention
            else None
        )
        self.bias = nn.Parameter(torch.zeros(self.n_tokens))
        self.register_buffer("answer_ids", torch.tensor(list(answer_ids), dtype=torch.long))

    # ---- sequences -------------------------------------------------------------------------------
    def context_tokens(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``story . ... question ANS`` per sample, left-aligned ``[B, T]``, and the lengths."""
        s = self.n_sentences
        story, question = x[:, :s, :], x[:, s, :]
        sep = torch.where((story != 0).any(-1), self.sep, 0).unsqueeze(-1)
        story = torch.cat([story, sep], -1).flatten(1)
        q_len = (question != 0).sum(1, keepdim=True)
        question = torch.cat([question, torch.zeros_like(question[:, :1])], 1)
        question = question.scatter(1, q_len, torch.full_like(q_len, self.ans))
        return pack_left(torch.cat([story, question], 1))

    def _states(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """GRU states ``[B, T, d]`` of left-aligned ``tokens`` (zero after each row's length).

        The tokens are left-aligned and the model is causal, so a row's states before its length
        do not depend on the padding after it. With autograd on, the GRU runs over the padded
        batch as one dense tensor (on CPU its backward is about twice as fast as the packed
        one's); without it, over the packed sequences (the forward skips the padding).
        """
        embedded = self.embedding(tokens)
        if _transformed(embedded):  # torch.func.grad / vmap: a plain loop over time
            return self._states_unpacked(embedded, lengths)
        if torch.is_grad_enabled():
            out, _ = self.rnn(embedded)
            steps = torch.arange(tokens.shape[1], device=tokens.device)
            return out * (steps < lengths.unsqueeze(-1)).unsqueeze(-1)
        packed = pack_padded_sequence(
            embedded, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        out, _ = self.rnn(packed)
        return pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])[0]

    def _states_unpacked(self, embedded: Tensor, lengths: Tensor) -> Tensor:
        """The GRU of ``self.rnn`` written out step by step (the same equations and weights), for
        ``torch.func`` transforms (EWC's and MAS's per-sample gradients, GEM), which cannot run
        the fused kernel."""
        rnn, h_all = self.rnn, embedded
        for layer in range(rnn.num_layers):
            w_ih, w_hh = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}")
            b_ih, b_hh = getattr(rnn, f"bias_ih_l{layer}"), getattr(rnn, f"bias_hh_l{layer}")
            inputs = F.linear(h_all, w_ih, b_ih)  # [B, T, 3d]
            h = h_all.new_zeros(*h_all.shape[:-2], w_hh.shape[1])
            outputs = []
            for t in range(h_all.shape[-2]):
                r_i, z_i, n_i = inputs[..., t, :].chunk(3, -1)
                r_h, z_h, n_h = F.linear(h, w_hh, b_hh).chunk(3, -1)
                r, z = torch.sigmoid(r_i + r_h), torch.sigmoid(z_i + z_h)
                h = (1 - z) * torch.tanh(n_i + r * n_h) + z * h
                outputs.append(h)
            h_all = torch.stack(outputs, -2)
        steps = torch.arange(h_all.shape[-2], device=h_all.device)
        return h_all * (steps < lengths.unsqueeze(-1)).unsqueeze(-1)

    def _read(self, queries: Tensor, states: Tensor, positions: Tensor) -> Tensor:
        """Output vectors at ``positions`` ``[B, Q]`` (their states ``queries`` ``[B, Q, d]``):
        the state plus the causal attention read of ``states`` up to that position."""
        if self.attention is None:
            return queries
        att = self.attention
        later = torch.arange(states.shape[1], device=states.device) > positions.unsqueeze(-1)
        if 4 * queries.shape[-2] <= states.shape[-2]:
            # Few queries (the QA view): the same products in another order, the projections
            # applied to the queries and to the read instead of to every state,
            # q . (W_k s) = (W_k^T q) . s and sum_i w_i W_v s_i = W_v sum_i w_i s_i.
            keys_side = att["query"](queries) @ att["key"].weight
            scores = keys_side @ states.transpose(-1, -2) / self.dim**0.5
            weights = scores.masked_fill(later, float("-inf")).softmax(-1)
            return queries + att["out"](att["value"](weights @ states))
        scores = att["query"](queries) @ att["key"](states).transpose(-1, -2) / self.dim**0.5
        weights = scores.masked_fill(later, float("-inf")).softmax(-1)
        return queries + att["out"](weights @ att["value"](states))

    def _logits(self, vectors: Tensor) -> Tensor:
        return vectors @ self.embedding.weight.T + self.bias

    def _logits_at(self, tokens: Tensor, lengths: Tensor, positions: Tensor) -> Tensor:
        """Next-token logits ``[B, Q, n_tokens]`` after the tokens at ``positions`` ``[B, Q]``."""
        states = self._states(tokens, lengths)
        queries = states.gather(1, positions.unsqueeze(-1).expand(-1, -1, states.shape[-1]))
        return self._logits(self._read(queries, states, positions))

    def answer_logits(self, x: Tensor) -> Tensor:
        """Next-token logits ``[B, n_tokens]`` after ``story, question, ANS``."""
        tokens, lengths = self.context_tokens(x)
        return self._logits_at(tokens, lengths, (lengths - 1).unsqueeze(1))[:, 0]

    def forward(self, x: Tensor) -> Tensor:
        """QA scores ``[B, n_outputs]``: the answer-position logits of the answer columns' words."""
        return _chunked(lambda part: self.answer_logits(part)[:, self.answer_ids], x)

    # ---- LAMOL losses --------------------------------------------------------------------------
    def qa_loss(self, x: Tensor, answers: Tensor) -> Tensor:
        """LAMOL's QA loss: cross-entropy of ``answer EOS`` after ``story, question, ANS``, over the
        whole token set, averaged over the two target tokens. ``answers``: vocabulary indices."""
        tokens, lengths = self.context_tokens(x)
        tokens = torch.cat([tokens, tokens.new_zeros(len(tokens), 1)], 1)
        tokens = tokens.scatter(1, lengths.unsqueeze(1), answers.unsqueeze(1))
        positions = torch.stack([lengths - 1, lengths], 1)
        logits = self._logits_at(tokens, lengths + 1, positions)
        targets = torch.stack([answers, torch.full_like(answers, self.eos)], 1)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def lm_loss(
        self, x: Tensor, answers: Tensor, task_ids: Tensor, ans_weight: float = 1.0
    ) -> Tensor:
        """LAMOL's LM loss: cross-entropy of generating ``story ... question ANS answer EOS``
        after the task's token, averaged over the tokens of the batch. ``ans_weight`` weighs the
        ``ANS`` marker as a target (LAMOL's code: 5), the mean then being weighted too, as
        ``F.cross_entropy(weight=...)`` does."""
        tokens, lengths = self.context_tokens(x)
        b = len(tokens)
        full = torch.cat([(self.task0 + task_ids).unsqueeze(1), tokens, tokens.new_zeros(b, 2)], 1)
        rows = torch.arange(b, device=x.device)
        full[rows, lengths + 1] = answers
        full[rows, lengths + 2] = self.eos
        inputs, targets = full[:, :-1], full[:, 1:]
        states = self._states(inputs, lengths + 2)
        positions = torch.arange(inputs.shape[1], device=x.device).expand(b, -1)
        logits = self._logits(self._read(states, states, positions))
        weight = None
        if ans_weight != 1.0:
            weight = torch.ones(logits.shape[-1], dtype=logits.dtype, device=logits.device)
            weight[self.ans] = ans_weight
        return F.cross_entropy(
            logits.flatten(0, 1), targets.flatten(), weight=weight, ignore_index=0
        )

    # ---- generation ----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        task_ids: Tensor,
        top_k: int = 20,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Sample one example after each task token with top-k sampling (LAMOL: k = 20), drawing
        on the CPU from ``generator`` (``None``: the global torch RNG).

        Returns ``[n, T]`` tokens (the task token excluded; 0 after the end token). Sampling stops
        at the end token or after the longest example the grid can hold.
        """
        n = len(task_ids)
        limit = self.n_sentences * (self.sentence_length + 1) + self.sentence_length + 3
        banned = torch.zeros(self.n_tokens, dtype=torch.bool, device=task_ids.device)
        banned[0] = True
        banned[self.task0 :] = True
        token = self.task0 + task_ids
        state = None
        keys, values = [], []
        done = torch.zeros(n, dtype=torch.bool, device=task_ids.device)
        steps = []
        for _ in range(limit):
            out, state = self.rnn(self.embedding(token).unsqueeze(1), state)
            vector = out  # [n, 1, d]
            if self.attention is not None:
                att = self.attention
                keys.append(att["key"](out))
                values.append(att["value"](out))
                scores = att["query"](out) @ torch.cat(keys, 1).transpose(1, 2) / self.dim**0.5
                vector = out + att["out"](scores.softmax(-1) @ torch.cat(values, 1))
            logits = self._logits(vector[:, 0]).masked_fill(banned, float("-inf")) / temperature
            top, indices = logits.topk(min(top_k, self.n_tokens), dim=-1)
            choice = torch.multinomial(top.softmax(-1).cpu(), 1, generator=generator)
            choice = choice.to(indices.device)
            token = indices.gather(1, choice).squeeze(1).masked_fill(done, 0)
            steps.append(token)
            done = done | (token == self.eos)
            if bool(done.all()):
                break
        return torch.stack(steps, 1) if steps else torch.zeros(n, 0, dtype=torch.long)

    def decode(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Turn sampled sequences back into the input grid.

        A sample is well-formed when it is ``sentence . ... sentence . question ANS answer EOS``
        with at least one statement, every sentence and the question 1..L words long, only words
        (no special token) inside them, and a single word as the answer. Stories longer than the
        grid keep their most recent ``S`` statements, as the stream does.

        Returns the grids ``[m, S + 1, L]`` and answer indices ``[m]`` of the well-formed samples
        and the boolean mask ``[n]`` saying which samples those are.
        """
        s, length = self.n_sentences, self.sentence_length
        grids, answers, ok = [], [], []
        for row in tokens.tolist():
            parsed = self._parse(row)
            ok.append(parsed is not None)
            if parsed is None:
                continue
            sentences, question, answer = parsed
            grid = torch.zeros(s + 1, length, dtype=torch.long)
            kept = sentences[-s:]
            for r, sentence in enumerate(kept, start=s - len(kept)):
                grid[r, : len(sentence)] = torch.tensor(sentence)
            grid[s, : len(question)] = torch.tensor(question)
            grids.append(grid)
            answers.append(answer)
        x = torch.stack(grids) if grids else torch.zeros(0, s + 1, length, dtype=torch.long)
        return x, torch.tensor(answers, dtype=torch.long), torch.tensor(ok, dtype=torch.bool)

    def _parse(self, row: list[int]) -> tuple[list[list[int]], list[int], int] | None:
        if self.eos not in row:
            return None
        row = row[: row.index(self.eos)]
        if row.count(self.ans) != 1 or len(row) < 3 or row[-2] != self.ans:
            return None
        answer, body = row[-1], row[:-2]
        is_word = lambda t: 2 <= t < self.n_words  # noqa: E731
        if not is_word(answer):
            return None
        parts, current = [], []
        for t in body:
            if t == self.sep:
                parts.append(current)
                current = []
            elif is_word(t):
                current.append(t)
            else:
                return None
        sentences, question = parts, current
        if not sentences or not question:
            return None
        if any(not 1 <= len(p) <= self.sentence_length for p in (*sentences, question)):
            return None
        return sentences, question, answer


@register_model(
    "lm",
    "GRU language model with causal attention, answers by generating (LAMOL); --hidden width, 128",
    input_kinds=("tokens",),
)
def _lm(stream: Stream, hidden: Sequence[int] | None) -> nn.Module:
    vocab_size, answer_ids, n_sentences, sentence_length = _stream_sizes(stream, "lm")
    return GRULanguageModel(
        vocab_size,
        answer_ids,
        n_sentences,
        sentence_length,
        n_tasks=len(stream.tasks),
        dim=_width(hidden, 128, "lm"),
    )
