"""lth-wandb: find lottery tickets with iterative magnitude pruning in PyTorch Lightning."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lth_wandb.lottery.callback import LotteryTicket
    from lth_wandb.pruning.ticket import Ticket

__all__ = ["LotteryTicket", "Ticket"]
__version__ = "0.1.0"

# Imported on first use: importing any lth_wandb module runs this file, and the callback brings PyTorch Lightning
# (seconds), which `lth-train --cfg job`, `--help` and a misspelt override never need.
_LAZY = {"LotteryTicket": "lth_wandb.lottery.callback", "Ticket": "lth_wandb.pruning.ticket"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lth_wandb' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
