"""Stream generators over image data sets: permuted, rotated, split and noisy.

Every generator is seeded: the same ``StreamSpec`` gives a bit-identical stream. Tasks keep the
source images in their stored ``uint8`` form and share them where they can, so a 20-task stream
of MNIST costs about one copy of MNIST.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lifelong.data import ImageDataset, load_image_dataset
from lifelong.errors import ConfigError
from lifelong.resources import ensure_memory
from lifelong.streams.base import Stream, Task, TaskData
from lifelong.streams.registry import StreamSpec, register_stream


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sample_rows(available: Tensor, n: int | None, what: str, gen: torch.Generator) -> Tensor:
    """``n`` rows drawn without replacement from ``available`` (all of them, in order, if None)."""
    if n is None or n == len(available):
        return available
    if n > len(available):
        raise ConfigError(
            f"{what}: asked for {n} samples per task but only {len(available)} exist; "
            f"use at most {len(available)}"
        )
    if n <= 0:
        raise ConfigError(f"{what}: the number of samples per task must be positive, got {n}")
    picked = available[torch.randperm(len(available), generator=gen)[:n]]
    return picked.sort().values


def _same_classes_columns(scenario: str, n_classes: int, t: int, n_tasks: int):
    """Label offset, column range and output count for streams whose tasks share all classes."""
    if scenario == "domain":
        return 0, (0, n_classes), n_classes
    if scenario == "task":
        return n_classes * t, (n_classes * t, n_classes * (t + 1)), n_classes * n_tasks
    return n_classes * t, (0, n_classes * n_tasks), n_classes * n_tasks  # class-incremental


def _check_tasks(n_tasks: int) -> None:
    if n_tasks < 1:
        raise ConfigError(f"the number of tasks must be at least 1, got {n_tasks}")


def _check_size(spec: StreamSpec, ds: ImageDataset, n_tasks: int, copies: bool = False) -> None:
    """Refuse, before building any task, a stream whose tasks would not fit in memory.

    Per task: int64 row indices and labels of both splits, a feature permutation, with
    ``copies`` a uint8 copy of its images (rotated, noisy), and its rows of the accuracy matrix
    (results and JSON text, T+1 rows of T numbers)."""
    n_train = spec.train_samples or len(ds.x_train)
    n_test = spec.test_samples or len(ds.x_test)
    features = math.prod(ds.image_shape)
    per_task = 16 * (n_train + n_test) + 8 * features + 64 * (n_tasks + 1)
    if copies:
        per_task += (n_train + n_test) * features
    ensure_memory(
        n_tasks * per_task,
        f"a stream of {n_tasks:,} tasks of {spec.data}",
        "use fewer --tasks or --train-samples",
    )


def _flat_source(ds: ImageDataset) -> tuple[Tensor, Tensor]:
    return ds.x_train.reshape(len(ds.x_train), -1), ds.x_test.reshape(len(ds.x_test), -1)


@register_stream(
    "permuted",
    "each task applies its own fixed random pixel permutation",
    tasks=5,
    options=("identity_first",),
)
def permuted(spec: StreamSpec) -> Stream:
    """Permuted images (Goodfellow et al. 2013; Kirkpatrick et al. 2017; GEM 2017).

    Options:
        identity_first (bool, default False): leave task 1 unpermuted, as in van de Ven et al.;
            GEM permutes every task, which is the default here.
    """
    identity_first = spec.option("identity_first", bool, False)
    ds = load_image_dataset(spec.data, spec.data_dir)
    n_tasks = spec.tasks
    _check_tasks(n_tasks)
    _check_size(spec, ds, n_tasks)
    gen = _generator(spec.seed)
    x_train, x_test = _flat_source(ds)
    x_test_t = x_test.T.contiguous()  # feature-major: fast permuted evaluation (TaskData docs)
    n_features = x_train.shape[1]
    all_train, all_test = torch.arange(len(x_train)), torch.arange(len(x_test))
    tasks, n_out = [], ds.n_classes
    for t in range(n_tasks):
        perm = torch.randperm(n_features, generator=gen)
        if t == 0 and identity_first:
            perm = torch.arange(n_features)
        train_rows = _sample_rows(all_train, spec.train_samples, "train", gen)
        test_rows = _sample_rows(all_test, spec.test_samples, "test", gen)
        offset, columns, n_out = _same_classes_columns(spec.scenario, ds.n_classes, t, n_tasks)
        common = {"features": perm, "scale": 1.0 / ds.max_value, "shape": (1, *ds.image_shape)}
        tasks.append(
            Task(
                id=t,
                name=f"permutation {t + 1}",
                train=TaskData(x_train, ds.y_train[train_rows] + offset, train_rows, **common),
                test=TaskData(
                    x_test_t,
                    ds.y_test[test_rows] + offset,
                    None if len(test_rows) == len(x_test) else test_rows,
                    feature_major=True,
                    **common,
                ),
                classes=tuple(range(ds.n_classes)),
                columns=columns,
            )
        )
    return Stream("permuted", spec.data, spec.scenario, tasks, (1, *ds.image_shape), n_out)


def rotate_images(images: Tensor, degrees: float) -> Tensor:
    """Rotate uint8 images ``[N, H, W]`` counter-clockwise about their centre, bilinear, uint8 out.

    The result is rounded back to uint8 as image libraries do (GEM rotated MNIST with PIL), so
    rotated tasks stay as compact as the source.
    """
    if degrees % 360 == 0:
        return images.clone()
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    # affine_grid maps each output pixel to the input point it samples (x right, y down): for a
    # counter-clockwise turn on screen that is the rotation by +theta in these coordinates.
    matrix = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=torch.float32)
    x = images.unsqueeze(1).to(torch.float32)
    grid = F.affine_grid(matrix.expand(len(x), 2, 3), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.squeeze(1).round_().clamp_(0, 255).to(torch.uint8)


@register_stream(
    "rotated", "each task rotates the images by its own angle", tasks=5, options=("angles",)
)
def rotated(spec: StreamSpec) -> Stream:
    """Rotated images (Lopez-Paz & Ranzato 2017, GEM, rotated MNIST).

    Options:
        angles (list of degrees, default evenly spaced over [0, 180): 180 * t / T): one per task.
            GEM draws each task's angle at random in [0, 180); pass them explicitly to match.
    """
    ds = load_image_dataset(spec.data, spec.data_dir)
    n_tasks = spec.tasks
    _check_tasks(n_tasks)
    _check_size(spec, ds, n_tasks, copies=True)
    angles = spec.option("angles", float)
    if angles is None:
        angles = [180.0 * t / n_tasks for t in range(n_tasks)]
    angles = angles if isinstance(angles, list) else [angles]
    if len(angles) != n_tasks:
        raise ConfigError(
            f"rotated: {len(angles)} angles given for {n_tasks} tasks; give one per task"
        )
    gen = _generator(spec.seed)
    all_train, all_test = torch.arange(len(ds.x_train)), torch.arange(len(ds.x_test))
    tasks, n_out = [], ds.n_classes
    shape = (1, *ds.image_shape)
    for t, angle in enumerate(angles):
        train_rows = _sample_rows(all_train, spec.train_samples, "train", gen)
        test_rows = _sample_rows(all_test, spec.test_samples, "test", gen)
        offset, columns, n_out = _same_classes_columns(spec.scenario, ds.n_classes, t, n_tasks)
        scale = 1.0 / ds.max_value
        tasks.append(
            Task(
                id=t,
                name=f"rotation {angle:g}°",
                train=TaskData(
                    rotate_images(ds.x_train[train_rows], angle),
                    ds.y_train[train_rows] + offset,
                    scale=scale,
                    shape=shape,
                ),
                test=TaskData(
                    rotate_images(ds.x_test[test_rows], angle),
                    ds.y_test[test_rows] + offset,
                    scale=scale,
                    shape=shape,
                ),
                classes=tuple(range(ds.n_classes)),
                columns=columns,
            )
        )
    return Stream("rotated", spec.data, spec.scenario, tasks, shape, n_out)


@register_stream(
    "split",
    "classes split into groups, one group per task",
    tasks=5,
    scenario="class",
    options=("classes_per_task", "class_order", "shuffle_classes"),
)
def split(spec: StreamSpec) -> Stream:
    """Split images (Zenke et al. 2017 split MNIST; van de Ven & Tolias 2019 three scenarios).

    Options:
        classes_per_task (int, default: number of classes // tasks): size of each group.
        class_order (list, default 0..C-1): the order in which classes are grouped.
        shuffle_classes (bool, default False): draw the class order from the seed instead.

    Columns: in the class scenario task t's classes get the output columns
    ``[k t, k t + k)`` of one shared head; in the task scenario the same columns form task t's
    own head; in the domain scenario every task uses columns ``[0, k)`` (e.g. "first or second
    digit of the pair").
    """
    ds = load_image_dataset(spec.data, spec.data_dir)
    n_tasks = spec.tasks
    _check_tasks(n_tasks)
    k = spec.option("classes_per_task", int, max(ds.n_classes // n_tasks, 1))
    if k < 1:
        raise ConfigError(f"split: classes_per_task must be at least 1, got {k}")
    if k * n_tasks > ds.n_classes:
        raise ConfigError(
            f"split: {n_tasks} tasks of {k} classes need {n_tasks * k} classes but "
            f"{spec.data} has {ds.n_classes}; use at most {ds.n_classes // k} tasks"
        )
    gen = _generator(spec.seed)
    order = spec.option("class_order", int)
    if order is None:
        order = list(range(ds.n_classes))
        if spec.option("shuffle_classes", bool, False):
            order = torch.randperm(ds.n_classes, generator=gen).tolist()
    order = order if isinstance(order, list) else [order]
    if sorted(set(order)) != sorted(order) or not set(order) <= set(range(ds.n_classes)):
        raise ConfigError(
            f"split: class_order must list distinct classes from 0..{ds.n_classes - 1}"
        )
    position = torch.full((ds.n_classes,), -1, dtype=torch.long)
    position[torch.tensor(order)] = torch.arange(len(order))
    x_train, x_test = _flat_source(ds)
    n_out = k if spec.scenario == "domain" else k * n_tasks
    shape = (1, *ds.image_shape)
    tasks = []
    for t in range(n_tasks):
        classes = order[k * t : k * (t + 1)]
        cls = torch.tensor(classes)
        train_avail = torch.nonzero(torch.isin(ds.y_train, cls)).squeeze(1)
        test_avail = torch.nonzero(torch.isin(ds.y_test, cls)).squeeze(1)
        train_rows = _sample_rows(train_avail, spec.train_samples, "train", gen)
        test_rows = _sample_rows(test_avail, spec.test_samples, "test", gen)
        ytr, yte = position[ds.y_train[train_rows]], position[ds.y_test[test_rows]]
        if spec.scenario == "domain":
            ytr, yte, columns = ytr - k * t, yte - k * t, (0, k)
        elif spec.scenario == "task":
            columns = (k * t, k * (t + 1))
        else:
            columns = (0, k * n_tasks)
        common = {"scale": 1.0 / ds.max_value, "shape": shape}
        tasks.append(
            Task(
                id=t,
                name="classes " + "-".join(str(c) for c in classes),
                train=TaskData(x_train, ytr, train_rows, **common),
                test=TaskData(x_test, yte, test_rows, **common),
                classes=tuple(classes),
                columns=columns,
            )
        )
    return Stream("split", spec.data, spec.scenario, tasks, shape, n_out)


@register_stream(
    "noisy",
    "corrupted images first, then clean ones (the lecture's first example)",
    tasks=2,
    options=("noise", "occlusion"),
)
def noisy(spec: StreamSpec) -> Stream:
    """Same images under decreasing corruption: task 1 corrupted, the last task clean.

    Two kinds of corruption, one level per task each, applied afresh to every image:

    Options:
        noise (list of floats): standard deviation of Gaussian noise added to pixels in [0, 1];
            noisy pixels are clipped to [0, 1] and stored as uint8. Default, when neither option
            is given: 0.8 down to 0 evenly over the tasks ([0.8, 0.0] for two tasks); when only
            ``occlusion`` is given: no noise.
        occlusion (list of ints, default none): side in pixels of a square erased (set to 0) at
            a random position of each image, the "cutout" occlusion of DeVries & Taylor (2017,
            arXiv:1708.04552); 0 leaves the images whole. On the 8x8 digits ``[4, 0]`` (a quarter
            of each image hidden, then clean images) is the demo's first example: learning the
            clean task makes the network forget the occluded one, while Gaussian noise at any
            level does not (benchmarks/RESULTS.md, "The lecture's first example").
    """
    ds = load_image_dataset(spec.data, spec.data_dir)
    noise, sizes = spec.option("noise", float), spec.option("occlusion", int)
    noise = noise if noise is None or isinstance(noise, list) else [noise]
    sizes = sizes if sizes is None or isinstance(sizes, list) else [sizes]
    if noise is None and sizes is None:
        _check_tasks(spec.tasks)
        _check_size(spec, ds, spec.tasks, copies=True)
        last = max(spec.tasks - 1, 1)
        noise = [0.8 * (1 - t / last) if spec.tasks > 1 else 0.0 for t in range(spec.tasks)]
    noise = [0.0] * len(sizes) if noise is None else [float(s) for s in noise]
    sizes = [0] * len(noise) if sizes is None else sizes
    if any(float(k) != int(k) for k in sizes):
        raise ConfigError("noisy: occlusion sizes are square sides in pixels; give integers")
    sizes = [int(k) for k in sizes]
    if len(sizes) != len(noise):
        raise ConfigError(
            f"noisy: {len(noise)} noise levels and {len(sizes)} occlusion sizes; give one of "
            "each per task"
        )
    n_tasks = len(noise)
    if spec.tasks_given and spec.tasks != n_tasks:
        raise ConfigError(f"noisy: {n_tasks} corruption levels given for {spec.tasks} tasks")
    if any(s < 0 for s in noise):
        raise ConfigError("noisy: noise levels are standard deviations and must be >= 0")
    side = min(ds.image_shape)
    if any(k < 0 or k > side for k in sizes):
        raise ConfigError(f"noisy: occlusion sizes must be between 0 and {side} pixels")
    gen = _generator(spec.seed)
    all_train, all_test = torch.arange(len(ds.x_train)), torch.arange(len(ds.x_test))
    shape = (1, *ds.image_shape)
    tasks, n_out = [], ds.n_classes

    def occlude(images: Tensor, k: int) -> Tensor:
        """Each image with a k x k square at a uniformly random position set to 0."""
        n, h, w = images.shape
        top = torch.randint(0, h - k + 1, (n, 1, 1), generator=gen)
        left = torch.randint(0, w - k + 1, (n, 1, 1), generator=gen)
        rows = torch.arange(h).view(1, h, 1)
        cols = torch.arange(w).view(1, 1, w)
        inside = (rows >= top) & (rows < top + k) & (cols >= left) & (cols < left + k)
        return images.masked_fill(inside, 0)

    def corrupt(images: Tensor, std: float, k: int) -> tuple[Tensor, float]:
        """Corrupted images stored as uint8; a clean task keeps the source pixels."""
        if k > 0:
            images = occlude(images, k)
        if std == 0:
            return images, 1.0 / ds.max_value
        x = images.to(torch.float32) / ds.max_value
        x = x + std * torch.randn(x.shape, generator=gen)
        return (x.clamp_(0, 1) * 255).round_().to(torch.uint8), 1 / 255

    for t, (std, k) in enumerate(zip(noise, sizes, strict=True)):
        train_rows = _sample_rows(all_train, spec.train_samples, "train", gen)
        test_rows = _sample_rows(all_test, spec.test_samples, "test", gen)
        offset, columns, n_out = _same_classes_columns(spec.scenario, ds.n_classes, t, n_tasks)
        x_train, s_train = corrupt(ds.x_train[train_rows], std, k)
        x_test, s_test = corrupt(ds.x_test[test_rows], std, k)
        parts = [f"noise σ={std:g}"] if std > 0 else []
        parts += [f"occlusion {k}x{k}"] if k > 0 else []
        tasks.append(
            Task(
                id=t,
                name=", ".join(parts) or "clean",
                train=TaskData(
                    x_train, ds.y_train[train_rows] + offset, scale=s_train, shape=shape
                ),
                test=TaskData(x_test, ds.y_test[test_rows] + offset, scale=s_test, shape=shape),
                classes=tuple(range(ds.n_classes)),
                columns=columns,
            )
        )
    return Stream("noisy", spec.data, spec.scenario, tasks, shape, n_out)
