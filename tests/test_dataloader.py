"""A user's Datasets per task: live transforms through a DataLoader, plain tensors in memory,
memories that keep what they read, and one clear error for shapes that cannot work.

Checked to fail: with ``from_datasets(loader="auto")`` reading every Dataset once (the old
behaviour), ``test_random_transform_gives_new_samples_every_epoch`` fails (both epochs see the
same flipped samples). With ``.targets`` taken as the labels unchecked (the old behaviour),
the label tests fail (the raw labels of a ``target_transform`` Dataset are trained, fractional
targets are truncated, string targets raise a raw ValueError); without the per-read shape check
or the worker-message cleanup, the shape test fails (torch's collate error, or a traceback).
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset, IterableDataset, TensorDataset

from lifelong.errors import ConfigError, DataError
from lifelong.runner import learn_stream
from lifelong.strategies import Strategy
from lifelong.streams import from_datasets
from lifelong.streams.custom import DatasetData
from lifelong.train import TrainConfig, Trainer


class RandomFlip(Dataset):
    """Features of ``x`` negated with probability 1/2 at every read (a random augmentation)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> None:
        self.x, self.y = x, y
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        flip = torch.rand((), generator=self.gen) < 0.5
        return (-self.x[i] if flip else self.x[i]), int(self.y[i])


def _task(n: int = 40, seed: int = 0, classes: tuple[int, ...] = (0, 1)):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 6, generator=gen) + 0.1  # positive: a flip is visible
    y = torch.tensor(classes).repeat(n // len(classes))
    return x, y


def _epoch_inputs(stream, epochs: int = 2) -> list[torch.Tensor]:
    """Every input the loop trained on, per epoch."""
    seen: list[torch.Tensor] = []

    class Recorder(Strategy):
        def loss(self, model, batch, task):
            seen.append(batch.x.clone())
            return super().loss(model, batch, task)

    strategy = Recorder()
    torch.manual_seed(0)
    model = strategy.prepare(torch.nn.Linear(6, stream.n_outputs), stream)
    Trainer(model, strategy, stream, TrainConfig(epochs=epochs, batch_size=8)).learn(
        stream.tasks[0]
    )
    return list(torch.cat(seen).split(len(stream.tasks[0].train)))


def _rows(x: torch.Tensor) -> torch.Tensor:
    """The rows of ``x`` sorted (the shuffle order removed)."""
    return torch.stack(sorted(x, key=lambda r: r.tolist()))


def test_random_transform_gives_new_samples_every_epoch():
    x, y = _task()
    test = TensorDataset(x, y)
    live = from_datasets([(RandomFlip(x, y), test)])
    assert isinstance(live.tasks[0].train, DatasetData)
    first, second = _epoch_inputs(live)
    assert not torch.equal(_rows(first), _rows(second))
    assert torch.equal(_rows(first.abs()), _rows(second.abs()))  # same samples, new flips
    frozen = from_datasets([(RandomFlip(x, y), test)], loader="tensors")
    first, second = _epoch_inputs(frozen)
    assert torch.equal(_rows(first), _rows(second))


def test_tensor_datasets_take_the_in_memory_path():
    x, y = _task()
    stream = from_datasets([(TensorDataset(x, y), TensorDataset(x, y))])
    assert type(stream.tasks[0].train).__name__ == "TaskData"
    assert torch.equal(stream.tasks[0].train.inputs(), x)


@pytest.mark.parametrize(
    ("strategy", "scenario"),
    [
        ("replay:memory_size=20", "domain"),
        ("gem:memory_per_task=8", "task"),
        ("icarl:memory_size=20", "class"),
    ],
)
def test_memory_strategies_train_on_live_datasets(strategy, scenario):
    from lifelong.strategies import create_strategy

    tasks = []
    for t in range(2):
        x, y = _task(seed=t, classes=(2 * t, 2 * t + 1))
        tasks.append((RandomFlip(x, y, seed=t), TensorDataset(x, y)))
    stream = from_datasets(
        tasks, scenario=scenario, num_workers=1 if strategy.startswith("replay") else 0
    )
    name, _, rest = strategy.partition(":")
    key, _, value = rest.partition("=")
    result = learn_stream(
        stream,
        create_strategy(name, {key: value}),
        model=torch.nn.Sequential(
            torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, stream.n_outputs)
        ),
        train=TrainConfig(epochs=2, batch_size=8, lr=0.05),
    )
    assert result.status == "complete" and len(result.accuracy_matrix) == 3


class Triples(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.zeros(3), 0, 1


class Stream(IterableDataset):
    def __iter__(self):
        yield torch.zeros(3), 0


@pytest.mark.parametrize(
    ("dataset", "match"),
    [
        (Triples(), r"must return \(input, label\) pairs, got 3 value\(s\) \(the task is given by"),
        (Stream(), r"is an IterableDataset; a task needs a map-style Dataset"),
        ([], r"must be a torch Dataset|is empty"),
    ],
)
def test_unsupported_dataset_shapes_get_one_line(dataset, match):
    x, y = _task()
    with pytest.raises(ConfigError, match=match) as info:
        from_datasets([(dataset, TensorDataset(x, y))])
    assert "\n" not in str(info.value)


# ---- labels and shapes of a live Dataset (found in review) -----------------------------------
class VisionStyle(Dataset):
    """Like torchvision's datasets: raw labels in ``.targets``, ``target_transform`` applied by
    ``__getitem__``. Counts its reads."""

    def __init__(self, x: torch.Tensor, targets, target_transform=None) -> None:
        self.x, self.targets, self.target_transform = x, targets, target_transform
        self.reads = 0

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        self.reads += 1
        y = self.targets[i]
        return self.x[i], (self.target_transform(y) if self.target_transform else y)


class Relabelled(VisionStyle):
    """Labels changed in ``__getitem__`` without a ``target_transform`` attribute."""

    def __getitem__(self, i: int):
        x, y = super().__getitem__(i)
        return x, y - 4


def test_labels_are_what_the_items_return_not_the_raw_targets():
    x, y = _task(classes=(4, 5))
    test = TensorDataset(x, y % 2)
    for train in (VisionStyle(x, y.tolist(), lambda v: v % 2), Relabelled(x, y.tolist())):
        stream = from_datasets([(train, test)])
        assert torch.equal(stream.tasks[0].train.y, y % 2), type(train).__name__
        assert stream.n_outputs == 2
    agreeing = VisionStyle(x, y.tolist())
    stream = from_datasets([(agreeing, TensorDataset(x, y))])
    assert torch.equal(stream.tasks[0].train.y, y)
    assert agreeing.reads <= 17  # .targets read instead of every item (a few items checked)
    x, _ = _task(n=400)
    rare = [2 if i == 5 else 0 for i in range(400)]  # one label the items read up front miss
    test = TensorDataset(x, torch.zeros(400, dtype=torch.long))
    stream = from_datasets([(VisionStyle(x, rare, lambda v: min(v, 1)), test)])
    assert stream.tasks[0].train.y.tolist() == [min(v, 1) for v in rare]


@pytest.mark.parametrize(
    ("labels", "match"),
    [([0.5, 1.5], "whole numbers"), (["cat", "dog"], "label 'cat'"), ([-1, 0], "non-negative")],
    ids=["fractions", "strings", "negative"],
)
def test_bad_targets_get_one_clear_error(labels, match):
    x, _ = _task(n=400)
    test = TensorDataset(x, torch.zeros(400, dtype=torch.long))
    everywhere = labels * 200
    between = [labels[0] if i == 5 else 1 for i in range(400)]  # missed by the items read first
    for targets in (everywhere, between):
        with pytest.raises(ConfigError, match=match) as info:
            from_datasets([(VisionStyle(x, targets), test)])
        assert "\n" not in str(info.value)


class Varying(Dataset):
    """Every sample of 6 features but sample ``odd``, of 5."""

    def __init__(self, n: int, odd: int) -> None:
        self.n, self.odd = n, odd

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return torch.ones(5 if i == self.odd else 6), i % 2


def test_samples_of_different_shapes_get_one_line():
    x, y = _task(n=8)
    with pytest.raises(ConfigError, match=r"sample 39, has shape \[5\] but sample 0 has \[6\]"):
        from_datasets([(Varying(40, odd=39), TensorDataset(x, y))])  # checked up front
    for workers in (0, 1):  # a sample between those read up front: refused when read
        stream = from_datasets([(Varying(400, odd=5), TensorDataset(x, y))], num_workers=workers)
        with pytest.raises(DataError, match=r"sample 5, has shape \[5\]") as info:
            learn_stream(stream, "finetune", train=TrainConfig(batch_size=400))
        assert "\n" not in str(info.value)
