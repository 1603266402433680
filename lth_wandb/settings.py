"""The pruning settings: one validated dataclass for everything that decides which ticket a run finds.

It is ``LotteryTicket``'s argument set, ``lth-train``'s ``pruning`` config schema (Hydra types it from these
fields), what a checkpoint stores to refuse a resume with other settings, and what every ticket's metadata
records. No Lightning, no W&B, no Hydra.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Union

from lth_wandb import criteria
from lth_wandb.arguments import (
    check_control,
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
from lth_wandb.pruning import check_rate, check_scope, rate_overrides


@dataclass
class PruningSettings:
    """How a run prunes. :meth:`validated` checks every field and returns the normalised copy to use.

    Attributes:
        rounds: pruning rounds after the dense round 0; None: 5, or what ``target_density`` needs.
        epochs_per_round: training epochs per round (later rounds are shorter under late rewinding).
        prune_rate: fraction of the remaining prunable weights removed per round, in (0, 1).
        scope: ``"layerwise"`` or ``"global"``.
        layer_rates: glob (or dotted name suffix) -> rate overrides, e.g. ``{"*out.weight": 0.1}``.
        parameters: globs of the tensors to prune; None: the weight of every Linear and Conv.
        criterion: ``"magnitude"``, ``"magnitude_increase"``, ``"movement"`` or ``"random"``.
        rewind: ``"init"``, ``"lr"``, ``"none"`` or a step k (late rewinding).
        control: None, ``"reinit"`` or ``"random_mask"``.
        monitor: the metric whose best value per round picks the early-stop iteration and the winning round.
        mode: ``"min"`` or ``"max"`` for ``monitor``.
        tolerance: a round wins within this much of round 0's best value.
        seed: seeds the random criterion and controls; None: ``torch.initial_seed()`` (lth-train: its ``seed``).
        masks_from: a finished run's folder whose masks to train instead of pruning (the paper's controls).
        target_density: instead of ``rounds``, the density to prune down to.
        steps_per_round: the round length in optimizer steps instead of ``epochs_per_round`` (the paper counts
            iterations: 50K for LeNet); rounds then start and end between any two steps.
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

    def validated(self) -> PruningSettings:
        """A copy with every value checked (a ValueError names the bad one) and normalised: ``rounds`` resolved,
        a digit string of ``rewind`` made a step."""
        rate = check_rate(self.prune_rate)
        target = check_target_density(self.target_density)
        rewind = check_rewind(self.rewind)
        layer_rates = check_layer_rates(self.layer_rates)
        rate_overrides(layer_rates, layer_rates)  # every rate checked now, not at round 1
        criteria.get(self.criterion)
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
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain values, as checkpoints and ticket metadata record them."""
        return asdict(self)
