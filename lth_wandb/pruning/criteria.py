"""Pruning criteria: how much each weight deserves to stay. Higher score = kept first.

Each criterion is a pure function ``score(final, reference, generator) -> Tensor`` of the weights at the end of
the round (``final``) and at the point the round was rewound to or started from (``reference``).

The criteria at initialisation (``snip``, ``grasp``, ``synflow``, ``magnitude_init``; :mod:`.at_init`) score θ0
instead, before any training, and prune from the full network to the density of the round.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch

from lth_wandb.pruning import at_init

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


def is_at_init(name: str) -> bool:
    """Whether ``name`` scores θ0 before training (SNIP, GraSP, SynFlow, magnitude at init) rather than the weights
    a round trained to."""
    return name in at_init.CRITERIA


def get(name: str) -> Callable:
    """Look up a criterion by name: a :data:`Criterion`, or for the criteria at initialisation the scoring
    function of :mod:`.at_init` (SynFlow's is its whole iterative pruning).

    Raises:
        ValueError: unknown name; the message lists the valid ones.
    """
    if name in CRITERIA:
        return CRITERIA[name]
    if is_at_init(name):
        return at_init.SCORES.get(name, at_init.synflow)
    raise ValueError(
        f"unknown criterion {name!r}; valid criteria: {sorted(CRITERIA)}, and at initialisation: "
        f"{sorted(at_init.CRITERIA)}. Hint: 'magnitude' is the paper's choice."
    )


def check(name: str, rewind: str | int = "init") -> str:
    """``name`` if it is a criterion that can run with ``rewind``: masks chosen at initialisation are not nested
    across rounds, so a round must restart from a rewind point, not from the trained weights of the last one."""
    get(name)
    if is_at_init(name) and rewind in ("lr", "none"):
        raise ValueError(
            f"criterion={name!r} with rewind={rewind!r}: a criterion at initialisation picks every round's mask "
            "afresh from θ0, so weights the last round pruned would come back at zero. Hint: rewind='init' (the "
            "papers' setting) or an int step"
        )
    return name
