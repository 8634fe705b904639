"""The in-memory form every data source returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ImageDataset:
    """A labelled image data set with a fixed train/test split, kept as compact tensors.

    Images stay in their stored integer form (``uint8``) so that a stream can hold many tasks
    that share one copy; they are turned into floats in [0, 1] batch by batch
    (``x.float() / max_value``).
    """

    name: str
    x_train: torch.Tensor  # uint8, [N, H, W]
    y_train: torch.Tensor  # int64, [N], values in [0, n_classes)
    x_test: torch.Tensor  # uint8, [M, H, W]
    y_test: torch.Tensor  # int64, [M]
    n_classes: int
    max_value: int  # largest possible pixel value: 255 for MNIST, 16 for scikit-learn's digits

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])
