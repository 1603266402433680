"""Weights & Biases tracking: run setup, the per-round metric axis, first-layer mask pictures, run finishing.

The only module of the training path that imports W&B. Offline is a first-class mode: without credentials,
runs are written to disk and uploaded later with ``wandb sync``.
"""

from __future__ import annotations

import math
import netrc
import os
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytorch_lightning as pl
import torch
import wandb
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from lth_wandb.callback import LotteryTicket
from lth_wandb.config import WANDB_MODES
from lth_wandb.ticket import Ticket

try:  # wandb's own lookup knows its host aliases (the default host also accepts an api.wandb.ai entry)
    from wandb.sdk.lib.wbauth import read_netrc_auth as _wandb_read_netrc
except ImportError:  # an internal module: other wandb versions keep it elsewhere
    _wandb_read_netrc = None

# Spellings wandb itself accepts in WANDB_MODE, mapped to what they mean.
_ENV_MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline",
              "disabled": "disabled", "shared": "shared"}  # fmt: skip
TICKET_TYPE = "lottery-ticket"  # the W&B artifact type of a ticket (lth_wandb.artifacts logs them)
STEP = "trainer/global_step"  # WandbLogger's x axis for everything it logs
ROUND = "round"
IMAGE_KEY = "round/mask_first_layer"
VAL_ACC, TEST_ACC = "val/acc", "test/acc"
FLUSH_SECONDS = 1.0  # how often a run's file is written: what a kill can cost of the step-wise curves
_MIN_IMAGE_SIDE = 64  # pixels: an 8x8 digit is upscaled 8x so it is visible in the W&B UI
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
    project: str,
    entity: str | None = None,
    group: str | None = None,
    mode: str | None = None,
    name: str | None = None,
    tags: Sequence[str] = (),
    save_dir: str | PathLike = ".",
    config: dict[str, Any] | None = None,
    job_type: str | None = None,
    run_id: str | None = None,
) -> WandbLogger:
    """A Lightning ``WandbLogger`` in the mode :func:`resolve_mode` picks.

    Args:
        project: W&B project (ignored under ``wandb agent``, which sets the sweep's project).
        entity: W&B user or team; None for your default entity.
        group: groups runs in the UI, e.g. one experiment's seeds.
        mode: see :func:`resolve_mode`.
        name: display name of the run.
        tags: run tags.
        save_dir: the run files go to ``<save_dir>/wandb/``.
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
    mode, notice = resolve_mode(mode, save_dir)
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
        # The agent fixes project, entity and run id; wandb.init would ignore ours, with a warning each.
        project, init["entity"] = None, None
    logger = WandbLogger(name=name, project=project, save_dir=os.fspath(save_dir), **init)
    # WandbLogger always passes anonymous=None, which recent wandb answers with a deprecation warning per run.
    pending = getattr(logger, "_wandb_init", {})
    if "anonymous" in pending and pending["anonymous"] is None:
        del pending["anonymous"]
    return logger


def finish_run(exit_code: int) -> None:
    """Finish the active W&B run, if any, so a non-zero ``exit_code`` marks it failed. Call it on the error
    path and between Hydra multirun jobs (each job needs its own run)."""
    if wandb.run is not None:
        wandb.finish(exit_code=exit_code)


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


def sent_before(run: Any) -> set[str]:
    """What earlier processes of this W&B run wrote to it: ``"round-<r>"`` for a round row and
    ``"round-<r>/<ticket|model|checkpoint>"`` for an artifact. Empty for a run that is not a resumed one.

    A run killed and resumed with the same id must neither lose nor repeat what reached W&B before the kill;
    what reached it is what counts, whatever the checkpoint says. Offline, that is the earlier run files of the
    same id beside this one (a killed process's unflushed rows are not in them, and are logged again).
    Online, it is the server's copy of the run.
    """
    if run.settings.mode == "offline" or getattr(run.settings, "_offline", False):
        from lth_wandb.runfiles import find_runs, read_run

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
        rows = list(earlier.scan_history(keys=[ROUND, "round/density"]))
        artifacts = [(a.name.split(":")[0], a.aliases) for a in earlier.logged_artifacts()]
    else:
        return set()
    sent = {f"round-{row[ROUND]}" for row in rows if "round/density" in row and ROUND in row}
    for name, aliases in artifacts:
        sent |= {f"{alias}/{name.split('-')[0]}" for alias in aliases if alias.startswith("round-")}
    return sent


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
        logger = next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
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

    @property
    def best_key(self) -> str:
        """Row key of the best monitored value: ``round/best_val_loss`` for the default ``val/loss``."""
        return "round/best_" + self.lottery.monitor.replace("/", "_")

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
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
        layers = [f"round/density/{name}" for name in self.lottery.masks]
        fixed = ["round/density", self.best_key, "round/val_acc", "round/test_acc", "round/early_stop_step"]
        fixed.append("round/early_stop_iteration")
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
            IMAGE_KEY: self._mask_image(entry["round"]),
        }
        return {k: v for k, v in row.items() if v is not None}

    def _mask_image(self, round: int) -> wandb.Image | None:
        masks = self.lottery.masks_of(round)  # a resumed run may log an earlier round's row late
        if not masks:
            return None
        name, mask = next(iter(masks.items()))
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


def load_ticket(ref: str | os.PathLike) -> Ticket:
    """A ticket from a local directory or a W&B artifact reference (``entity/project/ticket-abc:winning``).

    Needs no active run, so a bad reference fails before a W&B run starts; :func:`record_ticket_use` then records
    the artifact as the run's input. Checksums are verified on load; nothing is unpickled.
    """
    path = Path(os.path.expanduser(os.fspath(ref)))
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
    if not Path(os.path.expanduser(os.fspath(ref))).is_dir():
        run.use_artifact(os.fspath(ref), type=TICKET_TYPE)
