"""Where a study's runs come from: local run files (read with the SDK's own reader) or the W&B public API.

Local files may be one run, a ``wandb/`` folder, or any tree of them (a sweep or Hydra multirun directory).
Unreadable run directories are reported, not fatal: a crashed run may have left a folder without a run file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from os import PathLike
from pathlib import Path

from lth_wandb.report.data import RunRounds, Study, from_run_record
from lth_wandb.runfiles import RUN_GLOBS, OfflineRun, find_runs, read_run


def collect_offline(
    path: str | PathLike | Sequence[str | PathLike], group: str | None = None, workers: int | None = None
) -> Study:
    """Every run under ``path``: a run directory, a ``wandb/`` folder (or the folder holding it), or any tree
    of them, e.g. a sweep or Hydra multirun directory; or several such paths, compared in one study.

    Args:
        path: where to look; a list or tuple of paths puts their runs together.
        group: keep only runs of this W&B group.
        workers: run files read in parallel (each read starts the SDK's reader in a subprocess).

    Raises:
        FileNotFoundError: a path does not exist or holds no run directory.
    """
    roots = [Path(p) for p in path] if isinstance(path, (list, tuple)) else [Path(path)]
    found_in_roots: dict[Path, Path] = {}  # by resolved path: overlapping roots read each run once
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(f"{root} does not exist. Hint: pass the folder lth-train ran in, or its wandb/.")
        found = _run_dirs(root)
        if not found:
            raise FileNotFoundError(
                f"no W&B run directories ({' or '.join(RUN_GLOBS)}) under {root}. "
                "Hint: lth-train writes them to ./wandb/ (see wandb.dir); pass that folder or one above it."
            )
        for run_dir in found:
            found_in_roots.setdefault(run_dir.resolve(), run_dir)
    run_dirs = list(found_in_roots.values())
    # The reader is itself multi-threaded: more than one read per two cores only adds contention.
    with ThreadPoolExecutor(max_workers=workers or max(1, (os.cpu_count() or 2) // 2)) as pool:
        results = list(pool.map(_read_or_reason, run_dirs))
    runs, skipped = [], []
    for run_dir, result in zip(run_dirs, results, strict=True):
        if isinstance(result, str):
            skipped.append((str(run_dir), result))
        elif group is None or result.group == group:
            runs.append(result)
    return Study(runs=_merge_resumed(runs), skipped=skipped, sources=[str(root) for root in roots], group=group)


def collect_api(entity: str, project: str, group: str | None = None, sweep: str | None = None) -> Study:
    """The runs of ``entity/project`` (optionally one group or sweep) from the W&B public API. Needs a server
    and credentials; offline, use :func:`collect_offline` on the run files instead."""
    import wandb

    api = wandb.Api()
    path = f"{entity}/{project}"
    runs = api.sweep(f"{path}/{sweep}").runs if sweep else api.runs(path, filters={"group": group} if group else {})
    records = []
    for run in runs:
        artifacts = [
            {"name": a.name.split(":")[0], "type": a.type, "aliases": list(a.aliases), "metadata": a.metadata}
            for a in run.logged_artifacts()
        ]
        record = OfflineRun(
            run_id=run.id,
            path=Path(f"{path}/{run.id}"),
            config=dict(run.config),
            history=list(run.scan_history()),
            summary=dict(run.summary),
            state=run.state,
            exit_code=0 if run.state == "finished" else 1 if run.state in ("failed", "crashed") else None,
            artifacts=artifacts,
            project=project,
            name=run.name or "",
            tags=list(run.tags or []),
            group=run.group or "",
        )
        records.append(from_run_record(record))
    return Study(runs=records, sources=[path], group=group, sweep=sweep)


def _run_dirs(root: Path) -> list[Path]:
    if root.is_file() or any(root.glob("*.wandb")):
        return [root]  # one run: its .wandb file or its directory
    folders = {root, *(p.parent for pattern in RUN_GLOBS for p in root.rglob(pattern) if p.is_dir())}
    found = {p.resolve(): p for folder in folders for p in find_runs(folder)}
    # Names read [offline-]run-<YYYYmmdd_HHMMSS>-<id>: sort by start time across folders, as find_runs does within one.
    return sorted(found.values(), key=lambda p: (p.name.split("run-", 1)[-1][:15], p.stat().st_mtime))


def _read_or_reason(run_dir: Path) -> RunRounds | str:
    try:
        return from_run_record(read_run(run_dir))
    except FileNotFoundError:
        return "no .wandb run file (the run never started logging, or the file was removed)"
    except (RuntimeError, ValueError) as error:  # the reader failed: a truncated or foreign file
        return str(error).splitlines()[0][:300]


def _merge_resumed(runs: list[RunRounds]) -> list[RunRounds]:
    """A run resumed under the same id writes a second directory; its rows extend the first one's."""
    merged: dict[str, RunRounds] = {}
    for run in runs:
        first = merged.get(run.run_id)
        if first is None:
            merged[run.run_id] = run
            continue
        rounds = {r.round: r for r in [*first.rounds, *run.rounds]}
        run.rounds = [rounds[n] for n in sorted(rounds)]
        run.curve = sorted([*first.curve, *run.curve], key=lambda point: point[0])
        run.ticket = run.ticket or first.ticket
        merged[run.run_id] = run
    return list(merged.values())
