"""What a sweep run's own files say about it: its W&B run files, one per attempt (a run started again continues its
W&B run in a new file), read with the SDK's reader; and the last line of its output, for a failure's one-line report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lth_wandb.tracking.runfiles import find_runs, read_history, read_run, started


def run_paths(directory: Path, run_id: str) -> list[Path]:
    """The run's W&B run folders in its directory, oldest first (one per attempt)."""
    return sorted((p for p in find_runs(directory / "wandb") if p.name.endswith(f"-{run_id}")), key=started)


def read_back(record: dict[str, Any], directory: Path, sweep_dir: Path, metric: str | None) -> int | None:
    """Copy the run's metric history and scalar summary from its W&B run files into ``record``, in attempt order;
    returns the exit code W&B recorded last (None when there is no run file, e.g. the command failed before
    ``wandb.init``)."""
    paths = run_paths(directory, record["run_id"])
    history: list[float] = []
    summary: dict[str, Any] = {}
    exit_code = None
    for path in paths:
        try:
            run = read_run(path)
        except (RuntimeError, ValueError, FileNotFoundError) as error:  # cut short, or never written, by a kill
            record["read_error"] = str(error)[-500:]
            continue
        record["wandb_run"] = str(path.relative_to(sweep_dir))
        history += metric_values(run.history, metric)
        summary.update({k: v for k, v in run.summary.items() if _is_scalar(v) and not k.startswith("_")})
        exit_code = run.exit_code
    if paths:
        record["history"], record["summary"] = history, summary
    return exit_code


def metric_history(directory: Path, run_id: str, metric: str | None) -> list[float] | None:
    """The metric's values a running run has written so far, over all its attempts; None while a file is being
    created (read again at the next check)."""
    try:
        return [v for path in run_paths(directory, run_id) for v in metric_values(read_history(path), metric)]
    except (RuntimeError, ValueError, FileNotFoundError):
        return None


def metric_values(history: list[dict[str, Any]], metric: str | None) -> list[float]:
    if metric is None:
        return []
    return [row[metric] for row in history if _is_number(row.get(metric))]


def last_line(directory: Path) -> str:
    """The last non-empty line of the run's ``output.log``, on a line of its own (empty when there is none)."""
    try:
        lines = [ln for ln in (directory / "output.log").read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return f"\n  {lines[-1][-300:]}" if lines else ""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool)) or value is None
