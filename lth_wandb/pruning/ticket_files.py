"""A ticket's folder on disk: ``ticket.json`` (format, mask shapes, a SHA-256 per file, metadata) beside
safetensors files of bit-packed masks and surviving weights.

Reading treats every byte as someone else's: only the file names the format knows, inside the folder, each
checksummed, with every field, shape and count checked; each check fails with one line that names the file or
key, what was expected, and what to do.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError

from lth_wandb import atomic
from lth_wandb.pruning import masks as M
from lth_wandb.pruning.masks import StateDict, dense_state

FORMAT_VERSION = 1
MANIFEST = "ticket.json"
MASKS_FILE = "masks.safetensors"
WEIGHT_FILES = {"rewind": "rewind.safetensors", "trained": "trained.safetensors"}
KNOWN_FILES = (MASKS_FILE, *WEIGHT_FILES.values())  # the only names a manifest may list


def write_all(directory: Path, blobs: dict[str, bytes]) -> None:
    """Write every file in ``blobs`` to ``directory``, replacing none of the old ones unless all were written."""
    # Each file is complete and fsynced under a temporary name before the first rename: an error while writing
    # any of them unwinds the stack, which deletes the temporary files and leaves the previous ticket whole.
    # Only a crash inside the short run of renames can mix two saves, and the old checksums then refuse it.
    with contextlib.ExitStack() as stack:
        for name, data in blobs.items():
            stack.enter_context(atomic.atomic_open(directory / name)).write(data)


_REFETCH = "Hint: get the ticket again from where it came from, or re-save it with Ticket.save()."


def read_manifest(directory: Path) -> dict[str, Any]:
    """Parse ``ticket.json`` and check every field ``Ticket.load`` relies on."""
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


def read_masks(directory: Path, digest: str, shapes: dict[str, list[int]]) -> M.Masks:
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


def read_weights(directory: Path, file: str, digest: str, masks: M.Masks) -> StateDict:
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
    check_header(path, data)
    try:
        return safetensors.torch.load(data)
    except (SafetensorError, KeyError, TypeError, ValueError) as err:  # KeyError: a dtype torch lacks
        raise ValueError(
            f"{path} is not a safetensors file ({_one_line(err)}); tickets hold safetensors only, never pickle. "
            f"{_REFETCH}"
        ) from err


# Bytes per element of each safetensors dtype (the format's own names).
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
                "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}  # fmt: skip


def check_header(path: Path, data: bytes) -> None:
    """Refuse a safetensors file whose header (8 bytes of little-endian length, then JSON) declares a tensor its
    bytes cannot hold, before any tensor is built: a small file must not make a reader allocate a huge one. A
    header that does not parse is left to safetensors' own error.

    Raises:
        ValueError: a tensor's shape and dtype need other than the bytes its offsets give inside the file.
    """
    size = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8 : 8 + size]) if 0 < size <= len(data) - 8 else None
    except (ValueError, RecursionError):
        return
    stored = len(data) - 8 - size
    for name, entry in header.items() if isinstance(header, dict) else ():
        try:
            dtype, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            needed = math.prod(shape) * _DTYPE_BYTES[dtype]  # exact Python ints: no overflow
            fits = 0 <= start <= end <= stored and end - start == needed
        except (KeyError, TypeError, ValueError):
            continue  # __metadata__, or an entry safetensors refuses itself
        if not fits:
            raise ValueError(
                f"{path}: tensor {_short(name)} declares shape {_short(shape)} of {dtype} ({needed} bytes), but its "
                f"data_offsets {_short(entry['data_offsets'])} in a file of {len(data)} bytes do not hold that; "
                f"refused before reading it. {_REFETCH}"
            )


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
