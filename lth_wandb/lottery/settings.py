"""The pruning settings: one validated dataclass for everything that decides which ticket a run finds.

It is ``LotteryTicket``'s argument set, ``lth-train``'s ``pruning`` config schema (Hydra types it from these
fields), what a checkpoint stores to refuse a resume with other settings, and what every ticket's metadata
records. No Lightning, no W&B, no Hydra.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Union

from lth_wandb.lottery.arguments import (
    check_control,
    check_early_bird,
    check_early_bird_mask,
    check_int,
    check_layer_rates,
    check_mode,
    check_monitor,
    check_parameters,
    check_rewind,
    check_seed,
    check_target_density,
    check_tolerance,
    rounds_for,
)
from lth_wandb.pruning import criteria
from lth_wandb.pruning.prune import check_rate, check_scope, rate_overrides


@dataclass
class PruningSettings:
    """How a run prunes. :meth:`validated` checks every field and returns the normalised copy to use.

    Attributes:
        rounds: pruning rounds after the dense round 0. Density after round r is (1 - prune_rate)^r. Default: 5,
            or as many as ``target_density`` needs.
        epochs_per_round: training epochs in every round (later rounds are shorter under late rewinding). With
            ``rewind="none"`` and 1, this prunes after every epoch without rewinding.
        prune_rate: fraction of the *remaining* prunable weights removed per round, in (0, 1).
        scope: ``"layerwise"`` (every tensor loses ``prune_rate`` of its weights, the paper's LeNet setting)
            or ``"global"`` (one ranking across tensors).
        layer_rates: glob -> rate overrides, e.g. ``{"*fc3.weight": 0.1}`` (the paper prunes the output layer
            at half rate). Matching tensors are pruned on their own, at their own rate, in either scope.
        parameters: globs over ``named_parameters()`` names to prune. Default: the ``weight`` of every Linear
            and Conv1/2/3d. Biases and norms are never pruned by default.
        criterion: ``"magnitude"``, ``"magnitude_increase"``, ``"movement"`` or ``"random"``; or at
            initialisation (θ0 scored before training, each round pruned afresh from the full network to IMP's
            density of that round): ``"snip"``, ``"grasp"``, ``"synflow"`` or ``"magnitude_init"``.
        rewind: ``"init"`` (θ0), an int k (late rewinding to the state after k optimizer steps of round 0; with
            rounds in epochs, later rounds train whole epochs, ``k % steps_per_epoch`` steps more than T - k),
            ``"lr"`` (keep weights, replay the LR schedule from the start) or ``"none"`` (fine-tune: keep weights
            and optimizer state).
        control: ``None``; ``"reinit"`` (same masks, survivors redrawn from θ0's distribution: each pruned tensor's
            θ0 values shuffled, so any initialiser is honoured; biases and other tensors stay at θ0); or
            ``"random_mask"`` (random positions at the per-tensor densities the criterion would give).
        monitor: metric whose best value per round is recorded, with the global step where it occurred (the
            paper's early-stopping iteration); it also picks the winning round.
        mode: ``"min"`` or ``"max"``: which direction of ``monitor`` is better.
        tolerance: a round wins if its best monitored value is within ``tolerance`` of round 0's.
        seed: seeds the random criterion and controls. Default: ``torch.initial_seed()`` at construction, so
            ``pl.seed_everything`` makes them reproducible (lth-train: its ``seed``).
        masks_from: the masks of rounds 1..rounds, to train instead of pruning: a finished run's ``tickets``
            folder (``round-<r>/ticket``) or its output folder. With ``control`` this is the paper's control
            experiment: IMP's own masks with fresh values (``"reinit"``), or random masks at IMP's per-layer
            densities (``"random_mask"``), each round rewound like IMP.
        target_density: instead of ``rounds``: prune until (1 - prune_rate)^rounds <= target_density, e.g. 0.036
            with prune_rate 0.2 is 15 rounds (the paper's 3.6%).
        steps_per_round: the round length in optimizer steps, instead of ``epochs_per_round`` (the paper counts
            iterations: 50K for LeNet). Rounds then begin and end between steps; use step-interval LR schedulers (an
            epoch-interval one is refused unless the rounds and the rewind step are whole epochs).
        early_bird: end round 0 early once a mask has settled (You et al. 2020, early-bird tickets): at every epoch
            end of round 0 the mask ``early_bird_mask`` names is compared with the previous ``early_bird_window - 1``
            epochs' masks; when every distance is at most ``early_bird_threshold``, round 0 ends there and the later
            rounds train as before. Not with ``steps_per_round``.
        early_bird_threshold: the largest normalised Hamming distance (share of mask entries that differ) that
            counts as settled, in [0, 1). The paper: 0.1.
        early_bird_window: masks compared (the newest against each older one), >= 2; round 0 can end at epoch
            ``early_bird_window`` at the earliest, so it must be below ``epochs_per_round`` to matter. The paper: 5.
        early_bird_mask: which mask settles. ``"channels"``: the paper's, a channel mask of the BatchNorm scaling
            factors |γ| ranked across the network, ``early_bird_ratio`` of the channels pruned, with the untrained
            network's mask first in the window (so round 0 can end one epoch sooner), and an L1 penalty
            ``early_bird_l1`` on γ while the early bird searches; needs BatchNorm. ``"weights"`` (lth-wandb's variant,
            for networks without BatchNorm): the unstructured mask round 1 would get now (the run's criterion,
            ``prune_rate``, ``scope`` and ``layer_rates``). Either way the rounds after round 0 are IMP's.
        early_bird_ratio: ``"channels"`` only: the share of channels the watched mask prunes, in (0, 1). The paper:
            0.3, 0.5, 0.7.
        early_bird_l1: ``"channels"`` only: λ of the L1 penalty λ·Σ|γ| (network slimming) whose subgradient
            λ·sign(γ) is added to the scaling factors' gradients in round 0 until the early bird fires; 0 turns it off.
            The authors' code: 1e-4.
    """

    rounds: int | None = None
    epochs_per_round: int = 10
    prune_rate: float = 0.2
    scope: str = "layerwise"
    layer_rates: dict[str, float] = field(default_factory=dict)
    parameters: list[str] | None = None
    criterion: str = "magnitude"
    rewind: Union[str, int] = "init"  # noqa: UP007 - OmegaConf reads typing.Union, not the | operator
    control: str | None = None
    monitor: str = "val/loss"
    mode: str = "min"
    tolerance: float = 0.0
    seed: int | None = None
    masks_from: str | None = None
    target_density: float | None = None
    steps_per_round: int | None = None
    early_bird: bool = False
    early_bird_threshold: float = 0.1
    early_bird_window: int = 5
    early_bird_mask: str = "weights"
    early_bird_ratio: float = 0.5
    early_bird_l1: float = 1e-4

    def validated(self) -> PruningSettings:
        """A copy with every value checked (a ValueError names the bad one) and normalised: ``rounds`` resolved,
        a digit string of ``rewind`` made a step."""
        rate = check_rate(self.prune_rate)
        target = check_target_density(self.target_density)
        rewind = check_rewind(self.rewind)
        layer_rates = check_layer_rates(self.layer_rates)
        rate_overrides(layer_rates, layer_rates)  # every rate checked now, not at round 1
        criteria.check(self.criterion, rewind)
        bird_mask = check_early_bird_mask(self.early_bird_mask, self.early_bird_ratio, self.early_bird_l1)
        early_bird = check_early_bird(
            self.early_bird, self.early_bird_threshold, self.early_bird_window, self.steps_per_round, self.criterion,
            bird_mask[0],
        )
        return PruningSettings(
            rounds=rounds_for(self.rounds, target, rate),
            epochs_per_round=check_int(self.epochs_per_round, "epochs_per_round", 1, "the paper trains ~50 epochs"),
            prune_rate=rate,
            scope=check_scope(self.scope),
            layer_rates=layer_rates,
            parameters=check_parameters(self.parameters),
            criterion=self.criterion,
            rewind=rewind,
            control=check_control(self.control, rewind),
            monitor=check_monitor(self.monitor),
            mode=check_mode(self.mode),
            tolerance=check_tolerance(self.tolerance),
            seed=check_seed(self.seed),
            masks_from=self.masks_from,
            target_density=target,
            steps_per_round=None if self.steps_per_round is None else check_int(
                self.steps_per_round, "steps_per_round", 1, "the paper's LeNet rounds are 50000 iterations"
            ),
            early_bird=early_bird[0],
            early_bird_threshold=early_bird[1],
            early_bird_window=early_bird[2],
            early_bird_mask=bird_mask[0],
            early_bird_ratio=bird_mask[1],
            early_bird_l1=bird_mask[2],
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain values, as checkpoints and ticket metadata record them."""
        return asdict(self)
