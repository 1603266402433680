"""Tickets in and out of W&B: load one from a folder or an artifact reference, record it as a run's input, and
bring a finished run's tickets of every round (with its command line) to this machine for its controls."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import wandb
from torch import nn

from lth_wandb.pruning.ticket import Ticket
from lth_wandb.tracking import TICKET_TYPE


def load_ticket(ref: str | os.PathLike, module: nn.Module | None = None) -> Ticket:
    """A ticket from a local directory or a W&B artifact reference (``entity/project/ticket-abc:winning``).

    Needs no active run, so a bad reference fails before a W&B run starts; :func:`record_ticket_use` then records
    the artifact as the run's input. Checksums are verified on load; nothing is unpickled. With ``module``, the
    ticket's mask shapes are checked against it before any tensor is read (see :meth:`Ticket.load`).
    """
    path = _as_path(ref)
    if path.is_dir():
        return Ticket.load(path, module)
    if path.is_symlink() and not path.exists():
        raise FileNotFoundError(
            f"ticket={os.fspath(ref)!r} is a broken link (to {os.readlink(path)!r}, which {_why_broken(path)}). "
            "Hint: point ticket= at the folder Ticket.save wrote (it holds ticket.json), or at "
            "'entity/project/ticket-<run id>:winning'"
        )
    if path.exists():
        raise FileNotFoundError(
            f"ticket={os.fspath(ref)!r} is not a ticket directory. Hint: pass the folder Ticket.save wrote "
            "(it holds ticket.json), or 'entity/project/ticket-<run id>:winning'"
        )
    return Ticket.load(download_ticket(os.fspath(ref)), module)


def _why_broken(link: Path) -> str:
    try:
        link.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 raises this for a loop
        return "leads back to itself"
    except OSError as error:
        return "leads back to itself" if error.errno == errno.ELOOP else "does not exist"
    return "does not exist"


def download_ticket(ref: str, root: str | os.PathLike | None = None) -> Path:
    """The one place that fetches tickets from a W&B server: download artifact ``ref`` (into ``root``, else W&B's
    artifact cache) and return its folder."""
    try:
        return Path(wandb.Api().artifact(ref, type=TICKET_TYPE).download(root=None if root is None else str(root)))
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


# The run file holding the Hydra overrides a run was started with (lth-train saves it), so another machine can
# rebuild the run's configuration from W&B alone.
OVERRIDES_FILE = "overrides.yaml"


def fetch_run(path: str, into: Path) -> tuple[dict[str, Any], str, str]:
    """The W&B run ``entity/project/run_id`` written into ``into`` as lth-train's run folder would hold it: its
    overrides in ``.hydra/overrides.yaml`` and the ticket of every pruning round in ``tickets/round-<r>/ticket``.
    Returns the run's config, id and state."""
    hint = "Hint: pass the run's lth-train output folder, or entity/project/<run id> of a finished IMP run"
    try:
        run = wandb.Api().run(path)
        config, run_id, state = dict(run.config), run.id, run.state
    except Exception as error:  # wandb raises several types (CommError, ValueError, UsageError...) for this
        raise FileNotFoundError(
            f"{path!r} is neither a local run folder nor a W&B run that could be fetched "
            f"({type(error).__name__}: {error}). {hint}"
        ) from error
    try:
        run.file(OVERRIDES_FILE).download(root=str(into / ".hydra"), replace=True)
    except Exception as error:
        raise FileNotFoundError(
            f"W&B run {path} has no {OVERRIDES_FILE} (not an lth-train run, or one from before lth-train saved "
            f"it), so its settings cannot be rebuilt. {hint}"
        ) from error
    for number in range(1, int(config.get("pruning", {}).get("rounds") or 0) + 1):
        ref = f"{run.entity}/{run.project}/ticket-{run_id}:round-{number}"
        try:
            download_ticket(ref, root=into / "tickets" / f"round-{number}" / "ticket")
        except FileNotFoundError as error:
            cause = error.__cause__
            raise FileNotFoundError(
                f"W&B run {path}: its round-{number} ticket {ref} could not be fetched ({type(cause).__name__}: "
                f"{cause}); controls need every round's mask. Hint: a run logged with "
                "wandb.retention=winning_latest keeps only two versions: use its output folder instead"
            ) from cause
    return config, run_id, state
