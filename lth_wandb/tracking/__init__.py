"""Weights & Biases: the run and its mode, the pruning-round axis, ticket artifacts, reading run files back.

With lth_wandb.sweeps and lth_wandb.report, the only packages that import W&B. Importing this package itself does
not: lth-train checks its config (``WANDB_MODES``) before W&B is loaded, and the public names below load on use.
"""

from __future__ import annotations

from lth_wandb.lazy import lazy_exports

WANDB_MODES = ("online", "offline", "disabled")
TICKET_TYPE = "lottery-ticket"  # the W&B artifact type of a ticket (lth_wandb.tracking.artifacts logs them)
ROUND = "round"  # the x axis of every round/* metric

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "make_logger": "lth_wandb.tracking.run",
        "RoundLogger": "lth_wandb.tracking.rounds",
        "TicketArtifacts": "lth_wandb.tracking.artifacts",
        "load_ticket": "lth_wandb.tracking.tickets",
        "download_ticket": "lth_wandb.tracking.tickets",
        "record_ticket_use": "lth_wandb.tracking.tickets",
    },
)
