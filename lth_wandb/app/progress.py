"""What a researcher sees in the terminal: a progress bar that shows the pruning round and the density, and a
table of rounds at the end."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
from packaging.version import Version
from pytorch_lightning.callbacks import RichProgressBar
from rich.console import Console
from rich.table import Table

from lth_wandb.app.quiet import quiet_noise  # noqa: F401  (its old home)
from lth_wandb.lottery.callback import LotteryTicket

# Lightning 2.6 made RichProgressBar's refresh_rate redraws per second (default 100, drawn by a thread). Before, it
# was batches between updates, and the bar advanced by it at each update, so skipping batches would miscount.
_PER_SECOND = Version(pl.__version__) >= Version("2.6")


class RoundProgressBar(RichProgressBar):
    """Lightning's rich progress bar, with ``round r/R`` and the current density beside the metrics.

    Drawn at most ``refresh_rate`` times a second, and the training bar and its metrics are updated no more often:
    Lightning's defaults (a redraw thread at 100 Hz, metrics converted after every batch) cost LeNet-300-100 about a
    tenth of its training time on 2 cores, for changes no one can read.

    Args:
        refresh_rate: redraws per second (0 hides the display); before Lightning 2.6, batches between updates.
            None: 4 per second, or every batch before 2.6.
    """

    def __init__(self, refresh_rate: int | None = None, **kwargs: Any) -> None:
        default = 4 if _PER_SECOND else 1
        super().__init__(refresh_rate=default if refresh_rate is None else refresh_rate, **kwargs)
        self._last_batch_update = -math.inf
        self._density: tuple[int, dict, str] | None = None  # round, the masks dict it was counted from, the text

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx):
        if not _PER_SECOND:
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
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
        # both replace the masks dict (held here, so its identity cannot be reused by a new one).
        cached = self._density
        if cached is None or cached[0] != lottery.round or cached[1] is not lottery.masks:
            self._density = cached = (lottery.round, lottery.masks, f"{lottery.density():.1%}")
        return cached[2]


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
