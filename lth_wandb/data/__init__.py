"""Datasets without torchvision: MNIST-family IDX files, CIFAR-10 batches, sklearn digits, synthetic data.

``DATASETS``/``get`` is the registry; ``ClassificationDataModule`` turns any entry into Lightning loaders;
``YourData`` adapts your own LightningDataModule for lth-train; ``ImageNetFolder`` reads ImageNet's folder layout.
"""

from __future__ import annotations

from lth_wandb.data.datamodule import ClassificationDataModule
from lth_wandb.data.files import DatasetNotFoundError, DatasetUnreadableError
from lth_wandb.data.idx import read_idx
from lth_wandb.data.imagenet import ImageNetFolder
from lth_wandb.data.sources import DATASETS, Source, get
from lth_wandb.data.yours import YourData

__all__ = [
    "DATASETS",
    "ClassificationDataModule",
    "DatasetNotFoundError",
    "DatasetUnreadableError",
    "ImageNetFolder",
    "Source",
    "YourData",
    "get",
    "read_idx",
]
