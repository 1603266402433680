"""Fault injection for the kill/resume tests: on PYTHONPATH of a real ``lth-train`` process, it kills that process
(SIGKILL, no clean-up of any kind) at a precise moment of a file write. Nothing here runs unless the test sets
``LTH_FAULT``; the product code has no test hooks.

    LTH_FAULT=<when>:<glob>:<n>

- ``fsync``: the n-th time a file whose path matches ``glob`` is fsynced: its bytes are written, it is not yet
  durable nor renamed over its target (lth_wandb.atomic) — a kill in the middle of a write;
- ``replace``: right after the n-th ``os.replace`` onto a path matching ``glob`` — a file just completed;
- ``enospc``: the n-th fsync of a matching file fails with "No space left on device", as on a full disk.

    LTH_PACE=<seconds>

Each pass over a DataLoader starts that much later: an epoch takes at least that long on any machine, so a test
that races a run (an early-termination stop that must arrive before the run ends) does not depend on how fast the
machine trains.
"""

import errno
import fnmatch
import os
import signal

_spec = os.environ.get("LTH_FAULT")


def _arm(when: str, glob: str, n: int) -> None:
    seen = 0

    def hit(path: str) -> None:
        nonlocal seen
        if fnmatch.fnmatch(path, glob):
            seen += 1
            if seen == n and when == "enospc":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
            if seen == n:
                os.kill(os.getpid(), signal.SIGKILL)

    if when in ("fsync", "enospc"):
        real_fsync = os.fsync

        def fsync(fd):
            try:
                path = os.readlink(f"/proc/self/fd/{fd if isinstance(fd, int) else fd.fileno()}")
            except OSError:
                path = ""
            hit(path)
            return real_fsync(fd)

        os.fsync = fsync
    elif when == "replace":
        real_replace = os.replace

        def replace(src, dst, **kwargs):
            real_replace(src, dst, **kwargs)
            hit(os.fspath(dst))

        os.replace = replace
    else:
        raise ValueError(f"LTH_FAULT={_spec!r}: unknown moment {when!r}; use fsync, replace or enospc")


def _pace(seconds: float) -> None:
    import time

    from torch.utils.data import DataLoader

    real_iter = DataLoader.__iter__

    def paced_iter(self):
        time.sleep(seconds)
        return real_iter(self)

    DataLoader.__iter__ = paced_iter


if os.environ.get("LTH_PACE"):
    _pace(float(os.environ["LTH_PACE"]))
if _spec:
    _when, _glob, _n = _spec.split(":")
    _arm(_when, _glob, int(_n))
