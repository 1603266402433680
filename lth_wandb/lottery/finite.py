"""A training loss that stops being a number stops the run, before anything is pruned or saved from it.

A NaN or infinite loss (NaNs in the data, a diverging learning rate) makes NaN gradients and then NaN weights:
the round's best value, its early-stop step and the magnitudes the next round prunes by mean nothing, and a resume
would train the same steps to the same NaN. So the callback refuses to go on, naming the first such step.

The check costs no synchronisation per step (which would stall a GPU): each step's loss tensor is kept, and they
are read together, once an epoch and before a round ends.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch

HINT = "Hint: lower the learning rate (lth-train: optimizer.lr), or look for NaN or infinite values in the data"


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite. ``resumable`` is False: resuming reaches the same step again."""

    resumable = False


class StopOnNonFiniteLoss(pl.Callback):
    """Watches the loss ``training_step`` returns; :meth:`check_loss` raises :class:`NonFiniteLoss` once one of
    them was not finite, on any process. A mixin of ``LotteryTicket``, which checks at every epoch end and before a
    round ends."""

    _losses: list[torch.Tensor]
    _first_step: int = 0  # the optimizer step of _losses[0]

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs: Any, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            return  # manual optimisation returned nothing, or a loss lth-wandb cannot read
        if not getattr(self, "_losses", None):
            self._losses, self._first_step = [], trainer.global_step
        self._losses.append(loss.detach().reshape(()))

    def check_loss(self, trainer: pl.Trainer, round: int) -> None:
        """Raise :class:`NonFiniteLoss` if a loss since the last check was NaN or infinite (on any process)."""
        losses, first = getattr(self, "_losses", []), self._first_step
        self._losses = []
        bad = None
        if losses:
            stacked = torch.stack(losses).float()
            found = torch.nonzero(~torch.isfinite(stacked))  # the one synchronisation, once an epoch
            bad = (first + int(found[0]), float(stacked[found[0]])) if len(found) else None
        if not trainer.strategy.reduce_boolean_decision(bad is not None, all=False):
            return
        what = (
            f"is {'NaN' if math.isnan(bad[1]) else bad[1]} at optimizer step {bad[0]}"
            if bad is not None
            else "is NaN or infinite on another process"
        )
        raise NonFiniteLoss(
            f"the training loss {what} (round {round}): the weights are no longer numbers, so the run stops here and "
            "nothing is pruned or saved from this round; this run cannot continue as it is (a resume would reach "
            f"the same step again): start a new one. {HINT}"
        )
