"""The Lightning side of instability analysis (lth_wandb.analysis.instability has the maths).

:class:`StepCapture` remembers the network after k optimizer steps of a fit: the points the analysis branches
from. :class:`StartFrom` starts another fit from such a point under a mask, as a round of
:class:`~lth_wandb.lottery.callback.LotteryTicket` starts from its rewind point: masked weights, the optimizer's and
LR schedulers' state at k, and the mask enforced after every optimizer step. :func:`error_on` is the
``evaluate`` the path needs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch
from torch import nn

from lth_wandb.lottery.rewind import clone_state, masked
from lth_wandb.pruning import masks as M

if TYPE_CHECKING:
    from lth_wandb.lottery.callback import LotteryTicket

StateDict = dict[str, torch.Tensor]


def check_steps(steps: Iterable[int]) -> list[int]:
    """The distinct steps, sorted.

    Raises:
        ValueError: a step that is not an int >= 0, or no step at all.
    """
    steps = list(steps)
    bad = [k for k in steps if isinstance(k, bool) or not isinstance(k, int) or k < 0]
    if bad or not steps:
        raise ValueError(
            f"steps={steps!r} must be a non-empty list of optimizer steps (ints >= 0). Hint: [0] (initialisation), "
            "or [0, 100, 500] to find when the network becomes stable"
        )
    return sorted(set(steps))


class StepCapture(pl.Callback):
    """Remembers the model, optimizer and LR-scheduler state after each of ``steps`` optimizer steps of a fit.

    Given the run's ``LotteryTicket`` (put this after it in ``callbacks``), it captures during round 0 only: a step
    past round 0's end (an early bird can end it sooner) stays missing rather than catching a pruned round. Copies
    live on the CPU and share no storage with the model or optimizer. It is saved in Lightning checkpoints,
    so a resumed run keeps the points it captured before the interruption.

    Args:
        steps: the optimizer steps k to capture at (0 is the initialisation).
        lottery: capture only while it trains round 0; None captures whatever the fit trains.

    Attributes:
        states: ``k -> {"weights", "optimizers", "schedulers"}`` for every step captured so far.
    """

    def __init__(self, steps: Iterable[int], lottery: LotteryTicket | None = None):
        self.steps = check_steps(steps)
        self.lottery = lottery
        self.states: dict[int, dict[str, Any]] = {}

    @property
    def state_key(self) -> str:
        # Unique per configuration, so a Trainer can hold several (Lightning refuses two with one key).
        return self._generate_state_key(steps=self.steps, round0_only=self.lottery is not None)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._capture(trainer, pl_module)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx) -> None:
        self._capture(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._capture(trainer, pl_module)  # the fit's last step has no batch after it

    def _capture(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step = trainer.global_step  # steps taken so far: the state *after* k steps is seen before step k + 1
        if step not in self.steps or step in self.states or (self.lottery is not None and self.lottery.round > 0):
            return
        self.states[step] = {
            "weights": clone_state(pl_module.state_dict()),
            "optimizers": [copy.deepcopy(opt.state_dict()) for opt in trainer.optimizers],
            "schedulers": [copy.deepcopy(c.scheduler.state_dict()) for c in trainer.lr_scheduler_configs],
        }

    def missing(self) -> list[int]:
        """The requested steps not captured (the fit ended before them)."""
        return [k for k in self.steps if k not in self.states]

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "states": self.states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Points of steps no longer asked for are dropped; newly asked ones are captured if the fit still reaches them.
        self.states = {k: v for k, v in state_dict.get("states", {}).items() if k in self.steps}


class StartFrom(pl.Callback):
    """Start a fit from a captured point under ``masks``, the way a pruning round starts from its rewind point.

    At the fit's start the model gets ``weights`` with the masked entries zeroed, and the optimizers and LR
    schedulers get their captured state (an empty list keeps the fresh ones); after every optimizer step the pruned
    weights are set back to zero (momentum and weight decay would revive them otherwise).

    Args:
        weights: a state dict for the model (all of it).
        masks: ``name -> bool tensor`` of the parameters kept at zero where False (an empty dict: dense).
        optimizers: the optimizers' state dicts, one per optimizer, or empty.
        schedulers: the LR schedulers' state dicts, one per scheduler, or empty.
    """

    def __init__(
        self,
        weights: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor],
        optimizers: list[dict] = (),
        schedulers: list[dict] = (),
    ):
        self.weights = masked(weights, masks)
        self.masks = M.copy_masks(masks)
        self.optimizer_states, self.scheduler_states = list(optimizers), list(schedulers)
        self._hooks: list[Any] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.load_state_dict(self.weights)  # copies values into the live tensors
        if self.optimizer_states:
            for opt, state in zip(trainer.optimizers, self.optimizer_states, strict=True):
                opt.load_state_dict(copy.deepcopy(state))  # it keeps the tensors it is given and updates them
        if self.scheduler_states:
            schedulers = [c.scheduler for c in trainer.lr_scheduler_configs]
            for scheduler, state in zip(schedulers, self.scheduler_states, strict=True):
                scheduler.load_state_dict(copy.deepcopy(state))
        params = dict(pl_module.named_parameters())
        unknown = sorted(set(self.masks) - set(params))
        if unknown:
            raise ValueError(f"masks name {unknown}, which the model does not have. Hint: masks of this model's rounds")
        sparse = [name for name, m in self.masks.items() if not bool(m.all())]
        enforce = M.MaskEnforcer([params[n] for n in sparse], [self.masks[n] for n in sparse])
        self._hooks = [opt.register_step_post_hook(enforce) for opt in trainer.optimizers]
        enforce()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []


def error_on(model: nn.Module, loader: Iterable) -> Callable[[Mapping[str, torch.Tensor]], float]:
    """``evaluate(state_dict) -> error``: loads the state into ``model`` and returns its error on ``loader``'s
    ``(inputs, labels)`` batches (the fraction misclassified), in eval mode and without gradients."""

    def evaluate(state: Mapping[str, torch.Tensor]) -> float:
        model.load_state_dict(state)
        model.eval()
        device = next(model.parameters()).device
        wrong = seen = 0
        with torch.no_grad():
            for x, y in loader:
                predicted = model(x.to(device)).argmax(dim=1).cpu()
                wrong += int((predicted != y).sum())
                seen += len(y)
        if not seen:
            raise ValueError("the test loader is empty: there is no error to measure")
        return wrong / seen

    return evaluate
