"""The record of a LotteryTicket run, one entry per finished round: density, the best value of the monitored
metric and the step where it occurred (the paper's early-stopping iteration), the metrics there, and timing.
From it: the winning round and a run summary."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import torch

from lth_wandb.pruning import masks as M


def winning_round(entries: list[dict[str, Any]], mode: str, tolerance: float) -> int | None:
    """The sparsest finished round whose best monitored value is at least as good as round 0's (within
    ``tolerance``; ``mode`` "min" or "max"); None before round 0 finishes or when nothing was monitored."""
    scored = [h for h in entries if h.get("best_value") is not None]
    if not scored or scored[0]["round"] != entries[0]["round"]:
        return None
    sign = 1.0 if mode == "min" else -1.0
    limit = sign * scored[0]["best_value"] + tolerance
    winners = [h for h in scored if sign * h["best_value"] <= limit]
    return max(winners, key=lambda h: (-h["density"], h["round"]))["round"]


class RoundHistory:
    """Watches validation for the best value of ``monitor`` in the current round and records each round as it
    finishes. Part of the callback's checkpoint state (:meth:`state_dict`)."""

    def __init__(self, monitor: str, mode: str):
        self.monitor, self.mode = monitor, mode
        self.entries: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {}
        self.epoch_metrics: dict[str, float] = {}  # scalar metrics at the last epoch end
        self.round_start_step = 0  # global step where the current round began
        self.round_started_at = time.monotonic()

    def start_round(self, step: int) -> None:
        self.best = {}
        self.round_started_at = time.monotonic()
        self.round_start_step = step

    def has(self, round: int) -> bool:
        return any(h["round"] == round for h in self.entries)

    def observe(self, metrics: Mapping[str, Any], step: int) -> None:
        """A validation's metrics, at global ``step``: keep them if ``monitor`` is the round's best so far."""
        if self.monitor not in metrics:
            raise ValueError(
                f"monitor={self.monitor!r} was not logged during validation; logged metrics: {sorted(metrics)}. "
                "Hint: log it in validation_step with self.log(...) or pass LotteryTicket(monitor=...)."
            )
        value = float(metrics[self.monitor])
        best = self.best.get("value")
        better = best is None or (value < best if self.mode == "min" else value > best)
        if better and not math.isnan(value):
            # Metrics logged once per epoch (train/acc) come from the epoch before; after a resume they live
            # only in the checkpoint, so a resumed round's snapshot holds the same keys as an uninterrupted one.
            self.best = {"value": value, "step": step, "metrics": {**self.epoch_metrics, **scalars(metrics)}}

    def epoch_ended(self, metrics: Mapping[str, Any]) -> None:
        self.epoch_metrics = scalars(metrics)

    def finish(self, round: int, masks: M.Masks, end_step: int, end_epoch: int) -> None:
        best_step = self.best.get("step")
        self.entries.append(
            {
                "round": round,
                "density": M.density(masks),
                "layer_density": M.layer_densities(masks),
                "monitor": self.monitor,
                "best_value": self.best.get("value"),
                "best_step": best_step,
                # The paper's early-stopping iteration counts from the round's start.
                "early_stop_iteration": None if best_step is None else best_step - self.round_start_step,
                "start_step": self.round_start_step,
                "metrics": dict(self.best.get("metrics", {})),
                "end_step": end_step,
                "end_epoch": end_epoch,
                "seconds": time.monotonic() - self.round_started_at,
            }
        )

    def summary(self, winner: int | None, metric: str = "test/acc") -> dict[str, Any]:
        by_round = {h["round"]: h for h in self.entries}
        key = metric.replace("/", "_")
        return {
            "rounds_completed": len(self.entries),
            "winning_round": winner,
            "winning_density": by_round[winner]["density"] if winner is not None else None,
            f"winning_{key}": by_round[winner]["metrics"].get(metric) if winner is not None else None,
            f"dense_{key}": by_round[0]["metrics"].get(metric) if 0 in by_round else None,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": self.entries,
            "best": self.best,
            "round_start_step": self.round_start_step,
            "epoch_metrics": self.epoch_metrics,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.entries = list(state["history"])
        self.best = dict(state.get("best", {}))
        self.round_start_step = state.get("round_start_step", 0)
        self.epoch_metrics = dict(state.get("epoch_metrics", {}))


def scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if torch.as_tensor(v).numel() == 1}
