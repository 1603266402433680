"""``lth-sweep --launcher slurm``: each run a SLURM batch job, through ``sbatch``, ``squeue`` and ``scancel``.

Why not submitit (which Hydra's ``hydra/launcher=slurm`` uses): lth-sweep runs command lines, not pickled functions,
and it must know every job's state without SLURM's accounting database (squeue, plus the ``job-exit.json`` that
``lth_wandb.sweeps.job`` leaves), adopt its jobs by id after a restart, tell a job that can never start from one
that waits for resources, and carry on through a controller restart. That takes the three commands and no more.

A job's batch script is ``<run directory>/job.sh``: readable, and ``sbatch job.sh`` reruns the run by hand.
"""

from __future__ import annotations

import getpass
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lth_wandb import atomic
from lth_wandb.sweeps.job import EXIT_FILE

SCRIPT = "job.sh"
# submitit's names for --slurm options (what lth-sweep took before): the sbatch option each stands for.
ALIASES = {"slurm_partition": "partition", "timeout_min": "time", "gpus_per_node": "gpus-per-node",
           "cpus_per_task": "cpus-per-task", "mem_gb": "mem", "slurm_account": "account",
           "slurm_qos": "qos"}  # fmt: skip
# Seconds before a time limit at which SLURM sends the job SIGUSR2: the run stops and the job is requeued.
TIME_LIMIT_GRACE = 120
# A job in these states may still run. Not PREEMPTED: a job requeued after preemption is PENDING again, and with
# PreemptMode=CANCEL PREEMPTED is its end.
ALIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
         "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED"}  # fmt: skip
# Why a pending job may wait for ever: its request exceeds what the partition or its limits allow. Not
# PartitionNodeLimit, which SLURM also gives while the nodes a job needs are down or drained (they come back).
NEVER_STARTS = ("PartitionConfig", "BadConstraints", "PartitionTimeLimit", "InvalidAccount", "InvalidQOS",
                "PerJob")  # fmt: skip
# What sbatch, squeue and scancel print while the controller is down or restarting: worth another try.
TRANSIENT = ("Unable to contact slurm controller", "Socket timed out", "temporarily unavailable", "Connection refused",
             "Zero Bytes were transmitted", "Slurm temporarily unable", "Transport endpoint", "not responding",
             "Communication connection failure")  # fmt: skip


# A job that can never start ends like a mistake in the command (lth-train's exit code 2): starting it again would
# only wait again.
NEVER_STARTS_EXIT = 2


def job_name(directory: Path) -> str:
    """The SLURM job name of a run: its directory is named after its run id, unique in the sweep."""
    return f"lth-{directory.name}"


class Unavailable(RuntimeError):
    """SLURM's controller did not answer; the same request may work later."""


def sbatch_options(options: Mapping[str, Any] | None) -> dict[str, str]:
    """``--slurm KEY=VALUE`` options as sbatch long options: ``partition=cpu`` -> ``--partition=cpu``; submitit's
    names (``slurm_partition``, ``timeout_min``, ``mem_gb``...) are taken too."""
    found: dict[str, str] = {}
    for key, value in (options or {}).items():
        name = ALIASES.get(key, key).replace("_", "-")
        if key == "mem_gb":
            value = f"{value}G"
        if not name.replace("-", "").isalnum():
            raise ValueError(f"--slurm {key}={value}: {key!r} is not an sbatch option. Hint: --slurm partition=gpu")
        found[name] = str(value)
    return found


@dataclass
class JobState:
    state: str  # squeue's state, "GONE" once it has left the queue
    reason: str = ""
    restarts: int = 0


class SlurmLauncher:
    """Submits, watches and stops lth-sweep's runs as SLURM jobs.

    Args:
        options: sbatch options for every job (``{"partition": "cpu", "cpus-per-task": 4}``; see
            :func:`sbatch_options`). No GPU unless a run asks for one (``start(gpus=...)``).
        poll_every: seconds between squeue calls (one call for all jobs).
        say: where one-line notices go (lth-sweep's terminal).
    """

    name = "slurm"

    def __init__(self, options: Mapping[str, Any] | None = None, poll_every: float = 5.0, say: Callable = print):
        self.options = sbatch_options(options)
        self.poll_every, self.say = poll_every, say
        self.states: dict[str, JobState] = {}  # of the jobs watched, once squeue has answered for them
        self._watched: set[str] = set()
        self._polled_at = -float("inf")
        self._down_since: float | None = None  # when the controller stopped answering

    def check(self, gpus: int = 0) -> None:
        """Ask SLURM, without submitting, whether a job with these options could ever start (``sbatch
        --test-only``); a request no node can meet (more CPUs than any node has, a GPU where none is configured,
        an unknown partition) fails here in one line, before any run."""
        script = "#!/bin/sh\ntrue\n"
        try:
            self._sbatch(["--test-only", *self._flags(gpus)], script)
        except Unavailable:
            self.say("cannot reach SLURM's controller to check the job options; going on, jobs will be retried")

    def start(self, command: list[str], directory: Path, env: Mapping[str, str], gpus: int = 0) -> SlurmJob:
        """Submit ``command`` as a job that runs in ``directory``. Raises :class:`Unavailable` when the controller
        does not answer, ValueError when SLURM refuses the job."""
        directory = directory.resolve()  # the job may start elsewhere: every path in its script is absolute
        queued = self._queued(job_name(directory))
        if queued is not None:
            # An earlier submission went through although its answer was lost (sbatch timed out, or lth-sweep
            # stopped before it saved the id): watch that job rather than train the run twice.
            self.say(f"SLURM job {queued} of {directory.name} is already queued; watching it")
            return self.adopt(queued, directory)
        script = directory / SCRIPT
        atomic.write_text(script, self._script(command, directory, env, gpus))
        job_id = self._sbatch(["--parsable"], script.read_text()).strip().split(";")[0]
        self.states[job_id] = JobState("PENDING")
        return self.adopt(job_id, directory)

    def adopt(self, job_id: str, directory: Path) -> SlurmJob:
        """The handle of a job an earlier lth-sweep submitted (its id is in sweep.json)."""
        self._watched.add(job_id)
        return SlurmJob(self, job_id, directory)

    def state(self, job_id: str) -> JobState | None:
        """The job's last known state (squeue at most every ``poll_every`` s); None while the controller has not
        answered since the job was adopted."""
        if time.monotonic() - self._polled_at >= self.poll_every:
            self._poll()
        return self.states.get(job_id)

    def cancel(self, job_id: str, signal: str | None = None) -> bool:
        """``scancel`` the job, or send ``signal`` to its batch step only; False when the controller is away."""
        args = ["scancel", *(["--batch", f"--signal={signal}"] if signal else []), job_id]
        try:
            self._call(args)
        except Unavailable:
            return False
        except ValueError:
            pass  # it has just ended
        return True

    def _poll(self) -> None:
        self._polled_at = time.monotonic()
        fields = "JobID:|,State:|,Reason:|,RestartCnt:|"
        try:
            out = self._call(["squeue", "-h", "-t", "all", "-u", getpass.getuser(), "-O", fields])
        except (Unavailable, ValueError):
            return  # notice given by _call; states stay as last seen
        seen: dict[str, JobState] = {}
        for line in out.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) >= 4 and parts[0]:
                seen[parts[0]] = JobState(parts[1], parts[2], int(parts[3]) if parts[3].isdigit() else 0)
        for job_id in self._watched:
            if job_id in seen:
                self.states[job_id] = seen[job_id]
            else:  # left the queue (MinJobAge after its end), or ended before lth-sweep came back to adopt it
                last = self.states.get(job_id)
                self.states[job_id] = JobState("GONE", restarts=last.restarts if last else 0)

    def _queued(self, name: str) -> str | None:
        """The id of a job of this name still queued or running, if any."""
        out = self._call(["squeue", "-h", "-u", getpass.getuser(), f"--name={name}", "-O", "JobID:|"])
        ids = [part.strip() for part in out.split("|") if part.strip()]
        return ids[-1] if ids else None

    def _flags(self, gpus: int) -> list[str]:
        options = dict(self.options)
        if gpus and not any(k in options for k in ("gpus-per-node", "gpus", "gres")):
            options["gpus-per-node"] = str(gpus)
        return [f"--{k}={v}" for k, v in options.items()]

    def _script(self, command: list[str], directory: Path, env: Mapping[str, str], gpus: int) -> str:
        here = os.environ
        flags = [f"--job-name={job_name(directory)}", f"--output={directory}/slurm-%j.out", "--open-mode=append",
                 "--requeue", f"--signal=B:USR2@{TIME_LIMIT_GRACE}", *self._flags(gpus)]  # fmt: skip
        lines = ["#!/bin/sh", *(f"#SBATCH {flag}" for flag in flags)]
        # The agent's variables on top of what the node sets (its own CUDA_VISIBLE_DEVICES, SLURM_*).
        changed = {k: v for k, v in env.items() if here.get(k) != v and k.isidentifier()}
        lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(changed.items())]
        lines += [f"unset {k}" for k in sorted(here) if k not in env and k.isidentifier()]
        wrapper = [sys.executable, "-m", "lth_wandb.sweeps.job", str(directory), *command]
        lines.append("exec " + " ".join(shlex.quote(part) for part in wrapper))
        return "\n".join(lines) + "\n"

    def _sbatch(self, args: list[str], script: str) -> str:
        return self._call(["sbatch", *args], stdin=script)

    def _call(self, args: list[str], stdin: str | None = None) -> str:
        """Run a SLURM command; its error in one line (ValueError), or Unavailable while the controller is away."""
        try:
            done = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            done = subprocess.CompletedProcess(args, 1, "", "Socket timed out (no answer in 60 s)")
        except FileNotFoundError as error:
            raise ValueError(f"{args[0]} is not on PATH: SLURM's commands are needed on this machine") from error
        message = " ".join(done.stderr.split())
        if done.returncode == 0:
            if self._down_since is not None:
                self.say(f"SLURM's controller answers again (after {time.monotonic() - self._down_since:.0f} s)")
                self._down_since = None
            return done.stdout
        if any(text.lower() in message.lower() for text in TRANSIENT):
            if self._down_since is None:
                self._down_since = time.monotonic()
                self.say(f"SLURM's controller does not answer ({args[0]}: {message}); retrying")
            raise Unavailable(message)
        raise ValueError(f"{args[0]}: {message or f'exit code {done.returncode}'}")


class SlurmJob:
    """One run's job, with the handle interface lth-sweep's runner uses: ``poll()``, ``stop()``, ``kill()``."""

    def __init__(self, launcher: SlurmLauncher, job_id: str, directory: Path):
        self.launcher, self.job_id, self.directory = launcher, job_id, directory
        self.ending: dict[str, Any] = {}  # what job-exit.json said, once the job is gone
        self._last_cancel = -float("inf")

    def poll(self) -> int | None:
        """None while the job is queued, running or requeued; else the run's exit code (1 when unknown)."""
        state = self.launcher.state(self.job_id)
        if state is None or state.state in ALIVE:
            if state is not None and state.state == "PENDING" and any(r in state.reason for r in NEVER_STARTS):
                self.launcher.cancel(self.job_id)
                self.ending = {"slurm_state": f"never starts ({state.reason})"}
                self.launcher.say(
                    f"job {self.job_id} can never start: SLURM says {state.reason} (a request larger than any node "
                    "or the partition allows); cancelled. Hint: lower --slurm cpus-per-task/mem/time or pick another "
                    "partition"
                )
                return NEVER_STARTS_EXIT
            return None
        self.ending = {"slurm_state": state.state, **_read_exit(self.directory / EXIT_FILE, self.job_id)}
        if self.restarts:
            self.ending["restarts"] = self.restarts  # preempted or out of time, and continued under the same job
        return int(self.ending.get("exit_code", 1))

    @property
    def restarts(self) -> int:
        state = self.launcher.states.get(self.job_id)
        return state.restarts if state else 0

    def stop(self) -> None:
        """Ask the run to stop (SIGUSR1 to the batch step: the wrapper passes SIGTERM on to the run alone, so W&B
        ends it cleanly); a job still pending is simply cancelled."""
        state = self.launcher.state(self.job_id)
        pending = state is not None and state.state == "PENDING"
        self._cancel(None if pending else "USR1")

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"SLURM job {self.job_id}", timeout)
            time.sleep(0.5)
        return code

    def kill(self) -> None:
        """Cancel the job (SLURM: SIGTERM to all its processes, SIGKILL after its KillWait)."""
        self._cancel(None)

    def _cancel(self, signal: str | None) -> None:
        if time.monotonic() - self._last_cancel > self.launcher.poll_every:  # not on every loop of the runner
            self._last_cancel = time.monotonic()
            self.launcher.cancel(self.job_id, signal)


def _read_exit(path: Path, job_id: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # killed before it could write (SIGKILL after KillWait, a node failure)
    return data if isinstance(data, dict) and str(data.get("job_id")) == job_id else {}
