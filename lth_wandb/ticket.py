"""A lottery ticket: the mask, the weights it is rewound to, the weights it trained to, and where it came from.

Saved as safetensors plus one JSON file, never pickle, so a ticket shared by someone else cannot run code.
Storage is sparse: masks are bit-packed and masked tensors keep only their surviving values, so a ticket at 5%
density costs about 5% + 1/32 of the dense fp32 weights. The JSON carries a SHA-256 of every tensor file and is
written last: a half-written ticket fails to load instead of loading wrong values.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lth_wandb import masks as M

FORMAT_VERSION = 1
MANIFEST = "ticket.json"
MASKS_FILE = "masks.safetensors"
WEIGHT_FILES = {"rewind": "rewind.safetensors", "trained": "trained.safetensors"}

StateDict = dict[str, torch.Tensor]


@dataclass
class Ticket:
    """A sparse subnetwork and the weights to train it from.

    Attributes:
        masks: parameter name -> bool tensor, True = kept.
        rewind_weights: the untrained ticket: a full state dict (parameters and buffers) with pruned weights
            at zero. Training starts from these. None when the ticket was saved without them.
        trained_weights: the state dict at the end of the round that trained with the mask, or None.
        metadata: JSON-serialisable facts: round, densities, metrics, the pruning settings.

    Entries outside the mask are zero in both weight sets (LotteryTicket enforces it), and are stored as zero.
    """

    masks: M.Masks
    rewind_weights: StateDict | None
    trained_weights: StateDict | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def density(self) -> float:
        """Kept fraction over the masked (prunable) weights."""
        return M.density(self.masks)

    def apply(self, module: nn.Module) -> nn.Module:
        """Load the masked rewind weights into ``module`` in place, checking every name and shape first.

        Raises:
            ValueError: the module lacks a tensor of the ticket, has one the ticket lacks, or a shape differs.
        """
        if self.rewind_weights is None:
            raise ValueError(
                "this ticket has no rewind weights (it was saved with parts=('trained',)). Hint: load the "
                "lottery-ticket artifact or directory, which carries them."
            )
        check_compatible(self, module)
        with torch.no_grad():
            module.load_state_dict(self.rewind_weights, strict=True)
            params = dict(module.named_parameters())
            for name, mask in self.masks.items():
                params[name].mul_(mask.to(params[name].device, params[name].dtype))
        return module

    def save(self, directory: str | os.PathLike, parts: tuple[str, ...] = ("rewind", "trained")) -> Path:
        """Write the ticket to ``directory`` (created if needed) and return its path.

        Args:
            directory: where to write ``ticket.json`` and the safetensors files.
            parts: which weights to include: ``"rewind"`` (the untrained ticket) and/or ``"trained"``. Masks and
                metadata are always written.
        """
        unknown = set(parts) - set(WEIGHT_FILES)
        if unknown:
            raise ValueError(f"parts={parts!r} has unknown entries {sorted(unknown)}; allowed: {list(WEIGHT_FILES)}")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = {MASKS_FILE: {name: M.pack_bits(m) for name, m in self.masks.items()}}
        for part, weights in (("rewind", self.rewind_weights), ("trained", self.trained_weights)):
            if part in parts and weights is not None:
                files[WEIGHT_FILES[part]] = sparse_state(weights, self.masks)
        digests = {name: _write_safetensors(directory / name, tensors) for name, tensors in files.items()}
        manifest = {
            "format": FORMAT_VERSION,
            "mask_shapes": {name: list(m.shape) for name, m in self.masks.items()},
            "sha256": digests,
            "metadata": self.metadata,
        }
        _write_atomic(directory / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Ticket:
        """Read a ticket written by :meth:`save`, verifying every file's checksum.

        Raises:
            FileNotFoundError: no ticket in ``directory``.
            ValueError: a file was changed or truncated after saving.
        """
        directory = Path(directory)
        if not (directory / MANIFEST).is_file():
            raise FileNotFoundError(
                f"no ticket at {str(directory)!r}: {MANIFEST} is missing. Hint: pass the directory written by "
                "Ticket.save() or LotteryTicket's checkpointing."
            )
        manifest = json.loads((directory / MANIFEST).read_text())
        if manifest.get("format", 0) > FORMAT_VERSION:
            raise ValueError(
                f"ticket format {manifest['format']} is newer than this lth-wandb reads ({FORMAT_VERSION}); "
                "upgrade lth-wandb"
            )
        for name, expected in manifest["sha256"].items():
            actual = _sha256(directory / name)
            if actual != expected:
                raise ValueError(
                    f"checksum mismatch for {directory / name}: expected sha256 {expected}, got {actual}. "
                    "The file was modified or truncated after saving; re-download or re-save the ticket."
                )
        packed = load_file(directory / MASKS_FILE)
        masks = {name: M.unpack_bits(packed[name], shape) for name, shape in manifest["mask_shapes"].items()}
        weights = {
            part: dense_state(load_file(directory / file), masks) if file in manifest["sha256"] else None
            for part, file in WEIGHT_FILES.items()
        }
        return cls(masks, weights["rewind"], weights["trained"], manifest.get("metadata", {}))


def sparse_state(state: StateDict, masks: M.Masks) -> StateDict:
    """Masked tensors as the 1-D vector of their surviving values; the rest as they are."""
    return {name: (t.detach().cpu()[masks[name]] if name in masks else t) for name, t in state.items()}


def dense_state(stored: StateDict, masks: M.Masks) -> StateDict:
    """Inverse of :func:`sparse_state`: scatter surviving values back, zeros elsewhere."""
    state = {}
    for name, t in stored.items():
        if name not in masks:
            state[name] = t
            continue
        mask = masks[name]
        if t.numel() != int(mask.sum()):
            raise ValueError(
                f"{name!r} stores {t.numel()} values but its mask keeps {int(mask.sum())}; the ticket's files "
                "do not belong together. Hint: re-save the ticket."
            )
        dense = torch.zeros(mask.shape, dtype=t.dtype)
        dense[mask] = t
        state[name] = dense
    return state


def check_compatible(ticket: Ticket, module: nn.Module) -> None:
    """Raise a ValueError naming the first difference between a ticket's tensors and a module's."""
    own = module.state_dict()
    params = dict(module.named_parameters())
    reference = ticket.rewind_weights if ticket.rewind_weights is not None else ticket.trained_weights or {}
    missing = [n for n in reference if n not in own]
    extra = [n for n in own if n not in reference]
    unmasked = [n for n in ticket.masks if n not in params]
    if missing or extra or unmasked:
        only_ticket = list(dict.fromkeys(missing + unmasked))
        raise ValueError(
            f"ticket does not fit {type(module).__name__}: names only in the ticket: {only_ticket[:5]}, "
            f"only in the module: {extra[:5]}. Hint: apply the ticket to the same module class it was found on "
            "(a ticket from a LightningModule has its attribute prefix, e.g. 'net.')."
        )
    for name, tensor in reference.items():
        if tuple(tensor.shape) != tuple(own[name].shape):
            raise ValueError(
                f"ticket does not fit {type(module).__name__}: {name!r} has shape {tuple(tensor.shape)} in the "
                f"ticket but {tuple(own[name].shape)} in the module. Hint: build the model with the same sizes "
                "as the run that found the ticket."
            )


def _write_safetensors(path: Path, tensors: StateDict) -> str:
    # safetensors refuses shared or non-contiguous storage; state dicts can have both (tied weights, views).
    plain = {name: t.detach().cpu().contiguous().clone() for name, t in tensors.items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(plain, tmp)
    os.replace(tmp, path)
    return _sha256(path)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
