"""Early-bird tickets in a ``LotteryTicket`` run (You et al., ICLR 2020): end round 0 once a mask has stopped
changing, then carry on as IMP.

Which mask (``early_bird_mask``):

- ``"channels"``, the paper's: the channel mask of the BatchNorm scaling factors (network slimming), the lowest
  ``early_bird_ratio`` of all |γ| pruned (``analysis.early_bird.channel_masks``). As in the authors' code, the
  untrained network's mask is the first in the window, and while the early bird searches (round 0, until it fires)
  the L1 penalty's subgradient ``early_bird_l1 · sign(γ)`` is added to every γ's gradient before each optimizer step.
- ``"weights"``, lth-wandb's variant for networks without BatchNorm: the mask round 1 would get if round 0 ended
  now, the run's own criterion, ``prune_rate``, ``scope`` and ``layer_rates`` applied to the current weights. Its
  window starts at the first epoch end, because criteria that compare with θ0, such as movement, score every weight 0
  before training; so round 0 ends at epoch ``early_bird_window`` at the earliest (``"channels"``: one sooner).

The paper prunes the channels of its early-bird ticket and retrains that network; here the early bird only ends
round 0, and round 1 is pruned by the run's criterion as in IMP.

Logged each epoch of round 0 with ``pl_module.log``, so any logger gets them: ``early_bird/distance`` (between
this epoch's mask and the last one), ``early_bird/max_distance`` (the largest distance the rule checks, once the
window is full) and, when it fires, ``early_bird/epoch`` (round 0's length in epochs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from lth_wandb.analysis.early_bird import EarlyBirdDetector, channel_masks, scaling_factors
from lth_wandb.lottery.settings import PruningSettings
from lth_wandb.pruning.masks import Masks


class EarlyBird:
    """The early-bird watch of one run: off unless ``settings.early_bird``. Part of the callback's checkpoint."""

    def __init__(self, settings: PruningSettings):
        self.detector = None
        if settings.early_bird:
            self.detector = EarlyBirdDetector(settings.early_bird_threshold, settings.early_bird_window)
        self.channels = settings.early_bird_mask == "channels"
        self.ratio, self.l1 = settings.early_bird_ratio, settings.early_bird_l1
        earliest = settings.early_bird_window - (1 if self.channels else 0)  # the untrained mask counts for channels
        if settings.early_bird and earliest >= settings.epochs_per_round:
            # Not an error: the run is still IMP, and a sweep over epochs_per_round should not lose its short runs.
            rank_zero_warn(
                f"LotteryTicket: early_bird_window={settings.early_bird_window} with epochs_per_round="
                f"{settings.epochs_per_round}: round 0 can end at epoch {earliest} at the earliest, "
                "so the early bird never ends it early. Hint: more epochs_per_round (round 0's longest length) or a "
                "smaller early_bird_window"
            )
        self.rewind = settings.rewind
        self.epoch: int | None = None  # round 0's length in epochs, once the early bird fired
        self.logged: dict[str, float] = {}  # what the last epoch end logged (the round's metrics include it)
        self._factors: list[nn.Parameter] = []  # the BatchNorm scaling factors, for "channels"

    @property
    def searching(self) -> bool:
        """Watching masks in round 0, not fired yet."""
        return self.detector is not None and self.epoch is None

    def check_model(self, module: nn.Module) -> None:
        """The paper's channel masks need BatchNorm scaling factors.

        Raises:
            ValueError: ``early_bird_mask="channels"`` on a module without an affine BatchNorm.
        """
        if self.detector is not None and self.channels and not scaling_factors(module):
            raise ValueError(
                f"early_bird_mask='channels' ranks BatchNorm scaling factors, and {type(module).__name__} has no "
                "affine BatchNorm. Hint: early_bird_mask='weights' (lth-wandb's unstructured variant) for networks "
                "without BatchNorm"
            )

    def start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """At train start: find the scaling factors; at step 0 of a channel watch, the untrained network's mask goes
        first into the window (the authors' code draws one before the first epoch)."""
        if self.detector is None or not self.channels:
            return
        self._factors = list(scaling_factors(pl_module).values())
        if trainer.global_step == 0 and not self.detector.queue:
            self.detector.update(channel_masks(scaling_factors(pl_module), self.ratio))

    def penalise(self, optimizer: torch.optim.Optimizer) -> None:
        """Before ``optimizer``'s step while searching channels: add the L1 subgradient λ·sign(γ) to the gradient of
        every scaling factor it steps (network slimming's sparsity penalty λ·Σ|γ|)."""
        if not (self.channels and self.l1 and self.searching):
            return
        stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
        live = [g for g in self._factors if g.grad is not None and id(g) in stepped]
        if live:
            torch._foreach_add_([g.grad for g in live], torch._foreach_sign([g.detach() for g in live]), alpha=self.l1)

    def fires(self, trainer: pl.Trainer, pl_module: pl.LightningModule, would_be: Callable[[], Masks]) -> bool:
        """At an epoch end of round 0: add the channel mask, or ``would_be()`` (round 1's mask from the weights now),
        to the watch; True when round 0 ends here."""
        if not self.searching:
            return False
        mask = channel_masks(scaling_factors(pl_module), self.ratio) if self.channels else would_be()
        settled = self.detector.update(mask)
        self.logged = {}
        if self.detector.last_distance is not None:
            self.logged["early_bird/distance"] = float(self.detector.last_distance)
        if self.detector.max_distance is not None:
            self.logged["early_bird/max_distance"] = float(self.detector.max_distance)
        for key, value in self.logged.items():
            pl_module.log(key, value)
        # Late rewinding to step k needs round 0 to run past k: the rounds after it restart there.
        past_rewind = not isinstance(self.rewind, int) or trainer.global_step > self.rewind
        # Every rank must end round 0 at the same epoch, whatever rounding did locally.
        if not trainer.strategy.broadcast(settled and past_rewind, src=0):
            return False
        self.epoch = trainer.current_epoch + 1
        self.logged["early_bird/epoch"] = float(self.epoch)
        pl_module.log("early_bird/epoch", float(self.epoch))
        d = self.detector
        rank_zero_info(
            f"LotteryTicket: early bird at epoch {self.epoch}: the mask moved at most {d.max_distance:.3g} "
            f"(threshold {d.threshold:g}) over the last {d.window} masks, so round 0 ends here and pruning starts"
        )
        return True

    def entry(self, round: int) -> dict[str, Any]:
        """What round ``round``'s history entry records: round 0's ``early_bird_epoch`` (None: it did not fire)."""
        return {"early_bird_epoch": self.epoch} if self.detector is not None and round == 0 else {}

    def state_dict(self) -> dict[str, Any]:
        if self.detector is None:
            return {}
        return {"early_bird": {"epoch": self.epoch, "detector": self.detector.state_dict()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("early_bird")
        if self.detector is not None and saved is not None:
            self.epoch = saved["epoch"]
            self.detector.load_state_dict(saved["detector"])
