"""Small datasets that need no files: scikit-learn's 8x8 ``digits`` and seeded synthetic data."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

DIGITS_TEST_SIZE = 360  # the last ~20% of the 1797 samples; those are balanced within 33-37 per class


def load_digits(root=None, download: bool = False) -> tuple[torch.Tensor, ...]:
    """scikit-learn's digits as ``(x_train, y_train, x_test, y_test)``: (N, 1, 8, 8) float32 in [0, 1].

    The last 360 samples are the test set, so the split never depends on a seed. ``root`` and ``download``
    are accepted for a uniform loader signature and ignored: the data ship with scikit-learn.
    """
    images, labels = _digits_arrays()
    x = torch.from_numpy(images).float().div_(16).reshape(-1, 1, 8, 8)  # pixel values are 0..16
    y = torch.from_numpy(labels).long()
    cut = len(x) - DIGITS_TEST_SIZE
    return x[:cut], y[:cut], x[cut:], y[cut:]


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The digits as scikit-learn's ``load_digits(return_X_y=True)`` gives them, read from the CSV it ships.

    Importing scikit-learn to read a 1797-row CSV took half a second of lth-train's start-up; ``find_spec`` finds
    the file without importing the package. Falls back to scikit-learn when its layout differs.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.origin:
        csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
        if csv.is_file():
            data = np.loadtxt(csv, delimiter=",")  # what sklearn.datasets.load_digits does
            return data[:, :-1], data[:, -1].astype(int)
    from sklearn.datasets import load_digits as sklearn_digits  # optional dependency, imported on use

    return sklearn_digits(return_X_y=True)


def make_synthetic(
    root=None,
    download: bool = False,
    num_samples: int = 1000,
    num_test: int | None = None,
    shape: Sequence[int] = (1, 8, 8),
    num_classes: int = 10,
    noise: float = 0.25,
    seed: int = 0,
) -> tuple[torch.Tensor, ...]:
    """Gaussian blobs around one random centroid per class, clipped to [0, 1]; identical for the same seed.

    Args:
        root: ignored (uniform loader signature).
        download: ignored.
        num_samples: training samples.
        num_test: test samples; None uses ``num_samples // 5``.
        shape: shape of one input, e.g. (1, 28, 28) to stand in for MNIST in benchmarks.
        num_classes: number of classes; labels are balanced.
        noise: standard deviation around the centroids; larger is harder.
        seed: seed for centroids, samples and labels.
    """
    num_test = num_samples // 5 if num_test is None else num_test
    for what, value in (("num_samples", num_samples), ("num_classes", num_classes)):
        if value < 1:
            raise ValueError(f"{what}={value!r} must be >= 1.")
    if num_test < 0 or noise < 0:
        raise ValueError(f"num_test={num_test!r} and noise={noise!r} must be >= 0.")
    shape = tuple(shape)
    generator = torch.Generator().manual_seed(seed)
    centroids = torch.rand((num_classes, *shape), generator=generator)
    splits = []
    for count in (num_samples, num_test):
        labels = torch.arange(count) % num_classes
        labels = labels[torch.randperm(count, generator=generator)]
        points = centroids[labels] + noise * torch.randn((count, *shape), generator=generator)
        splits += [points.clamp_(0, 1), labels]
    return tuple(splits)
