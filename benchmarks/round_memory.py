"""What LotteryTicket keeps in memory as rounds go by: every round's weights in RAM vs spilled to disk.

LeNet-300-100 (266K weights) on random data, ``--rounds`` rounds of a few steps at 20% per round. After each round
the bytes of every tensor the callback holds (θ0, the rewind point, each round's mask and trained weights) are
counted, with LotteryTicket(spill_dir=None) and with spill_dir set (lth-train's default: <run folder>/rounds).
Prints a table of bytes per round and, last, ``held_growth_per_round_ram=<bytes> held_growth_per_round_spill=<bytes>
bit_masks_per_round=<bytes>``: with spilling, the growth per round is the bit-packed mask.

    python benchmarks/round_memory.py [--rounds 10] [--steps 4]
"""

from __future__ import annotations

import argparse
import tempfile

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lth_wandb import LotteryTicket
from lth_wandb.models import Classifier, LeNet300100


class Held(pl.Callback):
    """After each epoch (one round each): bytes of distinct tensors the LotteryTicket holds."""

    def __init__(self, lottery: LotteryTicket):
        self.lottery, self.bytes = lottery, []

    def on_train_epoch_end(self, trainer, pl_module):
        states = self.lottery._states
        tensors = [*(states.theta0 or {}).values(), *((states.point or {}).get("weights") or {}).values()]
        tensors += [t for s in states.trained.values() for t in s.values()]
        tensors += [t for s in states.draws.values() for t in s.values()]
        tensors += [bits for packed in states.masks._packed.values() for bits, _ in packed.values()]
        seen = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
        self.bytes.append(sum(seen.values()))


def run(rounds: int, steps: int, spill_dir: str | None) -> list[int]:
    pl.seed_everything(0, verbose=False)
    x, y = torch.randn(60 * steps, 1, 28, 28), torch.randint(0, 10, (60 * steps,))
    loader = DataLoader(TensorDataset(x, y), batch_size=60)
    model = Classifier(LeNet300100(), lr=1.2e-3)
    lottery = LotteryTicket(rounds=rounds, epochs_per_round=1, monitor="train/loss", spill_dir=spill_dir)
    held = Held(lottery)
    trainer = pl.Trainer(
        callbacks=[lottery, held], logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(model, loader)
    return held.bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per round")
    args = parser.parse_args()
    in_ram = run(args.rounds, args.steps, None)
    with tempfile.TemporaryDirectory(prefix="lth-rounds-") as folder:
        spilled = run(args.rounds, args.steps, folder)
    weights = sum(p.numel() for p in LeNet300100().modules()
                  if isinstance(p, nn.Linear) for p in [p.weight])  # fmt: skip
    print(f"{'round':>5} {'in RAM (MiB)':>14} {'spilled (MiB)':>14}")
    for r, (a, b) in enumerate(zip(in_ram, spilled, strict=True)):
        print(f"{r:>5} {a / 2**20:>14.3f} {b / 2**20:>14.3f}")
    per_round = lambda held: (held[-1] - held[1]) / max(1, len(held) - 2)  # noqa: E731  (round 0 holds θ0 once)
    print(
        f"held_growth_per_round_ram={per_round(in_ram):.0f} held_growth_per_round_spill={per_round(spilled):.0f} "
        f"bit_masks_per_round={(weights + 7) // 8}"
    )


if __name__ == "__main__":
    main()
