"""``LotteryTicket``: iterative magnitude pruning with rewinding, as a PyTorch Lightning callback.

Timeline: round 0 trains the dense network for ``epochs_per_round`` epochs; at the first epoch
of round r >= 1 the callback prunes the weights that scored lowest at the end of round r - 1, rewinds every
tensor (and the optimizer and LR schedulers) to the rewind point, and round r trains the sparser network.

Pruning happens at the *start* of the next round rather than at the end of the previous one because Lightning
steps epoch-interval LR schedulers right after ``on_train_epoch_end``: a schedule rewound there would start the
next round one step late.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from fnmatch import fnmatchcase
from os import PathLike
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from lth_wandb import criteria
from lth_wandb import masks as M
from lth_wandb.arguments import load_mask_sequence, load_ticket_arg
from lth_wandb.pruning import matches, prune, shuffle_positions
from lth_wandb.rewind import RoundStates, fresh_values, masked
from lth_wandb.rng import rng_state, set_rng_state
from lth_wandb.settings import PruningSettings
from lth_wandb.ticket import Ticket, check_compatible

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
STATE_VERSION = 1
# Lightning warns that max_epochs defaults to 1000 when it is unset; here the callback sets it, so the warning
# would only mislead.
_LIGHTNING_DEFAULT_MAX_EPOCHS = 1000


class LotteryTicket(pl.Callback):
    """Find lottery tickets with iterative magnitude pruning (Frankle & Carbin, 2019).

    Args:
        rounds: pruning rounds after the dense round 0. Density after round r is (1 - prune_rate)^r. Default: 5,
            or as many as ``target_density`` needs.
        epochs_per_round: training epochs in every round. With ``rewind="none"`` and 1, this prunes after
            every epoch without rewinding.
        prune_rate: fraction of the *remaining* prunable weights removed per round, in (0, 1).
        scope: ``"layerwise"`` (every tensor loses ``prune_rate`` of its weights, the paper's LeNet setting)
            or ``"global"`` (one ranking across tensors).
        layer_rates: glob -> rate overrides, e.g. ``{"*fc3.weight": 0.1}`` (the paper prunes the output layer
            at half rate). Matching tensors are pruned on their own, at their own rate, in either scope.
        parameters: globs over ``named_parameters()`` names to prune. Default: the ``weight`` of every Linear
            and Conv1/2/3d. Biases and norms are never pruned by default.
        criterion: ``"magnitude"``, ``"magnitude_increase"``, ``"movement"`` or ``"random"``.
        rewind: ``"init"`` (θ0), an int k (late rewinding to the state after k optimizer steps of round 0),
            ``"lr"`` (keep weights, replay the LR schedule from the start) or ``"none"`` (fine-tune: keep
            weights and optimizer state).
        control: ``None``; ``"reinit"`` (same masks, survivors redrawn from θ0's distribution: each pruned tensor's
            θ0 values shuffled, so any initialiser is honoured; biases and other tensors stay at θ0); or
            ``"random_mask"`` (random positions at the per-tensor densities the criterion would give).
        monitor: metric whose best value per round is recorded, with the global step where it occurred (the
            paper's early-stopping iteration).
        mode: ``"min"`` or ``"max"``: which direction of ``monitor`` is better.
        tolerance: a round wins if its best monitored value is within ``tolerance`` of round 0's.
        ticket: a :class:`Ticket` or a directory written by ``Ticket.save``: train that ticket instead of the
            dense network (e.g. ``rounds=0`` to evaluate it, with ``control="reinit"`` for the control).
        seed: seeds the random criterion and controls. Default: ``torch.initial_seed()`` at construction, so
            ``pl.seed_everything`` makes them reproducible.
        masks_from: the masks of rounds 1..rounds, to train instead of pruning: a finished run's ``tickets``
            folder (``round-<r>/ticket``), its output folder, or a list of masks. With ``control`` this is the
            paper's control experiment: IMP's own masks with fresh values (``"reinit"``), or random masks at IMP's
            per-layer densities (``"random_mask"``), each round rewound like IMP.
        target_density: instead of ``rounds``: prune until (1 - prune_rate)^rounds <= target_density, e.g. 0.036
            with prune_rate 0.2 is 15 rounds (the paper's 3.6%).
        steps_per_round: the round length in optimizer steps, instead of ``epochs_per_round`` (the paper counts
            iterations). Rounds then begin and end between steps; use step-interval LR schedulers with it.
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
        seed: int | None = None,
        masks_from: Sequence[M.Masks] | str | PathLike | None = None,
        target_density: float | None = None,
        steps_per_round: int | None = None,
    ):
        masks_path = str(masks_from) if isinstance(masks_from, (str, PathLike)) else None
        settings = PruningSettings(
            rounds, epochs_per_round, prune_rate, scope, layer_rates if layer_rates is not None else {}, parameters,
            criterion, rewind, control, monitor, mode, tolerance, seed, masks_path, target_density, steps_per_round,
        ).validated()  # fmt: skip
        if settings.seed is None:
            settings = replace(settings, seed=int(torch.initial_seed()))
        self.settings = settings
        vars(self).update(settings.as_dict())  # each setting is also an attribute: lottery.rounds, .prune_rate...
        self._ticket = load_ticket_arg(ticket)
        self._mask_sequence = load_mask_sequence(masks_from, self.rounds)

        self.round = 0
        self.masks: M.Masks = {}
        self.history: list[dict[str, Any]] = []
        self._states = RoundStates(self.rewind)
        self._best: dict[str, Any] = {}
        self._epoch_metrics: dict[str, float] = {}  # scalar metrics at the last epoch end
        self._steps_per_epoch = 0  # optimizer steps per epoch, known from on_train_start
        self._reinit_source: dict[str, torch.Tensor] = {}  # what the reinit control shuffles; θ0 when empty
        self._round_started_at = time.monotonic()
        self._round_start_step = 0  # global step where the current round began
        self._module_class = ""
        self._hooks: list[Any] = []
        self._enforcer = M.MaskEnforcer([], [])
        warnings.filterwarnings("ignore", message=".*`max_epochs` was not set.*")

    # ----------------------------------------------------------------------------------------------------------
    # Public API

    @property
    def total_epochs(self) -> int:
        """Epochs the Trainer runs: ``epochs_per_round`` for round 0, then :attr:`rewound_epochs` per round."""
        return self.epochs_per_round + self.rounds * self.rewound_epochs

    @property
    def rewound_epochs(self) -> int:
        """Epochs of a round after round 0. Late rewinding to step k restarts the round k steps in, so it trains
        what round 0 trained after step k (Frankle et al. 2019, Alg. 2: from W_k to iteration T) and its schedule
        ends where round 0's ended: ``epochs_per_round - k // steps_per_epoch``. Known from ``on_train_start``."""
        if not isinstance(self.rewind, int) or not self._steps_per_epoch:
            return self.epochs_per_round
        return self.epochs_per_round - self.rewind // self._steps_per_epoch

    def round_end_step(self, round: int) -> int | None:
        """With ``steps_per_round``: the global step at which ``round`` ends (late rewinding to step k shortens
        every round after round 0 by k). None when rounds are counted in epochs."""
        if self.steps_per_round is None:
            return None
        shorter = self.rewind if isinstance(self.rewind, int) else 0
        return self.steps_per_round + round * (self.steps_per_round - shorter)

    def round_of_epoch(self, epoch: int) -> int:
        """The round that trains in (0-based) ``epoch``."""
        if epoch < self.epochs_per_round:
            return 0
        return 1 + (epoch - self.epochs_per_round) // self.rewound_epochs

    def density(self) -> float:
        """Kept fraction over the prunable weights (1.0 before fit)."""
        return M.density(self.masks)

    @property
    def winning_round(self) -> int | None:
        """The sparsest finished round whose best monitored value is at least as good as round 0's (within
        ``tolerance``); None before round 0 finishes or when nothing was monitored."""
        scored = [h for h in self.history if h.get("best_value") is not None]
        if not scored or scored[0]["round"] != self.history[0]["round"]:
            return None
        sign = 1.0 if self.mode == "min" else -1.0
        limit = sign * scored[0]["best_value"] + self.tolerance
        winners = [h["round"] for h in scored if sign * h["best_value"] <= limit]
        return max(winners, key=lambda r: (-self._round_density(r), r))

    def summary(self, metric: str = "test/acc") -> dict[str, Any]:
        """The run in a few numbers: rounds completed, the winning round, its density and ``metric`` at its
        early-stop iteration, and the dense network's ``metric`` there. Values are None when unknown."""
        by_round = {h["round"]: h for h in self.history}
        win = self.winning_round
        return {
            "rounds_completed": len(self.history),
            "winning_round": win,
            "winning_density": by_round[win]["density"] if win is not None else None,
            f"winning_{metric.replace('/', '_')}": by_round[win]["metrics"].get(metric) if win is not None else None,
            f"dense_{metric.replace('/', '_')}": by_round[0]["metrics"].get(metric) if 0 in by_round else None,
        }

    def masks_of(self, round: int) -> M.Masks:
        """The masks round ``round`` trained with (not a copy: do not modify)."""
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
        if round not in self._states.masks:
            raise ValueError(f"round={round!r} has no ticket; available rounds: {rounds}")
        entry = next((h for h in self.history if h["round"] == round), {"round": round})
        metadata = {
            **entry,
            "density": self._round_density(round),
            "layer_density": M.layer_densities(self._states.masks[round]),
            "model_class": self._module_class,
            "settings": self._settings(),
        }
        trained = self._states.trained_weights(round)
        return Ticket(
            masks=M.copy_masks(self._states.masks[round]),
            rewind_weights=self._states.start_weights(round),
            trained_weights=trained,
            metadata=metadata,
        )

    def check_model(self, module: nn.Module) -> list[str]:
        """Check that these settings can prune ``module`` and return the names of the tensors they prune.

        ``fit`` runs it too; calling it first lets an app fail before it starts loggers or data loading.

        Raises:
            ValueError: the selection is empty, a ``layer_rates`` glob matches none of it, or the ticket does not
                fit ``module``.
        """
        names = self._select(module)
        unmatched = [key for key in self.layer_rates if not any(matches(n, key) for n in names)]
        if unmatched:
            raise ValueError(
                f"layer_rates globs {unmatched} match none of the pruned tensors {names[:10]}. Hint: globs match "
                "whole names, e.g. '*out.weight'; a key without * matches a name's end, e.g. 'out.weight'"
            )
        return names

    def check_rewind_step(self, steps_round0: int) -> None:
        """Refuse late rewinding to a step at or beyond the end of round 0, which has ``steps_round0`` optimizer
        steps: the rewound rounds would have nothing left to train."""
        if isinstance(self.rewind, int) and self.rewind >= steps_round0:
            raise ValueError(
                f"rewind={self.rewind} is not inside round 0, which has {steps_round0} optimizer steps; "
                f"allowed: 0..{steps_round0 - 1}. Hint: late rewinding uses an early step (Frankle et al. rewind "
                "to ~0.1-7% of training)."
            )

    # ----------------------------------------------------------------------------------------------------------
    # Lightning hooks

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._module_class = f"{type(pl_module).__module__}.{type(pl_module).__qualname__}"
        self._check_trainer(trainer)
        self._set_max_epochs(trainer)
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
        for opt in trainer.optimizers:
            if isinstance(opt, torch.optim.LBFGS):
                raise ValueError(
                    "LotteryTicket cannot keep pruned weights at zero under LBFGS: its closure re-evaluates the "
                    "model between the masked steps. Hint: use an element-wise optimizer (SGD, Adam, AdamW)"
                )
        # Optimizers exist from here on (and are rebuilt by every fit), so the enforcement hook goes on now.
        self._hooks = [opt.register_step_post_hook(self._enforce) for opt in trainer.optimizers]
        self._build_enforcer(pl_module)
        self._enforcer()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.steps_per_round is not None:
            self.check_rewind_step(self.steps_per_round)
            trainer.fit_loop.max_epochs = -1  # the step count ends the fit (see _set_max_epochs)
        else:
            # max_epochs is still (rounds + 1) * epochs_per_round (setup set it); late rewinding shortens rounds.
            self._steps_per_epoch = trainer.estimated_stepping_batches // max(1, trainer.fit_loop.max_epochs)
            self.check_rewind_step(self._steps_per_epoch * self.epochs_per_round)
            trainer.fit_loop.max_epochs = self.total_epochs
        self._round_started_at = time.monotonic()
        self._capture(trainer, pl_module)

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
        # The paper trains f(x; m*w): pruned weights have zero gradient. Lightning clips right after this hook, and
        # a norm over the pruned entries' gradients would scale the survivors' updates differently.
        if trainer.gradient_clip_val and self._enforcer.params:
            params, factors = self._enforcer.params, self._enforcer.factors
            live = [i for i, p in enumerate(params) if p.grad is not None]
            torch._foreach_mul_([params[i].grad for i in live], [factors[i] for i in live])

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        if self.monitor not in metrics:
            raise ValueError(
                f"monitor={self.monitor!r} was not logged during validation; logged metrics: {sorted(metrics)}. "
                "Hint: log it in validation_step with self.log(...) or pass LotteryTicket(monitor=...)."
            )
        value = float(metrics[self.monitor])
        best = self._best.get("value")
        better = best is None or (value < best if self.mode == "min" else value > best)
        if better and not math.isnan(value):
            # Metrics logged once per epoch (train/acc) come from the epoch before; after a resume they live
            # only in the checkpoint, so a resumed round's snapshot holds the same keys as an uninterrupted one.
            scalars = {**self._epoch_metrics, **_scalars(metrics)}
            self._best = {"value": value, "step": trainer.global_step, "metrics": scalars}

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_metrics = _scalars(trainer.callback_metrics)
        if self.steps_per_round is not None:
            finished_round = trainer.global_step >= self.round_end_step(self.round)
        else:
            finished_round = self.round_of_epoch(trainer.current_epoch + 1) > self.round_of_epoch(trainer.current_epoch)
        if finished_round:
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
            "history": self.history,
            "best": self._best,
            "round_start_step": self._round_start_step,
            # Taken when Lightning saves: at an epoch end, the state the next epoch's shuffle draws from.
            "rng": rng_state(),
            "epoch_metrics": self._epoch_metrics,
            **self._states.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("settings", {})
        # The seed may differ: it defaults to torch.initial_seed(), and the checkpoint's wins below.
        changed = {k: (v, saved[k]) for k, v in self._settings().items() if k in saved and saved[k] != v}
        changed.pop("seed", None)
        if changed:
            described = ", ".join(f"{k}={now!r} (checkpoint: {then!r})" for k, (now, then) in changed.items())
            raise ValueError(
                f"LotteryTicket settings differ from the checkpoint's: {described}. A resumed run continues with "
                "the settings it was trained with. Hint: build the LotteryTicket with the checkpoint's settings"
            )
        self.settings = replace(self.settings, seed=saved.get("seed", self.seed))
        self.seed = self.settings.seed
        self.round = state_dict["round"]
        self.masks = state_dict["masks"]
        self.history = list(state_dict["history"])
        self._states.load_state_dict(state_dict)
        self._best = dict(state_dict.get("best", {}))
        self._round_start_step = state_dict.get("round_start_step", 0)
        set_rng_state(state_dict.get("rng", {}))
        self._epoch_metrics = dict(state_dict.get("epoch_metrics", {}))

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
        self._best = {}
        self._round_started_at = time.monotonic()
        self._round_start_step = trainer.global_step

    def _scores(self, pl_module: pl.LightningModule, new_round: int) -> dict[str, torch.Tensor]:
        """The criterion's score of every masked tensor at the end of the round just finished."""
        params = dict(pl_module.named_parameters())
        reference = self._states.start_weights(self.round) if self.criterion in criteria.NEEDS_REFERENCE else {}
        score = criteria.get(self.criterion)
        generator = self._generator(new_round, "criterion")
        return {
            name: score(params[name].detach(), _to(reference.get(name), params[name]), generator).to(
                params[name].device
            )
            for name in self.masks
        }

    def _finish_round_once(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not any(h["round"] == self.round for h in self.history):
            self._finish_round(trainer, pl_module)

    def _finish_round(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._states.record_trained(self.round, pl_module)
        self.history.append(
            {
                "round": self.round,
                "density": self.density(),
                "layer_density": M.layer_densities(self.masks),
                "monitor": self.monitor,
                "best_value": self._best.get("value"),
                "best_step": self._best.get("step"),
                # The paper's early-stopping iteration counts from the round's start.
                "early_stop_iteration": _minus(self._best.get("step"), self._round_start_step),
                "start_step": self._round_start_step,
                "metrics": dict(self._best.get("metrics", {})),
                "end_step": trainer.global_step,
                "end_epoch": trainer.current_epoch + 1,
                "seconds": time.monotonic() - self._round_started_at,
            }
        )

    def _capture(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        schedulers = [c.scheduler for c in trainer.lr_scheduler_configs]
        self._states.capture(trainer.global_step, pl_module, trainer.optimizers, schedulers)

    # ----------------------------------------------------------------------------------------------------------
    # Helpers

    def _select(self, pl_module: pl.LightningModule) -> list[str]:
        params = dict(pl_module.named_parameters())
        if self._ticket is not None:
            check_compatible(self._ticket, pl_module)
            return list(self._ticket.masks)
        if self.parameters is None:
            names = [
                f"{mod_name}.weight" if mod_name else "weight"
                for mod_name, module in pl_module.named_modules()
                if isinstance(module, PRUNABLE_TYPES)
            ]
        else:
            names = [n for n in params if any(fnmatchcase(n, g) for g in self.parameters)]
        if not names:
            raise ValueError(
                f"parameters={self.parameters!r} selects no tensor of {type(pl_module).__name__}; available "
                f"names: {list(params)[:20]}. Hint: pass globs such as ['*.weight']."
            )
        _refuse_tied(pl_module, names)
        for number, masks in enumerate(self._mask_sequence, start=1):
            if set(masks) != set(names) or any(masks[n].shape != params[n].shape for n in names):
                raise ValueError(
                    f"masks_from={self.masks_from!r}: round {number}'s masks cover {sorted(masks)[:5]} but this model "
                    f"prunes {names[:5]} (or a shape differs). Hint: use the same model and parameters as that run"
                )
        return names

    def _check_trainer(self, trainer: pl.Trainer) -> None:
        """Refuse what would silently break the rounds: a step limit, or a second fit of a used callback."""
        if trainer.max_steps not in (None, -1):
            raise ValueError(
                f"Trainer(max_steps={trainer.max_steps}) would end training inside a round, which LotteryTicket "
                "would record as finished. Hint: leave max_steps unset; rounds and epochs_per_round set the length"
            )
        if self.history and trainer.ckpt_path is None:
            raise ValueError(
                f"this LotteryTicket already trained {len(self.history)} rounds in an earlier fit. Hint: use a new "
                "LotteryTicket for a new run, or continue this one with trainer.fit(..., ckpt_path=...)"
            )

    def _set_max_epochs(self, trainer: pl.Trainer) -> None:
        if self.steps_per_round is not None:
            trainer.fit_loop.epoch_loop.max_steps = self.round_end_step(self.rounds)
            return
        current = trainer.fit_loop.max_epochs
        if current in (None, -1, _LIGHTNING_DEFAULT_MAX_EPOCHS):
            trainer.fit_loop.max_epochs = self.total_epochs
        elif current != self.total_epochs:
            raise ValueError(
                f"Trainer(max_epochs={current}) does not match LotteryTicket: (rounds + 1) * epochs_per_round = "
                f"({self.rounds} + 1) * {self.epochs_per_round} = {self.total_epochs}. Hint: set "
                f"max_epochs={self.total_epochs} or leave it unset and the callback sets it."
            )

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


def _refuse_tied(module: nn.Module, names: list[str]) -> None:
    """A pruned tensor reachable under two names would be rewound unmasked through the second one."""
    owners: dict[int, list[str]] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        owners.setdefault(id(param), []).append(name)
    tied = [aliases for aliases in owners.values() if len(aliases) > 1 and set(aliases) & set(names)]
    if tied:
        raise ValueError(
            f"tied weights {tied[0]} are one tensor under several names; LotteryTicket does not prune tied weights. "
            "Hint: leave them out of `parameters`, or untie them"
        )


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if torch.as_tensor(v).numel() == 1}


def _to(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    return None if t is None else t.to(like.device, like.dtype)


def _minus(a: int | None, b: int) -> int | None:
    return None if a is None else a - b
