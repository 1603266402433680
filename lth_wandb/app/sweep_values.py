"""Sweep parameter values are data. ``wandb agent`` and lth-sweep pass each as a ``key=value`` override, and Hydra
would resolve an interpolation in one (``${oc.env:SECRET}`` puts an environment variable's value into the run
config, W&B and ``run.json``): values come from a server and from other people, so every value the sweep set
arrives as written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import yaml


def escape_sweep_values(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``${`` escaped in the values of the sweep's parameters (those in the agent's parameter file,
    ``WANDB_SWEEP_PARAM_PATH``); other arguments unchanged."""
    path = os.environ.get("WANDB_SWEEP_PARAM_PATH")
    if not path or not Path(path).is_file():
        return list(argv)
    try:
        swept = set(yaml.safe_load(Path(path).read_text()) or {})
    except (yaml.YAMLError, TypeError):
        swept = set()
    escaped = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+~") in swept and "${" in value:
            arg = f"{key}={value.replace('${', chr(92) + '${')}"  # OmegaConf reads \${ as a literal ${
        escaped.append(arg)
    return escaped
