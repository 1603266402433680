"""``LotteryTicket``: iterative magnitude pruning with rewinding, as a PyTorch Lightning callback.

Timeline: round 0 trains the dense network for ``epochs_per_round`` epochs; at the first epoch
of round r >= 1 the callback prunes the weights that scored lowest at the end of round r - 1, rewinds every
tensor (and the optimizer and LR schedulers) to the rewind point, and round r trains the sparser network.

Pruning happens at the *start* of the next round rather than at the end of the previous one because Lightning
steps epoch-interval LR schedulers right after ``on_train_epoch_end``: a schedule rewound there would start the
next round one step late.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from os import PathLike
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from lth_wandb.lottery import guards, init_masks
from lth_wandb.lottery.arguments import load_mask_sequence, load_ticket_arg
from lth_wandb.lottery.early_bird import EarlyBird
from lth_wandb.lottery.finite import StopOnNonFiniteLoss
from lth_wandb.lottery.history import RoundHistory, winning_round
from lth_wandb.lottery.rewind import RoundStates, fresh_values, masked
from lth_wandb.lottery.rng import rng_state, set_rng_state
from lth_wandb.lottery.schedule import RoundSchedule
from lth_wandb.lottery.settings import PruningSettings
from lth_wandb.pruning import criteria
from lth_wandb.pruning import masks as M
from lth_wandb.pruning.prune import prune, shuffle_positions
from lth_wandb.pruning.ticket import Ticket, check_compatible

STATE_VERSION = 1


class LotteryTicket(StopOnNonFiniteLoss, pl.Callback):
    """Find lottery tickets with iterative magnitude pruning (Frankle & Carbin, 2019).

    The arguments are :class:`~lth_wandb.lottery.settings.PruningSettings`' fields, documented there, except:

    Args:
        ticket: a :class:`Ticket` or a directory written by ``Ticket.save``: train that ticket instead of the
            dense network (e.g. ``rounds=0`` to evaluate it, with ``control="reinit"`` for the control).
        masks_from: as in the settings, or a list of masks (one per round 1..rounds).
        spill_dir: a folder for finished rounds' trained weights (one safetensors file each), so memory and
            checkpoints do not grow by a round's weights per round; None keeps them in RAM. lth-train uses
            ``<run folder>/rounds``.
    """

    def __init__(
        self,
        rounds: int | None = None,
        epochs_per_round: int = 10,
        prune_rate: float = 0.2,
        *,
        scope: str = "layerwise",
        layer_rates: Mapping[str, float] | None = None,
        parameters: Sequence[str] | None = None,
        criterion: str = "magnitude",
        rewind: str | int = "init",
        control: str | None = None,
        monitor: str = "val/loss",
        mode: str = "min",
        tolerance: float = 0.0,
        ticket: Ticket | str | PathLike | None = None,
        spill_dir: str | PathLike | None = None,
        seed: int | None = None,
        masks_from: Sequence[M.Masks] | str | PathLike | None = None,
        target_density: float | None = None,
        steps_per_round: int | None = None,
        early_bird: bool = False,
        early_bird_threshold: float = 0.1,
        early_bird_window: int = 5,
        early_bird_mask: str = "weights",
        early_bird_ratio: float = 0.5,
        early_bird_l1: float = 1e-4,
    ):
        masks_path = str(masks_from) if isinstance(masks_from, (str, PathLike)) else None
        settings = PruningSettings(
            rounds, epochs_per_round, prune_rate, scope, layer_rates if layer_rates is not None else {}, parameters,
            criterion, rewind, control, monitor, mode, tolerance, seed, masks_path, target_density, steps_per_round,
            early_bird, early_bird_threshold, early_bird_window, early_bird_mask, early_bird_ratio, early_bird_l1,
        ).validated()  # fmt: skip
        if settings.seed is None:
            settings = replace(settings, seed=int(torch.initial_seed()))
        self.settings = settings
        vars(self).update(settings.as_dict())  # each setting is also an attribute: lottery.rounds, .prune_rate...
        self._ticket = load_ticket_arg(ticket)
        self._mask_sequence = load_mask_sequence(masks_from, self.rounds)

        self.round = 0
        self.masks: M.Masks = {}
        self._record = RoundHistory(self.monitor, self.mode)
        self._states = RoundStates(self.rewind, spill_dir)
        self._schedule, self._early_bird = RoundSchedule(settings), EarlyBird(settings)
        self._reinit_source: dict[str, torch.Tensor] = {}  # what the reinit control shuffles; θ0 when empty
        self._module_class = ""
        self._hooks: list[Any] = []
        self._enforcer = M.MaskEnforcer([], [])
        warnings.filterwarnings("ignore", message=".*`max_epochs` was not set.*")

    # ----------------------------------------------------------------------------------------------------------
    # Public API

    @property
    def history(self) -> list[dict[str, Any]]:
        """One entry per finished round: density, best monitored value and its step, the metrics there, timing."""
        return self._record.entries

    @property
    def total_epochs(self) -> int:
        """Epochs the Trainer runs: ``epochs_per_round`` for round 0 (fewer once an early bird ends it), then
        :attr:`rewound_epochs` per round."""
        return self._schedule.total_epochs

    @property
    def rewound_epochs(self) -> int:
        """Epochs of a round after round 0: ``epochs_per_round``, less ``k // steps_per_epoch`` under late
        rewinding to step k (the round restarts k steps in; known from ``on_train_start``)."""
        return self._schedule.rewound_epochs

    def round_end_step(self, round: int) -> int | None:
        """With ``steps_per_round``: the global step at which ``round`` ends (late rewinding to step k shortens
        every round after round 0 by k). None when rounds are counted in epochs."""
        return self._schedule.round_end_step(round)

    def round_of_epoch(self, epoch: int) -> int:
        """The round that trains in (0-based) ``epoch``."""
        return self._schedule.round_of_epoch(epoch)

    def density(self) -> float:
        """Kept fraction over the prunable weights (1.0 before fit)."""
        return M.density(self.masks)

    @property
    def winning_round(self) -> int | None:
        """The sparsest finished round whose best monitored value is at least as good as round 0's (within
        ``tolerance``); None before round 0 finishes or when nothing was monitored."""
        return winning_round(self.history, self.mode, self.tolerance)

    def summary(self, metric: str = "test/acc") -> dict[str, Any]:
        """The run in a few numbers: rounds completed, the winning round, its density and ``metric`` at its
        early-stop iteration, and the dense network's ``metric`` there. Values are None when unknown."""
        return self._record.summary(self.winning_round, metric)

    def masks_of(self, round: int) -> M.Masks:
        """The masks round ``round`` trained with (a fresh copy: rounds are kept bit-packed)."""
        if round not in self._states.masks:
            raise ValueError(f"round={round!r} has no masks yet; available rounds: {sorted(self._states.masks)}")
        return self._states.masks[round]

    def ticket(self, round: int | None = None) -> Ticket:
        """The ticket of ``round`` (default: the latest): its mask, the weights it starts from, and the weights
        it trained to (None while that round is still training)."""
        rounds = sorted(self._states.masks)
        if not rounds:
            raise ValueError("no ticket yet: call trainer.fit(...) with this callback first")
        round = rounds[-1] if round is None else round
        entry = next((h for h in self.history if h["round"] == round), {"round": round})
        return self._states.ticket(round, {**entry, "model_class": self._module_class, "settings": self._settings()})

    def check_model(self, module: nn.Module) -> list[str]:
        """Check that these settings can prune ``module`` and return the names of the tensors they prune.

        ``fit`` runs it too; calling it first lets an app fail before it starts loggers or data loading.

        Raises:
            ValueError: the selection is empty, a ``layer_rates`` glob matches none of it, the ticket does not
                fit ``module``, or the early bird watches channels of a module without BatchNorm.
        """
        names = self._select(module)
        guards.check_layer_rates_match(self.layer_rates, names)
        self._early_bird.check_model(module)
        return names

    def check_rewind_step(self, steps_round0: int) -> None:
        """Refuse late rewinding to a step at or beyond the end of round 0, of ``steps_round0`` optimizer steps."""
        guards.check_rewind_step(self.rewind, steps_round0)

    # ----------------------------------------------------------------------------------------------------------
    # Lightning hooks

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._module_class = f"{type(pl_module).__module__}.{type(pl_module).__qualname__}"
        guards.check_trainer(trainer, len(self.history))
        self._schedule.set_max_epochs(trainer)
        names = self.check_model(pl_module)
        # A fresh start. When resuming, load_state_dict runs after this and replaces all of it.
        if self._ticket is not None:
            # A ticket holds only its survivors' values; the model as built holds draws from its initialiser,
            # which the reinit control shuffles (see rewind.fresh_values).
            self._reinit_source = {n: p.detach().to("cpu", copy=True) for n, p in pl_module.named_parameters()}
            self._ticket.apply(pl_module)
            self.masks = M.copy_masks(self._ticket.masks)
        else:
            self.masks = M.full_masks({n: p for n, p in pl_module.named_parameters() if n in names})
        if self._ticket is not None and self.control == "random_mask":
            full = M.full_masks(self.masks)
            self.masks = shuffle_positions(self.masks, full, self._generator(0, "random_mask"))
        self._states.masks[0] = M.copy_masks(self.masks)
        if self._ticket is not None and self.control == "reinit":
            self._states.draws[0] = fresh_values(self._reinit_source, self.masks, self._seed_for(0, "reinit"))
        if self._ticket is not None and self.control is not None:
            # The ticket's file holds values only at its own positions: a random mask takes the model's initial
            # values (θ0, when built the same way from the same seed) at its new positions.
            initial = {n: self._reinit_source[n] for n in self.masks}
            state = {**pl_module.state_dict(), **initial, **self._states.draws.get(0, {})}
            pl_module.load_state_dict(masked(state, self.masks))

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        guards.refuse_lbfgs(trainer.optimizers)
        # Optimizers exist from here on (and are rebuilt by every fit), so the enforcement hook goes on now.
        self._hooks = [opt.register_step_post_hook(self._enforce) for opt in trainer.optimizers]
        self._build_enforcer(pl_module)
        self._enforcer()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._schedule.start(trainer)
        self._record.round_started_at = time.monotonic()
        self._capture(trainer, pl_module)
        self._early_bird.start(trainer, pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.round == 0 and self._states.point is None:
            self._capture(trainer, pl_module)
        # Rounds in steps: the boundary falls between two steps, after the last one's validation has run.
        if self.steps_per_round is not None and trainer.global_step >= self.round_end_step(self.round):
            self._finish_round_once(trainer, pl_module)
            self._start_round(trainer, pl_module, self.round + 1)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.steps_per_round is not None:
            return
        target = self.round_of_epoch(trainer.current_epoch)
        if target > self.round:
            self._start_round(trainer, pl_module, self.round + 1)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:
        self._early_bird.penalise(optimizer)  # L1 penalty on BatchNorm scaling factors while the early bird searches
        # The paper trains f(x; m*w): pruned weights have zero gradient. Lightning clips right after this hook, and
        # a norm over the pruned entries' gradients would scale the survivors' updates differently.
        if trainer.gradient_clip_val and self._enforcer.params:
            params, factors = self._enforcer.params, self._enforcer.factors
            live = [i for i, p in enumerate(params) if p.grad is not None]
            torch._foreach_mul_([params[i].grad for i in live], [factors[i] for i in live])

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._record.observe(trainer.callback_metrics, trainer.global_step)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check_loss(trainer, self.round)  # a NaN loss stops the run before its epoch is recorded or pruned
        self._record.epoch_ended(trainer.callback_metrics)
        if self.round == 0 and self._early_bird.fires(trainer, pl_module, lambda: self._would_be_masks(pl_module)):
            self._schedule.end_round0(trainer, trainer.current_epoch + 1)
        if self.round == 0:
            # Lightning shows what the early bird just logged only after this hook; kept here, the epoch's metrics
            # (and the checkpoint a resume starts from) hold this epoch's distance, as the next validation sees it.
            self._record.epoch_metrics.update(self._early_bird.logged)
        if self._schedule.round_ends(trainer, self.round):
            self._finish_round_once(trainer, pl_module)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "settings": self._settings(),
            "round": self.round,
            "masks": self.masks,
            # Taken when Lightning saves: at an epoch end, the state the next epoch's shuffle draws from.
            "rng": rng_state(),
            **self._record.state_dict(),
            **self._states.state_dict(),
            **self._schedule.state_dict(),
            **self._early_bird.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("settings", {})
        guards.check_same_settings(self._settings(), saved)
        self.settings = replace(self.settings, seed=saved.get("seed", self.seed))
        self.seed = self.settings.seed
        self.round = state_dict["round"]
        self.masks = state_dict["masks"]
        self._record.load_state_dict(state_dict)
        self._states.load_state_dict(state_dict)
        self._schedule.load_state_dict(state_dict)
        self._early_bird.load_state_dict(state_dict)
        set_rng_state(state_dict.get("rng", {}))

    # ----------------------------------------------------------------------------------------------------------
    # Rounds

    def _start_round(self, trainer: pl.Trainer, pl_module: pl.LightningModule, new_round: int) -> None:
        """Prune by the scores of the round just finished (or take ``masks_from``'s next mask), then rewind
        weights, optimizer and schedulers."""
        if self._states.point is None:
            self._capture(trainer, pl_module)  # late rewinding to the very last step of round 0
        if self._mask_sequence:
            # The control of a finished run: its round's mask, at random positions of the full tensor for
            # random_mask (each density drawn afresh, as the paper's random pruning).
            new_masks = M.copy_masks(self._mask_sequence[new_round - 1])
            previous = M.full_masks(new_masks)
        elif criteria.is_at_init(self.criterion):  # θ0 scored afresh each round, from the full network
            new_masks, previous = init_masks.prune_at_init(self, trainer, pl_module, new_round)
        else:
            scores = self._scores(pl_module, new_round)
            new_masks = prune(scores, self.masks, self.prune_rate, self.scope, self.layer_rates)
            previous = self.masks
        if self.control == "random_mask":
            new_masks = shuffle_positions(new_masks, previous, self._generator(new_round, "random_mask"))
        # Every rank must train the same subnetwork, whatever rounding or ties did locally.
        self.masks = trainer.strategy.broadcast(new_masks, src=0)
        emptied = [name for name, m in self.masks.items() if not bool(m.any())]
        if emptied:
            rank_zero_warn(
                f"LotteryTicket: round {new_round} prunes every weight of {emptied}: no signal passes through them, "
                "so this round and the ones after cannot learn. Hint: fewer rounds, or a lower rate for them "
                "(layer_rates)"
            )
        self.round = new_round
        self._states.masks[new_round] = M.copy_masks(self.masks)
        if self.control == "reinit":
            source = self._reinit_source or self._states.theta0
            self._states.draws[new_round] = fresh_values(source, self.masks, self._seed_for(new_round, "reinit"))
        # load_state_dict copies values into the live tensors: nothing aliases the saved state.
        pl_module.load_state_dict(self._states.start_weights(new_round))
        self._states.restore_optimizers(trainer.optimizers, [c.scheduler for c in trainer.lr_scheduler_configs])
        self._build_enforcer(pl_module)
        self._record.start_round(trainer.global_step)

    def _scores(self, pl_module: pl.LightningModule, new_round: int) -> dict[str, torch.Tensor]:
        """The criterion's score of every masked tensor at the end of the round just finished."""
        reference = self._states.start_weights(self.round) if self.criterion in criteria.NEEDS_REFERENCE else {}
        params, generator = dict(pl_module.named_parameters()), self._generator(new_round, "criterion")
        return criteria.score_all(self.criterion, params, self.masks, reference, generator)

    def _would_be_masks(self, pl_module: pl.LightningModule) -> M.Masks:
        """Round 1's masks if round 0 ended now: what the early bird watches settle."""
        return prune(self._scores(pl_module, 1), self.masks, self.prune_rate, self.scope, self.layer_rates)

    def _finish_round_once(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check_loss(trainer, self.round)
        if not self._record.has(self.round):
            self._states.record_trained(self.round, pl_module)
            self._record.finish(self.round, self.masks, trainer.global_step, trainer.current_epoch + 1)
            self._record.entries[-1].update(self._early_bird.entry(self.round))

    def _capture(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        schedulers = [c.scheduler for c in trainer.lr_scheduler_configs]
        self._states.capture(trainer.global_step, pl_module, trainer.optimizers, schedulers)

    # ----------------------------------------------------------------------------------------------------------
    # Helpers

    def _select(self, pl_module: pl.LightningModule) -> list[str]:
        if self._ticket is not None:
            check_compatible(self._ticket, pl_module)
            return list(self._ticket.masks)
        names = guards.prunable_names(pl_module, self.parameters)
        guards.check_mask_sequence(self._mask_sequence, pl_module, names, self.masks_from)
        return names

    def _build_enforcer(self, pl_module: pl.LightningModule) -> None:
        params = dict(pl_module.named_parameters())
        # Fully dense tensors need no multiply: round 0 runs at dense speed.
        sparse = [name for name, m in self.masks.items() if not bool(m.all())]
        self._enforcer = M.MaskEnforcer([params[n] for n in sparse], [self.masks[n] for n in sparse])

    def _enforce(self, *_hook_args) -> None:
        self._enforcer()

    def _round_density(self, round: int) -> float:
        return M.density(self._states.masks[round])

    def _seed_for(self, round: int, purpose: str) -> int:
        # Stable across processes (hash of ints and str is salted; this is not), distinct per round and purpose.
        return (self.seed * 1_000_003 + round * 7919 + sum(map(ord, purpose))) % (2**63)

    def _generator(self, round: int, purpose: str) -> torch.Generator:
        return torch.Generator().manual_seed(self._seed_for(round, purpose))

    def _settings(self) -> dict[str, Any]:
        return self.settings.as_dict()
