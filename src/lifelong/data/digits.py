"""scikit-learn's handwritten digits: the embedded default data set (no download needed).

1,797 grey-scale 8x8 images of the digits 0-9 with pixel values 0..16 (UCI "Optical
Recognition of Handwritten Digits", test part, as shipped with scikit-learn). The train/test
split is fixed: a permutation drawn with ``numpy.random.RandomState(0)`` puts 30% of the images
(539) in the test set, so every run and every machine sees the same split.
"""

from __future__ import annotations

import numpy as np
import torch

from lifelong.data.base import ImageDataset

TEST_FRACTION = 0.3  # share of the 1,797 images held out as the fixed test set
SPLIT_SEED = 0  # seed of the fixed train/test permutation (independent of the run's --seed)


def load_digits_dataset() -> ImageDataset:
    """Load the digits as uint8 tensors with the fixed split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)  # values 0..16, exactly representable
    labels = bunch.target.astype(np.int64)
    order = np.random.RandomState(SPLIT_SEED).permutation(len(labels))
    n_test = round(TEST_FRACTION * len(labels))
    test, train = order[:n_test], order[n_test:]
    return ImageDataset(
        name="digits",
        x_train=torch.from_numpy(images[train].copy()),
        y_train=torch.from_numpy(labels[train].copy()),
        x_test=torch.from_numpy(images[test].copy()),
        y_test=torch.from_numpy(labels[test].copy()),
        n_classes=10,
        max_value=16,
    )
