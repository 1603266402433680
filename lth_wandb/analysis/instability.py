"""Instability analysis: linear mode connectivity (Frankle, Dziugaite, Roy & Carbin, ICML 2020, arXiv 1912.05671).

Two copies of one network, trained from the same starting point with different SGD noise (data order), end at
W1 and W2. Walk the straight line between them, W(α) = (1 − α)·W1 + α·W2, and measure the test error at evenly
spaced α. The *instability* (the paper's error barrier height) is the highest error on the path less the mean of
the two ends' errors. The network is *stable* when that is below 2 percentage points: SGD noise then leads to
one linearly connected minimum. The paper's finding: an IMP subnetwork matches the dense network's accuracy
exactly when it is stable; LeNet is stable at initialisation, larger networks only from a few hundred or thousand
iterations in (hence late rewinding).

Pure torch: nothing here knows about training. :func:`error_path` takes an ``evaluate(state_dict) -> error``
callable, so it works for any model and any way of evaluating one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

StateDict = dict[str, torch.Tensor]

POINTS = 30  # the paper evaluates 30 evenly spaced points of the path
STABLE_BELOW = 0.02  # error as a fraction: the paper's 2 percentage points


def alphas(points: int = POINTS) -> list[float]:
    """``points`` evenly spaced interpolation weights from 0 to 1, both ends included (exactly 0.0 and 1.0).

    Raises:
        ValueError: ``points`` is not an int >= 2 (a path needs both its ends).
    """
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ValueError(f"points={points!r} must be an int >= 2 (both ends of the path). Hint: the paper uses 30")
    return torch.linspace(0.0, 1.0, points, dtype=torch.float64).tolist()


def interpolate(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], alpha: float) -> StateDict:
    """The state dict at ``alpha`` on the line from ``a`` (α = 0) to ``b`` (α = 1): every floating tensor,
    weights and buffers alike (BatchNorm's running statistics too), is ``(1 − α)·a + α·b``.

    Both ends are returned exactly (``torch.lerp`` computes from the nearer end), and an entry that is zero in
    both (a pruned weight, when both copies trained under one mask) stays exactly zero. Tensors that are not
    floating point (BatchNorm's ``num_batches_tracked``) cannot be mixed: they come from the nearer end.
    Results are new tensors on ``a``'s devices; ``a`` and ``b`` are not modified.

    Raises:
        ValueError: the two hold different names, shapes or dtypes, or ``alpha`` is outside [0, 1].
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha!r} must be a number in [0, 1]: 0 is the first end, 1 the second")
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise ValueError(f"the state dicts differ in names: only in the first {only_a}, only in the second {only_b}")
    out: StateDict = {}
    for name, x in a.items():
        y = b[name]
        if x.shape != y.shape or x.dtype != y.dtype:
            raise ValueError(
                f"{name}: {tuple(x.shape)} {x.dtype} against {tuple(y.shape)} {y.dtype}; both ends must be the same "
                "network. Hint: interpolate two copies of one model"
            )
        if x.is_floating_point() or x.is_complex():
            out[name] = torch.lerp(x.detach(), y.detach().to(x.device), float(alpha))
        else:
            out[name] = (x if alpha < 0.5 else y.to(x.device)).detach().clone()
    return out


def instability(errors: Sequence[float]) -> float:
    """The error barrier of a path: its highest error less the mean of its two ends' errors (``errors[0]`` and
    ``errors[-1]``). Never negative, since the ends are on the path.

    Raises:
        ValueError: fewer than two errors, or one that is not a finite number.
    """
    values = [float(e) for e in errors]
    if len(values) < 2:
        raise ValueError(f"errors={list(errors)!r}: a path needs at least its two ends")
    if not all(math.isfinite(e) for e in values):
        raise ValueError(f"errors={values!r} must all be finite numbers")
    return max(values) - (values[0] + values[-1]) / 2


def is_stable(value: float, threshold: float = STABLE_BELOW) -> bool:
    """Whether an instability (an error fraction) is below ``threshold`` (the paper's 2 percentage points)."""
    return value < threshold


def earliest_stable_step(instabilities: Mapping[int, float], threshold: float = STABLE_BELOW) -> int | None:
    """The step k from which the network is stable: the smallest measured k whose instability, and that of every
    larger measured k, is below ``threshold``. None when the last measured step is unstable (or nothing was).

    "From which it stays stable" rather than "the first that happens to be": instability falls as k grows, so
    a lone stable value below an unstable one is noise, and the paper's question is when the network *becomes*
    stable.
    """
    earliest = None
    for step in sorted(instabilities, reverse=True):
        if not is_stable(instabilities[step], threshold):
            break
        earliest = step
    return earliest


@dataclass
class ErrorPath:
    """The errors along the line between two networks.

    Attributes:
        alphas: the interpolation weights, 0 (first end) to 1 (second end).
        errors: the error at each of them.
    """

    alphas: list[float]
    errors: list[float]

    @property
    def instability(self) -> float:
        """The error barrier: highest error on the path less the mean of the ends' errors."""
        return instability(self.errors)

    @property
    def end_errors(self) -> tuple[float, float]:
        return self.errors[0], self.errors[-1]


def error_path(
    a: Mapping[str, torch.Tensor],
    b: Mapping[str, torch.Tensor],
    evaluate: Callable[[StateDict], float],
    points: int = POINTS,
) -> ErrorPath:
    """Evaluate ``evaluate`` (a state dict -> its error, e.g. test error as a fraction) at ``points`` evenly
    spaced points of the line from ``a`` to ``b``, ends included."""
    weights = alphas(points)
    return ErrorPath(weights, [float(evaluate(interpolate(a, b, alpha))) for alpha in weights])
