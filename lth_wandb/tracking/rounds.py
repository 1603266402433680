"""The pruning-round axis in W&B: one row per finished round (``round/*`` metrics against ``round``), with a
picture of where the first layer's kept connections go and how far the mask moved from the previous round's
(``round/mask_iou_prev``, ``round/mask_churn``, ``round/churn/<tensor>``; see :mod:`lth_wandb.analysis.overlap`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import wandb
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_warn

from lth_wandb.analysis import overlap
from lth_wandb.lottery.callback import LotteryTicket
from lth_wandb.tracking import ROUND
from lth_wandb.tracking.run import sent_before

STEP = "trainer/global_step"  # WandbLogger's x axis for everything it logs
IMAGE_KEY = "round/mask_first_layer"
IOU_PREV, CHURN, LAYER_CHURN = "round/mask_iou_prev", "round/mask_churn", "round/churn/"  # vs the previous round
VAL_ACC, TEST_ACC = "val/acc", "test/acc"
_MIN_IMAGE_SIDE = 64  # pixels: an 8x8 digit is upscaled 8x so it is visible in the W&B UI


def first_layer_connectivity(mask: torch.Tensor, input_shape: Sequence[int] | None) -> np.ndarray | None:
    """Where the kept connections of the first layer go.

    Args:
        mask: the first layer's bool mask: ``(out, C*H*W)`` for a Linear layer on flattened images, or
            ``(out, in_channels, kh, kw)`` for a Conv2d.
        input_shape: ``(C, H, W)`` or ``(H, W)`` of one input; needed for a Linear layer.

    Returns:
        Linear: an ``(H, W)`` int array, the kept connections per input pixel summed over outputs and
        channels (the paper's LeNet keeps the centre of MNIST). Conv2d: a ``(kh, kw)`` float array, the kept
        fraction at each kernel position. None when neither applies (no or non-image ``input_shape``, or a
        size mismatch).
    """
    kept = mask.detach().to("cpu", torch.bool)
    if kept.ndim == 4:
        return kept.float().mean(dim=(0, 1)).numpy()
    if kept.ndim != 2 or input_shape is None or len(input_shape) not in (2, 3):
        return None
    channels, height, width = (1, *input_shape) if len(input_shape) == 2 else tuple(input_shape)
    if channels * height * width != kept.shape[1]:
        return None
    return kept.reshape(kept.shape[0], channels, height, width).sum(dim=(0, 1)).numpy().astype(np.int64)


def connectivity_image(values: np.ndarray) -> np.ndarray:
    """``values`` scaled to 0..255 uint8 by its own maximum, upscaled (nearest) to at least 64 px a side."""
    peak = float(values.max()) if values.size else 0.0
    pixels = np.zeros(values.shape) if peak <= 0 else values / peak
    factor = max(1, math.ceil(_MIN_IMAGE_SIDE / max(1, min(values.shape))))
    return np.round(pixels * 255).astype(np.uint8).repeat(factor, axis=0).repeat(factor, axis=1)


class RoundCallback(pl.Callback):
    """Base for W&B callbacks that act once per finished :class:`LotteryTicket` round, on global rank 0.

    Put it after the ``LotteryTicket`` in ``callbacks``. It does nothing unless the Trainer has a
    ``WandbLogger``. Subclasses implement :meth:`on_round_end`. A resumed run (same W&B run id) neither repeats
    nor loses a round: what earlier processes of the run wrote is read back at the start (:func:`sent_before`).
    """

    def __init__(self, lottery: LotteryTicket):
        if not isinstance(lottery, LotteryTicket):
            raise TypeError(f"lottery must be a LotteryTicket, got {type(lottery).__name__}")
        self.lottery = lottery
        self.handled_rounds = 0  # entries of lottery.history already handled
        self._sent: set[str] = set()

    def on_round_end(self, trainer: pl.Trainer, run: Any, entry: dict[str, Any]) -> None:
        """Called once per finished round with the active W&B run and the round's history entry."""
        raise NotImplementedError

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.handled_rounds = min(self.handled_rounds, len(self.lottery.history))
        run = self._run(trainer)
        if run is not None and trainer.ckpt_path is not None:
            # The run file, not the checkpoint, says what reached W&B: rounds the checkpoint counts as handled
            # may not have been written before the kill, so every finished round is looked at again.
            self._sent = sent_before(run)
            self.handled_rounds = 0

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._handle_new_rounds(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"handled_rounds": self.handled_rounds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.handled_rounds = state_dict.get("handled_rounds", 0)

    def sent(self, key: str) -> bool:
        """Whether ``key`` (see :func:`sent_before`) reached W&B before this process resumed the run."""
        return key in self._sent

    def _run(self, trainer: pl.Trainer) -> Any:
        if not trainer.is_global_zero:
            return None
        # By name too: the `lightning` package's WandbLogger (lightning.pytorch.loggers) is another class.
        logger = next((lg for lg in trainer.loggers if type(lg).__name__ == WandbLogger.__name__), None)
        return None if logger is None else logger.experiment

    def _handle_new_rounds(self, trainer: pl.Trainer) -> Any:
        run = self._run(trainer)
        if run is None:
            return None
        for entry in self.lottery.history[self.handled_rounds :]:
            self.on_round_end(trainer, run, entry)
            self.handled_rounds += 1
        return run


class RoundLogger(RoundCallback):
    """Logs a W&B row per finished :class:`LotteryTicket` round, on a ``round`` x axis, and a ticket summary.

    Put it after the ``LotteryTicket`` in ``callbacks``. It does nothing unless the Trainer has a
    ``WandbLogger``, and only logs on global rank 0.

    Args:
        lottery: the callback whose rounds are logged.
        input_shape: shape of one input, e.g. ``(C, H, W)``. For images (``(C, H, W)`` or ``(H, W)``) a Linear
            first layer gets a picture of its kept connections per pixel; other shapes, or None, get none.
            Conv first layers get theirs without it.
    """

    def __init__(self, lottery: LotteryTicket, input_shape: tuple[int, ...] | None = None):
        super().__init__(lottery)
        if input_shape is not None and (
            not input_shape or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in input_shape)
        ):
            raise ValueError(
                f"input_shape={input_shape!r} must be None or a tuple of positive ints, e.g. (C, H, W). "
                "Hint: (1, 28, 28) for MNIST, (1, 8, 8) for sklearn digits."
            )
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self._warned_image = False
        self._order: dict[str, int] = {}  # the model's parameter names in its own order: the first layer first

    @property
    def best_key(self) -> str:
        """Row key of the best monitored value: ``round/best_val_loss`` for the default ``val/loss``."""
        return "round/best_" + self.lottery.monitor.replace("/", "_")

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        self._order = {name: i for i, (name, _) in enumerate(pl_module.named_parameters())}
        run = self._run(trainer)
        if run is None:
            return
        run.define_metric(ROUND)
        run.define_metric("round/*", step_metric=ROUND)
        # wandb-core tries the globs in random (Go map) order, so "round/density" could land on WandbLogger's
        # "*" -> trainer/global_step axis. Exact definitions are looked up before any glob.
        for key in self._row_keys():
            run.define_metric(key, step_metric=ROUND)

    def on_round_end(self, trainer: pl.Trainer, run: Any, entry: dict[str, Any]) -> None:
        key = f"round-{entry['round']}"
        if not self.sent(key):
            run.log(self._row(entry))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        run = self._handle_new_rounds(trainer)  # catches rounds missed when placed before LotteryTicket
        if run is None:
            return
        summary = {f"ticket/{key}": value for key, value in self.lottery.summary().items()}
        run.summary.update({k: v for k, v in summary.items() if v is not None})

    def _row_keys(self) -> list[str]:
        layers = [f"{prefix}{name}" for prefix in ("round/density/", LAYER_CHURN) for name in self.lottery.masks]
        fixed = ["round/density", self.best_key, "round/val_acc", "round/test_acc", "round/early_stop_step"]
        fixed += ["round/early_stop_iteration", IOU_PREV, CHURN]
        return [*fixed, *layers, IMAGE_KEY]

    def _row(self, entry: dict[str, Any]) -> dict[str, Any]:
        metrics = entry["metrics"]
        row = {
            ROUND: entry["round"],
            # Set explicitly so wandb's step_sync does not stamp the row with whichever step it saw last.
            STEP: entry["end_step"],
            "round/density": entry["density"],
            self.best_key: entry["best_value"],
            "round/val_acc": metrics.get(VAL_ACC),
            "round/test_acc": metrics.get(TEST_ACC),
            "round/early_stop_step": entry["best_step"],
            "round/early_stop_iteration": entry.get("early_stop_iteration"),
            **{f"round/density/{name}": d for name, d in entry["layer_density"].items()},
            **self._overlap(entry["round"]),
            IMAGE_KEY: self._mask_image(entry["round"]),
        }
        return {k: v for k, v in row.items() if v is not None}

    def _overlap(self, round: int) -> dict[str, float]:
        """The round's mask against the previous round's: IoU and churn over all pruned tensors, churn per tensor.
        Round 0 (nothing before it) and a previous mask the callback no longer holds give no keys."""
        if round < 1:
            return {}
        try:
            before, now = self.lottery.masks_of(round - 1), self.lottery.masks_of(round)
        except ValueError:
            return {}
        if not overlap.compatible(before, now):
            return {}
        per_layer = overlap.layer_churn(before, now)
        return {
            IOU_PREV: overlap.iou(before, now),
            CHURN: overlap.churn(before, now),
            **{f"{LAYER_CHURN}{name}": value for name, value in per_layer.items()},
        }

    def _mask_image(self, round: int) -> wandb.Image | None:
        masks = self.lottery.masks_of(round)  # a resumed run may log an earlier round's row late
        if not masks:
            return None
        # The first layer in the model's order: a mask dict may list another first (criteria at initialisation).
        name = min(masks, key=lambda n: self._order.get(n, len(self._order)))
        mask = masks[name]
        values = first_layer_connectivity(mask, self.input_shape)
        if values is None:
            is_image = self.input_shape is not None and len(self.input_shape) in (2, 3)
            if is_image and mask.ndim == 2 and not self._warned_image:
                self._warned_image = True
                rank_zero_warn(
                    f"RoundLogger: input_shape={self.input_shape} does not match {name} of shape "
                    f"{tuple(mask.shape)} (needs C*H*W == {mask.shape[1]}); no mask picture is logged."
                )
            return None
        what = "kept fraction per kernel position" if mask.ndim == 4 else "kept input connections per pixel"
        caption = f"round {round}: {name}, {what} (max {values.max():.3g})"
        return wandb.Image(connectivity_image(values), caption=caption)
