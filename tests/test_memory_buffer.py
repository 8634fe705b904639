"""Sample memories: reservoir sampling, class-balanced selection, episodic memories, herding."""

from __future__ import annotations

import itertools

import pytest
import torch
from scipy.stats import chisquare

from lifelong.strategies.memory.buffer import (
    EpisodicMemory,
    SampleBuffer,
    class_balanced_indices,
    last_writer_wins,
    reservoir_slots,
)
from lifelong.strategies.memory.icarl import herding


def test_reservoir_is_uniform_chi_square():
    """After a stream of N items, each item is stored with probability k/N (Algorithm R)."""
    torch.manual_seed(0)
    n_items, capacity, batch, trials = 30, 6, 7, 1200
    counts = torch.zeros(n_items)
    items = torch.arange(n_items, dtype=torch.float32).unsqueeze(1)
    for _ in range(trials):
        buffer = SampleBuffer(capacity)
        for start in range(0, n_items, batch):
            x = items[start : start + batch]
            y = x.squeeze(1).long()
            buffer.add_reservoir(x, y, torch.zeros_like(y))
        assert len(buffer) == capacity
        assert len(buffer.y.unique()) == capacity  # no sample stored twice
        counts[buffer.y] += 1
    expected = trials * capacity / n_items
    result = chisquare(counts.numpy(), [expected] * n_items)
    assert result.pvalue > 1e-3, (result, counts)
    # the last items of the stream are not favoured (a common bug)
    assert abs(counts[-batch:].mean() / expected - 1) < 0.1


def test_reservoir_detects_a_biased_buffer():
    """The same statistic rejects a buffer that keeps the most recent items (the test can fail)."""
    n_items, capacity, trials = 40, 8, 3000
    counts = torch.zeros(n_items)
    counts[-capacity:] = trials
    expected = trials * capacity / n_items
    assert chisquare(counts.numpy(), [expected] * n_items).pvalue < 1e-6


def test_reservoir_fills_first_then_replaces():
    slots = reservoir_slots(0, 5, 8)
    assert slots.tolist() == [0, 1, 2, 3, 4]
    torch.manual_seed(1)
    later = reservoir_slots(1000, 10_000, 8)
    assert ((later >= -1) & (later < 8)).all()
    stored = (later >= 0).float().mean().item()
    assert abs(stored - 8 / 6000) < 3e-3  # about capacity / i for i in 1000..11000


def test_last_writer_wins_keeps_the_later_duplicate():
    keep = last_writer_wins(torch.tensor([3, -1, 3, 1, 1, 2]))
    assert keep.tolist() == [False, False, True, False, True, True]


def test_buffer_stores_copies_not_views():
    source = torch.rand(10, 4)
    buffer = SampleBuffer(20)
    buffer.add_reservoir(source, torch.arange(10), torch.zeros(10, dtype=torch.long))
    source.zero_()
    assert buffer.x.abs().sum() > 0
    buffer.replace(source[:3], torch.arange(3), torch.zeros(3, dtype=torch.long))
    assert buffer.x.untyped_storage().data_ptr() != source.untyped_storage().data_ptr()


def test_class_balanced_selection():
    torch.manual_seed(0)
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 4 + [3] * 16)
    picked = class_balanced_indices(labels, 40)
    assert len(picked) == 40 and len(picked.unique()) == 40
    counts = torch.bincount(labels[picked], minlength=4).tolist()
    assert counts[2] == 4  # a small class gives its unused share to the others
    assert sorted(counts) == [4, 12, 12, 12]
    assert class_balanced_indices(labels, 3).numel() == 3
    assert len(set(labels[class_balanced_indices(labels, 3)].tolist())) == 3


def test_episodic_memory_ring_buffer_and_weights():
    memory = EpisodicMemory(per_task=4)
    memory.write_recent(0, torch.arange(3.0).unsqueeze(1), torch.arange(3))
    assert memory.counts == [3]
    memory.write_recent(0, torch.arange(3.0, 6.0).unsqueeze(1), torch.arange(3, 6))
    assert sorted(memory.y[0].tolist()) == [2, 3, 4, 5]  # the four most recent
    memory.write_all(1, torch.ones(2, 1), torch.tensor([7, 7]))
    weights = memory.weights([0, 1])
    assert torch.allclose(weights.sum(1), torch.ones(2))
    assert weights[1].tolist() == [0.5, 0.5, 0.0, 0.0]
    _x, y, t = memory.flat([1])
    assert y.tolist() == [7, 7] and t.tolist() == [1, 1]
    assert memory.rows_except(0) == [1]


@pytest.mark.parametrize("per_task", [1, 3, 16])
def test_ring_buffer_slots_match_a_modular_reference(per_task):
    """Each write goes to the slots ``(position + k) mod per_task`` (the last ``per_task``
    samples of a larger batch), batch sizes from 1 to 2 x per_task + 2, wrap-arounds included.
    Caught: the two contiguous copies with the wrapped part written at the end of the row."""
    memory = EpisodicMemory(per_task)
    gen = torch.Generator().manual_seed(per_task)
    position, ref_x, ref_y = 0, None, None
    for _ in range(60):
        n = int(torch.randint(1, 2 * per_task + 3, (1,), generator=gen))
        x, y = torch.randn(n, 4, generator=gen), torch.randint(0, 9, (n,), generator=gen)
        if ref_x is None:  # a new row starts as copies of its first sample
            ref_x, ref_y = x[:1].expand(per_task, 4).clone(), y[:1].expand(per_task).clone()
        memory.write_recent(0, x, y)
        kept_x, kept_y = x[-per_task:], y[-per_task:]
        slots = (position + torch.arange(len(kept_y))) % per_task
        ref_x[slots], ref_y[slots] = kept_x, kept_y
        position = (position + len(kept_y)) % per_task
        assert torch.equal(memory.x[0], ref_x) and torch.equal(memory.y[0], ref_y)


def test_herding_mean_approaches_class_mean():
    torch.manual_seed(0)
    features = torch.nn.functional.normalize(torch.randn(400, 16) + 0.5, dim=1)
    mu = features.mean(0)
    order = herding(features, 50)
    assert len(order.unique()) == 50
    gaps = [(features[order[:k]].mean(0) - mu).norm().item() for k in (1, 5, 10, 25, 50)]
    assert all(b < a for a, b in itertools.pairwise(gaps)), gaps
    random_gap = torch.stack(
        [(features[torch.randperm(400)[:50]].mean(0) - mu).norm() for _ in range(50)]
    ).mean()
    assert gaps[-1] < 0.2 * random_gap.item()


@pytest.mark.parametrize("bad", [0, -3])
def test_buffer_rejects_bad_capacity(bad):
    with pytest.raises(ValueError):
        SampleBuffer(bad)
