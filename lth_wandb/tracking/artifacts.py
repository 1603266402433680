"""W&B Artifacts for tickets: every round's ticket and trained weights, versioned, and loading them back.

Per run, two collections:

- ``ticket-<run id>`` (type ``lottery-ticket``): the bit-packed mask and the survivors' rewind weights — the
  untrained ticket that ``lth-train ticket=<ref>`` trains again;
- ``model-<run id>`` (type ``model``): the trained weights of the round, sparse (survivors + bit mask).

Each round's versions carry ``round-<r>`` and ``latest``; round 0 also ``dense``; the current winning round
``winning`` (W&B moves an alias to the newest version that claims it). Files are written to a local folder first
and logged from there, so a failed upload never loses them, and offline runs stage them for ``wandb sync``.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import wandb

from lth_wandb.lottery.callback import LotteryTicket
from lth_wandb.pruning.ticket import Ticket
from lth_wandb.tracking import TICKET_TYPE
from lth_wandb.tracking.rounds import RoundCallback

MODEL_TYPE, CHECKPOINT_TYPE = "model", "checkpoint"
RETENTION = ("all", "winning_latest")


class TicketArtifacts(RoundCallback):
    """Logs a ``lottery-ticket`` and a sparse ``model`` artifact at the end of every round (global rank 0).

    Put it after the ``LotteryTicket`` in ``callbacks``; it needs a ``WandbLogger``.

    Args:
        lottery: the callback whose tickets are logged.
        directory: local folder for the artifact files (``round-<r>/ticket``, ``round-<r>/model``).
        config: the run's config, digested into the metadata so a ticket names the exact setup it came from.
        retention: ``"all"`` keeps every round; ``"winning_latest"`` deletes, when the run ends online, the
            versions that are neither ``winning`` nor ``latest`` (offline runs keep all: deleting needs a server).
        ttl_days: passed to W&B as the artifacts' time-to-live; None keeps them.
        registry: ``"<registry>/<collection>"`` to link the winning ticket into, e.g. ``"model/lenet-tickets"``
            (online only).
        log_checkpoint: also version the latest Lightning checkpoint at each round's end, for resuming.
    """

    def __init__(
        self,
        lottery: LotteryTicket,
        directory: str | os.PathLike = "tickets",
        config: dict[str, Any] | None = None,
        retention: str = "all",
        ttl_days: int | None = None,
        registry: str | None = None,
        log_checkpoint: bool = False,
    ):
        super().__init__(lottery)
        if retention not in RETENTION:
            raise ValueError(
                f"retention={retention!r} is not one of {list(RETENTION)}. Hint: 'winning_latest' keeps only the "
                "two versions people usually want."
            )
        if ttl_days is not None and (isinstance(ttl_days, bool) or not isinstance(ttl_days, int) or ttl_days < 1):
            raise ValueError(f"ttl_days={ttl_days!r} must be a whole number of days >= 1, or None to keep forever")
        self.directory = Path(directory)
        self.config_digest = _digest(config) if config is not None else None
        self.retention, self.ttl_days, self.registry = retention, ttl_days, registry
        self.log_checkpoint = log_checkpoint
        self._winning_artifact: Any = None
        self._logged: list[Any] = []  # what this process logged, uploaded in the background until committed

    def on_round_end(self, trainer: pl.Trainer, run: Any, entry: dict[str, Any]) -> None:
        r = entry["round"]
        ticket = self.lottery.ticket(r)
        aliases = [f"round-{r}", "latest", *(["dense"] if r == 0 else [])]
        if self.lottery.winning_round == r:
            aliases.append("winning")
        metadata = self._metadata(run, ticket, entry)
        folder = self.directory / f"round-{r}"
        for kind, part in ((TICKET_TYPE, "rewind"), (MODEL_TYPE, "trained")):
            prefix = "ticket" if kind == TICKET_TYPE else "model"
            key = f"round-{r}/{prefix}"
            if self.sent(key):  # logged before the run was killed and resumed: its files are on disk too
                continue
            path = ticket.save(folder / prefix, parts=(part,))
            logged = self._log(run, f"{prefix}-{run.id}", kind, path, metadata, aliases)
            if kind == TICKET_TYPE and "winning" in aliases:
                self._winning_artifact = logged
        last = getattr(trainer.checkpoint_callback, "last_model_path", "")
        if self.log_checkpoint and last and Path(last).is_file() and not self.sent(f"round-{r}/checkpoint"):
            artifact = wandb.Artifact(f"checkpoint-{run.id}", type=CHECKPOINT_TYPE, metadata={"round": r})
            artifact.add_file(last, name="last.ckpt")
            run.log_artifact(artifact, aliases=[f"round-{r}", "latest"])

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        run = self._handle_new_rounds(trainer)
        if run is None or run.settings.mode != "online":
            return  # linking and deleting need the server; offline runs keep everything for `wandb sync`
        if self.registry and self._winning_artifact is not None:
            run.link_artifact(self._winning_artifact, f"wandb-registry-{self.registry}")
        if self.retention == "winning_latest":
            # log_artifact returns before the upload is committed: the last round's versions (the new `latest`)
            # would otherwise be missing from the listing, and the previous `latest` kept by mistake.
            for artifact in self._logged:
                artifact.wait()
            prune_versions(run, f"ticket-{run.id}", TICKET_TYPE)
            prune_versions(run, f"model-{run.id}", MODEL_TYPE)

    def _log(self, run, name: str, kind: str, path: Path, metadata: dict, aliases: list[str]):
        artifact = wandb.Artifact(name, type=kind, metadata=metadata)
        for file in sorted(path.iterdir()):  # add_dir would print a line per round and kind
            artifact.add_file(str(file), name=file.name)
        if self.ttl_days is not None:
            artifact.ttl = timedelta(days=self.ttl_days)
        # Identical files give an identical digest, which W&B stores as the existing version, not a new one.
        logged = run.log_artifact(artifact, aliases=aliases)
        self._logged.append(logged)
        return logged

    def _metadata(self, run, ticket: Ticket, entry: dict[str, Any]) -> dict[str, Any]:
        r = entry["round"]
        settings = ticket.metadata.get("settings", {})
        return {
            "round": r,
            "density": ticket.density(),
            "layer_density": ticket.metadata.get("layer_density", {}),
            "monitor": entry["monitor"],
            "best_value": entry["best_value"],
            "early_stop_step": entry["best_step"],
            "test_acc": entry["metrics"].get("test/acc"),
            "val_acc": entry["metrics"].get("val/acc"),
            "prune_rate": settings.get("prune_rate"),
            "scope": settings.get("scope"),
            "layer_rates": settings.get("layer_rates"),
            "criterion": settings.get("criterion"),
            "rewind": settings.get("rewind"),
            "control": settings.get("control"),
            "seed": settings.get("seed"),
            "model_class": ticket.metadata.get("model_class"),
            "config_digest": self.config_digest or _digest(dict(run.config)),
            "parent": f"ticket-{run.id}:round-{r - 1}" if r > 0 else None,
        }


def prune_versions(run: Any, name: str, kind: str, keep: tuple[str, ...] = ("winning", "latest")) -> int:
    """Delete the versions of ``name`` that carry none of the ``keep`` aliases (online only); returns how many.

    Their own aliases (``round-<r>``, ``dense``) go with them: W&B refuses to delete a version that still has
    aliases ("cannot delete artifact with aliases") unless told to remove them too.
    """
    api = wandb.Api()
    deleted = 0
    for version in api.artifacts(kind, f"{run.entity}/{run.project}/{name}"):
        if not set(version.aliases) & set(keep):
            version.delete(delete_aliases=True)
            deleted += 1
    return deleted


def _digest(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
