"""``Classifier``: a LightningModule that trains any ``nn.Module`` with cross-entropy.

Validation dataloader 0 is the validation split and dataloader 1, when given, is the test set. Evaluating the
test set at every validation records test accuracy at whatever step later turns out to be the early-stopping
iteration (minimum ``val/loss``), which is how Frankle & Carbin report it, without selecting on test data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from lth_wandb.models import schedules
from lth_wandb.models.schedules import SCHEDULERS

OPTIMIZERS = ("adam", "adamw", "sgd")
# Metric prefix per validation dataloader index.
EVAL_PREFIXES = ("val", "test")


class Classifier(pl.LightningModule):
    """Cross-entropy training of ``net`` with a named optimizer and an epoch-wise LR schedule.

    Logs ``train/loss`` (on the steps a logger, a validation or the epoch's end reads it), ``train/acc`` (per
    epoch), ``val/loss`` and ``val/acc`` on validation dataloader 0, ``test/loss`` and ``test/acc`` on validation
    dataloader 1 and in ``trainer.test``.

    Args:
        net: the network; maps a batch of inputs to logits.
        lr: learning rate.
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"``.
        momentum: SGD momentum (ignored by Adam/AdamW).
        nesterov: Nesterov momentum for SGD.
        weight_decay: L2 penalty (decoupled for AdamW).
        scheduler: ``"none"``, ``"step"`` (multiply by ``gamma`` every ``step_size`` epochs), ``"cosine"``
            (anneal to 0 over ``cosine_epochs``) or ``"multistep"`` (multiply by ``gamma`` at each of ``milestones``,
            after a linear warm-up of ``warmup_epochs``: open_lth's schedule).
        step_size: epochs between decays for ``"step"``.
        gamma: decay factor for ``"step"``.
        cosine_epochs: length of the cosine schedule; None uses ``trainer.max_epochs``. Set it when one
            ``fit`` covers several pruning rounds, so the schedule spans one round.
        milestones: epochs at which ``"multistep"`` multiplies the rate by ``gamma`` (open_lth's CIFAR: 80, 120).
        warmup_epochs: ``"multistep"`` only: epochs of linear warm-up from 0, per iteration (then the schedule is
            stepped every iteration; open_lth's ImageNet: 5).
        fused: Adam/AdamW's fused implementation (``True``), the for-loop one (``False``) or PyTorch's default
            (``None``). Fused is faster on the CPU and on GPUs but not bit-identical to the default.
    """

    # Everything it logs, so a run can check its monitored metric before it starts.
    METRICS = ("train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc")

    def __init__(
        self,
        net: nn.Module,
        lr: float = 1e-3,
        optimizer: str = "adam",
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        scheduler: str = "none",
        step_size: int = 30,
        gamma: float = 0.1,
        cosine_epochs: int | None = None,
        fused: bool | None = None,
        milestones: Sequence[int] = (),
        warmup_epochs: int = 0,
    ) -> None:
        super().__init__()
        _check_choice("optimizer", optimizer, OPTIMIZERS, "'adam' with lr=1.2e-3 is the paper's LeNet setting")
        _check_choice("scheduler", scheduler, SCHEDULERS, "use 'none' for a constant learning rate")
        _check_range("lr", lr, 0.0, None, "try 1e-3 for Adam or 0.1 for SGD")
        _check_range("weight_decay", weight_decay, 0.0, None, "use 0 to disable", allow_low=True)
        _check_range("momentum", momentum, 0.0, 1.0, "0.9 is usual", allow_low=True)
        _check_range("gamma", gamma, 0.0, 1.0, "0.1 divides the rate by 10", allow_high=True)
        _check_positive_int("step_size", step_size)
        if cosine_epochs is not None:
            _check_positive_int("cosine_epochs", cosine_epochs)
        milestones, warmup_epochs = schedules.check_milestones(milestones, warmup_epochs, scheduler)
        if fused is not None and (not isinstance(fused, bool) or (fused and optimizer == "sgd")):
            raise ValueError(
                f"fused={fused!r} needs optimizer 'adam' or 'adamw' (got {optimizer!r}) and must be True, False or "
                "None. Hint: None keeps PyTorch's default implementation."
            )
        if nesterov and (optimizer != "sgd" or momentum == 0):
            raise ValueError(
                f"nesterov=True needs optimizer='sgd' with momentum > 0, got optimizer={optimizer!r}, "
                f"momentum={momentum}. Hint: set nesterov=False."
            )
        self.net = net
        self.save_hyperparameters(ignore=["net"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        if self._train_loss_is_read(batch_idx):
            self.log("train/loss", loss, on_step=True, on_epoch=False, batch_size=len(y))
        self._log_train_accuracy(logits, y, batch_idx)
        return loss

    def _train_loss_is_read(self, batch_idx: int) -> bool:
        """Whether anything reads this step's ``train/loss``: the loggers (every ``log_every_n_steps``), a
        validation run right after it, or the epoch's end (``callback_metrics``, which LotteryTicket snapshots
        there). A ``self.log`` costs LeNet-300-100 a fifth of its step on the CPU, so it is skipped on the other
        steps, where ``callback_metrics["train/loss"]`` keeps the last value logged. Schedules this cannot foresee
        (time-based or cross-epoch validation, loaders without a length) log every step."""
        trainer = self.trainer
        stepped = getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", None)  # what Lightning counts
        batches, every = trainer.num_training_batches, trainer.val_check_batch
        foreseeable = (
            isinstance(stepped, int)
            and math.isfinite(batches)
            and isinstance(every, int)
            and trainer.check_val_every_n_epoch is not None
            and getattr(trainer, "_val_check_time_interval", None) is None
        )
        if not foreseeable or trainer.should_stop:
            return True
        n = trainer.log_every_n_steps
        logged = n > 0 and (stepped + 1) % n == 0  # Lightning's own test (its `should_update_logs`)
        return logged or (batch_idx + 1) % every == 0 or batch_idx + 1 >= batches

    def on_train_epoch_start(self) -> None:
        # A plain list: assigning a tensor attribute goes through nn.Module.__setattr__, slow enough to notice here.
        self._train_counts: list = []  # (correct predictions, batch size) per batch of this epoch

    def _log_train_accuracy(self, logits: torch.Tensor, y: torch.Tensor, batch_idx: int) -> None:
        """``train/acc``, the epoch's accuracy, logged once at its last batch from a running count of correct
        predictions: a ``self.log`` per step costs LeNet-300-100 about a tenth of its step on the CPU. Loaders
        without a length have no known last batch, and log every step."""
        batches = self.trainer.num_training_batches
        if not math.isfinite(batches):
            self.log("train/acc", _accuracy(logits, y), on_step=False, on_epoch=True, batch_size=len(y))
            return
        if not hasattr(self, "_train_counts"):  # training_step called outside fit's epoch hooks
            self.on_train_epoch_start()
        self._train_counts.append(((logits.detach().argmax(dim=1) == y).sum(), len(y)))
        if batch_idx + 1 >= batches:
            correct, sizes = zip(*self._train_counts, strict=True)
            seen = sum(sizes)
            self.log("train/acc", torch.stack(correct).sum() / seen, on_step=False, on_epoch=True, batch_size=seen)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, dataloader_idx: int = 0):
        prefix = EVAL_PREFIXES[dataloader_idx] if dataloader_idx < len(EVAL_PREFIXES) else f"val{dataloader_idx}"
        self._evaluate(batch, prefix)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, dataloader_idx: int = 0):
        self._evaluate(batch, "test" if dataloader_idx == 0 else f"test{dataloader_idx}")

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], prefix: str) -> None:
        x, y = batch
        logits = self(x)
        # batch_size makes the epoch value a per-sample mean even when the last batch is short.
        kwargs: dict[str, Any] = dict(on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True)
        self.log(f"{prefix}/loss", F.cross_entropy(logits, y), add_dataloader_idx=False, **kwargs)
        self.log(f"{prefix}/acc", _accuracy(logits, y), add_dataloader_idx=False, **kwargs)

    def configure_optimizers(self):
        """Build a fresh optimizer and scheduler; safe to call again to reset them between rounds."""
        hp = self.hparams
        optimizer = _build_optimizer(self.parameters(), hp)
        scheduler = schedules.build(optimizer, hp, self)
        return optimizer if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}


def _build_optimizer(params, hp) -> torch.optim.Optimizer:
    if hp.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov, weight_decay=hp.weight_decay
        )
    cls = torch.optim.Adam if hp.optimizer == "adam" else torch.optim.AdamW
    # fused: one kernel per tensor. On the CPU it is about a quarter faster for LeNet-300-100 and avoids the slow
    # sqrt of exact zeros after a rewind (docs/benchmarks.md), but rounds differently: results are not bit-identical
    # to the default implementation's, so it is opt-in.
    fused = hp.get("fused")
    return cls(params, lr=hp.lr, weight_decay=hp.weight_decay, **({} if fused is None else {"fused": fused}))


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(dim=1) == y).float().mean()


def _check_choice(what: str, value: str, valid: tuple[str, ...], hint: str) -> None:
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid: {list(valid)}. Hint: {hint}.")


def _check_range(
    what: str,
    value: float,
    low: float,
    high: float | None,
    hint: str,
    allow_low: bool = False,
    allow_high: bool = False,
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (value >= low if allow_low else value > low)
    if ok and high is not None:
        ok = value <= high if allow_high else value < high
    if not ok:
        opening, closing = "[" if allow_low else "(", "]" if allow_high else ")"
        interval = f"{opening}{low}, {'inf' if high is None else high}{closing}"
        raise ValueError(f"{what}={value!r} is outside {interval}. Hint: {hint}.")


def _check_positive_int(what: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what}={value!r} must be a positive int.")
