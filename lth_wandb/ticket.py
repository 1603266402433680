"""A lottery ticket: the mask, the weights it is rewound to, the weights it trained to, and where it came from.

Saved as safetensors plus one JSON file, never pickle, so a ticket shared by someone else cannot run code.
The JSON carries a SHA-256 of every tensor file and is written last: a half-written ticket fails to load
instead of loading wrong values.
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
MASKS_FILE, REWIND_FILE, TRAINED_FILE = "masks.safetensors", "rewind.safetensors", "trained.safetensors"

StateDict = dict[str, torch.Tensor]


@dataclass
class Ticket:
    """A sparse subnetwork and the weights to train it from.

    Attributes:
        masks: parameter name -> bool tensor, True = kept.
        rewind_weights: the untrained ticket: a full state dict (parameters and buffers) with pruned weights
            at zero. Training starts from these.
        trained_weights: the state dict at the end of the round that produced the mask, or None.
        metadata: JSON-serialisable facts: round, densities, metrics, the pruning settings.
    """

    masks: M.Masks
    rewind_weights: StateDict
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
        check_compatible(self, module)
        with torch.no_grad():
            module.load_state_dict(self.rewind_weights, strict=True)
            params = dict(module.named_parameters())
            for name, mask in self.masks.items():
                params[name].mul_(mask.to(params[name].device, params[name].dtype))
        return module

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the ticket to ``directory`` (created if needed) and return its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = {
            MASKS_FILE: {name: M.pack_bits(m) for name, m in self.masks.items()},
            REWIND_FILE: self.rewind_weights,
        }
        if self.trained_weights is not None:
            files[TRAINED_FILE] = self.trained_weights
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
        trained = load_file(directory / TRAINED_FILE) if TRAINED_FILE in manifest["sha256"] else None
        return cls(masks, load_file(directory / REWIND_FILE), trained, manifest.get("metadata", {}))


def check_compatible(ticket: Ticket, module: nn.Module) -> None:
    """Raise a ValueError naming the first difference between a ticket's tensors and a module's."""
    own = module.state_dict()
    params = dict(module.named_parameters())
    missing = [n for n in ticket.rewind_weights if n not in own]
    extra = [n for n in own if n not in ticket.rewind_weights]
    unmasked = [n for n in ticket.masks if n not in params]
    if missing or extra or unmasked:
        raise ValueError(
            f"ticket does not fit {type(module).__name__}: names only in the ticket: {(missing + unmasked)[:5]}, "
            f"only in the module: {extra[:5]}. Hint: apply the ticket to the same module class it was found on "
            "(a ticket from a LightningModule has its attribute prefix, e.g. 'net.')."
        )
    for name, tensor in ticket.rewind_weights.items():
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
