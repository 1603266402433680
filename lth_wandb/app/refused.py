"""A refused start leaves nothing behind. Hydra creates the job's output folder and writes ``.hydra/`` into it before
lth-train's checks run; when a check refuses the start, a new folder holding only that (and ``run.json``, ``.lock``)
is removed, and a run folder that existed before, a resumed run's, is put back as it was (``.hydra/`` and
``.hydra-resumed/`` are what Hydra rewrites there, ``.lock`` what the run's lock does).

Hydra-free: the console entry point remembers the run folder before Hydra writes into it.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from lth_wandb.app.resume import LOCK_FILE, RESUMED_SUBDIR, RUN_FILE, override_key, unquote

# What every start writes into a run folder before its checks pass: Hydra's records, and the run's lock.
REWRITTEN = (".hydra", RESUMED_SUBDIR, LOCK_FILE)
WRITTEN_AT_START = {*REWRITTEN, RUN_FILE}  # all a refused new start can have written
SWEEP_FILES = {"multirun.yaml"}  # Hydra's record of a multirun, in the sweep folder above the jobs

Saved = bytes | dict[str, bytes] | None  # a file's bytes, a folder's files, or nothing there
_before: dict[Path, dict[str, Saved]] = {}


def remember(argv: Sequence[str]) -> None:
    """Keep the Hydra records of the run folder ``hydra.run.dir=`` names (a resume names its run's), if it exists."""
    _before.clear()
    given = [a for a in argv if override_key(a) == "hydra.run.dir"]
    if not given:
        return
    folder = Path(unquote(given[-1].split("=", 1)[1])).expanduser()
    if folder.is_dir():
        _before[folder.resolve()] = {name: _saved(folder / name) for name in REWRITTEN}


def clean_up(output_dir: Path) -> None:
    """After a refused start: restore a folder that existed before, or remove a new one (and its empty parents)."""
    folder = output_dir.resolve()
    if folder in _before:
        for name, saved in _before[folder].items():
            _restore(folder / name, saved)
        return
    if not folder.is_dir() or not all(_written_at_start(entry) for entry in folder.iterdir()):
        return
    shutil.rmtree(folder, ignore_errors=True)
    _remove_empty_parents(folder.parent)


def _written_at_start(entry: Path) -> bool:
    return entry.name in WRITTEN_AT_START or (entry.is_dir() and not any(entry.iterdir()))


def _remove_empty_parents(folder: Path) -> None:
    """``outputs/<date>`` (or a multirun's sweep folder) that the removed folder leaves empty, up to the working
    directory."""
    cwd = Path.cwd().resolve()
    while folder != cwd and cwd in folder.parents:
        left = {entry.name for entry in folder.iterdir()}
        if not left <= SWEEP_FILES:
            return
        shutil.rmtree(folder, ignore_errors=True)
        folder = folder.parent


def _saved(path: Path) -> Saved:
    if path.is_file():
        return path.read_bytes()
    if not path.is_dir():
        return None
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def _restore(path: Path, saved: Saved) -> None:
    if isinstance(saved, bytes):  # in place: this process may hold a lock on the file
        path.write_bytes(saved)
        return
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    for name, data in (saved or {}).items():
        file = path / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(data)
    if saved is not None:
        path.mkdir(exist_ok=True)  # an empty one stays
