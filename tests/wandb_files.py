"""What a run's offline W&B files hold, read back with the SDK's own reader: the tests' view of "each round row
once, each artifact version once", however many attempts (resumes, retries, requeues) wrote them."""

from __future__ import annotations

from pathlib import Path

from lth_wandb.tracking.runfiles import find_runs, read_run


def written_runs(where: Path) -> list:
    """Every attempt's run file in ``where`` (a ``wandb/`` folder or the folder holding one) that holds records: an
    attempt killed before W&B first wrote to its file (a loaded machine, a kill within W&B's first flush) holds
    none, and everything of it is logged again."""
    runs = []
    for path in find_runs(where):
        try:
            runs.append(read_run(path))
        except ValueError:
            continue
    return runs


def round_rows(where: Path) -> tuple[set[str], list[dict]]:
    """The W&B run ids in ``where`` and the round rows of all their run files, in order (media left out)."""
    runs = written_runs(where)
    rows = [
        {k: v for k, v in row.items() if k.startswith("round") and not isinstance(v, dict)}
        for run in runs
        for row in run.history
        if "round/density" in row
    ]
    return {run.run_id for run in runs}, rows


def artifact_versions(where: Path) -> list[tuple[str, tuple[str, ...]]]:
    """(artifact name, round aliases) of every artifact the run files logged."""
    logged = []
    for run in written_runs(where):
        for artifact in run.artifacts:
            aliases = tuple(a for a in artifact.get("aliases", []) if a.startswith("round-"))
            logged.append((artifact.get("name", "").split("-")[0], aliases))
    return sorted(logged)
