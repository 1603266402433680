"""Tickets in and out of W&B: load one from a folder or an artifact reference, and record it as a run's input."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import wandb

from lth_wandb.pruning.ticket import Ticket
from lth_wandb.tracking import TICKET_TYPE


def load_ticket(ref: str | os.PathLike) -> Ticket:
    """A ticket from a local directory or a W&B artifact reference (``entity/project/ticket-abc:winning``).

    Needs no active run, so a bad reference fails before a W&B run starts; :func:`record_ticket_use` then records
    the artifact as the run's input. Checksums are verified on load; nothing is unpickled.
    """
    path = _as_path(ref)
    if path.is_dir():
        return Ticket.load(path)
    if path.exists():
        raise FileNotFoundError(
            f"ticket={os.fspath(ref)!r} is not a ticket directory. Hint: pass the folder Ticket.save wrote "
            "(it holds ticket.json), or 'entity/project/ticket-<run id>:winning'"
        )
    return Ticket.load(download_ticket(os.fspath(ref)))


def download_ticket(ref: str) -> Path:
    """The one place that fetches tickets from a W&B server: download artifact ``ref`` and return its folder."""
    try:
        return Path(wandb.Api().artifact(ref, type=TICKET_TYPE).download())
    except Exception as error:  # wandb raises several types (CommError, ValueError, UsageError...) for this
        raise FileNotFoundError(
            f"ticket={ref!r} is neither a local ticket directory nor a W&B artifact that could be fetched "
            f"({type(error).__name__}: {error}). Hint: pass a directory written by Ticket.save, or "
            "'entity/project/ticket-<run id>:winning' with W&B online."
        ) from error


def record_ticket_use(run: Any, ref: str | os.PathLike) -> None:
    """Record the W&B artifact ``ref`` as an input of ``run`` (lineage); local ticket folders have none."""
    if not _as_path(ref).is_dir():
        run.use_artifact(os.fspath(ref), type=TICKET_TYPE)


def _as_path(ref: str | os.PathLike) -> Path:
    """``ref`` read as a local path (``~`` expanded); a W&B reference gives a path that does not exist."""
    return Path(os.path.expanduser(os.fspath(ref)))
