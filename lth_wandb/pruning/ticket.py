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

import contextlib
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import nn

from lth_wandb import atomic
from lth_wandb.pruning import masks as M

FORMAT_VERSION = 1
MANIFEST = "ticket.json"
MASKS_FILE = "masks.safetensors"
WEIGHT_FILES = {"rewind": "rewind.safetensors", "trained": "trained.safetensors"}
KNOWN_FILES = (MASKS_FILE, *WEIGHT_FILES.values())  # the only names a manifest may list

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
        _write_all(directory, blobs)
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
    def load(cls, directory: str | os.PathLike) -> Ticket:
        """Read a ticket written by :meth:`save`, treating every file as untrusted.

        Only the files ``ticket.json`` lists are read, each must match its SHA-256, and every name, shape and
        count is checked against the others, so a broken or hostile ticket fails here with one line naming the
        file, instead of later with wrong weights.

        Raises:
            FileNotFoundError: no ticket in ``directory``, or a file its manifest lists is missing.
            ValueError: the manifest is malformed, a file was changed or truncated after saving, is not a
                safetensors file, lies outside ``directory``, or the files do not belong together.
        """
        directory = Path(directory)
        manifest = _read_manifest(directory)
        digests = manifest["sha256"]
        masks = _read_masks(directory, digests[MASKS_FILE], manifest["mask_shapes"])
        weights = {
            part: _read_weights(directory, file, digests[file], masks) if file in digests else None
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
        kept = int(mask.sum())
        if tuple(t.shape) != (kept,):
            raise ValueError(
                f"{name!r} stores {t.numel()} values in shape {tuple(t.shape)} but its mask keeps {kept}; "
                f"expected shape ({kept},): the ticket's files do not belong together. Hint: re-save the ticket."
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


def _write_all(directory: Path, blobs: dict[str, bytes]) -> None:
    """Write every file in ``blobs`` to ``directory``, replacing none of the old ones unless all were written."""
    # Each file is complete and fsynced under a temporary name before the first rename: an error while writing
    # any of them unwinds the stack, which deletes the temporary files and leaves the previous ticket whole.
    # Only a crash inside the short run of renames can mix two saves, and the old checksums then refuse it.
    with contextlib.ExitStack() as stack:
        for name, data in blobs.items():
            stack.enter_context(atomic.atomic_open(directory / name)).write(data)


# --------------------------------------------------------------------------------------------------------------
# Loading: every byte of a ticket may come from someone else, so each check fails with one line that names the
# file or key, what was expected, and what to do.

_REFETCH = "Hint: get the ticket again from where it came from, or re-save it with Ticket.save()."


def _read_manifest(directory: Path) -> dict[str, Any]:
    """Parse ``ticket.json`` and check every field :meth:`Ticket.load` relies on."""
    path = directory / MANIFEST
    if not path.exists():
        raise FileNotFoundError(
            f"no ticket at {str(directory)!r}: {MANIFEST} is missing. Hint: pass the directory written by "
            "Ticket.save() or LotteryTicket's checkpointing."
        )
    try:
        # Deep nesting makes the JSON parser raise RecursionError, not ValueError.
        manifest = json.loads(_inside(directory, MANIFEST).read_bytes())
    except (ValueError, RecursionError) as err:
        # Not JSONDecodeError: callers that rebuild an error as type(err)(message) cannot construct that one.
        raise ValueError(
            f"{path} is not valid JSON ({_one_line(err)}); expected the manifest Ticket.save() writes. {_REFETCH}"
        ) from err
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} holds a JSON {type(manifest).__name__}; expected an object. {_REFETCH}")
    _check_format(path, manifest.get("format"))
    _check_digests(path, manifest.get("sha256"))
    _check_mask_shapes(path, manifest.get("mask_shapes"))
    _check_metadata(path, manifest.get("metadata", {}))
    return manifest


def _check_format(path: Path, version: Any) -> None:
    if not _is_int(version) or version < 1:
        raise ValueError(
            f"{path}: 'format' must be an integer ticket format version (1 to {FORMAT_VERSION}), got "
            f"{_short(version)}. {_REFETCH}"
        )
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path}: ticket format {version} is newer than this lth-wandb reads ({FORMAT_VERSION}). "
            "Hint: upgrade lth-wandb."
        )


def _check_digests(path: Path, digests: Any) -> None:
    if not isinstance(digests, dict):
        raise ValueError(
            f"{path}: 'sha256' must be an object mapping file names to checksums, got {_short(digests)}. {_REFETCH}"
        )
    for name, digest in digests.items():
        # Only the known names: a key like '../../etc/passwd' would otherwise be read (and its hash printed).
        if name not in KNOWN_FILES:
            what = "a path, not a file name inside the ticket folder" if _is_path(name) else "not a ticket file"
            raise ValueError(
                f"{path}: 'sha256' key {_short(name)} is {what}; allowed keys: {list(KNOWN_FILES)}. "
                "Hint: the manifest was edited; get the ticket again from a source you trust."
            )
        if not isinstance(digest, str) or not re.fullmatch("[0-9a-f]{64}", digest):
            raise ValueError(
                f"{path}: 'sha256' of {name} must be 64 lowercase hex digits, got {_short(digest)}. {_REFETCH}"
            )
    if MASKS_FILE not in digests:
        raise ValueError(f"{path}: 'sha256' has no entry for {MASKS_FILE}; every ticket needs its masks. {_REFETCH}")


def _check_mask_shapes(path: Path, shapes: Any) -> None:
    if not isinstance(shapes, dict):
        raise ValueError(
            f"{path}: 'mask_shapes' must be an object mapping tensor names to lists of non-negative integers, "
            f"got {_short(shapes)}. {_REFETCH}"
        )
    for name, shape in shapes.items():
        if not isinstance(shape, list) or not all(_is_int(size) and size >= 0 for size in shape):
            raise ValueError(
                f"{path}: 'mask_shapes' entry {_short(name)} must be a list of non-negative integers, got "
                f"{_short(shape)}. {_REFETCH}"
            )


def _check_metadata(path: Path, metadata: Any) -> None:
    if not isinstance(metadata, dict):
        raise ValueError(f"{path}: 'metadata' must be a JSON object, got {_short(metadata)}. {_REFETCH}")
    density = metadata.get("density")
    # NaN fails both comparisons, so it is refused too.
    if density is not None and not (_is_number(density) and 0 <= density <= 1):
        raise ValueError(f"{path}: 'metadata.density' must be a number in [0, 1], got {_short(density)}. {_REFETCH}")
    round = metadata.get("round")
    if round is not None and not (_is_int(round) and round >= 0):
        raise ValueError(f"{path}: 'metadata.round' must be an integer >= 0, got {_short(round)}. {_REFETCH}")


def _read_masks(directory: Path, digest: str, shapes: dict[str, list[int]]) -> M.Masks:
    """Unpack the masks, checking them against the shapes the manifest gives."""
    path = directory / MASKS_FILE
    packed = _load_tensors(directory, MASKS_FILE, digest)
    if set(packed) != set(shapes):
        raise ValueError(
            f"{path} and {MANIFEST}'s 'mask_shapes' name different tensors: only in the file: "
            f"{sorted(set(packed) - set(shapes))[:5]}, only in the manifest: {sorted(set(shapes) - set(packed))[:5]}. "
            f"{_REFETCH}"
        )
    masks = {}
    for name, shape in shapes.items():
        bits = packed[name]
        needed = (math.prod(shape) + 7) // 8  # exact Python ints: a huge hostile shape cannot wrap around
        if bits.dtype != torch.uint8 or tuple(bits.shape) != (needed,):
            raise ValueError(
                f"{path}: mask {_short(name)} is {bits.dtype} of shape {tuple(bits.shape)}, but its shape {shape} in "
                f"{MANIFEST} needs torch.uint8 of shape ({needed},). {_REFETCH}"
            )
        masks[name] = M.unpack_bits(bits, shape)
    return masks


def _read_weights(directory: Path, file: str, digest: str, masks: M.Masks) -> StateDict:
    """Load one weight file and scatter its masked tensors back to their dense shapes."""
    stored = _load_tensors(directory, file, digest)
    missing = [name for name in masks if name not in stored]
    if missing:
        raise ValueError(
            f"{directory / file} lacks masked tensors {missing[:5]}; expected a value for every tensor that "
            f"{MASKS_FILE} masks. {_REFETCH}"
        )
    try:
        return dense_state(stored, masks)
    except ValueError as err:
        raise ValueError(f"{directory / file}: {err}") from err


def _load_tensors(directory: Path, name: str, digest: str) -> StateDict:
    """The tensors of ``directory / name``, read once, after its bytes match ``digest``."""
    path = directory / name
    data = _inside(directory, name).read_bytes()  # hash and parse the same bytes: no window to swap the file
    actual = hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise ValueError(
            f"checksum mismatch for {path}: expected sha256 {digest}, got {actual}. "
            "The file was modified or truncated after saving; re-download or re-save the ticket."
        )
    try:
        return safetensors.torch.load(data)
    except (SafetensorError, KeyError, TypeError, ValueError) as err:  # KeyError: a dtype torch lacks
        raise ValueError(
            f"{path} is not a safetensors file ({_one_line(err)}); tickets hold safetensors only, never pickle. "
            f"{_REFETCH}"
        ) from err


def _inside(directory: Path, name: str) -> Path:
    """``directory / name`` resolved, once it is known to be a regular file inside ``directory``."""
    path = directory / name
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is listed in {MANIFEST} but missing (or a broken link). Hint: the ticket was copied "
            "incompletely; get it again or re-save it."
        )
    target, root = path.resolve(), directory.resolve()
    if not target.is_relative_to(root):
        raise ValueError(
            f"{path} links to {target}, outside the ticket folder; expected a file inside {root}. "
            "Hint: copy the file into the folder instead of linking to it."
        )
    if not target.is_file():  # a FIFO would block the read forever, a folder fails obscurely
        raise ValueError(f"{path} is not a regular file; expected a file written by Ticket.save(). {_REFETCH}")
    return target


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true/false load as bool, an int subclass


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_path(name: str) -> bool:
    return "/" in name or "\\" in name or ".." in name or os.path.isabs(name)


def _short(value: Any, limit: int = 80) -> str:
    """``repr`` cut to ``limit`` characters: hostile values must not flood a one-line message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(error: BaseException) -> str:
    return _short(" ".join(str(error).split()), 200).strip("'\"")
