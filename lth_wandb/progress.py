"""What a researcher sees in the terminal: a progress bar that shows the pruning round and the density, and a
table of rounds at the end."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar
from rich.console import Console
from rich.table import Table

from lth_wandb.callback import LotteryTicket


def quiet_noise() -> None:
    """Keep the terminal for what a researcher needs: drop other tools' adverts and notes about their internals."""
    logging.getLogger("alembic").setLevel(logging.WARNING)  # Optuna's storage lists every plugin it sets up
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(lambda record: not str(record.msg).startswith("💡 Tip"))
    # Lightning 2.6 calling a torch API that torch 2.13 deprecated: nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


class RoundProgressBar(RichProgressBar):
    """Lightning's rich progress bar, with ``round r/R`` and the current density beside the metrics."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        lottery = next((cb for cb in trainer.callbacks if isinstance(cb, LotteryTicket)), None)
        if lottery is not None:
            metrics = {"round": f"{lottery.round}/{lottery.rounds}", "density": f"{lottery.density():.1%}", **metrics}
        return metrics


def rounds_table(history: Sequence[dict[str, Any]], winning_round: int | None) -> Table:
    """One row per finished round: density, early-stop step, best monitored value, test accuracy there."""
    monitor = history[0]["monitor"] if history else "val/loss"
    table = Table(title="Lottery ticket rounds", title_justify="left")
    for column in ("round", "density", "early-stop step", f"best {monitor}", "val acc", "test acc", ""):
        table.add_column(column, justify="right")
    for h in history:
        metrics = h.get("metrics", {})
        table.add_row(
            str(h["round"]),
            f"{h['density']:.2%}",
            _fmt(h.get("best_step"), "{}"),
            _fmt(h.get("best_value"), "{:.4f}"),
            _fmt(metrics.get("val/acc"), "{:.2%}"),
            _fmt(metrics.get("test/acc"), "{:.2%}"),
            "★ winning" if h["round"] == winning_round and h["round"] > 0 else "",
        )
    return table


def print_rounds(lottery: LotteryTicket, console: Console | None = None) -> None:
    (console or Console()).print(rounds_table(lottery.history, lottery.winning_round))


def _fmt(value: Any, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)
