"""Pruning criteria: how much each weight deserves to stay. Higher score = kept first.

Each criterion is a pure function ``score(final, reference, generator) -> Tensor`` of the weights at the end of
the round (``final``) and at the point the round was rewound to or started from (``reference``).
"""

from __future__ import annotations

from collections.abc import Callable

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
