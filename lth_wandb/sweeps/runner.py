"""The ``lth-sweep`` runner: a W&B sweep run on this machine, offline, with W&B's own sweep engine.

``wandb agent`` needs a W&B server to hand out parameters. Here the open-source engine (``sweeps``) does it:
``next_run`` proposes parameters (grid, random, or bayes fitted to every finished run's metric) and, for
``early_terminate: hyperband``, ``stop_runs`` picks running runs to stop from the metric history each one has
written to its offline run file so far. Stopped runs get SIGTERM (Lightning stops cleanly), then SIGKILL.

Each run is the command ``wandb agent`` would run, with the agent's environment (see ``agent.py``), started in
its own directory ``<dir>/runs/<run id>/``, and is an ordinary offline W&B run in the run group
``sweep-<sweep id>``. ``<dir>/sweep.json`` records every run as it ends, so a restarted ``lth-sweep`` skips
finished runs and counts them towards ``--count``. The leaderboard goes to the terminal, ``sweep.csv`` and
``sweep.json``.

Nothing is lost, trained twice or counted twice when ``lth-sweep`` dies or a run is cut off:

- With the local launcher its runs die with it (``PR_SET_PDEATHSIG``; W&B's service follows its run); SLURM jobs
  live on, and ``sweep.json`` holds their job ids, so the next ``lth-sweep`` adopts the jobs still queued or
  running instead of starting them again.
- A run cut off (lth-sweep killed, the job cancelled, preempted or failed) starts again under the same run id in
  the same directory, and lth-train continues it from its last checkpoint into the same W&B run (it finds the run
  folder by ``WANDB_RUN_ID``), so each round row and ticket version is logged once. A failed run is retried up to
  ``retries`` times; a requeued SLURM job (same job id) is simply watched on.
- A controller that does not answer (slurmctld restarting) delays submissions and checks, with one line, and
  the sweep goes on when it is back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lth_wandb.sweeps import agent
from lth_wandb.sweeps.launchers import LocalLauncher
from lth_wandb.sweeps.leaderboard import ENDED, SweepRecord
from lth_wandb.sweeps.results import last_line, metric_history, read_back
from lth_wandb.sweeps.slurm import SlurmLauncher, Unavailable

POLL_SECONDS = 0.5  # how often finished processes are collected
MAX_CONSECUTIVE_FAILURES = 3  # a broken command fails every run: stop instead of burning the whole count
USER_ERROR = 2  # lth-train's exit code for a mistake in the command or config: another attempt fails the same way
SUBMIT_BACKOFF = (5.0, 300.0)  # seconds before the first retry of a refused submission, and the longest wait


@dataclass
class _Active:
    """A run whose process is alive."""

    record: dict[str, Any]
    process: Any  # the launcher's handle: poll(), stop(), kill(), wait(timeout)
    directory: Path
    started: float
    stop_reason: str | None = None
    signalled_at: float | None = None
    history: list[float] = field(default_factory=list)


@dataclass
class _Waiting:
    """A run to submit, kept while the scheduler's controller does not answer."""

    record: dict[str, Any]
    directory: Path
    command: list[str]
    env: dict[str, str]
    retry_at: float = 0.0
    delay: float = 0.0


class SweepRunner:
    """Runs one sweep in a directory until its grid is exhausted or ``count`` runs have ended.

    Args:
        record: the sweep's state (:meth:`SweepRecord.open` loads or creates it).
        count: the most runs the sweep directory will hold (finished, failed and stopped ones count; runs cut off
            when ``lth-sweep`` itself was stopped do not). None: until the grid is exhausted.
        workers: runs at the same time.
        sweep_id_env: set ``WANDB_SWEEP_ID`` as the agent does. False (the default) leaves it out: ``wandb sync``
            sends a run's sweep id to the server, and a server that never saw this local sweep refuses the run
            ("sweep <id> not found", wandb#8115; tests/test_online.py). The runs stay grouped as ``sweep-<id>``.
        kill_delay: seconds between SIGTERM and SIGKILL for a stopped run.
        check_every: seconds between early-termination checks. Each reads every running run's file (one call of
            the SDK's reader, ~0.7 s of CPU), and runs write their files this often instead of W&B's 15 s.
        launcher: where runs execute: child processes here (``LocalLauncher``, the default) or SLURM jobs
            (``lth_wandb.sweeps.slurm.SlurmLauncher``); the controller stays here either way.
        retries: how many times a run that failed or was cancelled is started again (it resumes from its
            checkpoint). A run that failed with lth-train's exit code 2 (a mistake in its command) is not.
    """

    def __init__(
        self,
        record: SweepRecord,
        count: int | None = None,
        workers: int = 1,
        sweep_id_env: bool = False,
        kill_delay: float = 30.0,
        check_every: float = 5.0,
        launcher: Any = None,
        retries: int = 1,
    ):
        check_budget(record.config, count, workers)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries={retries!r} must be a whole number >= 0 (0: a failed run is not started again)")
        self.launcher = launcher or LocalLauncher()
        self.record, self.count, self.workers, self.retries = record, count, workers, retries
        self.sweep_id_env, self.kill_delay, self.check_every = sweep_id_env, kill_delay, check_every
        self.metric = record.config.get("metric", {}).get("name")
        self.active: dict[str, _Active] = {}
        self.waiting: dict[str, _Waiting] = {}
        self.exhausted = False
        self.failures = 0

    def run(self) -> int:
        """Run the sweep; returns the exit code for ``lth-sweep`` (0; 1 after repeated failures; 130 when
        interrupted, with the cut-off runs left to redo on the next start)."""
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            self._adopt()
            self._loop()
        except KeyboardInterrupt:
            self._interrupt()
            return 130
        finally:
            signal.signal(signal.SIGTERM, previous)
        return 1 if self.failures >= MAX_CONSECUTIVE_FAILURES else 0

    def _loop(self) -> None:
        next_check = time.monotonic() + self.check_every
        while True:
            self._collect()
            if self.record.config.get("early_terminate") and time.monotonic() >= next_check:
                self._early_terminate()
                next_check = time.monotonic() + self.check_every
            self._escalate()
            self._submit_waiting()
            while self._busy() < self.workers and self._may_start():
                cut_off = self._next_cut_off()
                if cut_off is not None:  # before new parameters: the engine already counts these as proposed
                    self._restart(cut_off)
                    continue
                params = agent.next_params(self.record.config, self._engine_runs())
                if params is None:
                    self.exhausted = True
                    break
                self._start(params)
            if not self._busy() and not self._may_start():
                return
            time.sleep(POLL_SECONDS)

    def _busy(self) -> int:
        return len(self.active) + len(self.waiting)

    def _adopt(self) -> None:
        """Watch again the SLURM jobs an earlier lth-sweep submitted and that were still running when it stopped
        (sweep.json keeps their ids): adopting, not resubmitting, is what keeps a run from training twice."""
        for record in self.record.runs:
            if record["state"] != "running" or "job_id" not in record:
                continue
            if not hasattr(self.launcher, "adopt"):
                raise ValueError(
                    f"run {record['run_id']} is SLURM job {record['job_id']}, which this sweep's earlier lth-sweep "
                    "started. Hint: restart it with --launcher slurm, so that the job is watched, not run twice"
                )
            directory = self.record.directory / record["directory"]
            process = self.launcher.adopt(record["job_id"], directory)
            self.active[record["run_id"]] = _Active(record, process, directory, time.monotonic())
            say(f"run {record['run_id']}: watching SLURM job {record['job_id']} again")

    def _may_start(self) -> bool:
        if self.failures >= MAX_CONSECUTIVE_FAILURES:
            return False
        if self._next_cut_off() is not None:
            return True  # proposed before and not ended: already within the count
        return not self.exhausted and (self.count is None or len(self.record.counted()) + self._busy() < self.count)

    def _next_cut_off(self) -> dict[str, Any] | None:
        """The first run cut off (when an earlier ``lth-sweep`` stopped, or by its job's end) to start again."""
        return next((r for r in self.record.runs if r["state"] in ("interrupted", "retrying")), None)

    def _engine_runs(self):
        """Every run proposed so far, as the engine sees it: ended ones with their results, the others (running,
        waiting for the scheduler, or to be started again) as running, so their parameters are not proposed again."""
        ended = [self.record.sweep_run(r) for r in self.record.counted()]
        histories = {run_id: a.history for run_id, a in self.active.items()}
        running = [
            agent.to_sweep_run(r["run_id"], r["params"], "running", self.metric, histories.get(r["run_id"], []))
            for r in self.record.runs
            if r["state"] not in ENDED
        ]
        return ended + running

    def _start(self, params: dict[str, Any]) -> None:
        run_id = agent.new_id()
        directory = self.record.directory / "runs" / run_id
        directory.mkdir(parents=True)
        record = {"run_id": run_id, "params": params, "state": "running", "attempt": 1}
        record["directory"] = str(directory.relative_to(self.record.directory))
        self.record.add(record)
        self._launch(record, directory)
        say(f"run {run_id} started: " + " ".join(f"{k}={v}" for k, v in params.items()))

    def _restart(self, record: dict[str, Any]) -> None:
        """Start a cut-off run again: same id, directory and parameters; lth-train continues it from its checkpoint
        into the same W&B run."""
        directory = self.record.directory / record["directory"]
        directory.mkdir(parents=True, exist_ok=True)
        for key in _RESULT_KEYS:  # what the cut-off attempt left describes no finished run
            record.pop(key, None)
        record["state"], record["attempt"] = "running", record.get("attempt", 1) + 1
        self._launch(record, directory)
        say(f"run {record['run_id']} started again (attempt {record['attempt']}; it continues from its checkpoint)")

    def _launch(self, record: dict[str, Any], directory: Path) -> None:
        run_id, params, sweep_id = record["run_id"], record["params"], self.record.sweep_id
        path = agent.write_params(agent.param_path(directory, sweep_id, run_id), params)
        command = agent.command_line(self.record.config, params, args_json_file=directory / "args.json")
        env = agent.run_env(
            os.environ,
            run_id=run_id,
            param_path=path.resolve(),
            wandb_dir=directory.resolve(),
            sweep_id=sweep_id if self.sweep_id_env else None,
            project=self.record.config.get("project") or os.environ.get("WANDB_PROJECT") or agent.DEFAULT_PROJECT,
            entity=self.record.config.get("entity"),
            group=f"sweep-{sweep_id}",
        )
        if self.record.config.get("early_terminate"):
            # W&B writes a running run's file every 15 s by default: too stale for stopping decisions.
            env.setdefault("WANDB_X_TRANSACTION_LOG_FLUSH_INTERVAL", str(self.check_every))
        record["command"] = command
        self.record.save()
        self._submit(_Waiting(record, directory, command, env))

    def _submit(self, waiting: _Waiting) -> None:
        """Start the run, or keep it waiting (with back-off) while the scheduler's controller does not answer."""
        record, run_id = waiting.record, waiting.record["run_id"]
        try:
            if isinstance(self.launcher, SlurmLauncher):
                gpus = gpus_asked(record["params"])
                process = self.launcher.start(waiting.command, waiting.directory, waiting.env, gpus=gpus)
            else:
                process = self.launcher.start(waiting.command, waiting.directory, waiting.env)
        except Unavailable:
            waiting.delay = SUBMIT_BACKOFF[0] if waiting.delay == 0 else min(waiting.delay * 2, SUBMIT_BACKOFF[1])
            waiting.retry_at = time.monotonic() + waiting.delay
            self.waiting[run_id] = waiting
            return
        except ValueError as error:  # the scheduler refused this job: the run fails, with SLURM's reason
            self.waiting.pop(run_id, None)
            record["state"], record["error"] = "failed", str(error)
            self.record.save()
            self.failures += 1
            say(f"run {run_id} failed: {error}")
            return
        if self.waiting.pop(run_id, None) is not None:
            say(f"run {run_id} submitted (SLURM job {process.job_id})")
        job_id = getattr(process, "job_id", None)
        if job_id is not None:
            record["job_id"] = job_id
            record.setdefault("jobs", []).append(job_id)
        self.record.save()  # with the job id: a restarted lth-sweep adopts the job instead of running it twice
        self.active[run_id] = _Active(record, process, waiting.directory, time.monotonic())

    def _submit_waiting(self) -> None:
        for waiting in list(self.waiting.values()):
            if time.monotonic() >= waiting.retry_at:
                self._submit(waiting)

    def _collect(self) -> None:
        for run_id, active in list(self.active.items()):
            code = active.process.poll()
            if code is None:
                continue
            del self.active[run_id]
            self._finish(active, code)

    def _finish(self, active: _Active, code: int) -> None:
        record = active.record
        record["exit_code"] = code
        record["seconds"] = round(record.get("seconds", 0) + time.monotonic() - active.started, 1)
        ending = dict(getattr(active.process, "ending", {}))  # SLURM's word on how the job ended
        wandb_code = read_back(record, active.directory, self.record.directory, self.metric)
        # W&B's exit code tells a run stopped by a signal (Lightning's SIGTERM stop) from one that completed.
        completed = code == 0 and wandb_code in (0, None)
        attempt = {"attempt": record.get("attempt", 1), "exit_code": code}
        attempt.update({k: record[k] for k in ("job_id",) if k in record})
        attempt.update({k: ending[k] for k in ("slurm_state", "signals", "restarts") if k in ending})
        record.setdefault("attempts", []).append(attempt)
        if active.stop_reason is not None and not completed:
            record["state"], record["stop_reason"] = "stopped", active.stop_reason
        elif completed:
            record["state"] = "finished"
        elif code != USER_ERROR and record.get("retries", 0) < self.retries:
            # Started again by the loop, from its checkpoint. Counted apart from attempts: a restart after
            # lth-sweep itself stopped is not a retry.
            record["state"], record["retries"] = "retrying", record.get("retries", 0) + 1
        else:
            record["state"] = "failed"
        late = active.stop_reason is not None and completed  # it ended before the stop reached it
        if late:
            record["stop_requested"] = active.stop_reason
        record["metric_value"] = self.record.metric_value(record)
        self.record.save()
        self.failures = self.failures + 1 if record["state"] == "failed" else 0
        value = record.get("metric_value")
        shown = f" {self.metric}={value:.4g}" if isinstance(value, (int, float)) else ""
        after = " (it completed before the stop reached it)" if late else ""
        slurm_state = ending.get("slurm_state")
        how = f" (SLURM: {slurm_state})" if slurm_state not in (None, "GONE", "COMPLETED") else ""
        if record["state"] == "retrying":
            say(f"run {record['run_id']} ended with exit code {code}{how}; starting it again "
                f"(attempt {record['attempt'] + 1}, retry {record['retries']} of {self.retries})")  # fmt: skip
            return
        say(f"run {record['run_id']} {record['state']}{shown}{how} in {record['seconds']:.0f} s{after}")
        if record["state"] == "failed":
            say(f"  exit code {code}; its output: {active.directory / 'output.log'}{last_line(active.directory)}")
            if self.failures >= MAX_CONSECUTIVE_FAILURES:
                say(f"{self.failures} runs in a row failed: no new runs are started. Fix the command and rerun.")

    def _early_terminate(self) -> None:
        for run_id, active in self.active.items():
            if active.stop_reason is None:
                active.history = metric_history(active.directory, run_id, self.metric) or active.history
        for run_id, reason in agent.runs_to_stop(self.record.config, self._engine_runs()).items():
            active = self.active.get(run_id)
            if active is not None and active.stop_reason is None:
                active.stop_reason = reason or "early_terminate"
                active.signalled_at = time.monotonic()
                say(f"run {run_id}: {self.record.config['early_terminate']['type']} stops it ({reason})")
                active.process.stop()

    def _escalate(self) -> None:
        for active in self.active.values():
            if active.signalled_at is not None and time.monotonic() - active.signalled_at > self.kill_delay:
                active.process.kill()

    def _interrupt(self) -> None:
        say("interrupted: stopping the running runs (they run again on the next start)")
        for active in self.active.values():
            active.process.stop()
        deadline = time.monotonic() + self.kill_delay
        for active in self.active.values():
            try:
                code = active.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                active.process.kill()
                try:
                    code = active.process.wait(timeout=self.kill_delay + 60)
                except subprocess.TimeoutExpired:  # a job SLURM has not confirmed gone: the next start adopts it
                    say(f"run {active.record['run_id']}: its job may still run; the next lth-sweep watches it")
                    continue
            active.record["state"], active.record["exit_code"] = "interrupted", code
        for waiting in self.waiting.values():
            waiting.record["state"] = "interrupted"
        self.active.clear()
        self.waiting.clear()
        self.record.save()


def gpus_asked(params: dict[str, Any]) -> int:
    """GPUs an lth-train run asks for (``trainer=gpu``, or ``trainer.accelerator=gpu|cuda``): its
    ``trainer.devices`` when a number, else 1; 0 for a CPU run, the default, so jobs fit a CPU partition."""
    accelerator = str(params.get("trainer.accelerator", "gpu" if params.get("trainer") == "gpu" else ""))
    if accelerator not in ("gpu", "cuda"):
        return 0
    devices = params.get("trainer.devices", 1)
    return devices if isinstance(devices, int) and not isinstance(devices, bool) and devices > 0 else 1


def check_budget(config: dict[str, Any], count: int | None, workers: int = 1) -> None:
    """Refuse a count or worker number below 1, and an endless method without a count."""
    for name, value in (("count", count), ("workers", workers)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name}={value!r} must be a whole number >= 1")
    if count is None and config["method"] != "grid":
        raise ValueError(
            f"method={config['method']!r} proposes runs without end; give a count (--count N). "
            "Only a grid sweep stops by itself."
        )


# What a run's record holds about its last attempt; a restart clears it (its job ids stay in "jobs": an old id left
# in "job_id" would be adopted as the new attempt's job by an lth-sweep restarted before the new job is submitted).
_RESULT_KEYS = ("exit_code", "history", "summary", "metric_value", "wandb_run", "read_error", "stop_reason", "job_id")


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def say(message: str) -> None:
    print(f"lth-sweep: {message}", flush=True)
