"""Pruning criteria: how much each weight deserves to stay. Higher score = kept first.

Each criterion is a pure function ``score(final, reference, generator) -> Tensor`` of the weights at the end of
the round (``final``) and at the point the round was rewound to or started from (``reference``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch

Criterion = Callable[[torch.Tensor, "torch.Tensor | None", "torch.Generator | None"], torch.Tensor]


def magnitude(final: torch.Tensor, reference=None, generator=None) -> torch.Tensor:
    """|w_final|: the paper's criterion (Frankle & Carbin 2019)."""
    return final.abs()


def magnitude_increase(final: torch.Tensor, reference: torch.Tensor, generator=None) -> torch.Tensor:
    """|w_final| - |w_reference|: weights that grew in magnitude (Zhou et al. 2019)."""
    return final.abs() - reference.abs()


def movement(final: torch.Tensor, reference: torch.Tensor, generator=None) -> torch.Tensor:
    """|w_final - w_reference|: weights that changed the least are pruned first."""
    return (final - reference).abs()


def random(final: torch.Tensor, reference=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform random scores: random pruning. Drawn on the CPU so a seeded generator is reproducible anywhere."""
    return torch.rand(final.shape, generator=generator)


CRITERIA: dict[str, Criterion] = {
    "magnitude": magnitude,
    "magnitude_increase": magnitude_increase,
    "movement": movement,
    "random": random,
}

# Criteria that compare against the reference weights, so the caller must keep a copy of them.
NEEDS_REFERENCE = frozenset({"magnitude_increase", "movement"})


def score_all(
    name: str,
    current: Mapping[str, torch.Tensor],
    names: Iterable[str],
    reference: Mapping[str, torch.Tensor],
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Criterion ``name``'s score of each tensor in ``names``: its ``current`` values, against ``reference`` (moved
    to the tensor's device and dtype) for the criteria that need one. Scores live where the tensors do."""
    score, scores = get(name), {}
    for n in names:
        value = current[n].detach()
        ref = reference.get(n)
        scores[n] = score(value, None if ref is None else ref.to(value.device, value.dtype), generator).to(value.device)
    return scores


def get(name: str) -> Criterion:
    """Look up a criterion by name.

    Raises:
        ValueError: unknown name; the message lists the valid ones.
    """
    try:
        return CRITERIA[name]
    except KeyError:
        raise ValueError(
            f"unknown criterion {name!r}; valid criteria: {sorted(CRITERIA)}. Hint: 'magnitude' is the paper's choice."
        ) from None
