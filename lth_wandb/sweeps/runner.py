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

Nothing is lost or counted twice when ``lth-sweep`` dies: on Linux its runs die with it (``PR_SET_PDEATHSIG``; W&B's
service follows its run), and the next start runs every cut-off run again under the same run id, in the same
directory, with the same parameters. The cut-off attempt's files move to ``attempt-<n>/`` in that directory, so
the run directory holds exactly one run file for the id, and ``lth-report`` counts the run once.
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
from lth_wandb.sweeps.leaderboard import SweepRecord
from lth_wandb.tracking.runfiles import find_runs, read_history, read_run

POLL_SECONDS = 0.5  # how often finished processes are collected
MAX_CONSECUTIVE_FAILURES = 3  # a broken command fails every run: stop instead of burning the whole count


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
        launcher: where runs execute (``lth_wandb.sweeps.launchers``): child processes here (default), or SLURM jobs
            through submitit; the controller stays here either way.
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
    ):
        check_budget(record.config, count, workers)
        self.launcher = launcher or LocalLauncher()
        self.record, self.count, self.workers = record, count, workers
        self.sweep_id_env, self.kill_delay, self.check_every = sweep_id_env, kill_delay, check_every
        self.metric = record.config.get("metric", {}).get("name")
        self.active: dict[str, _Active] = {}
        self.exhausted = False
        self.failures = 0

    def run(self) -> int:
        """Run the sweep; returns the exit code for ``lth-sweep`` (0; 1 after repeated failures; 130 when
        interrupted, with the cut-off runs left to redo on the next start)."""
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
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
            while len(self.active) < self.workers and self._may_start():
                cut_off = self._next_cut_off()
                if cut_off is not None:  # before new parameters: the engine already counts these as proposed
                    self._restart(cut_off)
                    continue
                params = agent.next_params(self.record.config, self._engine_runs())
                if params is None:
                    self.exhausted = True
                    break
                self._start(params)
            if not self.active and not self._may_start():
                return
            time.sleep(POLL_SECONDS)

    def _may_start(self) -> bool:
        if self.failures >= MAX_CONSECUTIVE_FAILURES:
            return False
        if self.exhausted and self._next_cut_off() is None:
            return False
        return self.count is None or len(self.record.counted()) + len(self.active) < self.count

    def _next_cut_off(self) -> dict[str, Any] | None:
        """The first run cut off when an earlier ``lth-sweep`` stopped, not yet started again."""
        return next((r for r in self.record.runs if r["state"] == "interrupted"), None)

    def _engine_runs(self):
        ended = [self.record.sweep_run(r) for r in self.record.counted()]
        running = [
            agent.to_sweep_run(run_id, a.record["params"], "running", self.metric, a.history)
            for run_id, a in self.active.items()
        ]
        return ended + running

    def _start(self, params: dict[str, Any]) -> None:
        run_id = agent.new_id()
        directory = self.record.directory / "runs" / run_id
        directory.mkdir(parents=True)
        record = {"run_id": run_id, "params": params, "state": "running"}
        record["directory"] = str(directory.relative_to(self.record.directory))
        self.record.add(record)
        self._launch(record, directory)
        say(f"run {run_id} started: " + " ".join(f"{k}={v}" for k, v in params.items()))

    def _restart(self, record: dict[str, Any]) -> None:
        """Run a cut-off run again from the start: same id, directory and parameters, so it stays one run."""
        directory = self.record.directory / record["directory"]
        directory.mkdir(parents=True, exist_ok=True)
        attempt = _set_aside(directory)
        for key in _RESULT_KEYS:  # what the cut-off attempt left describes no finished run
            record.pop(key, None)
        record["state"], record["attempt"] = "running", attempt + 1
        self.record.save()
        self._launch(record, directory)
        say(f"run {record['run_id']} started again (attempt {attempt + 1}; the cut-off one is in attempt-{attempt}/)")

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
        process = self.launcher.start(command, directory, env)
        record["command"] = command
        self.record.save()
        self.active[run_id] = _Active(record, process, directory, time.monotonic())

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
        record["seconds"] = round(time.monotonic() - active.started, 1)
        wandb_code = self._read_back(record, active.directory)
        # Lightning ends a SIGTERMed fit with SystemExit (exit code 0); the W&B run, finished with exit code 1,
        # tells a stopped run from one that completed just before the signal.
        completed = code == 0 and wandb_code in (0, None)
        if active.stop_reason is not None and not completed:
            record["state"], record["stop_reason"] = "stopped", active.stop_reason
        else:
            record["state"] = "finished" if completed else "failed"
        late = active.stop_reason is not None and completed  # it ended before the stop reached it
        if late:
            record["stop_requested"] = active.stop_reason
        record["metric_value"] = self.record.metric_value(record)
        self.record.save()
        self.failures = self.failures + 1 if record["state"] == "failed" else 0
        value = record.get("metric_value")
        shown = f" {self.metric}={value:.4g}" if isinstance(value, (int, float)) else ""
        after = " (it completed before the stop reached it)" if late else ""
        say(f"run {record['run_id']} {record['state']}{shown} in {record['seconds']:.0f} s{after}")
        if record["state"] == "failed":
            say(f"  exit code {code}; its output: {active.directory / 'output.log'}{_last_line(active.directory)}")
            if self.failures >= MAX_CONSECUTIVE_FAILURES:
                say(f"{self.failures} runs in a row failed: no new runs are started. Fix the command and rerun.")

    def _read_back(self, record: dict[str, Any], directory: Path) -> int | None:
        """Copy the run's metric history and scalar summary from its W&B run file; returns the exit code W&B
        recorded (None when there is no run file, e.g. the command failed before wandb.init)."""
        path = _run_path(directory, record["run_id"])
        if path is None:
            return None
        try:
            run = read_run(path)
        except (RuntimeError, ValueError) as error:  # e.g. a run file cut short by SIGKILL
            record["read_error"] = str(error)[-500:]
            return None
        record["wandb_run"] = str(path.relative_to(self.record.directory))
        record["history"] = _metric_values(run.history, self.metric)
        record["summary"] = {k: v for k, v in run.summary.items() if _is_scalar(v) and not k.startswith("_")}
        return run.exit_code

    def _early_terminate(self) -> None:
        for run_id, active in self.active.items():
            path = _run_path(active.directory, run_id)
            if path is not None and active.stop_reason is None:
                try:
                    active.history = _metric_values(read_history(path), self.metric)
                except (RuntimeError, ValueError, FileNotFoundError):
                    pass  # the file is being created; next check
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
                code = active.process.wait()
            active.record["state"], active.record["exit_code"] = "interrupted", code
        self.active.clear()
        self.record.save()


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


def _run_path(directory: Path, run_id: str) -> Path | None:
    found = [p for p in find_runs(directory / "wandb") if p.name.endswith(f"-{run_id}")]
    return found[-1] if found else None


def _metric_values(history: list[dict[str, Any]], metric: str | None) -> list[float]:
    if metric is None:
        return []
    return [row[metric] for row in history if _is_number(row.get(metric))]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool)) or value is None


# What a run's record holds about its last attempt; a restart clears it.
_RESULT_KEYS = ("exit_code", "seconds", "history", "summary", "metric_value", "wandb_run", "read_error", "stop_reason")


def _set_aside(directory: Path) -> int:
    """Move what an earlier attempt left in a run directory into ``attempt-<n>/``; returns n.

    Readers that look for the run's file in ``<directory>/wandb`` (lth-sweep) find only the new attempt's.
    ``lth-report``, which searches whole trees, counts one run per id.
    """
    attempt = 1 + sum(1 for p in directory.glob("attempt-*") if p.is_dir())
    aside = directory / f"attempt-{attempt}"
    aside.mkdir()
    for entry in directory.iterdir():
        if entry != aside and not entry.name.startswith("attempt-"):
            entry.rename(aside / entry.name)
    return attempt


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _last_line(directory: Path) -> str:
    try:
        lines = [ln for ln in (directory / "output.log").read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return f"\n  {lines[-1][-300:]}" if lines else ""


def say(message: str) -> None:
    print(f"lth-sweep: {message}", flush=True)
