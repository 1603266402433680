"""A user's own DataModule, outside the package: 1-D signals of 40 samples, 3 classes (tests/test_your_data.py)."""

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset


class Signals(pl.LightningDataModule):
    """Noisy sines whose frequency is the class. No ``input_shape`` attribute: lth-train reads it off a batch."""

    def __init__(self, num_samples: int = 600, batch_size: int = 32, seed: int = 0, with_test: bool = True):
        super().__init__()
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.num_classes = 3
        if not with_test:
            self.test_dataloader = None  # as if the class had none

    def setup(self, stage=None):
        g = torch.Generator().manual_seed(self.seed)
        y = torch.randint(0, 3, (self.num_samples,), generator=g)
        t = torch.linspace(0, 1, 40)
        x = torch.sin(2 * torch.pi * (y[:, None] + 1) * t) + 1.5 * torch.randn(self.num_samples, 40, generator=g)
        n = self.num_samples
        splits = ((0, n // 2), (n // 2, 3 * n // 4), (3 * n // 4, n))
        self.train, self.val, self.test = (TensorDataset(x[a:b], y[a:b]) for a, b in splits)

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=256)

    def test_dataloader(self):
        return DataLoader(self.test, batch_size=256)


class NoValidation(pl.LightningDataModule):
    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)))


class NoClasses(Signals):
    """Knows no num_classes: fine for a model given its own, an error for one that needs it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        del self.num_classes


class SetupFails(Signals):
    def setup(self, stage=None):
        raise RuntimeError("cannot open /data/signals.h5")


class EmptyTraining(Signals):
    """No training sample: a shuffling DataLoader refuses it ("num_samples should be a positive integer")."""

    def setup(self, stage=None):
        super().setup(stage)
        self.train = TensorDataset(torch.zeros(0, 40), torch.zeros(0, dtype=torch.long))


class EmptyValidation(Signals):
    """No validation sample: validation would log no val/loss, and each round needs one to pick its best step."""

    def setup(self, stage=None):
        super().setup(stage)
        self.val = TensorDataset(torch.zeros(0, 40), torch.zeros(0, dtype=torch.long))


class LabelsFrom1(Signals):
    """Labels 1..3 for 3 classes (counted from 1, a common slip): class 3 has no output."""

    def setup(self, stage=None):
        super().setup(stage)
        self.train, self.val, self.test = (
            TensorDataset(d.tensors[0], d.tensors[1] + 1) for d in (self.train, self.val, self.test)
        )


class NaNInputs(Signals):
    """One training input is all NaN (a corrupt sample): its batch's loss is NaN, and so are the weights after."""

    def setup(self, stage=None):
        super().setup(stage)
        x, y = self.train.tensors
        x = x.clone()
        x[7] = float("nan")
        self.train = TensorDataset(x, y)
