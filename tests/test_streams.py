"""Stream generators (permuted, rotated, split, noisy), user data, and their errors.

Checked through the public interface only: ``TaskData.inputs()`` / ``.y``, ``Task.columns`` /
``.classes`` and the ``Stream`` attributes, against the source images of ``load_image_dataset``.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from lifelong.data import load_image_dataset
from lifelong.errors import ConfigError, UnknownNameError
from lifelong.streams import Stream, build_stream, from_datasets, from_tensors
from lifelong.streams.vision import rotate_images

DIGITS = load_image_dataset("digits")
SCALE = 1.0 / DIGITS.max_value


def source(split: str = "train") -> torch.Tensor:
    """Digits images of one split as the model sees them, ``[N, 1, 8, 8]`` floats in [0, 1]."""
    x = DIGITS.x_train if split == "train" else DIGITS.x_test
    return x.to(torch.float32).mul_(SCALE).unsqueeze(1)


def flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(len(t), -1)


def assert_streams_equal(a: Stream, b: Stream) -> None:
    assert (a.scenario, a.n_outputs, a.input_shape, len(a)) == (
        b.scenario,
        b.n_outputs,
        b.input_shape,
        len(b),
    )
    for ta, tb in zip(a.tasks, b.tasks, strict=True):
        assert (ta.columns, ta.classes, ta.name) == (tb.columns, tb.classes, tb.name)
        for da, db in ((ta.train, tb.train), (ta.test, tb.test)):
            xa, xb = da.inputs(), db.inputs()
            assert xa.dtype == xb.dtype and torch.equal(xa, xb)
            assert torch.equal(da.y, db.y)


def streams_differ(a: Stream, b: Stream) -> bool:
    return any(
        not torch.equal(ta.train.inputs(), tb.train.inputs())
        or not torch.equal(ta.train.y, tb.train.y)
        for ta, tb in zip(a.tasks, b.tasks, strict=True)
    )


SEEDED = [
    ("permuted", {}),
    ("rotated", {"train_samples": 300, "test_samples": 100}),
    ("split", {"scenario": "class", "train_samples": 100}),
    ("split", {"scenario": "task", "train_samples": 100}),
    ("split", {"scenario": "domain", "train_samples": 100}),
    ("noisy", {}),
]


@pytest.mark.parametrize(
    ("name", "options"), SEEDED, ids=[f"{n}-{i}" for i, (n, _) in enumerate(SEEDED)]
)
def test_same_seed_bit_identical_other_seed_differs(name, options):
    a = build_stream(name, "digits", seed=3, **options)
    b = build_stream(name, "digits", seed=3, **options)
    assert_streams_equal(a, b)
    c = build_stream(name, "digits", seed=4, **options)
    assert streams_differ(a, c)


# ---- permuted --------------------------------------------------------------------------------
def column_key(column: torch.Tensor) -> bytes:
    return column.contiguous().numpy().tobytes()


def test_permuted_tasks_are_distinct_permutations_of_the_same_images():
    stream = build_stream("permuted", "digits", tasks=3, seed=0)
    src_train, src_test = flat(source("train")), flat(source("test"))
    # Columns that occur once in the source identify the permutation unambiguously.
    keys = [column_key(c) for c in src_train.T]
    unique = {k: j for j, k in enumerate(keys) if keys.count(k) == 1}
    assert len(unique) > 40
    inputs = []
    for task in stream.tasks:
        x_train, x_test = flat(task.train.inputs()), flat(task.test.inputs())
        assert x_train.shape == src_train.shape and x_test.shape == src_test.shape
        assert torch.equal(task.train.y, DIGITS.y_train) and torch.equal(task.test.y, DIGITS.y_test)
        # the same multiset of pixel columns: a permutation of the features of the same images
        sorted_task = torch.unique(x_train.T, dim=0, return_counts=True)
        sorted_src = torch.unique(src_train.T, dim=0, return_counts=True)
        assert all(torch.equal(p, q) for p, q in zip(sorted_task, sorted_src, strict=True))
        # the same permutation for the train and the test split
        matched = 0
        for i, column in enumerate(x_train.T):
            j = unique.get(column_key(column))
            if j is not None:
                assert torch.equal(x_test[:, i], src_test[:, j])
                matched += 1
        assert matched == len(unique)
        inputs.append(x_train)
    for a in range(3):
        for b in range(a + 1, 3):
            assert not torch.equal(inputs[a], inputs[b])
    assert not all(torch.equal(x, src_train) for x in inputs)  # GEM: every task permuted


def test_permuted_task_scenario_gives_each_task_its_own_head():
    stream = build_stream("permuted", "digits", tasks=3, scenario="task", test_samples=50)
    assert stream.n_outputs == 30
    for task in stream.tasks:
        assert task.columns == (10 * task.id, 10 * task.id + 10)
        assert task.classes == tuple(range(10))
        assert torch.equal(task.train.y, DIGITS.y_train + 10 * task.id)
    cls = build_stream("permuted", "digits", tasks=3, scenario="class", test_samples=50)
    assert cls.n_outputs == 30 and all(t.columns == (0, 30) for t in cls.tasks)
    dom = build_stream("permuted", "digits", tasks=3, test_samples=50)
    assert dom.scenario == "domain" and dom.n_outputs == 10
    assert all(t.columns == (0, 10) for t in dom.tasks)


def test_sample_counts_per_task():
    stream = build_stream("permuted", "digits", tasks=2, train_samples=123, test_samples=45)
    for task in stream.tasks:
        assert len(task.train) == 123 and task.train.inputs().shape == (123, 1, 8, 8)
        assert len(task.test) == 45 and len(task.test.y) == 45
        x = task.train.inputs()
        assert x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1


# ---- rotated ---------------------------------------------------------------------------------
def angles_of(stream: Stream) -> list[float]:
    return [float(re.search(r"rotation (-?[\d.]+)", t.name).group(1)) for t in stream.tasks]


@pytest.mark.parametrize("tasks", [3, 4])
def test_rotated_default_angles_evenly_spaced_over_0_180(tasks):
    stream = build_stream("rotated", "digits", tasks=tasks, seed=0)
    expected = [180.0 * t / tasks for t in range(tasks)]
    assert angles_of(stream) == pytest.approx(expected)
    assert all(0 <= a < 180 for a in angles_of(stream))
    for task, angle in zip(stream.tasks, expected, strict=True):
        want = rotate_images(DIGITS.x_test, angle).to(torch.float32).mul_(SCALE).unsqueeze(1)
        assert torch.equal(task.test.inputs(), want)
        assert torch.equal(task.test.y, DIGITS.y_test)


def test_rotation_by_zero_is_the_identity():
    stream = build_stream("rotated", "digits", tasks=2, seed=0)
    assert torch.equal(stream.tasks[0].train.inputs(), source("train"))
    assert torch.equal(stream.tasks[0].test.inputs(), source("test"))
    assert not torch.equal(stream.tasks[1].test.inputs(), source("test"))
    assert torch.equal(rotate_images(DIGITS.x_test[:10], 0), DIGITS.x_test[:10])
    assert torch.equal(rotate_images(DIGITS.x_test[:10], 360), DIGITS.x_test[:10])


def test_rotation_by_90_and_180_is_an_exact_quarter_turn():
    images = DIGITS.x_test[:20]
    by_90 = rotate_images(images, 90)
    assert torch.equal(by_90, torch.rot90(images, 1, dims=(1, 2))) or torch.equal(
        by_90, torch.rot90(images, -1, dims=(1, 2))
    )
    assert torch.equal(rotate_images(images, 180), torch.rot90(images, 2, dims=(1, 2)))


def test_rotation_turns_counter_clockwise_like_pil_and_rot90():
    image = torch.zeros(1, 8, 8, dtype=torch.uint8)
    image[0, 0, 7] = 200  # top-right corner; counter-clockwise by 90 degrees moves it top-left
    assert rotate_images(image, 90)[0, 0, 0] == 200
    digit = DIGITS.x_test[:5]
    assert torch.equal(rotate_images(digit, 90), torch.rot90(digit, 1, dims=(1, 2)))
    stream = build_stream("rotated", "digits", tasks=1, angles=[90])
    want = torch.rot90(DIGITS.x_test, 1, dims=(1, 2)).to(torch.float32).mul_(SCALE)
    assert torch.equal(stream.tasks[0].test.inputs(), want.unsqueeze(1))


# ---- split -----------------------------------------------------------------------------------
@pytest.mark.parametrize("scenario", ["class", "task", "domain"])
def test_split_classes_columns_and_labels(scenario):
    stream = build_stream("split", "digits", tasks=5, scenario=scenario, seed=0)
    assert stream.n_outputs == (2 if scenario == "domain" else 10)
    for t, task in enumerate(stream.tasks):
        classes = (2 * t, 2 * t + 1)
        assert task.classes == classes
        expected_columns = {"class": (0, 10), "task": (2 * t, 2 * t + 2), "domain": (0, 2)}
        assert task.columns == expected_columns[scenario]
        for data, x_src, y_src in (
            (task.train, source("train"), DIGITS.y_train),
            (task.test, source("test"), DIGITS.y_test),
        ):
            keep = torch.isin(y_src, torch.tensor(classes))
            assert len(data) == int(keep.sum())  # every sample of the two classes
            assert torch.equal(data.inputs(), x_src[keep])
            shift = 2 * t if scenario == "domain" else 0
            assert torch.equal(data.y, y_src[keep] - shift)
            assert data.y.min() >= task.columns[0] and data.y.max() < task.columns[1]


def test_split_options_class_order_and_classes_per_task():
    order = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    stream = build_stream("split", "digits", tasks=2, scenario="class", class_order=order)
    assert stream.tasks[0].classes == (9, 8, 7, 6, 5)
    # columns follow the order: class 9 is column 0, class 5 column 4
    keep = torch.isin(DIGITS.y_train, torch.arange(5, 10))
    assert torch.equal(stream.tasks[0].train.y, 9 - DIGITS.y_train[keep])
    assert torch.equal(stream.tasks[0].train.inputs(), source("train")[keep])
    three = build_stream("split", "digits", tasks=3, classes_per_task=3, scenario="task")
    assert [t.classes for t in three.tasks] == [(0, 1, 2), (3, 4, 5), (6, 7, 8)]
    assert three.n_outputs == 9 and three.tasks[2].columns == (6, 9)
    shuffled = build_stream("split", "digits", tasks=5, shuffle_classes=True, seed=1)
    assert sorted(c for t in shuffled.tasks for c in t.classes) == list(range(10))


# ---- noisy -----------------------------------------------------------------------------------
def test_noisy_default_two_tasks_noisy_then_clean():
    stream = build_stream("noisy", "digits", seed=0)
    assert len(stream) == 2 and stream.scenario == "domain"
    noisy, clean = stream.tasks
    for task in stream.tasks:
        assert torch.equal(task.train.y, DIGITS.y_train) and torch.equal(task.test.y, DIGITS.y_test)
    # the clean task shows the source images (up to the uint8 storage of the stream)
    assert (clean.test.inputs() - source("test")).abs().max() <= 1 / 255 + 1e-6
    assert (noisy.test.inputs() - source("test")).abs().mean() > 0.2
    more = build_stream("noisy", "digits", noise=[0.8, 0.3, 0.0])
    diffs = [(t.train.inputs() - source("train")).abs().mean().item() for t in more.tasks]
    assert len(more) == 3 and diffs[0] > diffs[1] > diffs[2]


def test_noisy_clean_task_equals_the_source_images():
    clean = build_stream("noisy", "digits", seed=0).tasks[-1]
    assert torch.equal(clean.test.inputs(), source("test"))
    assert torch.equal(clean.train.inputs(), source("train"))


# ---- user data -------------------------------------------------------------------------------
def user_tasks(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)

    def part(labels, n):
        y = torch.tensor(labels)[torch.randint(len(labels), (n,), generator=g)]
        x = torch.rand(n, 5, generator=g)
        return (x * 255).to(torch.uint8) if dtype == torch.uint8 else x, y

    tasks = []
    for labels in ([3, 7], [1, 5, 9]):
        (xtr, ytr), (xte, yte) = part(labels, 40), part(labels, 20)
        ytr[: len(labels)] = torch.tensor(labels)  # every class present in train and test
        yte[: len(labels)] = torch.tensor(labels)
        tasks.append((xtr, ytr, xte, yte))
    return tasks


def test_from_tensors_task_scenario_renumbers_each_head():
    tasks = user_tasks()
    stream = from_tensors(tasks, scenario="task", names=["a", "b"])
    assert stream.n_outputs == 5 and stream.input_kind == "features"
    a, b = stream.tasks
    assert (a.name, b.name) == ("a", "b")
    assert a.classes == (3, 7) and a.columns == (0, 2)
    assert b.classes == (1, 5, 9) and b.columns == (2, 5)
    mapping_a, mapping_b = {3: 0, 7: 1}, {1: 2, 5: 3, 9: 4}
    assert a.train.y.tolist() == [mapping_a[v] for v in tasks[0][1].tolist()]
    assert b.test.y.tolist() == [mapping_b[v] for v in tasks[1][3].tolist()]
    assert torch.equal(a.train.inputs(), tasks[0][0])  # float inputs used as given


@pytest.mark.parametrize("scenario", ["domain", "class"])
def test_from_tensors_shared_columns(scenario):
    tasks = user_tasks()
    stream = from_tensors(tasks, scenario=scenario)
    assert stream.n_outputs == 10
    for task, (_, ytr, _, yte) in zip(stream.tasks, tasks, strict=True):
        assert task.columns == (0, 10)
        assert torch.equal(task.train.y, ytr) and torch.equal(task.test.y, yte)


def test_from_tensors_numpy_uint8_and_datasets():
    tasks = user_tasks(torch.uint8)
    as_numpy = [tuple(t.numpy() for t in task) for task in tasks]
    stream = from_tensors(as_numpy, scenario="domain")
    x = stream.tasks[0].train.inputs()
    assert x.dtype == torch.float32
    assert torch.allclose(x, tasks[0][0].to(torch.float32) / 255)
    datasets = [(TensorDataset(xtr, ytr), TensorDataset(xte, yte)) for xtr, ytr, xte, yte in tasks]
    via_datasets = from_datasets(datasets, scenario="domain")
    assert_streams_equal(stream, via_datasets)
    images = [
        (torch.rand(6, 1, 4, 4), torch.arange(6) % 2, torch.rand(4, 1, 4, 4), torch.arange(4) % 2)
    ]
    assert from_tensors(images).input_kind == "image"


@pytest.mark.parametrize(
    ("tasks", "scenario", "match"),
    [
        ([], "domain", "at least one task"),
        (
            [
                (
                    torch.zeros(3, 2),
                    torch.zeros(2, dtype=torch.long),
                    torch.zeros(1, 2),
                    torch.zeros(1),
                )
            ],
            "domain",
            "different lengths",
        ),
        (
            [(torch.zeros(3, 2), torch.zeros(3), torch.zeros(1, 4), torch.zeros(1))],
            "domain",
            "shape",
        ),
        (
            [(torch.zeros(3, 2), -torch.ones(3), torch.zeros(1, 2), torch.zeros(1))],
            "domain",
            "non-negative",
        ),
        (
            [(torch.zeros(3, 2), torch.zeros(3), torch.zeros(1, 2), torch.zeros(1))],
            "bogus",
            "scenario",
        ),
        ([([1, 2], [0, 1], [1], [0])], "domain", "tensor or numpy"),
        ([(torch.zeros(3, 2), torch.zeros(3))], "domain", "x_train, y_train"),
    ],
)
def test_from_tensors_errors(tasks, scenario, match):
    with pytest.raises(ConfigError, match=match) as info:
        from_tensors(tasks, scenario=scenario)
    assert "\n" not in str(info.value)


# ---- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "kwargs", "error", "match"),
    [
        ("split", {"tasks": 11}, ConfigError, "at most 10 tasks"),
        ("split", {"tasks": 4, "classes_per_task": 3}, ConfigError, "at most 3 tasks"),
        ("permuted", {"tasks": 2, "train_samples": 100_000}, ConfigError, "at most 1258"),
        ("permuted", {"tasks": 2, "test_samples": 540}, ConfigError, "at most 539"),
        ("split", {"tasks": 5, "train_samples": 400}, ConfigError, "only"),
        ("permuted", {"tasks": 0}, ConfigError, "at least 1"),
        ("split", {"tasks": 0}, ConfigError, "at least 1"),
        ("permuted", {"train_samples": 0}, ConfigError, "positive"),
        ("permuted", {"scenario": "bogus"}, UnknownNameError, "known: class, domain, task"),
        ("nosuch", {}, UnknownNameError, "known: .*noisy, permuted, rotated, split"),
        ("rotated", {"tasks": 3, "angles": [0, 90]}, ConfigError, "one per task"),
        ("noisy", {"noise": [0.5, -0.1]}, ConfigError, ">= 0"),
        ("noisy", {"tasks": 3, "noise": [0.5, 0.0]}, ConfigError, "3 tasks"),
    ],
)
def test_impossible_settings_fail_with_one_line(name, kwargs, error, match):
    with pytest.raises(error, match=match) as info:
        build_stream(name, "digits", **kwargs)
    assert "\n" not in str(info.value)


def test_unknown_data_names_the_valid_ones():
    with pytest.raises(ConfigError, match="use one of: digits, mnist, fashion-mnist") as info:
        build_stream("permuted", "nosuch")
    assert "\n" not in str(info.value)
    with pytest.raises(UnknownNameError, match="known: digits, fashion-mnist, mnist"):
        load_image_dataset("nosuch")


def test_unknown_stream_option_is_an_error():
    with pytest.raises(ConfigError, match="bogus"):
        build_stream("permuted", "digits", tasks=1, bogus=1)


# ---- genuine MNIST ---------------------------------------------------------------------------
@pytest.mark.shared_data
def test_permuted_mnist_from_the_shared_data(shared_data):
    from lifelong.runner import learn_stream
    from lifelong.train import TrainConfig

    ds = load_image_dataset("mnist", shared_data)
    assert (len(ds.x_train), len(ds.x_test), ds.image_shape) == (60_000, 10_000, (28, 28))
    stream = build_stream(
        "permuted", "mnist", data_dir=shared_data, tasks=2, train_samples=2000, test_samples=200
    )
    assert stream.input_shape == (1, 28, 28) and stream.n_outputs == 10
    for task in stream.tasks:
        x = task.test.inputs()
        assert x.shape == (200, 1, 28, 28) and x.min() >= 0 and x.max() <= 1
        assert torch.allclose(torch.round(x * 255), x * 255, atol=1e-4)  # 8-bit pixels
        assert set(task.train.y.tolist()) == set(range(10))
    again = build_stream(
        "permuted", "mnist", data_dir=shared_data, tasks=2, train_samples=2000, test_samples=200
    )
    assert_streams_equal(stream, again)
    result = learn_stream(stream, "finetune", train=TrainConfig(epochs=1, lr=0.1), seed=0)
    r = np.array(result.accuracy_matrix)
    assert r.shape == (3, 2)
    assert r[0].max() < 0.3 and r[1, 0] > 0.6 and r[2, 1] > 0.6
