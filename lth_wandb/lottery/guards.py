"""What LotteryTicket refuses before it trains: settings that cannot prune the model, and trainers, optimizers or
checkpoints under which the rounds would silently go wrong. Each check raises a ValueError that names the value,
what is allowed and a fix; a setting that works but departs from the paper is warned about instead."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from lth_wandb.pruning import masks as M
from lth_wandb.pruning.prune import matches

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_names(module: nn.Module, parameters: Sequence[str] | None) -> list[str]:
    """The tensors to prune: those ``parameters`` globs select, or the weight of every Linear and Conv."""
    params = dict(module.named_parameters())
    if not params:
        raise ValueError(
            f"{type(module).__name__} has no parameters: nothing to train or prune. Hint: a network with Linear or "
            "Conv layers"
        )
    if parameters is None:
        names = [
            f"{mod_name}.weight" if mod_name else "weight"
            for mod_name, sub in module.named_modules()
            if isinstance(sub, PRUNABLE_TYPES)
        ]
    else:
        names = [n for n in params if any(fnmatchcase(n, g) for g in parameters)]
    if not names:
        raise ValueError(
            f"parameters={parameters!r} selects no tensor of {type(module).__name__}; available "
            f"names: {list(params)[:20]}. Hint: pass globs such as ['*.weight']."
        )
    refuse_tied(module, names)
    return names


def refuse_tied(module: nn.Module, names: list[str]) -> None:
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


def check_layer_rates_match(layer_rates: Mapping[str, float], names: list[str]) -> None:
    unmatched = [key for key in layer_rates if not any(matches(n, key) for n in names)]
    if unmatched:
        raise ValueError(
            f"layer_rates globs {unmatched} match none of the pruned tensors {names[:10]}. Hint: globs match "
            "whole names, e.g. '*out.weight'; a key without * matches a name's end, e.g. 'out.weight'"
        )


def check_mask_sequence(sequence: list[M.Masks], module: nn.Module, names: list[str], masks_from: Any) -> None:
    """``masks_from``'s masks must cover exactly the tensors this model prunes, with their shapes."""
    params = dict(module.named_parameters())
    for number, masks in enumerate(sequence, start=1):
        if set(masks) != set(names) or any(masks[n].shape != params[n].shape for n in names):
            raise ValueError(
                f"masks_from={masks_from!r}: round {number}'s masks cover {sorted(masks)[:5]} but this model "
                f"prunes {names[:5]} (or a shape differs). Hint: use the same model and parameters as that run"
            )


def check_rewind_step(rewind: str | int, steps_round0: int) -> None:
    """Late rewinding must go to a step inside round 0 (of ``steps_round0`` optimizer steps): a step at or past its
    end would leave the rewound rounds nothing to train."""
    if isinstance(rewind, int) and rewind >= steps_round0:
        raise ValueError(
            f"rewind={rewind} is not inside round 0, which has {steps_round0} optimizer steps; "
            f"allowed: 0..{steps_round0 - 1}. Hint: late rewinding uses an early step (Frankle et al. rewind "
            "to ~0.1-7% of training)."
        )


def check_rewind_epochs(rewind: str | int, steps_per_epoch: int, epochs_per_round: int, trainer: pl.Trainer) -> None:
    """Rounds counted in epochs end at epoch ends, so a rewound round trains ``epochs_per_round - k // S`` whole
    epochs (S steps each): ``k % S`` steps more than the paper's T - k. An epoch-interval schedule still ends where
    round 0's ended; a step-interval one would run past its end (a cosine climbs back up), so it is refused."""
    extra = rewind % steps_per_epoch if isinstance(rewind, int) and steps_per_epoch else 0
    if not extra:
        return
    total = steps_per_epoch * epochs_per_round
    hint = (
        f"Hint: count rounds in steps (steps_per_round={total}: rewound rounds then train exactly {total - rewind} "
        f"steps), or rewind to a multiple of {steps_per_epoch}"
    )
    if any(config.interval == "step" for config in trainer.lr_scheduler_configs):
        raise ValueError(
            f"rewind={rewind} is not a whole number of epochs ({steps_per_epoch} optimizer steps each), and rounds "
            f"counted in epochs end at epoch ends: a rewound round would train {extra} steps past where round 0's "
            f"step-interval LR schedule ended. {hint}"
        )
    rank_zero_warn(
        f"LotteryTicket: rewind={rewind} is not a whole number of epochs ({steps_per_epoch} optimizer steps each): "
        f"rewound rounds train {epochs_per_round - rewind // steps_per_epoch} whole epochs, {extra} steps more than "
        f"round 0 trained after step {rewind}. {hint}"
    )


def schedule_positions(steps_per_round: int, rewind: str | int, steps_per_epoch: int, rounds: int) -> list[int]:
    """With rounds of ``steps_per_round`` optimizer steps: the epoch-interval schedule steps each round has taken when
    it ends (rounds 0..``rounds``). A rewound round restarts the schedule where it was at the rewind step, then
    steps at the Trainer's epoch ends, which fall wherever the round happens to be."""
    k, s = (rewind if isinstance(rewind, int) else 0), steps_per_epoch
    positions = [steps_per_round // s]
    for r in range(1, rounds + 1):
        start = steps_per_round + (r - 1) * (steps_per_round - k)
        positions.append(k // s + (start + steps_per_round - k) // s - start // s)
    return positions


def check_step_rounds_schedule(
    rewind: str | int, steps_per_round: int, steps_per_epoch: int, rounds: int, trainer: pl.Trainer
) -> None:
    """Rounds counted in steps begin between epochs, and an epoch-interval LR schedule steps at the Trainer's epoch
    ends. Unless every round starts at an epoch boundary (``steps_per_round`` and the rewind step whole epochs), the
    rewound rounds end at other schedule positions than round 0: refused, as a step-interval schedule is under
    rounds counted in epochs. ``rewind="none"`` never restarts the schedule, so it is left alone."""
    k = rewind if isinstance(rewind, int) else 0
    epochs = [c for c in trainer.lr_scheduler_configs if c.interval == "epoch"]
    if rewind == "none" or not epochs or not steps_per_epoch or rounds < 1:
        return
    if steps_per_round % steps_per_epoch == 0 and k % steps_per_epoch == 0:
        return
    positions = schedule_positions(steps_per_round, rewind, steps_per_epoch, min(rounds, 3))
    ends = ", ".join(f"round {r} at {p}" for r, p in enumerate(positions))
    raise ValueError(
        f"steps_per_round={steps_per_round} with rewind={rewind!r} and an epoch-interval LR schedule "
        f"({steps_per_epoch} optimizer steps an epoch): rounds start between epochs, so the rounds end at different "
        f"schedule positions (epoch steps taken: {ends}). Hint: a step-interval schedule (interval='step'), "
        f"steps_per_round and an int rewind that are multiples of {steps_per_epoch}, or rounds counted in epochs "
        "(epochs_per_round)"
    )


def check_trainer(trainer: pl.Trainer, rounds_trained: int) -> None:
    """Refuse a step limit (it would end training inside a round) and a second fit of a used callback."""
    if trainer.max_steps not in (None, -1):
        raise ValueError(
            f"Trainer(max_steps={trainer.max_steps}) would end training inside a round, which LotteryTicket "
            "would record as finished. Hint: leave max_steps unset; rounds and epochs_per_round set the length"
        )
    if rounds_trained and trainer.ckpt_path is None:
        raise ValueError(
            f"this LotteryTicket already trained {rounds_trained} rounds in an earlier fit. Hint: use a new "
            "LotteryTicket for a new run, or continue this one with trainer.fit(..., ckpt_path=...)"
        )


def check_max_epochs(current: int, total: int, rounds: int, epochs_per_round: int) -> None:
    if current != total:
        raise ValueError(
            f"Trainer(max_epochs={current}) does not match LotteryTicket: (rounds + 1) * epochs_per_round = "
            f"({rounds} + 1) * {epochs_per_round} = {total}. Hint: set max_epochs={total} or leave it unset and the "
            "callback sets it."
        )


def refuse_lbfgs(optimizers: Sequence[torch.optim.Optimizer]) -> None:
    if any(isinstance(opt, torch.optim.LBFGS) for opt in optimizers):
        raise ValueError(
            "LotteryTicket cannot keep pruned weights at zero under LBFGS: its closure re-evaluates the "
            "model between the masked steps. Hint: use an element-wise optimizer (SGD, Adam, AdamW)"
        )


def check_same_settings(now: Mapping[str, Any], saved: Mapping[str, Any]) -> None:
    """A resumed run continues with the settings it was trained with; the seed may differ (it defaults to
    ``torch.initial_seed()``, and the checkpoint's wins)."""
    changed = {k: (v, saved[k]) for k, v in now.items() if k in saved and saved[k] != v and k != "seed"}
    if changed:
        described = ", ".join(f"{k}={value!r} (checkpoint: {then!r})" for k, (value, then) in changed.items())
        raise ValueError(
            f"LotteryTicket settings differ from the checkpoint's: {described}. A resumed run continues with "
            "the settings it was trained with. Hint: build the LotteryTicket with the checkpoint's settings"
        )
