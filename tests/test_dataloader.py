"""A user's Datasets per task: live transforms through a DataLoader, plain tensors in memory,
memories that keep what they read, and one clear error for shapes that cannot work.

Checked to fail: with ``from_datasets(loader="auto")`` reading every Dataset once (the old
behaviour), ``test_random_transform_gives_new_samples_every_epoch`` fails (both epochs see the
same flipped samples).
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset, IterableDataset, TensorDataset

from lifelong.errors import ConfigError
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
