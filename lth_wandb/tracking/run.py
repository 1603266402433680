"""The W&B run: which mode (online or offline), the Lightning logger that starts it, finishing it, and what an
earlier process of the same run already sent.

Offline is a first-class mode: without credentials, runs are written to disk and uploaded later with ``wandb sync``.
"""

from __future__ import annotations

import contextlib
import netrc
import os
import shlex
import sys
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import wandb
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_info

from lth_wandb.processes import slurm_job_ending
from lth_wandb.tracking import ROUND, WANDB_MODES, instability

try:  # wandb's own lookup knows its host aliases (the default host also accepts an api.wandb.ai entry)
    from wandb.sdk.lib.wbauth import read_netrc_auth as _wandb_read_netrc
except ImportError:  # an internal module: other wandb versions keep it elsewhere
    _wandb_read_netrc = None

# Spellings wandb itself accepts in WANDB_MODE, mapped to what they mean.
_ENV_MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline",
              "disabled": "disabled", "shared": "shared"}  # fmt: skip
FLUSH_SECONDS = 1.0  # how often a run's file is written: what a kill can cost of the step-wise curves
_shown_notices: set[str] = set()


def resolve_mode(mode: str | None, save_dir: str | PathLike = ".") -> tuple[str, str | None]:
    """Decide the W&B mode.

    An explicit ``mode`` wins, then ``WANDB_MODE``. Under ``wandb agent`` (``WANDB_SWEEP_ID`` set) the run
    must report to the sweep, so it is online. Otherwise the run is online only if credentials are configured
    (``WANDB_API_KEY``, ``WANDB_IDENTITY_TOKEN_FILE`` or a ``.netrc`` entry for the W&B host); without them it
    is offline, with a notice on how to upload it later.

    Args:
        mode: ``"online"``, ``"offline"``, ``"disabled"`` or None to decide as above.
        save_dir: where the runs are written; only used to word the notice.

    Returns:
        ``(mode, notice)``; ``notice`` is None unless offline was chosen for lack of credentials.
    """
    if mode is not None:
        if mode not in WANDB_MODES:
            raise ValueError(
                f"mode={mode!r} is not one of {list(WANDB_MODES)} (or None to decide from WANDB_MODE and your "
                "credentials). Hint: 'offline' logs without a server; upload later with `wandb sync`."
            )
        return mode, None
    env = os.environ.get("WANDB_MODE")
    if env:
        if env not in _ENV_MODES:
            allowed = sorted(_ENV_MODES)
            raise ValueError(f"WANDB_MODE={env!r} is not one of {allowed}. Hint: unset it or use 'offline'.")
        return _ENV_MODES[env], None
    if os.environ.get("WANDB_SWEEP_ID") or _has_credentials():
        return "online", None
    runs = os.path.join(os.fspath(save_dir), "wandb", "offline-run-*")
    return "offline", (
        f"W&B: no credentials found (WANDB_API_KEY or `wandb login`), so this run is logged offline. "
        f"Upload it later with `wandb sync {runs}`, or set WANDB_MODE=online."
    )


def _has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    # A fresh Settings() only gives W&B's default host; wandb's session singleton would also read the settings
    # files, but creating it here freezes the WANDB_* environment before wandb.init sees it.
    host = os.environ.get("WANDB_BASE_URL") or wandb.Settings().base_url
    if _wandb_read_netrc is None:
        try:
            return bool(netrc.netrc(os.environ.get("NETRC")).authenticators(urlsplit(host).netloc))
        except (OSError, netrc.NetrcParseError):
            return False
    try:
        return _wandb_read_netrc(host=host) is not None
    except Exception:  # a malformed key: going online lets wandb.init report it instead of hiding it offline
        return True


def make_logger(
    project: str | None,
    entity: str | None = None,
    group: str | None = None,
    mode: str | None = None,
    name: str | None = None,
    tags: Sequence[str] = (),
    save_dir: str | PathLike | None = None,
    config: dict[str, Any] | None = None,
    job_type: str | None = None,
    run_id: str | None = None,
) -> WandbLogger:
    """A Lightning ``WandbLogger`` in the mode :func:`resolve_mode` picks.

    Args:
        project: W&B project (ignored under ``wandb agent``, which sets the sweep's project); None:
            ``$WANDB_PROJECT``, else Lightning's default.
        entity: W&B user or team; None for your default entity.
        group: groups runs in the UI, e.g. one experiment's seeds.
        mode: see :func:`resolve_mode`.
        name: display name of the run.
        tags: run tags.
        save_dir: the run files go to ``<save_dir>/wandb/``; None: ``$WANDB_DIR``, else the working directory.
        config: the resolved Hydra config as a plain dict, stored as the run config.
        job_type: e.g. ``"train"`` or ``"eval"``.
        run_id: the W&B run id. A run started again with the same id continues that run (``resume="allow"``):
            lth-train keeps it in the run folder, so a resumed run is the same W&B run.
    """
    if config is not None and not isinstance(config, dict):
        raise TypeError(
            f"config must be a plain dict or None, got {type(config).__name__}. "
            "Hint: OmegaConf.to_container(cfg, resolve=True)."
        )
    mode, notice = resolve_mode(mode, save_dir or os.environ.get("WANDB_DIR") or ".")
    if notice and notice not in _shown_notices:
        _shown_notices.add(notice)
        rank_zero_info(notice)
    init: dict[str, Any] = dict(entity=entity, group=group, mode=mode, job_type=job_type, config=config)
    init["tags"] = list(tags) or None
    if run_id is not None:
        init.update(id=run_id, resume="allow")
    if "x_transaction_log_flush_interval" in getattr(wandb.Settings, "model_fields", {}):
        # W&B writes the run file every 15 s; a run killed sooner would leave nothing of itself on disk.
        init["settings"] = wandb.Settings(x_transaction_log_flush_interval=FLUSH_SECONDS)
    if os.environ.get("WANDB_SWEEP_ID"):
        # The agent fixes project, entity and run id (WANDB_RUN_ID: the id lth-train keeps); wandb.init would ignore
        # ours, with a warning each. resume="allow" stays: a preempted run the agent hands back continues.
        project, init["entity"] = None, None
        init.pop("id", None)
    save_dir = os.fspath(save_dir) if save_dir else None  # None: W&B reads WANDB_DIR
    logger = WandbLogger(name=name, project=project, save_dir=save_dir, **init)
    # WandbLogger always passes anonymous=None, which recent wandb answers with a deprecation warning per run.
    pending = getattr(logger, "_wandb_init", {})
    if "anonymous" in pending and pending["anonymous"] is None:
        del pending["anonymous"]
    return logger


def finish_run(exit_code: int) -> None:
    """Finish the active W&B run, if any, so a non-zero ``exit_code`` marks it failed. Call it on the error
    path and between Hydra multirun jobs (each job needs its own run).

    A scheduler's signal reaches every process of a job, W&B's service too, which may have exited first: then
    the run file holds what was written up to a second before (FLUSH_SECONDS), and one line says so instead of
    W&B's tracebacks at exit.
    """
    if wandb.run is None:
        return
    upload = sync_command(wandb.run) if exit_code == 0 else None
    try:
        wandb.finish(exit_code=exit_code)
        if upload is not None:  # W&B's own line names the last attempt's folder only
            print(f"lth-train: this run was resumed offline; upload all of it with: {upload}")
    except ConnectionError:
        with contextlib.suppress(ConnectionError, AssertionError):
            wandb.teardown(exit_code)  # unregisters W&B's exit hook, which would fail the same way
        print(
            f"lth-train: W&B's service had already stopped (a job's signal reaches all its processes); the run "
            f"keeps what it logged up to {FLUSH_SECONDS:g} s before",
            file=sys.stderr,
        )


def sync_command(run: Any) -> str | None:
    """The ``wandb sync`` command that uploads every attempt of an offline run: each process that ran it (a resumed
    run) wrote a folder of its own with the run's id, oldest first. None online, or for a run of one attempt."""
    if not _is_offline(run):
        return None
    from lth_wandb.tracking.runfiles import started

    folder = Path(run.settings.sync_dir).resolve().parent
    attempts = sorted(folder.glob(f"offline-run-*-{run.id}"), key=started)
    return "wandb sync " + " ".join(shlex.quote(str(p)) for p in attempts) if len(attempts) > 1 else None


def _is_offline(run: Any) -> bool:
    return run.settings.mode == "offline" or getattr(run.settings, "_offline", False)


def sent_before(run: Any) -> set[str]:
    """What earlier processes of this W&B run wrote to it: ``"round-<r>"`` for a round row,
    ``"round-<r>/<ticket|model|checkpoint>"`` for an artifact, and the instability analysis' rows and charts (see
    :func:`lth_wandb.tracking.instability.sent_in`). Empty for a run that is not a resumed one.

    A run killed and resumed with the same id must neither lose nor repeat what reached W&B before the kill;
    what reached it is what counts, whatever the checkpoint says. Offline, that is the earlier run files of the
    same id beside this one (a killed process's unflushed rows are not in them, and are logged again).
    Online, it is the server's copy of the run.
    """
    if _is_offline(run):
        from lth_wandb.tracking.runfiles import find_runs, read_run

        current = Path(run.settings.sync_dir).resolve()
        earlier = [p for p in find_runs(current.parent) if p.name.endswith(f"-{run.id}") and p.resolve() != current]
        rows, artifacts = [], []
        for path in earlier:
            try:
                written = read_run(path)
            except (ValueError, RuntimeError, FileNotFoundError):  # killed before W&B first wrote to it
                continue
            rows += written.history
            artifacts += [(a.get("name", ""), a.get("aliases", [])) for a in written.artifacts]
    elif getattr(run, "resumed", False):
        earlier = wandb.Api().run(f"{run.entity}/{run.project}/{run.id}")
        queries = ([ROUND, "round/density"], *instability.ROW_KEYS)
        rows = [row for keys in queries for row in earlier.scan_history(keys=keys)]
        artifacts = [(a.name.split(":")[0], a.aliases) for a in earlier.logged_artifacts()]
    else:
        return set()
    sent = {f"round-{row[ROUND]}" for row in rows if "round/density" in row and ROUND in row}
    for name, aliases in artifacts:
        sent |= {f"{alias}/{name.split('-')[0]}" for alias in aliases if alias.startswith("round-")}
    return sent | instability.sent_in(rows)


def mark_preempting_if_requeued(certain: bool = False) -> None:
    """Mark the active run *preempting* when it runs under a W&B sweep and was preempted: the W&B server then
    requeues the run, and the agent that takes it (the requeued job's, or another) resumes it under its id (lth-train
    finds its folder by ``WANDB_RUN_ID``).

    Args:
        certain: the signal said so (SIGUSR2). Otherwise (SIGTERM) only when the SLURM job itself is ending: a run
            the agent stops (Hyperband) is not marked. SLURM's SIGTERM reaches W&B's service too, which may be
            gone by then; SIGUSR2 does not stop it.
    """
    if wandb.run is not None and os.environ.get("WANDB_SWEEP_ID") and (certain or slurm_job_ending()):
        with contextlib.suppress(ConnectionError):  # the service may have stopped with the job
            wandb.run.mark_preempting()
