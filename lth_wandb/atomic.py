"""Crash-safe file writes: a kill or a full disk leaves either the old file or the new one, never half of one.

Every write goes to a temporary file in the same folder, is flushed and fsynced, then renamed over the target
(``os.replace`` is atomic on POSIX and Windows), and the folder is fsynced so the rename itself survives a power
cut. On any error the temporary file is removed and the previous file is untouched.

Standard library only: the ticket format, checkpoints and sweep state all use it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

# Files meant to be shared (tickets, reports) are world-readable; mkstemp alone would make them 0600.
SHARED_MODE = 0o644


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
