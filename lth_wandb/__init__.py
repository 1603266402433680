"""lth-wandb: find lottery tickets with iterative magnitude pruning in PyTorch Lightning."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lth_wandb.lazy import lazy_exports

if TYPE_CHECKING:
    from lth_wandb.lottery.callback import LotteryTicket
    from lth_wandb.pruning.ticket import Ticket

__all__ = ["LotteryTicket", "Ticket"]
__version__ = "0.1.0"

# Imported on first use: the callback brings PyTorch Lightning (seconds), which `lth-train --cfg job` never needs.
__getattr__, __dir__ = lazy_exports(
    __name__, {"LotteryTicket": "lth_wandb.lottery.callback", "Ticket": "lth_wandb.pruning.ticket"}
)
