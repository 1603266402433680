"""Where a study's runs come from: local run files (read with the SDK's own reader) or the W&B public API.

Local files may be one run, a ``wandb/`` folder, or any tree of them (a sweep or Hydra multirun directory).
Unreadable run directories are reported, not fatal: a crashed run may have left a folder without a run file.
A run counts once however many files carry its id (an ``lth-sweep`` run started again keeps its cut-off attempt in
``attempt-<n>/``; a run resumed under its id writes a second directory).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from os import PathLike
from pathlib import Path

from lth_wandb.report.data import RunRounds, Study, from_run_record
from lth_wandb.tracking.runfiles import RUN_GLOBS, OfflineRun, find_runs, read_run, started

RUN_RECORD = "run.json"  # what lth-train keeps in each output folder (lth_wandb/app/resume.py)


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
        ValueError: not one of the run directories could be read (e.g. every run file is empty).
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
    runs = [r for r in results if not isinstance(r, str)]
    skipped = [(str(d), r) for d, r in zip(run_dirs, results, strict=True) if isinstance(r, str)]
    if not runs:
        first, reason = skipped[0]
        raise ValueError(f"none of the {len(skipped)} run directories could be read, e.g. {first}: {reason}")
    # An unreadable attempt of a run that another file shows is superseded, not missing.
    read_ids = {r.run_id for r in runs}
    skipped = [(d, why) for d, why in skipped if Path(d).stem.rsplit("-", 1)[-1] not in read_ids]
    runs = [r for r in one_per_run_id(runs) if group is None or r.group == group]
    attach_output_dirs(runs, roots)
    return Study(runs=runs, skipped=skipped, sources=[str(root) for root in roots], group=group)


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
    found.update({p.resolve(): p for p in _linked_run_dirs(root)})
    return sorted(found.values(), key=started)  # across folders, as find_runs does within one


def _linked_run_dirs(root: Path) -> list[Path]:
    """The W&B run directories of the lth-train runs whose output folders lie under ``root`` (``outputs/...`` or a
    Hydra ``multirun/<date>/<time>``): each keeps its run id and its W&B folder in ``run.json``."""
    linked = []
    for run_id, (_, wandb_dir) in run_records(root).items():
        if wandb_dir is not None and wandb_dir.is_dir():
            linked += [p for p in find_runs(wandb_dir) if p.name.endswith(f"-{run_id}")]
    return linked


def run_records(root: Path) -> dict[str, tuple[Path, Path | None]]:
    """``{W&B run id: (output folder, its W&B folder)}`` of the lth-train output folders (``run.json``) under
    ``root``."""
    records: dict[str, tuple[Path, Path | None]] = {}
    for record_file in sorted(root.rglob(RUN_RECORD)) if root.is_dir() else []:
        try:
            record = json.loads(record_file.read_text())
            run_id, wandb_dir = str(record["wandb_run_id"]), record.get("wandb_dir")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # not lth-train's, or unreadable
        records[run_id] = (record_file.parent, Path(wandb_dir) if isinstance(wandb_dir, str) else None)
    return records


def attach_output_dirs(runs: list[RunRounds], roots: Sequence[Path]) -> None:
    """Set each run's :attr:`RunRounds.output_dir` (where its ``tickets/`` are) from the ``run.json`` files under
    ``roots``, or in Hydra's default ``outputs/`` and ``multirun/`` beside the run's ``wandb/`` folder."""
    places = {Path(p).resolve() for p in roots}
    for run in runs:
        beside = Path(run.source).parent.parent.parent  # <here>/wandb/<run dir>/<run file>.wandb
        places.update(beside / name for name in ("outputs", "multirun"))
    found: dict[str, tuple[Path, Path | None]] = {}
    for place in sorted(places):
        found.update(run_records(place))
    for run in runs:
        if run.run_id in found and not run.output_dir:
            run.output_dir = str(found[run.run_id][0])


def _read_or_reason(run_dir: Path) -> RunRounds | str:
    try:
        return from_run_record(read_run(run_dir))
    except FileNotFoundError:
        return "no .wandb run file (the run never started logging, or the file was removed)"
    except (RuntimeError, ValueError) as error:  # the reader failed: a truncated or foreign file
        return str(error).splitlines()[0][:300]


def one_per_run_id(runs: list[RunRounds]) -> list[RunRounds]:
    """One run per run id: the newest complete file of each id (the newest file when
    none is complete). Runs without an id stay apart: nothing says they are one run.

    A file that continues an older one (a run resumed under its id) lacks what came before: the rounds before its
    first round and the validation points before its first step come from the older files. A run started again
    from scratch (lth-sweep's ``attempt-<n>/``) has them itself, so it takes nothing from its cut-off attempts.
    """
    by_id: dict[str, list[RunRounds]] = {}
    for index, run in enumerate(runs):
        by_id.setdefault(run.run_id or f"\0{index}", []).append(run)
    # Several --offline folders come one after the other, so a run's files are put in time order here.
    return [_newest_complete(sorted(files, key=lambda f: started(f.source))) for files in by_id.values()]


def _newest_complete(files: list[RunRounds]) -> RunRounds:
    position = max((i for i, f in enumerate(files) if f.exit_code is not None), default=len(files) - 1)
    chosen = files[position]
    first_round = min((r.round for r in chosen.rounds), default=math.inf)
    first_step = min((step for step, _ in chosen.curve), default=math.inf)
    rounds = {r.round: r for r in chosen.rounds}
    curve, seen = list(chosen.curve), {step for step, _ in chosen.curve}
    for older in reversed(files[:position]):  # the newest older file wins a round or a step
        for r in older.rounds:
            if r.round < first_round:
                rounds.setdefault(r.round, r)
        for step, values in older.curve:
            if step < first_step and step not in seen:
                curve.append((step, values))
                seen.add(step)
        if first_round > 0:  # a ticket of rounds this file never ran
            chosen.ticket = chosen.ticket or older.ticket
    chosen.rounds = [rounds[n] for n in sorted(rounds)]
    chosen.curve = sorted(curve, key=lambda point: point[0])
    return chosen
