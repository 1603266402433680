"""The callback in a ``lightning.pytorch.Trainer`` (the ``lightning`` package, a second name for PyTorch Lightning
with classes of its own): it prunes, checkpoints its state, and RoundLogger writes the round rows through the
``lightning`` package's WandbLogger (offline, read back with the SDK's reader)."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lth_wandb import LotteryTicket
from lth_wandb.tracking.rounds import RoundLogger
from lth_wandb.tracking.runfiles import find_runs, read_run

L = pytest.importorskip("lightning.pytorch")  # in the dev extra
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import WandbLogger  # noqa: E402


class Net(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 3))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def test_lottery_ticket_in_a_lightning_pytorch_trainer(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 20, generator=g)
    data = DataLoader(TensorDataset(x, x[:, :3].argmax(1)), batch_size=32)
    lottery = LotteryTicket(rounds=2, epochs_per_round=1, prune_rate=0.5, seed=0)
    logger = WandbLogger(project="lth", save_dir=str(tmp_path), mode="offline")
    trainer = L.Trainer(
        callbacks=[lottery, RoundLogger(lottery), ModelCheckpoint(tmp_path / "ckpt", save_last=True)],
        logger=logger,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Net(), data, data)
    logger.experiment.finish()
    assert [round(h["density"], 4) for h in lottery.history] == [1.0, 0.5, 0.25]
    (run_dir,) = find_runs(tmp_path / "wandb")
    rows = [r for r in read_run(run_dir).history if "round/density" in r]
    assert [(r["round"], r["round/density"]) for r in rows] == [(0, 1.0), (1, 0.5), (2, 0.25)]

    checkpoint = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    (state,) = [v for k, v in checkpoint["callbacks"].items() if k.startswith("LotteryTicket")]
    restored = LotteryTicket(rounds=2, epochs_per_round=1, prune_rate=0.5, seed=0)
    restored.load_state_dict(state)
    assert [h["density"] for h in restored.history] == [h["density"] for h in lottery.history]
