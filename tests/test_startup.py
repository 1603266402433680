"""Start-up: what lth-train imports before it knows it will train, and the progress display's per-batch work."""

from __future__ import annotations

import subprocess
import sys

import torch

from lth_wandb import LotteryTicket
from lth_wandb.app.progress import RoundProgressBar

HEAVY = ("pytorch_lightning", "wandb", "matplotlib", "optuna", "sklearn", "scipy")


def test_importing_lth_train_leaves_lightning_wandb_and_plotting_unimported():
    """`lth-train --cfg job`, `--help` and a misspelt override need only Hydra and the config schema."""
    probe = f"import sys, lth_wandb.app.train; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_lazy_package_attributes_are_the_classes():
    import lth_wandb
    from lth_wandb.lottery.callback import LotteryTicket as direct
    from lth_wandb.pruning.ticket import Ticket

    assert LotteryTicket is direct and lth_wandb.Ticket is Ticket and "Ticket" in dir(lth_wandb)


def test_progress_density_is_recounted_only_when_the_masks_change():
    lottery = LotteryTicket(rounds=2, epochs_per_round=1)
    lottery.masks = {"w": torch.ones(10, dtype=torch.bool)}
    bar = RoundProgressBar()
    assert bar._density_of(lottery) == "100.0%"
    lottery.masks["w"][:5] = False  # in place: not how the callback changes masks, so the cached text stays
    assert bar._density_of(lottery) == "100.0%"
    lottery.masks = {"w": lottery.masks["w"].clone()}  # a round start or a resume replaces the dict
    assert bar._density_of(lottery) == "50.0%"
