"""Crash-safe file writes: a kill or a full disk leaves either the old file or the new one, never half of one.

Every write goes to a temporary file in the same folder, is flushed and fsynced, then renamed over the target
(``os.replace`` is atomic on POSIX and Windows), and the folder is fsynced so the rename itself survives a power
cut. On any error the temporary file is removed and the previous file is untouched.

A folder of files that belong together (a report's figures) is written the same way: filled under a temporary
name beside it, then swapped in with two renames (:func:`atomic_folder`).

Standard library only: the ticket format, checkpoints and sweep state all use it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

# Files meant to be shared (tickets, reports) are world-readable; mkstemp alone would make them 0600 (mkdtemp's
# folders 0700).
SHARED_MODE = 0o644
SHARED_FOLDER_MODE = 0o755
# The errors of a full disk or quota, or a file-size limit: what was written before stays whole, and the programs
# say so in one line rather than a traceback.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: int = SHARED_MODE) -> Iterator[BinaryIO]:
    """Open a binary file that replaces ``path`` only when the ``with`` block ends without an error.

    Args:
        path: the file to (re)place. Its folder must exist.
        mode: permission bits of the new file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def write_bytes(path: str | os.PathLike, data: bytes, mode: int = SHARED_MODE) -> None:
    """Atomically replace ``path`` with ``data``."""
    with atomic_open(path, mode) as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str, mode: int = SHARED_MODE) -> None:
    """Atomically replace ``path`` with ``text`` (UTF-8)."""
    write_bytes(path, text.encode(), mode)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, mode: int = SHARED_FOLDER_MODE) -> Iterator[Path]:
    """A new, empty folder that replaces ``path`` (and everything it held) when the ``with`` block ends without an
    error; on an error it is removed and ``path`` is untouched.

    The folder is filled under a temporary name beside ``path``; then the old folder is renamed aside, the new one
    renamed in, and the old one removed. A kill leaves the old folder or the new one at ``path``, never a mix of
    their files; only a kill between the two renames leaves none there (the old one lies beside it, under a dot
    name). Leftovers of such kills (``.<name>.*.tmp`` and ``.*.old``) are removed by the next write of ``path``.

    Args:
        path: the folder to (re)place. Its parent must exist.
        mode: permission bits of the new folder.
    """
    path = Path(path)
    for leftover in [*path.parent.glob(f".{path.name}.*.tmp"), *path.parent.glob(f".{path.name}.*.old")]:
        _remove(leftover)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield staging
        os.chmod(staging, mode)
        fsync_dir(staging)
    except BaseException:
        _remove(staging)
        raise
    old = staging.with_suffix(".old")
    if os.path.lexists(path):
        os.replace(path, old)
    try:
        os.replace(staging, path)
    except BaseException:
        if os.path.lexists(old):
            os.replace(old, path)
        _remove(staging)
        raise
    fsync_dir(path.parent)
    if os.path.lexists(old):
        _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable. A no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
