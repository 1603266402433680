"""A refused start leaves nothing behind. Hydra creates the job's output folder and writes ``.hydra/`` into it before
lth-train's checks run; when a check refuses the start, a new folder holding only that (and ``run.json``) is removed,
and a run folder that existed before, a resumed run's, is put back as it was (``.hydra/`` and ``.hydra-resumed/``
are what Hydra rewrites there).

Hydra-free: the console entry point remembers the run folder before Hydra writes into it.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from lth_wandb.app.resume import RESUMED_SUBDIR, RUN_FILE, override_key, unquote

HYDRA_SUBDIRS = (".hydra", RESUMED_SUBDIR)  # what Hydra writes into a run folder at every start
WRITTEN_AT_START = {*HYDRA_SUBDIRS, RUN_FILE}  # all a refused new start can have written
SWEEP_FILES = {"multirun.yaml"}  # Hydra's record of a multirun, in the sweep folder above the jobs

_before: dict[Path, dict[str, dict[str, bytes] | None]] = {}


def remember(argv: Sequence[str]) -> None:
    """Keep the Hydra records of the run folder ``hydra.run.dir=`` names (a resume names its run's), if it exists."""
    _before.clear()
    given = [a for a in argv if override_key(a) == "hydra.run.dir"]
    if not given:
        return
    folder = Path(unquote(given[-1].split("=", 1)[1])).expanduser()
    if folder.is_dir():
        _before[folder.resolve()] = {sub: _files(folder / sub) for sub in HYDRA_SUBDIRS}


def clean_up(output_dir: Path) -> None:
    """After a refused start: restore a folder that existed before, or remove a new one (and its empty parents)."""
    folder = output_dir.resolve()
    if folder in _before:
        for sub, files in _before[folder].items():
            _restore(folder / sub, files)
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


def _files(folder: Path) -> dict[str, bytes] | None:
    if not folder.is_dir():
        return None
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _restore(folder: Path, files: dict[str, bytes] | None) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    for name, data in (files or {}).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    if files is not None:
        folder.mkdir(exist_ok=True)  # an empty one stays
