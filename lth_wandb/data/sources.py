"""The dataset registry: name -> how to load it and what it looks like.

Every loader returns ``(x_train, y_train, x_test, y_test)``: float32 images (N, C, H, W) in [0, 1] and int64
labels, and accepts ``root`` and ``download`` even when it needs neither, so callers treat them alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from lth_wandb.data.cifar import NUM_CLASSES as CIFAR_CLASSES
from lth_wandb.data.cifar import load_cifar10
from lth_wandb.data.mnist import NUM_CLASSES as IDX_CLASSES
from lth_wandb.data.mnist import load_idx_dataset
from lth_wandb.data.toy import load_digits, make_synthetic

Arrays = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Source:
    """One registered dataset.

    Attributes:
        load: ``load(root=None, download=False, **kwargs) -> (x_train, y_train, x_test, y_test)``.
        input_shape: (C, H, W) of one image, known without loading anything.
        num_classes: number of labels.
        val_size: the usual validation hold-out from the training split (count or fraction).
    """

    load: Callable[..., Arrays]
    input_shape: tuple[int, ...]
    num_classes: int
    val_size: int | float

    def describe(self, **kwargs) -> tuple[tuple[int, ...], int]:
        """``(input_shape, num_classes)``, honouring loader kwargs that change them (synthetic data)."""
        return tuple(kwargs.get("shape", self.input_shape)), int(kwargs.get("num_classes", self.num_classes))


DATASETS: dict[str, Source] = {
    # 5000 validation images as in Frankle & Carbin; 10% for the small sets.
    "digits": Source(load_digits, (1, 8, 8), 10, 0.1),
    "synthetic": Source(make_synthetic, (1, 8, 8), 10, 0.1),
    "mnist": Source(partial(load_idx_dataset, "mnist"), (1, 28, 28), IDX_CLASSES, 5000),
    "fashion_mnist": Source(partial(load_idx_dataset, "fashion_mnist"), (1, 28, 28), IDX_CLASSES, 5000),
    "kmnist": Source(partial(load_idx_dataset, "kmnist"), (1, 28, 28), IDX_CLASSES, 5000),
    "cifar10": Source(load_cifar10, (3, 32, 32), CIFAR_CLASSES, 5000),
}


def get(name: str) -> Source:
    """The registered dataset ``name``.

    Raises:
        ValueError: ``name`` is not registered; the message lists the valid names.
    """
    if name not in DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}; valid datasets: {sorted(DATASETS)}. "
            "Hint: 'digits' and 'synthetic' need no files."
        )
    return DATASETS[name]
