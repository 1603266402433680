"""lth-wandb: find lottery tickets with iterative magnitude pruning in PyTorch Lightning."""

from lth_wandb.callback import LotteryTicket
from lth_wandb.ticket import Ticket

__all__ = ["LotteryTicket", "Ticket"]
__version__ = "0.1.0"
