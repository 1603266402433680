"""The Classifier's learning-rate schedules, by name: what ``configure_optimizers`` returns for each.

``multistep`` is open_lth's schedule (``training/optimizers.py``, ``get_lr_schedule``): the rate times ``gamma`` at
every milestone epoch, and with ``warmup_epochs`` a linear warm-up from 0 over the first epochs, computed per
iteration as open_lth does: factor(it) = gamma^(milestones passed) * min(1, it / warm-up iterations).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

import torch

SCHEDULERS = ("none", "step", "cosine", "multistep")


class WarmupMultiStep:
    """open_lth's per-iteration factor; an object rather than a lambda so that LambdaLR checkpoints it."""

    def __init__(self, milestone_steps: Sequence[int], gamma: float, warmup_steps: int):
        self.milestone_steps, self.gamma, self.warmup_steps = list(milestone_steps), gamma, warmup_steps

    def __call__(self, iteration: int) -> float:
        warm = min(1.0, iteration / self.warmup_steps) if self.warmup_steps else 1.0
        return self.gamma ** bisect.bisect(self.milestone_steps, iteration) * warm


def check_milestones(milestones: Any, warmup_epochs: Any, scheduler: str) -> tuple[list[int], int]:
    """Milestones: increasing epochs >= 1 (``multistep`` needs at least one); warm-up: whole epochs >= 0, only with
    ``multistep``."""
    steps = list(milestones or [])
    if any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in steps) or steps != sorted(set(steps)):
        raise ValueError(
            f"milestones={steps!r} must be increasing epochs >= 1. Hint: [80, 120] is open_lth's CIFAR schedule"
        )
    if scheduler == "multistep" and not steps:
        raise ValueError("scheduler='multistep' needs milestones (epochs). Hint: milestones=[80, 120]")
    if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
        raise ValueError(f"warmup_epochs={warmup_epochs!r} must be a whole number of epochs >= 0. Hint: 0 for none")
    if warmup_epochs and scheduler != "multistep":
        raise ValueError(
            f"warmup_epochs={warmup_epochs} is part of scheduler 'multistep', not {scheduler!r}. Hint: "
            "scheduler=multistep, or warmup_epochs=0"
        )
    return steps, warmup_epochs


def build(optimizer: torch.optim.Optimizer, hp: Any, module: Any) -> dict[str, Any] | None:
    """The ``lr_scheduler`` entry for ``hp.scheduler`` (None for ``"none"``); ``module.trainer`` is read only when
    the schedule needs the run's length."""
    if hp.scheduler == "none":
        return None
    interval = "epoch"
    if hp.scheduler == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=hp.step_size, gamma=hp.gamma)
    elif hp.scheduler == "cosine":
        epochs = hp.cosine_epochs or module.trainer.max_epochs
        if not epochs or epochs < 1:
            raise ValueError(
                f"scheduler='cosine' needs a finite length, but cosine_epochs={hp.cosine_epochs} and "
                f"trainer.max_epochs={module.trainer.max_epochs}. Hint: set cosine_epochs or max_epochs."
            )
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    elif not hp.get("warmup_epochs"):
        # Epoch-interval: the same rates as open_lth's per-iteration schedule when milestones are whole epochs.
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(hp.milestones), gamma=hp.gamma)
    else:
        trainer = module.trainer
        per_epoch = trainer.estimated_stepping_batches // max(1, trainer.max_epochs)
        factor = WarmupMultiStep([m * per_epoch for m in hp.milestones], hp.gamma, hp.warmup_epochs * per_epoch)
        scheduler, interval = torch.optim.lr_scheduler.LambdaLR(optimizer, factor), "step"
    return {"scheduler": scheduler, "interval": interval}
