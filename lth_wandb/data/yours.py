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
from torch import nn


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
        self._call("setup", stage)

    def check_loaders(self, test_needed_by: str | None = None) -> None:
        """Refuse now, in one line naming the DataModule, what would fail once training has started: a loader
        hook that raises or yields no batch, or no test data for the setting ``test_needed_by`` (which measures
        test error). Reads one batch of each loader; the global RNG (which a shuffling loader draws from) is left
        as it was, so the run is the same.

        Raises:
            ValueError: naming the hook, what is wrong and a hint.
        """
        if test_needed_by and not self.has_test:
            raise ValueError(
                f"{test_needed_by}=true measures test error, but {self.name} has no test_dataloader(). Hint: give "
                f"{self.name} a test_dataloader(), or {test_needed_by}=false"
            )
        with torch.random.fork_rng(devices=[]):
            for hook in self._hooks():
                self._first_batch(hook)

    def check_labels(self, model: nn.Module) -> None:
        """Refuse labels the classifier ``model`` has no class for (cross_entropy would fail on them mid-run), read
        off each loader's first batch; the number of classes is the size of ``model``'s output on two inputs,
        computed in eval mode (BatchNorm's statistics are left as they were).

        Raises:
            ValueError: naming the hook, the labels found, the classes and a hint.
        """
        training = model.training
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            batches = {hook: _pair(self._first_batch(hook), f"{self.name}.{hook}()") for hook in self._hooks()}
            x = batches["train_dataloader"][0][:2]
            try:
                classes = model.eval()(x).shape[-1]
            except Exception as error:  # the user's model and data: any error is theirs to see, in one line
                raise ValueError(
                    f"the model cannot take {self.name}'s training inputs of shape {tuple(x.shape[1:])} "
                    f"({type(error).__name__}: {_short(error)}). Hint: give the model its input sizes "
                    "(+model.in_features=...), or make the DataModule's input_shape match its batches"
                ) from error
            finally:
                model.train(training)
        for hook, (_, y) in batches.items():
            if y.dtype.is_floating_point or y.is_complex() or y.dim() != 1 or y.numel() == 0:
                continue  # not class indices: the module's own loss decides what they mean
            low, high = int(y.min()), int(y.max())
            if low < 0 or high >= classes:
                raise ValueError(
                    f"{self.name}.{hook}()'s first batch holds labels {low}..{high}, but the model has {classes} "
                    f"classes (0..{classes - 1}). Hint: labels must be class indices 0..N-1 with N = the DataModule's "
                    "num_classes (or +model.num_classes=N)"
                )

    def _hooks(self) -> list[str]:
        return ["train_dataloader", "val_dataloader", *(["test_dataloader"] if self.has_test else [])]

    def _first_batch(self, hook: str) -> Any:
        loader = self._call(hook)
        try:
            batches = len(loader)
        except TypeError:  # an iterable dataset without a length
            batches = None
        batch = next(iter(loader), None) if batches != 0 else None
        if batch is None:
            raise ValueError(
                f"{self.name}.{hook}() yields no batch: its dataset is empty, or smaller than one batch with "
                f"drop_last=True. Hint: check the data {self.name}.setup() loads for this split"
            )
        return batch

    def _call(self, hook: str, *args: Any) -> Any:
        """The DataModule's ``hook``; an error there is reported as the DataModule's, in one line."""
        try:
            return getattr(self.inner, hook)(*args)
        except Exception as error:  # the user's code: any error is theirs to see, in one line
            hint = f"fix {self.name}.{hook}()"
            if "num_samples should be a positive integer" in str(error):  # a shuffling DataLoader of no sample
                hint = f"its dataset is empty: check the data {self.name}.setup() loads for this split"
            raise ValueError(
                f"{self.name}.{hook}() raised {type(error).__name__}: {_short(error)}. Hint: {hint}"
            ) from error

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


def _pair(batch: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and all(isinstance(t, torch.Tensor) for t in batch):
        return batch[0], batch[1]
    raise ValueError(
        f"{what} gives {type(batch).__name__} batches, not (inputs, labels) tensors, which lth-train's classifier "
        "trains on. Hint: return (x, y) batches, or train your own LightningModule (model._target_=...)"
    )


def _short(error: BaseException, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
