"""A run's checkpoint, checked before W&B starts: that a file is a whole Lightning checkpoint, that one from
elsewhere fits this model and these pruning settings, and that the finished rounds' weight files it refers to are
whole. Each problem is one line that says what to do, where Lightning would find it minutes later with a traceback.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CHECKPOINT = Path("checkpoints") / "last.ckpt"


class ResumeError(ValueError):
    """A resume request that cannot be honoured; the message says why and what to do."""


def check_checkpoint(path: Path) -> Path:
    """Refuse a file that is not a whole ``torch.save`` archive (wrong file, or cut short) before W&B starts."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
            # Lightning's own key, read from the pickle's bytes: nothing is unpickled to check it.
            ok = bool(pickles) and b"pytorch-lightning_version" in archive.read(pickles[0])
    except (zipfile.BadZipFile, OSError):
        ok = False
    if not ok:
        raise ResumeError(
            f"resume={path} is not a Lightning checkpoint (not a complete torch.save archive of one). Hint: pass "
            f"outputs/<date>/<time>/{CHECKPOINT}"
        )
    return path


def check_fits(path: str, model: Any, settings: Mapping[str, Any]) -> None:
    """The checkpoint must hold this model's tensors and LotteryTicket's state with these ``settings``: checked
    before W&B starts, where Lightning would find out after it, with a traceback. Matters for a checkpoint from
    elsewhere; a run's own checkpoint matches its saved config."""
    state = _load(path)
    ours = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    theirs = {name: tuple(t.shape) for name, t in state.get("state_dict", {}).items()}
    differ = sorted(name for name in ours.keys() | theirs.keys() if ours.get(name) != theirs.get(name))
    if differ:
        shown = ", ".join(f"{n} {theirs.get(n, 'missing')} vs {ours.get(n, 'missing')}" for n in differ[:3])
        raise ResumeError(
            f"resume={path} holds another model's weights ({shown}: checkpoint vs this run). Hint: resume with "
            "the model and data it was trained with (the overrides of the run that wrote it)"
        )
    from lth_wandb.lottery.guards import check_same_settings

    lottery = _lottery_state(state)
    try:
        if lottery is None:
            raise ValueError("it holds no LotteryTicket state")
        check_same_settings(settings, lottery.get("settings", {}))
    except ValueError as error:
        raise ResumeError(
            f"resume={path}: {str(error).split(' Hint:')[0]} Hint: resume with the pruning settings it was trained "
            "with (the overrides of the run that wrote it)"
        ) from None  # the message above is the cause's, with the app's hint


def ckpt_path(value: str | None) -> str | None:
    """The checkpoint ``trainer.fit`` resumes from for a (expanded) ``resume=`` value; None trains from the start."""
    if value is None:
        return None
    path = Path(os.path.expanduser(value))
    if path.is_dir():
        path = path / CHECKPOINT
        return str(check_checkpoint(path)) if path.exists() else None
    if not path.exists():
        raise ResumeError(f"resume={value}: no such file. Hint: resume=outputs/<date>/<time>/{CHECKPOINT}")
    return str(check_checkpoint(path))


def check_rounds(path: str, spill_dir: Path) -> None:
    """The finished rounds' weight files the checkpoint refers to (``rounds/round-<r>.safetensors``) are whole and
    unchanged: a lost or altered one is said now, with the way to restore it, not after W&B started."""
    from lth_wandb.lottery.rewind import check_spilled

    lottery = _lottery_state(_load(path))
    try:
        check_spilled((lottery or {}).get("trained_files", {}), spill_dir)
    except (ValueError, FileNotFoundError) as error:
        raise ResumeError(f"resume={path}: {error}") from None


def _load(path: str) -> dict[str, Any]:
    import pickle

    import torch

    try:  # tensors and plain values only, as Lightning's own load (torch's default): unpickling can run code
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        raise ResumeError(
            f"resume={path} holds objects other than tensors and plain values, which torch loads only with "
            "weights_only=False. Hint: resume a checkpoint lth-train wrote, or load one you trust in your own Trainer"
        ) from None


def _lottery_state(state: Mapping[str, Any]) -> dict[str, Any] | None:
    found = [v for key, v in state.get("callbacks", {}).items() if key.split("{")[0] == "LotteryTicket"]
    return found[0] if found else None
