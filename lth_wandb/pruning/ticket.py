"""A lottery ticket: the mask, the weights it is rewound to, the weights it trained to, and where it came from.

Saved as safetensors plus one JSON file, never pickle, so a ticket shared by someone else cannot run code.
Storage is sparse: masks are bit-packed and masked tensors keep only their surviving values, so a ticket at 5%
density costs about 5% + 1/32 of the dense fp32 weights. The JSON carries a SHA-256 of every tensor file and is
written last, each file atomically: a failed save leaves the previous ticket, a crash mid-save fails to load
instead of loading wrong values.

Tickets travel between people (W&B artifacts, shared folders), so loading treats every file as hostile: only the
file names the format knows, inside the folder, each checksummed, with every field, shape and count checked.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from lth_wandb import atomic
from lth_wandb.pruning import masks as M
from lth_wandb.pruning.masks import StateDict, dense_state, sparse_state
from lth_wandb.pruning.ticket_files import (
    FORMAT_VERSION,
    MANIFEST,
    MASKS_FILE,
    WEIGHT_FILES,
    read_manifest,
    read_masks,
    read_weights,
    write_all,
)

__all__ = ["Ticket", "StateDict", "check_compatible", "check_mask_shapes_fit", "dense_state", "sparse_state"]


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

        Files are world-readable (0644) so a shared ticket can be read by others. An error part-way (a tensor
        that cannot be stored, a full disk) leaves the ticket previously saved there loadable.

        Args:
            directory: where to write ``ticket.json`` and the safetensors files.
            parts: which weights to include: ``"rewind"`` (the untrained ticket) and/or ``"trained"``. Masks and
                metadata are always written.

        Raises:
            ValueError: ``parts`` names something other than ``"rewind"`` and ``"trained"``.
        """
        unknown = set(parts) - set(WEIGHT_FILES)
        if unknown:
            raise ValueError(f"parts={parts!r} has unknown entries {sorted(unknown)}; allowed: {list(WEIGHT_FILES)}")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        blobs = self._serialize(parts)
        manifest = {
            "format": FORMAT_VERSION,
            "mask_shapes": {name: list(m.shape) for name, m in self.masks.items()},
            "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in blobs.items()},
            "metadata": self.metadata,
        }
        # Encoded before any file is written: metadata JSON cannot hold must not cost the previous ticket.
        manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode()
        write_all(directory, blobs)
        # Last, so the checksums it carries always describe complete files.
        atomic.write_bytes(directory / MANIFEST, manifest_bytes)
        return directory

    def _serialize(self, parts: tuple[str, ...]) -> dict[str, bytes]:
        """File name -> safetensors bytes of every file ``parts`` asks for, built before any file is touched."""
        files = {MASKS_FILE: {name: M.pack_bits(m) for name, m in self.masks.items()}}
        for part, weights in (("rewind", self.rewind_weights), ("trained", self.trained_weights)):
            if part in parts and weights is not None:
                files[WEIGHT_FILES[part]] = sparse_state(weights, self.masks)
        # safetensors refuses shared or non-contiguous storage; state dicts can have both (tied weights, views).
        return {
            name: safetensors.torch.save({k: t.detach().cpu().contiguous().clone() for k, t in tensors.items()})
            for name, tensors in files.items()
        }

    @classmethod
    def load(cls, directory: str | os.PathLike, module: nn.Module | None = None) -> Ticket:
        """Read a ticket written by :meth:`save`, treating every file as untrusted.

        Only the files ``ticket.json`` lists are read, each must match its SHA-256, and every name, shape and
        count is checked against the others, so a broken or hostile ticket fails here with one line naming the
        file, instead of later with wrong weights.

        Args:
            directory: the folder :meth:`save` wrote.
            module: the module the ticket is for. Its tensors' shapes are checked against the manifest's before any
                tensor is read: a ticket can make the reader allocate its masked tensors' full (dense) sizes, which
                only the module bounds.

        Raises:
            FileNotFoundError: no ticket in ``directory``, or a file its manifest lists is missing.
            ValueError: the manifest is malformed, a file was changed or truncated after saving, is not a
                safetensors file, lies outside ``directory``, or the files do not belong together (or to ``module``).
        """
        directory = Path(directory)
        manifest = read_manifest(directory)
        if module is not None:
            check_mask_shapes_fit(directory, manifest["mask_shapes"], module)
        digests = manifest["sha256"]
        masks = read_masks(directory, digests[MASKS_FILE], manifest["mask_shapes"])
        weights = {
            part: read_weights(directory, file, digests[file], masks) if file in digests else None
            for part, file in WEIGHT_FILES.items()
        }
        return cls(masks, weights["rewind"], weights["trained"], manifest.get("metadata", {}))


def check_mask_shapes_fit(directory: Path, shapes: dict[str, list[int]], module: nn.Module) -> None:
    """Raise a ValueError naming the first mask in ``ticket.json`` that is not one of ``module``'s parameters, in
    its shape."""
    params = dict(module.named_parameters())
    for name, shape in shapes.items():
        own = tuple(params[name].shape) if name in params else None
        if own != tuple(shape):
            has = f"has shape {own}" if own is not None else "has no such parameter"
            raise ValueError(
                f"ticket does not fit {type(module).__name__}: {directory / MANIFEST} gives {name!r} shape "
                f"{_short_shape(shape)}, but the module {has}; nothing was read from the ticket's tensor files. "
                "Hint: use a ticket found on this model, built with the same sizes."
            )


def _short_shape(shape: list[int]) -> str:
    text = str(shape)
    return text if len(text) <= 60 else f"{text[:57]}..."


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
