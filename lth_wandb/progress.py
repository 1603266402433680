"""What a researcher sees in the terminal: a progress bar that shows the pruning round and the density, and a
table of rounds at the end."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar
from rich.console import Console
from rich.table import Table

from lth_wandb.callback import LotteryTicket
from lth_wandb.quiet import quiet_noise  # noqa: F401  (its old home)


class RoundProgressBar(RichProgressBar):
    """Lightning's rich progress bar, with ``round r/R`` and the current density beside the metrics.

    Drawn at most ``refresh_rate`` times a second, and the training bar and its metrics are updated no more often:
    Lightning's defaults (a redraw thread at 100 Hz, metrics converted after every batch) cost LeNet-300-100 about a
    tenth of its training time on 2 cores, for changes no one can read.

    Args:
        refresh_rate: redraws per second (0 hides the display).
    """

    def __init__(self, refresh_rate: int = 4, **kwargs: Any) -> None:
        super().__init__(refresh_rate=refresh_rate, **kwargs)
        self._last_batch_update = -math.inf
        self._density: tuple[tuple[int, int], str] | None = None  # (round, id of its masks) -> formatted density

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx):
        now = time.monotonic()
        last = batch_idx + 1 >= self.total_train_batches
        if self.refresh_rate > 0 and (last or now - self._last_batch_update >= 1 / self.refresh_rate):
            self._last_batch_update = now
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        lottery = next((cb for cb in trainer.callbacks if isinstance(cb, LotteryTicket)), None)
        if lottery is not None:
            metrics = {"round": f"{lottery.round}/{lottery.rounds}", "density": self._density_of(lottery), **metrics}
        return metrics

    def _density_of(self, lottery: LotteryTicket) -> str:
        # Counting the kept weights reads every mask; they change only when a round starts or a run resumes, and
        # both replace the masks dict.
        key = (lottery.round, id(lottery.masks))
        if self._density is None or self._density[0] != key:
            self._density = (key, f"{lottery.density():.1%}")
        return self._density[1]


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
