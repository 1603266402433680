"""How much two pruning masks agree: intersection over union, churn, and pairwise matrices over many masks.

A mask set is ``name -> bool tensor`` (True = kept), as :mod:`lth_wandb.pruning.masks` has it. Two mask sets are
compared over the kept positions of all their tensors together (``iou``, ``churn``) or tensor by tensor
(``layer_iou``, ``layer_churn``). They must prune the same tensors with the same shapes.

Definitions, with A and B the kept positions of two masks and |·| a count:

- **IoU** = |A ∩ B| / |A ∪ B|: 1 for identical masks, 0 for disjoint ones. Two empty masks count as identical (1).
  For nested masks (IMP: B ⊆ A) it is just the density ratio |B| / |A|, whatever was pruned, so between
  rounds of one run it mostly restates the prune rate.
- **churn** = 1 − |A ∩ B| / min(|A|, |B|): the fraction of the sparser mask's kept positions that the
  denser mask prunes. It is 0 whenever one mask lies inside the other (every IMP round inside the one before),
  whatever the prune rate, and rises as the sparser mask keeps weights the denser one had cut (revived
  weights, masks chosen afresh each round as at-init criteria or random pruning do). Independent random masks
  give about 1 − max(dA, dB). An empty mask lies inside every mask: churn 0 (a layer pruned away
  brings nothing back).
- **chance IoU** (:func:`chance_iou`): the IoU two independent random masks of densities dA and dB have on
  average, dA·dB / (dA + dB − dA·dB). An IoU near it means the two masks share no more than chance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch

MaskSet = Mapping[str, torch.Tensor]
Measure = Callable[[MaskSet, MaskSet], float]
__all__ = [
    "chance_iou",
    "churn",
    "compatible",
    "counts",
    "iou",
    "layer_churn",
    "layer_iou",
    "overlap_matrix",
]


def counts(a: MaskSet, b: MaskSet) -> dict[str, tuple[int, int, int]]:
    """Per tensor: ``(kept in both, kept in a, kept in b)``.

    Raises:
        ValueError: the two mask sets do not name the same tensors, or a tensor's shape differs.
    """
    _check(a, b)
    out = {}
    for name, mask_a in a.items():
        x, y = mask_a.detach().to("cpu", torch.bool), b[name].detach().to("cpu", torch.bool)
        out[name] = (int(torch.logical_and(x, y).sum()), int(x.sum()), int(y.sum()))
    return out


def iou(a: MaskSet, b: MaskSet) -> float:
    """Intersection over union of the kept positions of all tensors together (see the module docstring)."""
    both, kept_a, kept_b = _totals(counts(a, b))
    return _iou(both, kept_a, kept_b)


def layer_iou(a: MaskSet, b: MaskSet) -> dict[str, float]:
    """Intersection over union per tensor."""
    return {name: _iou(*c) for name, c in counts(a, b).items()}


def churn(a: MaskSet, b: MaskSet) -> float:
    """Fraction of the sparser mask's kept positions that the other prunes, over all tensors together: 0 for nested
    masks (see the module docstring)."""
    return _churn(*_totals(counts(a, b)))


def layer_churn(a: MaskSet, b: MaskSet) -> dict[str, float]:
    """Churn per tensor."""
    return {name: _churn(*c) for name, c in counts(a, b).items()}


def chance_iou(density_a: float, density_b: float) -> float:
    """The expected IoU of two independent random masks with these densities (fractions kept)."""
    for name, d in (("density_a", density_a), ("density_b", density_b)):
        if not 0.0 <= d <= 1.0:
            raise ValueError(f"{name}={d!r} must be a fraction of weights kept, in [0, 1]. Hint: 0.2 for 20%.")
    union = density_a + density_b - density_a * density_b
    return density_a * density_b / union if union > 0 else 1.0


def compatible(a: MaskSet, b: MaskSet) -> bool:
    """Whether ``a`` and ``b`` mask the same tensors with the same shapes (so they can be compared)."""
    return a.keys() == b.keys() and all(tuple(a[n].shape) == tuple(b[n].shape) for n in a)


def overlap_matrix(masks: Sequence[MaskSet], measure: str | Measure = "iou") -> torch.Tensor:
    """The ``n x n`` matrix of ``measure`` between every pair of ``masks`` (float64).

    Args:
        masks: the mask sets, e.g. the tickets of several runs at one density.
        measure: ``"iou"``, ``"churn"``, or a function of two mask sets.

    Returns:
        A symmetric matrix; its diagonal is each mask set against itself (IoU 1, churn 0). Pairs that do not
        mask the same tensors (:func:`compatible`) are NaN: runs of different networks share no positions.
    """
    fn = _MEASURES.get(measure) if isinstance(measure, str) else measure
    if fn is None or not callable(fn):
        raise ValueError(f"measure={measure!r} is not one of {sorted(_MEASURES)} or a function of two mask sets")
    n = len(masks)
    matrix = torch.full((n, n), math.nan, dtype=torch.float64)
    for i in range(n):
        for j in range(i, n):
            if compatible(masks[i], masks[j]):
                matrix[i, j] = matrix[j, i] = fn(masks[i], masks[j])
    return matrix


def _check(a: MaskSet, b: MaskSet) -> None:
    if a.keys() != b.keys():
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise ValueError(
            f"the masks prune different tensors: only in the first {only_a[:5]}, only in the second {only_b[:5]}. "
            "Hint: compare masks of the same network and pruning selection."
        )
    for name in a:
        if tuple(a[name].shape) != tuple(b[name].shape):
            raise ValueError(
                f"{name!r} has shape {tuple(a[name].shape)} in the first masks but {tuple(b[name].shape)} in the "
                "second. Hint: compare masks of networks built with the same sizes."
            )


def _totals(per_tensor: Mapping[str, tuple[int, int, int]]) -> tuple[int, int, int]:
    return tuple(sum(c[i] for c in per_tensor.values()) for i in range(3))  # type: ignore[return-value]


def _iou(both: int, kept_a: int, kept_b: int) -> float:
    union = kept_a + kept_b - both
    return both / union if union else 1.0


def _churn(both: int, kept_a: int, kept_b: int) -> float:
    smaller = min(kept_a, kept_b)
    return 1.0 - both / smaller if smaller else 0.0  # an empty mask is nested in any other


_MEASURES: dict[str, Measure] = {"iou": iou, "churn": churn}
