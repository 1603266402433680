"""``lth-train controls=<IMP run folder or entity/project/run id>``: the paper's controls of a finished IMP run, in
one command.

Frankle & Carbin's controls train IMP's *own* masks: each round's mask with survivors redrawn from the initial
distribution (``reinit``), and random masks at each round's per-layer densities (``random_mask``). This expands to
a Hydra multirun of the run's own overrides with ``pruning.masks_from=<folder>`` and both controls: one W&B run per
control, grouped ``controls-of-<run id>``, whose rows lie on the same round axis as the IMP run's. A W&B run is
first brought into ``fetched-runs/<run id>/`` (its overrides and the ticket artifact of every round).
``pruning.control=random_mask`` (or ``reinit``) on the command line runs only that one: after a run at
initialisation (SNIP, GraSP, SynFlow), ``random_mask`` is "Missing the mark"'s check (Frankle et al. 2021): each
round's mask with its kept positions shuffled within every layer.

Hydra-free, like resume.py: the console entry point rewrites the command line before Hydra composes the config.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from lth_wandb.app.resume import ResumeError, RunRecord, override_key, quote, saved_overrides, unquote

CONTROLS = ("reinit", "random_mask")
WANDB_RUN = re.compile(r"[^/\s]+/[^/\s]+/[^/\s]+")  # entity/project/run id


def expand_argv(argv: Sequence[str]) -> list[str]:
    """The multirun that trains the controls of the run ``controls=`` names; ``argv`` unchanged without one."""
    refs = [a for a in argv if override_key(a) == "controls"]
    if not refs:
        return list(argv)
    ref = unquote(refs[-1].split("=", 1)[1])
    folder = Path(os.path.expanduser(ref))
    if not folder.exists() and WANDB_RUN.fullmatch(ref):
        folder = fetch_wandb_run(ref)
    record = RunRecord.read(folder) if folder.is_dir() else None
    if record is None:
        raise ResumeError(
            f"controls={folder}: not an lth-train run folder (no run.json). Hint: pass the outputs/<date>/<time> "
            "folder of a finished IMP run, or its W&B run as entity/project/<run id>"
        )
    pruning = record.config.get("pruning", {})
    if record.status != "finished" or pruning.get("control") is not None or not pruning.get("rounds"):
        raise ResumeError(
            f"controls={folder}: the run is {record.status}, control={pruning.get('control')!r}, "
            f"rounds={pruning.get('rounds')!r}; controls need a finished IMP run with pruning rounds and no control. "
            "Hint: resume it first, or pick its IMP run"
        )
    chosen = [a for a in argv if override_key(a) == "pruning.control"]
    wanted = chosen[-1].split("=", 1)[1].split(",") if chosen else list(CONTROLS)
    if not set(wanted) <= set(CONTROLS):
        raise ResumeError(
            f"controls={folder} pruning.control={','.join(wanted)}: controls are {list(CONTROLS)}. Hint: "
            "pruning.control=random_mask runs only the shuffled masks; leave it out for both"
        )
    others = [a for a in argv if a not in [*refs, *chosen, "-m", "--multirun"]]
    given = {override_key(a) for a in others}
    controls = {"pruning.masks_from": quote(folder.resolve()), "pruning.control": ",".join(wanted),
                "wandb.group": f"controls-of-{record.wandb_run_id}"}  # fmt: skip
    # A control's masks are IMP's, not a ticket of its own: the IMP run's registry link is not inherited. Nor is its
    # instability analysis: controls are about masks, and the reinit control cannot be analysed (lth-train refuses it).
    dropped = given | set(controls) | {"wandb.registry"}
    inherited = [o for o in saved_overrides(folder) if override_key(o) not in dropped and not _instability(o)]
    return ["-m", *inherited, *others, *(f"{key}={value}" for key, value in controls.items())]


def _instability(override: str) -> bool:
    key = override_key(override)
    return key == "instability" or key.startswith("instability.")


def fetch_wandb_run(path: str) -> Path:
    """The W&B run ``entity/project/run id`` as a run folder ``fetched-runs/<run id>`` (run.json, overrides, the
    ticket of every round) that the controls read like one of lth-train's own."""
    from lth_wandb.tracking.tickets import fetch_run  # W&B is imported only when a run is fetched

    folder = Path("fetched-runs") / path.rsplit("/", 1)[1]
    try:
        config, run_id, state = fetch_run(path, folder)
    except FileNotFoundError as error:
        raise ResumeError(f"controls={error}") from error
    RunRecord(folder, config, run_id, "finished" if state == "finished" else state).write()
    return folder
