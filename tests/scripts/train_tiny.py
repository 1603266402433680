"""A small LotteryTicket run used by the kill/resume and DDP tests (run as a subprocess).

    python train_tiny.py OUT [--stall-at-epoch E] [--resume] [--ddp] [--shuffle]

Writes OUT/final.safetensors (masks and weights) when training ends; with --ddp every rank writes its masks and
weights at the start of every epoch to OUT/rank<r>_epoch<e>.safetensors. --shuffle: a training DataLoader with
shuffle=True and no generator of its own, so each epoch's order comes from torch's global RNG.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import TinyNet, loaders  # noqa: E402

from lth_wandb import LotteryTicket  # noqa: E402


class Stall(pl.Callback):
    """Mid-epoch, tell the test we are here and wait to be killed."""

    def __init__(self, out: Path, epoch: int):
        self.out, self.epoch = out, epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == 2:
            (self.out / "stalled").write_text(str(trainer.global_step))
            time.sleep(600)


class DumpPerRank(pl.Callback):
    def __init__(self, out: Path, lt: LotteryTicket):
        self.out, self.lt = out, lt

    def on_train_epoch_start(self, trainer, pl_module):
        tensors = {f"mask.{k}": v.to(torch.uint8) for k, v in self.lt.masks.items()}
        tensors.update({f"weight.{k}": v.detach().cpu().clone() for k, v in pl_module.state_dict().items()})
        save_file(tensors, self.out / f"rank{trainer.global_rank}_epoch{trainer.current_epoch}.safetensors")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--stall-at-epoch", type=int)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--ddp", action="store_true")
    parser.add_argument("--shuffle", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    if args.ddp:
        # Scores that differ by rank on purpose (a random criterion seeded by rank): the ranks still train one
        # subnetwork only because rank 0's masks are broadcast.
        rank = int(os.environ.get("LOCAL_RANK", 0))
        lt = LotteryTicket(rounds=3, epochs_per_round=2, prune_rate=0.3, rewind=3, criterion="random", seed=7 + rank)
    else:
        lt = LotteryTicket(rounds=3, epochs_per_round=2, prune_rate=0.3, rewind=3, criterion="movement", seed=7)
    callbacks = [lt, pl.callbacks.ModelCheckpoint(dirpath=args.out / "ckpt", save_last=True, save_top_k=-1)]
    if args.stall_at_epoch is not None:
        callbacks.append(Stall(args.out, args.stall_at_epoch))
    if args.ddp:
        callbacks.append(DumpPerRank(args.out, lt))
    trainer = pl.Trainer(
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=2 if args.ddp else 1,
        strategy="ddp" if args.ddp else "auto",
    )
    train, val = loaders()
    if args.shuffle:
        train = DataLoader(train.dataset, batch_size=train.batch_size, shuffle=True)
    ckpt = args.out / "ckpt" / "last.ckpt" if args.resume else None
    trainer.fit(TinyNet(scheduler=True), train, val, ckpt_path=ckpt)
    if trainer.global_rank == 0:
        tensors = {f"mask.{k}": v.to(torch.uint8) for k, v in lt.masks.items()}
        tensors.update({f"weight.{k}": v.detach().clone() for k, v in trainer.lightning_module.state_dict().items()})
        save_file(tensors, args.out / "final.safetensors")
        (args.out / "history.txt").write_text(repr([(h["round"], h["best_step"], h["best_value"]) for h in lt.history]))


if __name__ == "__main__":
    main()
