"""Where ``lth-sweep``'s runs execute: on this machine as child processes (``local``, the default) or as SLURM jobs
through submitit (``slurm``). The controller, ``lth-sweep`` itself (the sweep engine, early termination,
``sweep.json``), stays where it was started and only needs the sweep directory to be on a filesystem the jobs
share.

A launcher's ``start(command, directory, env)`` returns a handle with ``poll()`` (the exit code, or None while it
runs), ``stop()`` (SIGTERM: Lightning ends the fit cleanly), ``kill()`` and ``wait(timeout)``.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

LAUNCHERS = ("local", "slurm")
# What a SLURM job asks for unless --slurm says otherwise: hydra/launcher=slurm's defaults (conf/hydra/launcher).
SLURM_DEFAULTS = {"gpus_per_node": 1, "cpus_per_task": 4, "mem_gb": 16, "timeout_min": 240}
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


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
    """Runs each command as a child process; on Linux it dies with ``lth-sweep`` (``PR_SET_PDEATHSIG``)."""

    name = "local"

    def start(self, command: list[str], directory: Path, env: Mapping[str, str]) -> LocalRun:
        with open(directory / "output.log", "wb") as log:
            # A session of its own: Ctrl+C on lth-sweep must not reach the runs before we stop them in order.
            process = subprocess.Popen(
                command,
                cwd=directory,
                env=dict(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with(os.getpid()) if platform.system() == "Linux" else None,
            )
        return LocalRun(process)


class JobRun:
    """A run as a submitit job (SLURM, or submitit's local executor)."""

    def __init__(self, job: Any):
        self.job = job

    def poll(self) -> int | None:
        if not self.job.done():
            return None
        try:
            return int(self.job.result())
        except Exception:  # cancelled, or the job itself failed (submitit raises for both)
            return 1

    def stop(self) -> None:
        """Cancel the job: SLURM sends SIGTERM (SIGKILL after its KillWait), submitit's local executor SIGINT;
        the job passes either on to the run as SIGTERM."""
        _send(lambda: self.job.cancel(check=False))

    kill = stop

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.job.job_id), timeout)
            time.sleep(0.2)
        return code


class SubmititLauncher:
    """Sends each run as a job through a submitit executor, e.g. ``submitit.AutoExecutor(folder, cluster="slurm")``
    (what ``--launcher slurm`` builds) or ``submitit.LocalExecutor(folder)``.

    The job gets the agent's variables on top of the environment it finds where it runs (a SLURM node sets its
    own ``CUDA_VISIBLE_DEVICES``), not a copy of this machine's.
    """

    name = "slurm"

    def __init__(self, executor: Any):
        self.executor = executor

    def start(self, command: list[str], directory: Path, env: Mapping[str, str]) -> JobRun:
        here = os.environ
        changed = {k: v for k, v in env.items() if here.get(k) != v}
        removed = [k for k in here if k not in env]
        return JobRun(self.executor.submit(run_job, list(command), str(directory), changed, removed))


def run_job(command: list[str], directory: str, changed: dict[str, str], removed: list[str]) -> int:
    """What a submitit job runs: ``command`` in ``directory`` with its output in ``output.log``; a SIGTERM or
    SIGINT sent to the job reaches the run as SIGTERM. Returns the run's exit code."""
    env = {k: v for k, v in os.environ.items() if k not in removed}
    env.update(changed)
    with open(Path(directory) / "output.log", "wb") as log:
        child = subprocess.Popen(command, cwd=directory, env=env, stdout=log, stderr=subprocess.STDOUT)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: _send(lambda: child.send_signal(signal.SIGTERM)))
    return child.wait()


def slurm_launcher(folder: str | os.PathLike, options: Mapping[str, Any] | None = None) -> SubmititLauncher:
    """``--launcher slurm``: a SLURM executor writing its job files to ``folder``, with ``SLURM_DEFAULTS``
    updated by ``options`` (submitit's names: ``slurm_partition``, ``gpus_per_node``, ``timeout_min``...)."""
    try:
        import submitit
    except ImportError as error:
        raise ValueError(
            "--launcher slurm sends runs through submitit, which is not installed. Hint: pip install "
            "'lth-wandb[hpo]' (or pip install submitit)"
        ) from error
    try:
        executor = submitit.AutoExecutor(folder=os.fspath(folder), cluster="slurm")
    except RuntimeError as error:  # submitit: 'Could not detect "srun"'
        raise ValueError(
            f"--launcher slurm needs SLURM on this machine ({error}). Hint: run lth-sweep on a login node, or use "
            "--launcher local"
        ) from error
    try:
        executor.update_parameters(**{**SLURM_DEFAULTS, **(options or {})})
    except (ValueError, TypeError, NameError) as error:  # an unknown or mistyped parameter
        raise ValueError(f"--slurm: {' '.join(str(error).split())}") from error
    return SubmititLauncher(executor)


def _send(action) -> None:
    try:
        action()
    except (ProcessLookupError, PermissionError):
        pass  # it has just ended


@functools.cache
def _prctl():
    return ctypes.CDLL(None, use_errno=True).prctl  # loaded in lth-sweep: the forked child only calls it


def _die_with(parent: int):
    """A ``preexec_fn`` that has the kernel SIGKILL the child when ``parent`` (lth-sweep) dies, even by SIGKILL,
    so no run finishes unseen and is then run again. Linux only. The kernel watches the thread that started the
    child: lth-sweep starts its runs from its main thread."""
    prctl = _prctl()

    def setup() -> None:
        if prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0 or os.getppid() != parent:
            # No death signal, or lth-sweep died before it was set: do not run unwatched (stderr is output.log).
            os.write(2, b"lth-sweep: could not tie the run to lth-sweep (prctl PR_SET_PDEATHSIG); not started\n")
            os._exit(71)

    return setup
