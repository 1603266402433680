"""Which process this is, and tying a process's life to its parent's.

Two rules of the project rest on these: only global rank 0 writes files and talks to W&B (DDP, and ``srun`` with
several tasks), and nothing keeps running once the process that started it is gone (lth-sweep's runs, Lightning's
DDP ranks). Standard library only: lth-train asks before Hydra composes its config and before Lightning is imported.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import subprocess
from collections.abc import Callable

# Lightning's own order (lightning_fabric.utilities.rank_zero._get_rank): LOCAL_RANK before SLURM_PROCID, because
# SLURM sets SLURM_PROCID also where it does not manage the processes.
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def global_rank() -> int:
    """This process's global rank as Lightning will see it: 0 outside DDP and in the process a user started."""
    for name in RANK_VARIABLES:
        value = os.environ.get(name)
        if value:
            return int(value)
    return 0


def launched_by_lightning() -> bool:
    """A DDP rank that Lightning's launcher started (it sets LOCAL_RANK >= 1 and reruns the user's command line),
    as opposed to one that ``srun`` or ``torchrun`` started beside rank 0."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0) > 0 and "SLURM_STEP_ID" not in os.environ


@functools.cache
def _prctl():
    return ctypes.CDLL(None, use_errno=True).prctl


def die_with_parent(parent: int, signum: int = signal.SIGKILL) -> bool:
    """Have the kernel send ``signum`` to this process when ``parent`` dies, even by SIGKILL (Linux only).

    Returns False where that cannot be arranged, or when ``parent`` is already gone (this process was reparented
    before the call): the caller decides whether to run unwatched.
    """
    try:
        ok = _prctl()(_PR_SET_PDEATHSIG, int(signum)) == 0
    except (OSError, AttributeError):  # no prctl: not Linux
        return False
    return ok and os.getppid() == parent


def tie_to(parent: int) -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.Popen`` that ties the child to ``parent`` (see :func:`die_with_parent`)
    and refuses to start it unwatched. The kernel watches the thread that started the child: start it from the
    main thread. stderr is the child's: the message lands in its log."""
    _prctl()  # loaded here, in the parent: the forked child only calls it

    def setup() -> None:
        if not die_with_parent(parent):
            os.write(2, b"could not tie this process to its parent (prctl PR_SET_PDEATHSIG); not started\n")
            os._exit(71)

    return setup


def slurm_job_ending() -> bool:
    """Inside a SLURM job, whether the job itself is ending (cancelled, preempted, requeued, out of time) rather
    than still running: a signal that SLURM sent to all the job's processes, not one aimed at this process alone
    (``wandb agent`` stopping a run, say). False outside SLURM; True when the controller cannot be asked."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return False
    try:
        found = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return True
    return found.returncode != 0 or found.stdout.strip() not in ("RUNNING", "SUSPENDED")
