"""Early-bird tickets (You et al., ICLR 2020, "Drawing early-bird tickets"): the mask a network would be pruned to
stops changing early in training, so the dense training can end once it has settled.

The rule is the paper's (``EarlyBird`` in github.com/RICE-EIC/Early-Bird-Tickets, ``main.py``): keep the last
``window`` masks in a first-in-first-out queue; once it is full, measure the distance from the newest mask to each
older one, and call the ticket drawn when every one of these ``window - 1`` distances is at most ``threshold``. The
distance is the normalised Hamming distance: the share of entries on which two masks disagree.

The paper's masks are channel masks (network slimming, Liu et al. 2017): every BatchNorm's scaling factors γ,
ranked together by |γ|, the lowest ``ratio`` of them pruned (:func:`channel_masks`). Any mask can be watched:
:class:`EarlyBirdDetector` compares whatever ``name -> bool tensor`` masks it is given.

Pure torch: no Lightning, no W&B.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from lth_wandb.pruning import masks as M

# The paper's channel pruning ratios (You et al. 2020, Tables 1-2: p = 30%, 50%, 70% of the channels).
PAPER_CHANNEL_RATIOS = (0.3, 0.5, 0.7)


def scaling_factors(module: nn.Module) -> dict[str, nn.Parameter]:
    """The scaling factor γ (``weight``) of every affine BatchNorm in ``module``, by parameter name."""
    return {
        f"{name}.weight" if name else "weight": sub.weight
        for name, sub in module.named_modules()
        if isinstance(sub, nn.modules.batchnorm._BatchNorm) and sub.weight is not None
    }


def channel_masks(factors: Mapping[str, torch.Tensor], ratio: float) -> M.Masks:
    """The paper's channel masks: every channel's |γ| ranked across all BatchNorms together, and the channels at
    or below the value at position ⌊C·ratio⌋ of the ascending order pruned (C channels in all), as the authors'
    ``EarlyBird.pruning`` does: ⌊C·ratio⌋ + 1 channels without ties, every tie of the threshold with them.

    Raises:
        ValueError: no scaling factors, or ``ratio`` outside (0, 1).
    """
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio < 1:
        raise ValueError(
            f"ratio={ratio!r} must be the share of channels pruned, in (0, 1). Hint: the paper uses "
            f"{list(PAPER_CHANNEL_RATIOS)}"
        )
    if not factors:
        raise ValueError("no BatchNorm scaling factors to rank. Hint: channel masks need a network with BatchNorm")
    magnitudes = {n: g.detach().abs().reshape(-1).float().cpu() for n, g in factors.items()}
    pooled = torch.cat(list(magnitudes.values()))
    threshold = pooled.sort().values[int(pooled.numel() * ratio)]
    return {n: (m > threshold).reshape(factors[n].shape) for n, m in magnitudes.items()}


def mask_distance(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """Normalised Hamming distance between two sets of masks: the entries where they disagree over all entries of
    the masked tensors (0 = the same mask, 1 = every entry flipped).

    Raises:
        ValueError: the two cover different tensors or shapes, or no entries at all.
    """
    if set(a) != set(b) or any(a[n].shape != b[n].shape for n in a):
        raise ValueError(
            f"masks over different tensors or shapes cannot be compared: {sorted(a)[:5]} vs {sorted(b)[:5]}. "
            "Hint: compare masks of the same model"
        )
    entries = M.total(a)
    if entries == 0:
        raise ValueError("masks with no entries have no distance. Hint: compare masks of a model's weights")
    differ = sum(int((a[n].to(torch.bool) != b[n].to(b[n].device, torch.bool)).sum()) for n in a)
    return differ / entries


class EarlyBirdDetector:
    """Watches a sequence of masks (one per epoch) for the early-bird rule.

    Args:
        threshold: the largest distance, in [0, 1), between the newest mask and each older one in the queue that
            still counts as settled (the paper: 0.1).
        window: masks in the queue, >= 2 (the paper: 5, so 4 distances). The rule can hold at the earliest on
            the ``window``-th mask.
    """

    def __init__(self, threshold: float = 0.1, window: int = 5):
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold < 1:
            raise ValueError(f"threshold={threshold!r} must be a number in [0, 1). Hint: the paper uses 0.1")
        if isinstance(window, bool) or not isinstance(window, int) or window < 2:
            raise ValueError(f"window={window!r} must be an integer >= 2. Hint: the paper keeps 5 masks")
        self.threshold, self.window = float(threshold), window
        self.queue: list[M.Masks] = []  # oldest first; CPU bool copies
        self.distances: list[float] = []  # newest mask to each older one in the queue, oldest first

    @property
    def last_distance(self) -> float | None:
        """Distance between the two newest masks (consecutive epochs); None before the second mask."""
        return self.distances[-1] if self.distances else None

    @property
    def max_distance(self) -> float | None:
        """The largest distance the rule checks; None until the queue is full."""
        return max(self.distances) if len(self.queue) == self.window else None

    def update(self, masks: Mapping[str, torch.Tensor]) -> bool:
        """Add the newest mask; True when the queue is full and every distance from it to the older masks is at
        most ``threshold``."""
        newest = {n: m.detach().to("cpu", torch.bool, copy=True) for n, m in masks.items()}
        self.queue = [*self.queue, newest][-self.window :]
        self.distances = [mask_distance(newest, older) for older in self.queue[:-1]]
        return len(self.queue) == self.window and all(d <= self.threshold for d in self.distances)

    def state_dict(self) -> dict[str, Any]:
        # Bit-packed: a checkpoint holds `window` masks of the whole model.
        return {
            "threshold": self.threshold,
            "window": self.window,
            "queue": [{n: (M.pack_bits(m), tuple(m.shape)) for n, m in masks.items()} for masks in self.queue],
            "distances": list(self.distances),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a saved queue; its threshold and window must be this detector's."""
        saved = (state.get("threshold", self.threshold), state.get("window", self.window))
        if saved != (self.threshold, self.window):
            raise ValueError(
                f"early-bird state saved with threshold, window = {saved} cannot resume with "
                f"{(self.threshold, self.window)}. Hint: resume with the settings the run was started with"
            )
        self.queue = [{n: M.unpack_bits(bits, shape) for n, (bits, shape) in masks.items()} for masks in state["queue"]]
        self.distances = [float(d) for d in state.get("distances", [])]
