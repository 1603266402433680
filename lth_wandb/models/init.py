"""Initialisations a network can be built with, by name (a model's ``init`` argument).

- ``"open_lth"``: what open_lth (github.com/facebookresearch/open_lth) gives every model by default, so its presets
  start from the same distribution: ``kaiming_normal`` (``models/initializers.py``: He normal, fan-in, on every
  Conv2d and Linear weight; biases keep PyTorch's default) and ``batchnorm_init='uniform'``
  (``models/bn_initializers.py``: every BatchNorm2d's γ drawn from U[0, 1), β = 0).
"""

from __future__ import annotations

import torch
from torch import nn

INITS = (None, "open_lth")


def check_init(init: str | None) -> str | None:
    if init not in INITS:
        raise ValueError(
            f"unknown init {init!r}; valid: {list(INITS)}. Hint: None keeps the model's own initialisation, "
            "'open_lth' is open_lth's default (He normal fan-in weights, BatchNorm γ ~ U[0, 1))"
        )
    return init


def apply_init(module: nn.Module, init: str | None) -> None:
    """Re-initialise ``module`` in place by ``init`` (None: leave it as built)."""
    if check_init(init) is None:
        return
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(sub.weight)
            elif isinstance(sub, nn.BatchNorm2d):
                sub.weight.uniform_(0.0, 1.0)
                sub.bias.zero_()
