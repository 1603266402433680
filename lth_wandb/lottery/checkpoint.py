"""Checkpoints that survive kills and full disks: ``last.ckpt`` at every epoch end, written atomically.

Lightning's ``ModelCheckpoint(save_top_k=0, save_last=True)`` saves ``last`` at every epoch up to 2.5 but, from
2.6, only after a top-k save in the same step: an lth-train run killed before the end left no checkpoint at all.
:class:`LastCheckpoint` does the one thing resuming needs, the same on every Lightning version. Its writes go
through :class:`AtomicCheckpointIO`: Lightning writes the file in place, so a kill or a full disk mid-write
leaves a truncated ``last.ckpt`` that no longer loads; here the previous one stays until the new one is whole.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Checkpoint

from lth_wandb import atomic

LAST = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, but a file is replaced only once its successor is complete on disk."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"storage_options={storage_options!r} is not supported by {type(self).__name__}")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Serialised in memory first, as Lightning does: torch's zip writer reports a full disk as a RuntimeError
        # ("unexpected pos"), while a plain write raises the OSError (ENOSPC) that lth-train explains in one line.
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        # Checkpoints hold the run's whole state; unlike tickets they are not meant to be shared.
        atomic.write_bytes(path, buffer.getbuffer(), mode=0o600)


class LastCheckpoint(Checkpoint):
    """Saves ``<dirpath>/last.ckpt`` at the end of every training epoch and, optionally, every N optimizer steps.

    A ``Checkpoint`` subclass, so Lightning runs it after every other callback's epoch-end hook: the file holds the
    round a :class:`~lth_wandb.lottery.callback.LotteryTicket` has just finished and the rows its loggers have just
    written.

    Args:
        dirpath: folder of ``last.ckpt``.
        every_n_steps: also save every N optimizer steps (for long epochs). None: at epoch ends only. Resuming
            from such a mid-epoch checkpoint is not bit-exact: the data order of the rest of the epoch differs.
    """

    def __init__(self, dirpath: str | os.PathLike, every_n_steps: int | None = None):
        if every_n_steps is not None and (
            isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1
        ):
            raise ValueError(
                f"every_n_steps={every_n_steps!r} must be a whole number >= 1, or None to save at epoch ends only"
            )
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps

    @property
    def last_model_path(self) -> str:
        """Path of the newest checkpoint ("" before the first save); the name ``ModelCheckpoint`` uses."""
        path = self.dirpath / LAST
        return str(path) if path.is_file() else ""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps and step and step % self.every_n_steps == 0 and not _epoch_ends(trainer, batch_idx):
            self._save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        self._save(trainer)

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        trainer.save_checkpoint(self.dirpath / LAST, weights_only=False)  # rank 0 writes; every rank must call it


def _epoch_ends(trainer: pl.Trainer, batch_idx: int) -> bool:
    """The epoch-end save is about to follow: no need to write the same state twice."""
    return batch_idx + 1 >= trainer.num_training_batches
