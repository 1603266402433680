"""Choosing which weights to prune: pure functions from scores and masks to new masks.

Counts are exact: ties are broken by position rather than by a threshold, so a round removes exactly
``floor(rate * kept + 1/2)`` entries (half up, unlike Python's ``round``, which rounds half to even) and the
density after r rounds is (1 - rate)^r up to rounding.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fnmatch import fnmatchcase

import torch

from lth_wandb.pruning.masks import Masks

SCOPES = ("global", "layerwise")


def check_rate(rate: float, what: str = "prune_rate", *, allow_zero: bool = False) -> float:
    """Validate a pruning rate: the fraction of *remaining* weights removed per round."""
    number = isinstance(rate, (int, float)) and not isinstance(rate, bool)
    if not number or not ((rate >= 0 if allow_zero else rate > 0) and rate < 1):
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        problem = f"is outside {interval}" if number else f"must be a number in {interval}, not {type(rate).__name__}"
        raise ValueError(
            f"{what}={rate!r} {problem}; it is the fraction of the remaining weights removed per round. Hint: the "
            "paper uses 0.2 (0.1 for the output layer)."
        )
    return float(rate)


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise ValueError(
            f"unknown scope {scope!r}; valid scopes: {list(SCOPES)}. Hint: 'layerwise' prunes every tensor by "
            "the same fraction (the paper's LeNet setting), 'global' uses one threshold across tensors."
        )
    return scope


def rate_overrides(names, layer_rates: Mapping[str, float] | None) -> dict[str, float]:
    """Map each name to its overriding rate: the first pattern in ``layer_rates`` that matches it wins."""
    overrides = {}
    for name in names:
        for pattern, rate in (layer_rates or {}).items():
            if matches(name, pattern):
                overrides[name] = check_rate(rate, f"layer_rates[{pattern!r}]", allow_zero=True)
                break
    return overrides


def matches(name: str, pattern: str) -> bool:
    """A glob (``*out.weight``) matches whole names; a key without glob characters (``out.weight``) also matches as
    a dotted suffix (``net.out.weight``), since Hydra's command line cannot write ``*`` in a dict key."""
    if fnmatchcase(name, pattern):
        return True
    return not any(c in pattern for c in "*?[") and name.endswith("." + pattern)


def prune(
    scores: Mapping[str, torch.Tensor],
    masks: Masks,
    rate: float,
    scope: str = "global",
    layer_rates: Mapping[str, float] | None = None,
) -> Masks:
    """Remove the lowest-scoring ``rate`` fraction of the weights each mask still keeps.

    Args:
        scores: name -> score tensor (higher = more worth keeping), shaped like the mask.
        masks: name -> bool tensor, True = kept. Pruned entries stay pruned.
        rate: fraction of the remaining entries to remove, in (0, 1).
        scope: ``"global"``: one ranking across all tensors without an override; ``"layerwise"``: every tensor
            loses ``rate`` of its own remaining entries.
        layer_rates: glob -> rate overrides (e.g. ``{"*out*.weight": 0.1}``). Matching tensors are always
            pruned on their own, at their own rate, whatever the scope.

    Returns:
        New masks (CPU bool tensors); the inputs are not modified.
    """
    check_rate(rate)
    check_scope(scope)
    overrides = rate_overrides(masks, layer_rates)
    new: Masks = {}
    for name in masks:
        if scope == "layerwise" or name in overrides:
            new.update(_prune_jointly({name: scores[name]}, {name: masks[name]}, overrides.get(name, rate)))
    pooled = [name for name in masks if name not in new]
    if pooled:
        new.update(_prune_jointly({n: scores[n] for n in pooled}, {n: masks[n] for n in pooled}, rate))
    return {name: new[name] for name in masks}


def _prune_jointly(scores: Mapping[str, torch.Tensor], masks: Masks, rate: float) -> Masks:
    """Rank all entries of several tensors together and keep the best ``(1 - rate)`` of the kept ones."""
    names = list(masks)
    for name in names:
        if scores[name].shape != masks[name].shape:
            raise ValueError(
                f"score for {name!r} has shape {tuple(scores[name].shape)} but its mask has {tuple(masks[name].shape)}"
            )
    device = scores[names[0]].device
    flat_mask = torch.cat([masks[n].reshape(-1).to(device) for n in names])
    flat_score = torch.cat([scores[n].detach().reshape(-1).float() for n in names])
    n_kept = int(flat_mask.sum())
    n_keep = n_kept - math.floor(rate * n_kept + 0.5)
    # Pruned entries rank below everything so they can never come back.
    ranked = flat_score.masked_fill(~flat_mask, -math.inf).nan_to_num(nan=-math.inf, neginf=-math.inf)
    keep = torch.zeros_like(flat_mask)
    keep[torch.topk(ranked, n_keep, sorted=False).indices] = True
    keep &= flat_mask
    return _split(keep.cpu(), masks)


def shuffle_positions(new: Masks, old: Masks, generator: torch.Generator | None = None) -> Masks:
    """Random-mask control: keep as many entries per tensor as ``new`` does, at random positions of ``old``.

    Per-tensor densities match what the criterion chose, and the result stays nested inside the previous mask.
    """
    result = {}
    for name, mask in new.items():
        prev = old[name].reshape(-1)
        candidates = prev.nonzero().squeeze(1)
        chosen = candidates[torch.randperm(candidates.numel(), generator=generator)[: int(mask.sum())]]
        flat = torch.zeros_like(prev)
        flat[chosen] = True
        result[name] = flat.reshape(mask.shape)
    return result


def _split(flat: torch.Tensor, like: Masks) -> Masks:
    out, start = {}, 0
    for name, mask in like.items():
        out[name] = flat[start : start + mask.numel()].reshape(mask.shape).clone()
        start += mask.numel()
    return out
