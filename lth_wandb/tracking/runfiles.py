"""Read W&B run files back from disk, through the SDK's own reader (``python -m wandb leet inspect``).

Used by the tests to check what a run really recorded, and by the offline report. Needs no server.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

RUN_GLOBS = ("offline-run-*", "run-*")  # offline runs, then online runs (their files are kept too)
_START = re.compile(r"(?:^|-)run-(\d{8}_\d{6})-")  # the start time in run-<YYYYmmdd_HHMMSS>-<id>


@dataclass
class OfflineRun:
    """What one run file holds.

    Attributes:
        run_id: the W&B run id.
        path: the ``.wandb`` transaction log.
        config: the run config, plain values (W&B's internal ``_wandb`` key removed).
        history: the logged rows in order. Media objects (images ...) come back as their W&B records
            (``{"_type": "image-file", "path": ...}``); other nested dicts come back flattened to dotted keys,
            as the SDK reader shows them.
        summary: the run summary, nested as logged.
        exit_code: the exit code given to ``finish``; None while running or after a crash.
        state: ``"finished"``, ``"failed"``, ``"running"``... as the SDK reader reports it.
        artifacts: the logged artifact records, raw.
        metrics: the ``define_metric`` records, raw (``name`` or ``glob_name``, ``step_metric``, ``options``).
        project: the W&B project.
        name: the run's display name ("" when W&B would pick one on upload).
        tags: the run tags.
        group: the run group ("" when none).
    """

    run_id: str
    path: Path
    config: dict[str, Any]
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    exit_code: int | None = None
    state: str | None = None
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    project: str = ""
    name: str = ""
    tags: list[str] = field(default_factory=list)
    group: str = ""


def find_runs(wandb_dir: str | PathLike) -> list[Path]:
    """Run directories under ``wandb_dir`` (a ``wandb/`` folder or the folder holding one), oldest first."""
    root = Path(wandb_dir)
    if (root / "wandb").is_dir():
        root = root / "wandb"
    runs = {p for pattern in RUN_GLOBS for p in root.glob(pattern) if p.is_dir() and _START.search(p.name)}
    return sorted(runs, key=started)


def started(path: str | PathLike) -> tuple[str, float]:
    """Sort key of a run directory or its ``.wandb`` file, oldest first: the start time in the directory's name
    (to the second), then the directory's modification time for runs started within the same second."""
    path = Path(path)
    run_dir = path.parent if path.suffix == ".wandb" else path
    found = _START.search(run_dir.name)
    return (found.group(1) if found else "", _mtime(run_dir))


def read_run(path: str | PathLike) -> OfflineRun:
    """Read a run directory (``.../wandb/offline-run-<time>-<id>``) or its ``.wandb`` file.

    Raises:
        FileNotFoundError: ``path`` is neither a ``.wandb`` file nor a directory holding exactly one.
        ValueError: the file is empty or holds no record: the run was killed before W&B first wrote to it.
        RuntimeError: the SDK's reader failed (its stderr is in the message).
    """
    file = _run_file(Path(path))
    hint = f"It is not a run. Hint: delete {file.parent} if its run is over"
    if file.stat().st_size == 0:
        raise ValueError(f"run file {file} is empty (0 bytes). {hint}")
    records = [json.loads(line) for line in _inspect(file).splitlines() if line.strip()]
    if not records:  # the SDK reads a bare header as a run without id, which would count as a run
        raise ValueError(f"run file {file} holds no record: W&B stopped before its first write. {hint}")
    state = json.loads(_inspect(file, "--summary"))
    by_type: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        kind = record.get("type", "")
        by_type.setdefault(kind, []).append(record.get(kind, {}))
    return OfflineRun(
        run_id=state.get("run_id", ""),
        path=file,
        config=_plain_config(state.get("config") or {}),
        history=[_nest_media(h.get("item", {})) for h in by_type.get("history", [])],
        summary=state.get("summary") or {},
        exit_code=state.get("exit_code"),
        state=state.get("state"),
        artifacts=by_type.get("artifact", []),
        metrics=by_type.get("metric", []),
        project=state.get("project", ""),
        name=state.get("name", ""),
        tags=list(state.get("tags") or []),
        group=next((r.get("run_group", "") for r in by_type.get("run", [])), ""),
    )


def read_history(path: str | PathLike) -> list[dict[str, Any]]:
    """The logged rows of a run (as in :attr:`OfflineRun.history`), also while the run is still writing them.

    One pass of the SDK's reader, without the summary pass :func:`read_run` adds: ``lth-sweep`` polls running
    runs with it for Hyperband.
    """
    records = (json.loads(line) for line in _inspect(_run_file(Path(path))).splitlines() if line.strip())
    return [_nest_media(r.get("history", {}).get("item", {})) for r in records if r.get("type") == "history"]


def _run_file(path: Path) -> Path:
    if path.is_file() and path.suffix == ".wandb":
        return path
    files = sorted(path.glob("*.wandb")) if path.is_dir() else []
    if len(files) == 1:
        return files[0]
    found = f"found {len(files)}: {[f.name for f in files]}" if files else "found none"
    raise FileNotFoundError(
        f"{path} is not a run's .wandb file or a run directory holding exactly one ({found}). "
        "Hint: pass a run directory such as wandb/offline-run-<time>-<id>; find_runs(<wandb dir>) lists them."
    )


def _inspect(file: Path, *flags: str) -> str:
    command = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", *flags, str(file)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(command)}` failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout


def _plain_config(config: dict[str, Any]) -> dict[str, Any]:
    # config.yaml and the public API wrap each value as {"value": v, "desc": ...}; the reader mostly does not.
    def unwrap(v: Any) -> Any:
        return v["value"] if isinstance(v, dict) and "value" in v and set(v) <= {"value", "desc"} else v

    return {k: unwrap(v) for k, v in config.items() if k != "_wandb"}


def _nest_media(item: dict[str, Any]) -> dict[str, Any]:
    """Regroup ``key._type``, ``key.path``... into ``{key: {"_type": ..., "path": ...}}``."""
    media = [k[: -len("._type")] for k in item if k.endswith("._type")]
    row = dict(item)
    for key in media:
        prefix = key + "."
        row[key] = {k[len(prefix) :]: row.pop(k) for k in list(row) if k.startswith(prefix)}
    return row


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
