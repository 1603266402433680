"""Your own ``LightningDataModule`` in ``lth-train`` (``data._target_=mypkg.MyDataModule``).

:class:`YourData` wraps it so that lth-train sees what it sees in its own datasets: the sizes a model needs, and
``val_dataloader()`` as ``[validation, test]``, so ``test/acc`` is measured at every validation (and so at each
round's early-stop iteration) without anything being selected on it.
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.model_helpers import is_overridden


class YourData(pl.LightningDataModule):
    """A user's DataModule, as lth-train needs it.

    Sizes come from the DataModule's attributes when it has them (``input_shape``, ``num_classes``), else from
    the first training batch (the input shape; classes cannot be read off one batch).

    Args:
        inner: the user's DataModule. It must implement ``train_dataloader`` and ``val_dataloader``;
            ``test_dataloader`` is optional (without it, no ``test/acc`` is recorded).

    Raises:
        TypeError: ``inner`` is not a LightningDataModule.
        ValueError: it lacks ``train_dataloader`` or ``val_dataloader``.
    """

    def __init__(self, inner: pl.LightningDataModule):
        super().__init__()
        if not isinstance(inner, pl.LightningDataModule):
            raise TypeError(
                f"data._target_ built a {type(inner).__name__}, not a LightningDataModule. Hint: subclass "
                "pytorch_lightning.LightningDataModule with train_dataloader() and val_dataloader()"
            )
        for hook, why in (("train_dataloader", "to train on"), ("val_dataloader", "to pick each round's early-stop "
                          "iteration on (never on test data)")):  # fmt: skip
            if not is_overridden(hook, inner, pl.LightningDataModule):
                raise ValueError(f"{type(inner).__name__} has no {hook}(); lth-train needs one {why}. Hint: add it")
        self.inner = inner
        self.has_test = is_overridden("test_dataloader", inner, pl.LightningDataModule)
        self._first_batch_shape: tuple[int, ...] | None = None

    @property
    def name(self) -> str:
        return type(self.inner).__name__

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input: the DataModule's ``input_shape``, else read off the first training batch."""
        shape = getattr(self.inner, "input_shape", None)
        if shape is not None:
            return tuple(shape)
        if self._first_batch_shape is None:
            x = _inputs(next(iter(self.inner.train_dataloader())), self.name)
            self._first_batch_shape = tuple(x.shape[1:])
        return self._first_batch_shape

    @property
    def in_features(self) -> int:
        return math.prod(self.input_shape)

    @property
    def num_classes(self) -> int:
        classes = getattr(self.inner, "num_classes", None)
        if classes is None:
            raise ValueError(
                f"{self.name} does not say how many classes it has, and the model needs num_classes. Hint: set "
                "self.num_classes in its __init__, or give +model.num_classes=N"
            )
        return int(classes)

    def steps_per_epoch(self) -> int:
        return len(self.inner.train_dataloader())

    def prepare_data(self) -> None:
        self.inner.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        self.inner.setup(stage)

    def train_dataloader(self):
        return self.inner.train_dataloader()

    def val_dataloader(self):
        """``[validation, test]`` when the DataModule has test data: ``Classifier`` logs ``test/*`` on loader 1."""
        val = self.inner.val_dataloader()
        return [val, self.inner.test_dataloader()] if self.has_test else val

    def test_dataloader(self):
        return self.inner.test_dataloader()

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.inner.load_state_dict(state_dict)


def _inputs(batch: Any, name: str) -> torch.Tensor:
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise ValueError(
        f"{name}'s training batches are {type(batch).__name__}, not (inputs, labels) tensors. Hint: return "
        "(x, y) batches, or give the model its sizes (+model.in_features=...)"
    )
