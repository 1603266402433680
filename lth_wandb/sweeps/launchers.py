"""Where ``lth-sweep``'s runs execute: on this machine as child processes (``local``, the default), or as SLURM jobs
(``slurm``, :mod:`lth_wandb.sweeps.slurm`). The controller, ``lth-sweep`` itself (the sweep engine, early
termination, ``sweep.json``), stays where it was started and only needs the sweep directory to be on a filesystem
the jobs share.

A launcher's ``start(command, directory, env)`` returns a handle with ``poll()`` (the exit code, or None while it
runs), ``stop()`` (ask the run to end cleanly), ``kill()`` and ``wait(timeout)``.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

from lth_wandb.processes import tie_to

LAUNCHERS = ("local", "slurm")


class LocalRun:
    """A run as a child process of ``lth-sweep``, in a session of its own."""

    def __init__(self, process: subprocess.Popen):
        self.process = process

    def poll(self) -> int | None:
        return self.process.poll()

    def stop(self) -> None:
        _send(lambda: self.process.send_signal(signal.SIGTERM))

    def kill(self) -> None:
        """SIGKILL the run's whole process group (W&B's service has a session of its own and follows its run)."""
        _send(lambda: os.killpg(self.process.pid, signal.SIGKILL))

    def wait(self, timeout: float | None = None) -> int:
        return self.process.wait(timeout=timeout)


class LocalLauncher:
    """Runs each command as a child process; on Linux it dies with ``lth-sweep`` (``PR_SET_PDEATHSIG``), so no run
    finishes unseen and is then run again."""

    name = "local"

    def start(self, command: list[str], directory: Path, env: Mapping[str, str]) -> LocalRun:
        with open(directory / "output.log", "ab") as log:  # appended: a run started again keeps its first log
            # A session of its own: Ctrl+C on lth-sweep must not reach the runs before we stop them in order.
            process = subprocess.Popen(
                command,
                cwd=directory,
                env=dict(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=tie_to(os.getpid()) if platform.system() == "Linux" else None,
            )
        return LocalRun(process)


def _send(action) -> None:
    try:
        action()
    except (ProcessLookupError, PermissionError):
        pass  # it has just ended
