"""Early-bird tickets in a ``LotteryTicket`` run (You et al., ICLR 2020): end round 0 once the mask it would hand
to round 1 has stopped changing, then carry on as IMP.

Which mask: the one round 1 would get if round 0 ended now, the run's own criterion, ``prune_rate``, ``scope`` and
``layer_rates`` applied to the current weights. The paper prunes to its final target ratio in one shot; IMP's
round 0 decides only round 1's mask, so that is the mask whose settling matters here. (The paper also puts the mask
of the untrained network in its queue; here the queue starts at the first epoch end, because criteria that compare
with θ0, such as movement, score every weight 0 there. So round 0 ends at epoch ``early_bird_window`` at the
earliest, where the paper could stop one epoch sooner.)

Logged each epoch of round 0 with ``pl_module.log``, so any logger gets them: ``early_bird/distance`` (between
this epoch's mask and the last one), ``early_bird/max_distance`` (the largest distance the rule checks, once the
window is full) and, when it fires, ``early_bird/epoch`` (round 0's length in epochs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_warn

from lth_wandb.analysis.early_bird import EarlyBirdDetector
from lth_wandb.lottery.settings import PruningSettings
from lth_wandb.pruning.masks import Masks


class EarlyBird:
    """The early-bird watch of one run: off unless ``settings.early_bird``. Part of the callback's checkpoint."""

    def __init__(self, settings: PruningSettings):
        self.detector = None
        if settings.early_bird:
            self.detector = EarlyBirdDetector(settings.early_bird_threshold, settings.early_bird_window)
        if settings.early_bird and settings.early_bird_window >= settings.epochs_per_round:
            # Not an error: the run is still IMP, and a sweep over epochs_per_round should not lose its short runs.
            rank_zero_warn(
                f"LotteryTicket: early_bird_window={settings.early_bird_window} with epochs_per_round="
                f"{settings.epochs_per_round}: round 0 can end at epoch {settings.early_bird_window} at the earliest, "
                "so the early bird never ends it early. Hint: more epochs_per_round (round 0's longest length) or a "
                "smaller early_bird_window"
            )
        self.rewind = settings.rewind
        self.epoch: int | None = None  # round 0's length in epochs, once the early bird fired

    def fires(self, trainer: pl.Trainer, pl_module: pl.LightningModule, would_be: Callable[[], Masks]) -> bool:
        """At an epoch end of round 0: add ``would_be()`` (round 1's mask from the weights now) to the watch;
        True when round 0 ends here."""
        if self.detector is None or self.epoch is not None:
            return False
        settled = self.detector.update(would_be())
        if self.detector.last_distance is not None:
            pl_module.log("early_bird/distance", self.detector.last_distance)
        if self.detector.max_distance is not None:
            pl_module.log("early_bird/max_distance", self.detector.max_distance)
        # Late rewinding to step k needs round 0 to run past k: the rounds after it restart there.
        past_rewind = not isinstance(self.rewind, int) or trainer.global_step > self.rewind
        # Every rank must end round 0 at the same epoch, whatever rounding did locally.
        if not trainer.strategy.broadcast(settled and past_rewind, src=0):
            return False
        self.epoch = trainer.current_epoch + 1
        pl_module.log("early_bird/epoch", float(self.epoch))
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
