"""A sweep directory's record of its runs (``sweep.json``) and their ranking: the terminal table and ``sweep.csv``.

``sweep.json`` is rewritten whenever a run starts or ends, so it is both what ``lth-sweep`` resumes from and the
sweep's result. One ``lth-sweep`` at a time may use a directory (a lock file says so).
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import math
from os import PathLike
from pathlib import Path
from typing import Any

from lth_wandb import atomic
from lth_wandb.sweeps import agent

# Run states in sweep.json, besides these ended ones: "running" (a process or SLURM job), "interrupted" (cut off when
# lth-sweep itself was stopped) and "retrying" (its job failed or was cancelled); the last two start again under the
# same id and continue from their checkpoint (counted once they end).
ENDED = {"finished": "finished", "failed": "failed", "stopped": "killed"}  # -> the engine's RunState
_MIN_GOALS = ("minimize", "minimise", "min")


class SweepRecord:
    """The runs of one sweep in one directory, kept in ``<directory>/sweep.json``.

    Open it with :meth:`open` (a context manager that holds the directory's lock).

    Attributes:
        directory: the sweep directory.
        config: the sweep file's content.
        sweep_id: the local sweep id, kept across restarts.
        runs: one dict per started run, in start order: ``run_id``, ``params``, ``state``, ``exit_code``,
            ``history`` (the metric's logged values), ``summary`` (scalar W&B summary), ``metric_value``,
            ``attempt`` (2, 3... for a cut-off run started again under its id)...
    """

    FILE = "sweep.json"

    def __init__(self, directory: Path, config: dict[str, Any], sweep_id: str, source: str, runs: list[dict]):
        self.directory, self.config, self.sweep_id, self.source, self.runs = directory, config, sweep_id, source, runs
        self._lock: Any = None

    @classmethod
    def open(cls, directory: str | PathLike, config: dict[str, Any], source: str | PathLike = "") -> SweepRecord:
        """Load the record in ``directory``, or start one there for ``config``.

        Raises:
            ValueError: the directory is a file or cannot be made, holds a different sweep or a corrupt
                ``sweep.json``, or another ``lth-sweep`` is using it.
        """
        directory = _make_dir(Path(directory))
        config = json.loads(json.dumps(config))  # as it will read back from JSON
        lock = open(directory / ".lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            record = cls._load(directory, config, source)
        except BlockingIOError as error:
            lock.close()
            raise ValueError(
                f"another lth-sweep is running in {directory}. Hint: wait for it, or use another --dir"
            ) from error
        except BaseException:
            lock.close()
            raise
        record._lock = lock
        record.save()
        return record

    @classmethod
    def _load(cls, directory: Path, config: dict[str, Any], source: str | PathLike) -> SweepRecord:
        path = directory / cls.FILE
        if not path.exists():
            return cls(directory, config, agent.new_id(), str(source), [])
        saved = _read_saved(path)
        if saved["config"] != config:
            raise ValueError(
                f"{directory} holds sweep {saved['sweep_id']} of {saved.get('source') or 'another file'}, whose "
                f"config differs from {source or 'this one'}. Hint: pass another --dir, or delete {directory}"
            )
        for run in saved["runs"]:
            # lth-sweep died while it ran: a child process died with it; a SLURM job lives on, to be adopted.
            if run["state"] == "running" and "job_id" not in run:
                run["state"] = "interrupted"
        return cls(directory, config, saved["sweep_id"], saved.get("source", ""), saved["runs"])

    def __enter__(self) -> SweepRecord:
        return self

    def __exit__(self, *exc) -> None:
        self.save()
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    @property
    def metric(self) -> str | None:
        return self.config.get("metric", {}).get("name")

    @property
    def minimize(self) -> bool:
        return str(self.config.get("metric", {}).get("goal", "minimize")).lower() in _MIN_GOALS

    def add(self, run: dict[str, Any]) -> None:
        self.runs.append(run)
        self.save()

    def counted(self) -> list[dict[str, Any]]:
        """Runs that ended (finished, failed or stopped): they count towards ``--count`` and the engine sees them."""
        return [r for r in self.runs if r["state"] in ENDED]

    def sweep_run(self, run: dict[str, Any]):
        """An ended run as the ``sweeps`` engine sees it."""
        return agent.to_sweep_run(
            run["run_id"], run["params"], ENDED[run["state"]], self.metric, run.get("history", []), run.get("summary")
        )

    def metric_value(self, run: dict[str, Any]) -> float | None:
        """The run's best value of the sweep metric over its history and summary, as W&B's engine ranks runs."""
        if self.metric is None:
            return None
        try:
            value = self.sweep_run(run).metric_extremum(self.metric, "minimum" if self.minimize else "maximum")
        except (ValueError, KeyError):
            return None
        return float(value)

    def save(self) -> None:
        """Write ``sweep.json`` (atomically: a crash never leaves half a file to resume from)."""
        ranked = rank(self)
        body = {
            "sweep_id": self.sweep_id,
            "source": self.source,
            "metric": self.config.get("metric"),
            "config": self.config,
            "best": ranked[0]["run_id"] if ranked and ranked[0].get("metric_value") is not None else None,
            "leaderboard": [r["run_id"] for r in ranked],
            "runs": self.runs,
        }
        atomic.write_text(self.directory / self.FILE, json.dumps(body, indent=1, default=str))


def rank(record: SweepRecord) -> list[dict[str, Any]]:
    """Ended runs, best first by the sweep metric; runs without a value (failed early, no metric) last."""
    ended = record.counted()
    with_value = [r for r in ended if _finite(r.get("metric_value"))]
    with_value.sort(key=lambda r: r["metric_value"], reverse=not record.minimize)  # stable: ties keep start order
    return with_value + [r for r in ended if not _finite(r.get("metric_value"))]


def what_happened(run: dict[str, Any]) -> str:
    """How a run got to its state, when it took more than one attempt or never started: e.g. ``attempt 2; 1:
    CANCELLED, exit 143``; empty for a run that ran once."""
    if run.get("error"):
        return run["error"]
    attempts = run.get("attempts", [])
    requeued = sum(a.get("restarts", 0) for a in attempts)
    notes = [f"requeued by SLURM {requeued}x"] if requeued else []
    if len(attempts) > 1:
        earlier = [f"{a['attempt']}: {a.get('slurm_state') or 'ended'}, exit {a['exit_code']}" for a in attempts[:-1]]
        notes.insert(0, f"attempt {attempts[-1]['attempt']}; " + "; ".join(earlier))
    return "; ".join(notes)


def searched_params(record: SweepRecord) -> list[str]:
    """Parameters the sweep varies (fixed ``value:`` entries left out), in the sweep file's order."""
    return [name for name, spec in record.config.get("parameters", {}).items() if "value" not in spec]


def write_results(record: SweepRecord) -> Path:
    """Write ``sweep.json`` and ``sweep.csv`` (one row per ended run, best first); returns the CSV's path."""
    record.save()
    ranked = rank(record)
    params = list(record.config.get("parameters", {}))
    summary_keys = sorted(
        {k for r in ranked for k in r.get("summary", {}) if k.startswith("ticket/")} - {record.metric}
    )
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    header = ["rank", "run_id", "state", record.metric or "metric", *params, *summary_keys, "seconds", "notes"]
    writer.writerow(header)
    for i, run in enumerate(ranked, 1):
        summary = run.get("summary", {})
        writer.writerow(
            [i, run["run_id"], run["state"], run.get("metric_value"), *(run["params"].get(p) for p in params)]
            + [summary.get(k) for k in summary_keys]
            + [run.get("seconds"), what_happened(run)]
        )
    path = record.directory / "sweep.csv"
    atomic.write_text(path, text.getvalue())  # a kill mid-write leaves the previous table
    return path


def print_leaderboard(record: SweepRecord, ranked: list[dict[str, Any]] | None = None) -> None:
    """The ranked runs as a table on the terminal."""
    from rich.console import Console
    from rich.table import Table

    ranked = rank(record) if ranked is None else ranked
    arrow = "↓" if record.minimize else "↑"
    table = Table(title=f"Sweep {record.sweep_id}: {len(ranked)} runs, best first ({record.metric} {arrow})")
    params = searched_params(record)
    notes = [what_happened(run) for run in ranked]
    for name in ["#", "run", "state", f"{record.metric} {arrow}", *params, "s", *(["notes"] if any(notes) else [])]:
        table.add_column(name, justify="right" if name in ("#", "s") else "left")
    for i, (run, note) in enumerate(zip(ranked, notes, strict=True), 1):
        value = run.get("metric_value")
        shown = f"{value:.4g}" if _finite(value) else "-"
        cells = [str(i), run["run_id"], run["state"], shown, *(str(run["params"].get(p)) for p in params)]
        table.add_row(*cells, f"{run.get('seconds') or 0:.0f}", *([note] if any(notes) else []))
    Console().print(table)
    print(f"Results: {record.directory / 'sweep.csv'}, {record.directory / SweepRecord.FILE}")


def _make_dir(directory: Path) -> Path:
    if directory.exists() and not directory.is_dir():
        raise ValueError(
            f"sweep directory {directory} is a file, not a directory. Hint: pass --dir a new folder or a sweep's folder"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # e.g. a file where a parent folder should be, or no permission
        raise ValueError(
            f"cannot make the sweep directory {directory}: {error.strerror}. Hint: pass another --dir"
        ) from error
    return directory


def _read_saved(path: Path) -> dict[str, Any]:
    """``sweep.json`` as saved; a ValueError naming the file and the way out when it is damaged."""
    hint = f"Hint: fix it, or delete it and {path.parent / 'runs'} to start this sweep over"
    try:
        saved = json.loads(path.read_bytes())
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError: cut short or overwritten
        raise ValueError(f"{path} is corrupt or truncated ({error}). {hint}") from error
    runs = saved.get("runs") if isinstance(saved, dict) else None
    fields = ("run_id", "params", "state")
    if not (
        isinstance(saved, dict)
        and isinstance(saved.get("config"), dict)
        and isinstance(saved.get("sweep_id"), str)
        and isinstance(runs, list)
        and all(isinstance(run, dict) and all(k in run for k in fields) for run in runs)
    ):
        raise ValueError(f"{path} is not a sweep record (config, sweep_id and runs with {', '.join(fields)}). {hint}")
    return saved


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
