"""Weights & Biases: the run and its mode, the pruning-round axis, ticket artifacts, reading run files back.

With lth_wandb.sweeps and lth_wandb.report, the only packages that import W&B. Importing this package itself does
not: lth-train checks its config (``WANDB_MODES``) before W&B is loaded, and the public names below load on use.
"""

from __future__ import annotations

from typing import Any

WANDB_MODES = ("online", "offline", "disabled")
TICKET_TYPE = "lottery-ticket"  # the W&B artifact type of a ticket (lth_wandb.tracking.artifacts logs them)
ROUND = "round"  # the x axis of every round/* metric

_LAZY = {
    "make_logger": "lth_wandb.tracking.run",
    "RoundLogger": "lth_wandb.tracking.rounds",
    "TicketArtifacts": "lth_wandb.tracking.artifacts",
    "load_ticket": "lth_wandb.tracking.tickets",
    "download_ticket": "lth_wandb.tracking.tickets",
    "record_ticket_use": "lth_wandb.tracking.tickets",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lth_wandb.tracking' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
