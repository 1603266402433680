"""Checks of LotteryTicket's constructor arguments: each returns the value to keep or raises a ValueError that
names the bad value, the allowed values and a hint."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from lth_wandb.pruning.ticket import Ticket

REWIND_MODES = ("init", "lr", "none")
CONTROLS = (None, "reinit", "random_mask")
MODES = ("min", "max")
# The criteria whose masks follow the weights as they train: random masks and masks chosen at initialisation do not.
EARLY_BIRD_CRITERIA = ("magnitude", "magnitude_increase", "movement")
# What the early bird watches: "channels" is You et al.'s channel mask of BatchNorm scaling factors, "weights"
# lth-wandb's unstructured mask of round 1 (for networks without BatchNorm).
EARLY_BIRD_MASKS = ("weights", "channels")


def check_int(value: Any, name: str, minimum: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}. Hint: {hint}.")
    return value


def check_rewind(rewind: str | int) -> str | int:
    """``"init"``, ``"lr"``, ``"none"`` or a step k >= 0 (digit strings too, as configs and command lines give)."""
    if isinstance(rewind, str) and rewind.isdigit():
        rewind = int(rewind)
    if isinstance(rewind, int) and not isinstance(rewind, bool):
        if rewind < 0:
            raise ValueError(f"rewind={rewind} must be a step >= 0 (late rewinding) or one of {list(REWIND_MODES)}.")
        return rewind
    if rewind not in REWIND_MODES:
        raise ValueError(
            f"unknown rewind {rewind!r}; allowed: {list(REWIND_MODES)} or an int step k >= 0. Hint: 'init' is the "
            "paper's IMP, 'none' keeps training without rewinding."
        )
    return rewind


def check_control(control: str | None, rewind: str | int = "init") -> str | None:
    if control not in CONTROLS:
        raise ValueError(
            f"unknown control {control!r}; valid controls: {list(CONTROLS)}. Hint: 'reinit' is the paper's "
            "random reinitialisation control, 'random_mask' its random pruning control."
        )
    if control == "reinit" and rewind == "none":
        raise ValueError(
            "control='reinit' with rewind='none': the control redraws the weights each round starts from, but "
            "rewind='none' fine-tunes the trained weights without restarting the round. Hint: rewind='init' (the "
            "paper's control) or an int step"
        )
    return control


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {list(MODES)}. Hint: 'min' for a loss, 'max' for accuracy.")
    return mode


def check_tolerance(tolerance: float) -> float:
    number = isinstance(tolerance, (int, float)) and not isinstance(tolerance, bool)
    if not number or not 0 <= tolerance < math.inf:
        raise ValueError(
            f"tolerance={tolerance!r} must be a finite number >= 0 (0 = at least as good as round 0; infinity "
            "would make every round a winner)."
        )
    return float(tolerance)


def check_seed(seed: Any) -> int | None:
    """None (take ``torch.initial_seed()``) or a whole number; a float would be silently truncated."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed={seed!r} must be a whole number >= 0, or None to follow torch.initial_seed().")
    return seed


def check_monitor(monitor: Any) -> str:
    if not isinstance(monitor, str) or not monitor:
        raise ValueError(f"monitor={monitor!r} must be the name of a logged metric, e.g. 'val/loss'.")
    return monitor


def check_layer_rates(layer_rates: Any) -> dict[str, float]:
    """None or a mapping of glob -> rate; the rates themselves are checked by ``pruning.rate_overrides``."""
    if layer_rates is None:
        return {}
    if not isinstance(layer_rates, Mapping) or not all(isinstance(k, str) for k in layer_rates):
        raise ValueError(
            f"layer_rates={layer_rates!r} must be a mapping of name globs to rates, e.g. {{'*out.weight': 0.1}}."
        )
    return dict(layer_rates)


def check_parameters(parameters: Sequence[str] | None) -> list[str] | None:
    """None (every Linear/Conv weight) or a non-empty list of globs over ``named_parameters()`` names."""
    if parameters is None:
        return None
    if isinstance(parameters, str) or not list(parameters) or not all(isinstance(g, str) for g in parameters):
        raise ValueError(
            f"parameters={parameters!r} must be a non-empty list of globs over named_parameters() names. "
            "Hint: parameters=['*.weight'] or leave it unset for every Linear/Conv weight."
        )
    return list(parameters)


def load_ticket_arg(ticket: Ticket | str | PathLike | None) -> Ticket | None:
    """A Ticket as given, or loaded from the directory ``Ticket.save`` wrote."""
    if ticket is None or isinstance(ticket, Ticket):
        return ticket
    if isinstance(ticket, (str, PathLike)):
        return Ticket.load(ticket)
    raise TypeError(f"ticket={ticket!r} must be a Ticket, a directory written by Ticket.save, or None")


def load_mask_sequence(masks_from: Any, rounds: int) -> list[dict]:
    """The masks of rounds 1..``rounds`` from a run's tickets (``<folder>/tickets/round-<r>/ticket`` or
    ``<tickets>/round-<r>/ticket``), or a list of masks as given; [] for None."""
    if masks_from is None:
        return []
    if isinstance(masks_from, (str, PathLike)):
        folder = Path(masks_from).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(
                f"masks_from={str(masks_from)!r} does not exist: it is the run folder whose tickets "
                "(tickets/round-<r>/ticket) this run trains, moved or deleted since. Hint: a run that resumes needs "
                f"it at that path: move it back, or link it there (ln -s <where it is now> {folder}); a new run can "
                "name its new place"
            )
        folder = folder / "tickets" if (folder / "tickets").is_dir() else folder
        missing = [r for r in range(1, rounds + 1) if not (folder / f"round-{r}" / "ticket").is_dir()]
        if missing:
            raise FileNotFoundError(
                f"masks_from={str(masks_from)!r} has no ticket for rounds {missing} (looked for "
                f"{folder}/round-<r>/ticket). Hint: pass a finished run's output folder, with rounds <= its rounds"
            )
        return [Ticket.load(folder / f"round-{r}" / "ticket").masks for r in range(1, rounds + 1)]
    masks = list(masks_from)
    if len(masks) < rounds or not all(isinstance(m, Mapping) for m in masks):
        raise ValueError(
            f"masks_from holds {len(masks)} entries but rounds={rounds} needs one mask dict per round. Hint: one "
            "{name: bool tensor} per round 1..rounds"
        )
    return masks[:rounds]


DEFAULT_ROUNDS = 5


def check_target_density(target: Any) -> float | None:
    number = isinstance(target, (int, float)) and not isinstance(target, bool)
    if target is not None and (not number or not 0 < target < 1):
        raise ValueError(
            f"target_density={target!r} must be a fraction in (0, 1): the share of weights left after the last "
            "round. Hint: 0.036 is the paper's 3.6%"
        )
    return None if target is None else float(target)


def rounds_for(rounds: Any, target_density: float | None, prune_rate: float) -> int:
    """``rounds`` as given, or the fewest rounds whose density (1 - prune_rate)^r reaches ``target_density``."""
    if target_density is None:
        rounds = DEFAULT_ROUNDS if rounds is None else rounds
        return check_int(rounds, "rounds", 0, "use 0 to train once without pruning")
    needed = math.ceil(math.log(target_density) / math.log(1 - prune_rate) - 1e-9)
    if rounds is not None and rounds != needed:
        raise ValueError(
            f"rounds={rounds!r} and target_density={target_density} disagree: reaching {target_density:.1%} at "
            f"prune_rate={prune_rate} takes {needed} rounds. Hint: give one of the two"
        )
    return needed


def check_early_bird_mask(mask: Any, ratio: Any, l1: Any) -> tuple[str, float, float]:
    """``early_bird_mask`` (one of EARLY_BIRD_MASKS), the channel ``ratio`` in (0, 1) and the ``l1`` penalty >= 0."""
    if mask not in EARLY_BIRD_MASKS:
        raise ValueError(
            f"early_bird_mask={mask!r} is not one of {list(EARLY_BIRD_MASKS)}. Hint: 'channels' is the paper's "
            "(BatchNorm channel masks), 'weights' lth-wandb's unstructured round-1 mask, for networks without BatchNorm"
        )
    number = isinstance(ratio, (int, float)) and not isinstance(ratio, bool)
    if not number or not 0 < ratio < 1:
        raise ValueError(
            f"early_bird_ratio={ratio!r} must be the share of channels pruned, in (0, 1). Hint: the paper uses 0.3, "
            "0.5 and 0.7"
        )
    number = isinstance(l1, (int, float)) and not isinstance(l1, bool)
    if not number or not 0 <= l1 < math.inf:
        raise ValueError(
            f"early_bird_l1={l1!r} must be a finite number >= 0: the L1 penalty on BatchNorm scaling factors. "
            "Hint: the authors' code uses 1e-4; 0 turns it off"
        )
    return mask, float(ratio), float(l1)


def check_early_bird(
    enabled: Any, threshold: Any, window: Any, steps_per_round: Any, criterion: str, mask: str = "weights"
) -> tuple[bool, float, int]:
    """``early_bird`` (a bool), its ``threshold`` in [0, 1) and ``window`` >= 2; with early_bird on, rounds counted
    in epochs and, when it watches the ``weights`` mask, a criterion whose mask follows the weights."""
    if not isinstance(enabled, bool):
        raise ValueError(f"early_bird={enabled!r} must be true or false. Hint: early_bird=true ends round 0 early")
    number = isinstance(threshold, (int, float)) and not isinstance(threshold, bool)
    if not number or not 0 <= threshold < 1:
        raise ValueError(
            f"early_bird_threshold={threshold!r} must be a number in [0, 1): the largest share of mask entries "
            "that may still change between epochs. Hint: the paper uses 0.1"
        )
    window = check_int(window, "early_bird_window", 2, "the paper compares the last 5 epochs' masks")
    if enabled and steps_per_round is not None:
        raise ValueError(
            f"early_bird with steps_per_round={steps_per_round}: the early bird compares masks at epoch ends, "
            "while steps_per_round ends rounds between steps. Hint: count rounds in epochs (epochs_per_round)"
        )
    if enabled and mask == "weights" and criterion not in EARLY_BIRD_CRITERIA:
        raise ValueError(
            f"early_bird with criterion={criterion!r}: its mask does not follow the trained weights, so it would not "
            f"change between epochs and round 0 would end at the first chance. Allowed: {list(EARLY_BIRD_CRITERIA)}. "
            "Hint: criterion='magnitude', or early_bird_mask='channels' (the paper's BatchNorm channel masks)"
        )
    return enabled, float(threshold), window
