"""What runs inside one of lth-sweep's SLURM jobs: ``python -m lth_wandb.sweeps.job <run directory> <command...>``.

It runs the sweep's command in the run directory (output appended to ``output.log``, so every attempt stays), turns
SLURM's signals into the right ending, and leaves ``job-exit.json`` for lth-sweep, which may watch from another
machine without SLURM's accounting database:

- SIGTERM (``scancel``, or SLURM ending the job for preemption or its time limit): passed on to the run, which
  stops at its next step and exits 143; its checkpoint of the last epoch end is what a retry resumes from.
- SIGUSR1 (what lth-sweep sends to stop a run: Hyperband, or Ctrl+C on lth-sweep): passed on as SIGTERM. Only
  the batch step's processes get it, and the run and W&B's service ignore it, so W&B ends the run cleanly.
- SIGUSR2 (``#SBATCH --signal=B:USR2@...`` before a time limit, or ``scancel --batch --signal=USR2``, submitit's
  preemption): the run is stopped as above and the job requeued (``scontrol requeue``); the requeued job runs this
  again under the same job id and lth-train continues the run from its checkpoint (it finds it by
  ``WANDB_RUN_ID``).

Standard library only (and ``lth_wandb.atomic``): it starts fast on a compute node.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lth_wandb import atomic

EXIT_FILE = "job-exit.json"
LOG_FILE = "output.log"
STOP, PREEMPT = signal.SIGUSR1, signal.SIGUSR2


def main(argv: list[str]) -> int:
    directory, command = Path(argv[0]), argv[1:]
    job_id = os.environ.get("SLURM_JOB_ID", "")
    (directory / EXIT_FILE).unlink(missing_ok=True)  # a requeued job's earlier ending is not this one's
    received: list[int] = []
    run: subprocess.Popen | None = None

    def handle(signum, frame) -> None:
        received.append(signum)
        if run is not None:  # else the run is told as soon as it has started
            with contextlib.suppress(ProcessLookupError):
                run.send_signal(signal.SIGTERM)

    for signum in (signal.SIGTERM, signal.SIGINT, STOP, PREEMPT):  # before the run starts: no signal is lost
        signal.signal(signum, handle)
    with open(directory / LOG_FILE, "ab") as log:
        restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
        log.write(f"=== lth-sweep: SLURM job {job_id} (restart {restarts}) on {os.uname().nodename}\n".encode())
        log.flush()
        run = subprocess.Popen(
            command, cwd=directory, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_ignore_job_signals
        )
    if received:  # a signal came while the run was being started
        run.send_signal(signal.SIGTERM)
    code = run.wait()
    code = 128 - code if code < 0 else code  # killed by signal n (Popen says -n): 128 + n, as a shell says
    preempted = PREEMPT in received
    requeued = preempted and _requeue(job_id)
    ending = {"job_id": job_id, "exit_code": code, "signals": [signal.Signals(s).name for s in received]}
    atomic.write_text(directory / EXIT_FILE, json.dumps({**ending, "requeued": requeued, "time": time.time()}))
    return code


def _ignore_job_signals() -> None:
    """In the run's process: lth-sweep's stop and preemption signals are this wrapper's to act on, and a run (or
    W&B's service, which inherits this) that died of them would lose its last rows."""
    for signum in (STOP, PREEMPT):
        signal.signal(signum, signal.SIG_IGN)


def _requeue(job_id: str) -> bool:
    try:
        done = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
