"""How long each round of a ``LotteryTicket`` run is, and so how long the Trainer runs.

Round 0 trains ``epochs_per_round`` epochs, or fewer when an early bird ends it (``round0_epochs``). Later rounds
train ``epochs_per_round`` epochs, less what late rewinding to step k skips. With ``steps_per_round`` every length
is in optimizer steps instead.
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl

from lth_wandb.lottery import guards
from lth_wandb.lottery.settings import PruningSettings

# Lightning warns that max_epochs defaults to 1000 when it is unset; here the callback sets it, so the warning
# would only mislead.
LIGHTNING_DEFAULT_MAX_EPOCHS = 1000


class RoundSchedule:
    """The round lengths of one run. Part of the callback's checkpoint state (:meth:`state_dict`)."""

    def __init__(self, settings: PruningSettings):
        self.rounds, self.epochs_per_round = settings.rounds, settings.epochs_per_round
        self.rewind, self.steps_per_round = settings.rewind, settings.steps_per_round
        self.steps_per_epoch = 0  # optimizer steps per epoch, known from on_train_start
        self.round0_epochs = settings.epochs_per_round  # shorter once an early bird ended round 0

    @property
    def total_epochs(self) -> int:
        return self.round0_epochs + self.rounds * self.rewound_epochs

    @property
    def rewound_epochs(self) -> int:
        # Late rewinding to step k restarts the round k steps in, so it trains what round 0 trained after step k
        # (Frankle et al. 2019, Alg. 2: from W_k to iteration T) and its schedule ends where round 0's ended.
        if not isinstance(self.rewind, int) or not self.steps_per_epoch:
            return self.epochs_per_round
        return self.epochs_per_round - self.rewind // self.steps_per_epoch

    def round_end_step(self, round: int) -> int | None:
        if self.steps_per_round is None:
            return None
        shorter = self.rewind if isinstance(self.rewind, int) else 0
        return self.steps_per_round + round * (self.steps_per_round - shorter)

    def round_of_epoch(self, epoch: int) -> int:
        if epoch < self.round0_epochs:
            return 0
        return 1 + (epoch - self.round0_epochs) // self.rewound_epochs

    def round_ends(self, trainer: pl.Trainer, round: int) -> bool:
        """At an epoch end: does ``round`` end here?"""
        if self.steps_per_round is not None:
            return trainer.global_step >= self.round_end_step(round)
        return self.round_of_epoch(trainer.current_epoch + 1) > self.round_of_epoch(trainer.current_epoch)

    def set_max_epochs(self, trainer: pl.Trainer) -> None:
        """At setup: the Trainer's length from the rounds, or a check of the one it was given."""
        if self.steps_per_round is not None:
            trainer.fit_loop.epoch_loop.max_steps = self.round_end_step(self.rounds)
            return
        current = trainer.fit_loop.max_epochs
        if current in (None, -1, LIGHTNING_DEFAULT_MAX_EPOCHS):
            trainer.fit_loop.max_epochs = self.total_epochs
        else:
            guards.check_max_epochs(current, self.total_epochs, self.rounds, self.epochs_per_round)

    def start(self, trainer: pl.Trainer) -> None:
        """At train start: learn the steps per epoch, refuse a rewind step past round 0, set the final length."""
        if self.steps_per_round is not None:
            guards.check_rewind_step(self.rewind, self.steps_per_round)
            batches, accumulate = trainer.num_training_batches, trainer.accumulate_grad_batches
            steps_per_epoch = math.ceil(batches / accumulate) if math.isfinite(batches) else 0
            guards.check_step_rounds_schedule(self.rewind, self.steps_per_round, steps_per_epoch, self.rounds, trainer)
            trainer.fit_loop.max_epochs = -1  # the step count ends the fit (see set_max_epochs)
            return
        # max_epochs is still (rounds + 1) * epochs_per_round (setup set it); late rewinding shortens rounds.
        self.steps_per_epoch = trainer.estimated_stepping_batches // max(1, trainer.fit_loop.max_epochs)
        guards.check_rewind_step(self.rewind, self.steps_per_epoch * self.epochs_per_round)
        guards.check_rewind_epochs(self.rewind, self.steps_per_epoch, self.epochs_per_round, trainer)
        trainer.fit_loop.max_epochs = self.total_epochs

    def end_round0(self, trainer: pl.Trainer, epochs: int) -> None:
        """Round 0 ends after ``epochs`` epochs (an early bird): the Trainer runs that many fewer."""
        self.round0_epochs = epochs
        trainer.fit_loop.max_epochs = self.total_epochs

    def state_dict(self) -> dict[str, Any]:
        return {"round0_epochs": self.round0_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.round0_epochs = state.get("round0_epochs", self.epochs_per_round)  # checkpoints before early birds
