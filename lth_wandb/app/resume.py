"""Resuming an ``lth-train`` run: the run folder's record, and the command line that continues it.

Every run keeps ``run.json`` in its output folder: the resolved config it was started with, its W&B run id and
whether it finished. ``lth-train resume=<last.ckpt, run folder or 'last'>`` continues that run in that folder,
with the overrides it was started with (from Hydra's ``.hydra/overrides.yaml``) and the same W&B run id, so the
dashboard shows one run. An override that would change what the checkpoint was trained with is refused, naming
the key, before anything starts; resuming a finished run says so and exits 0.

Hydra-free, so the console entry point can rewrite the command line before Hydra composes the config.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lth_wandb import atomic
from lth_wandb.app.checkpoints import CHECKPOINT, ResumeError, check_checkpoint
from lth_wandb.app.config import DEFAULT_PROJECT
from lth_wandb.processes import global_rank, launched_by_lightning

RUN_FILE = "run.json"
LOCK_FILE = ".lock"  # held (flock) by the process that trains the run folder
_HELD_LOCKS: list = []  # open lock files: the locks last as long as this process
RESUMED_SUBDIR = ".hydra-resumed"  # where Hydra records a resumed start
# Keys a resumed run may change: they decide how the run is shown or fed, not what it computes.
MAY_CHANGE = ("resume", "trainer.enable_progress_bar", "data.num_workers", "wandb.mode", "wandb.dir")
# Settings whose default became null (so WANDB_* variables apply): a run saved with the old default resumes.
FORMER_DEFAULTS = {"wandb.project": DEFAULT_PROJECT, "wandb.tags": []}
# Where `resume=last` looks: Hydra's default run and multirun folders.
RUN_ROOTS = ("outputs/*/*", "multirun/*/*/*")
_ID_CHARS = string.ascii_lowercase + string.digits


@dataclass
class RunRecord:
    """``run.json``: what a run folder holds. ``status`` is ``"running"`` until training ends, then ``"finished"``
    (or ``"failed"`` for a run that cannot continue: a NaN loss would come back at the same step)."""

    folder: Path
    config: dict[str, Any]
    wandb_run_id: str
    status: str = "running"
    wandb_dir: str | None = None  # the folder holding this run's W&B files, so lth-report finds them from here
    overrides: list[str] | None = None  # the command line's overrides at the first start (None: older runs)
    wandb_project: str | None = None  # the W&B project the run went to, however it was decided
    reason: str | None = None  # why a "failed" run cannot continue

    @classmethod
    def read(cls, folder: str | os.PathLike) -> RunRecord | None:
        path = Path(folder) / RUN_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            overrides = data.get("overrides")
            if overrides is not None and not _is_overrides(overrides):
                raise TypeError(f"overrides must be a list of strings, got {overrides!r}")
            return cls(
                Path(folder), data["config"], data["wandb_run_id"], data.get("status", "running"),
                data.get("wandb_dir"), overrides, data.get("wandb_project"), data.get("reason"),
            )  # fmt: skip
        except (ValueError, KeyError, TypeError) as error:
            raise ResumeError(
                f"{path} is not a readable run record ({error}). Hint: restore it from a backup, or start a new run"
            ) from error

    def write(self) -> None:
        data = {"config": self.config, "wandb_run_id": self.wandb_run_id, "status": self.status}
        data.update(wandb_dir=self.wandb_dir, overrides=self.overrides, wandb_project=self.wandb_project)
        if self.reason is not None:
            data["reason"] = self.reason
        atomic.write_text(self.folder / RUN_FILE, json.dumps(data, indent=2, sort_keys=True, default=str))

    def finish(self) -> None:
        self.status = "finished"
        self.write()

    def fail(self, reason: str) -> None:
        """The run cannot continue (a resume would stop at the same point): ``resume=`` says so, with ``reason``."""
        self.status, self.reason = "failed", reason
        self.write()


def open_record(
    folder: Path, config: dict[str, Any], resuming: bool, overrides: Sequence[str] = ()
) -> RunRecord:
    """The run record of ``folder``: the saved one when resuming (its config must match ``config``), else a new
    one with a fresh W&B run id (the agent's, under ``wandb agent``) and the command line's ``overrides``, which a
    resume starts from again. Written before W&B starts."""
    saved = RunRecord.read(folder)
    if global_rank() > 0:  # another DDP rank (Lightning's or srun's): rank 0 owns the record (and W&B)
        return saved or RunRecord(folder, config, "")
    hold_lock(folder)
    if saved is not None and not resuming:
        raise ResumeError(
            f"{folder} already holds a run (W&B id {saved.wandb_run_id}). Hint: continue it with resume={folder}, "
            "or give another hydra.run.dir"
        )
    if saved is not None:
        check_unchanged(saved.config, config)
        return saved
    run_id = os.environ.get("WANDB_RUN_ID") or "".join(secrets.choice(_ID_CHARS) for _ in range(8))
    configured = config.get("wandb", {}).get("dir") or os.environ.get("WANDB_DIR") or "."  # as W&B decides it
    wandb_dir = str(Path(configured).resolve() / "wandb")
    kept = [o for o in overrides if override_key(o) != "resume"]
    project = config.get("wandb", {}).get("project") or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT
    record = RunRecord(folder, config, run_id, wandb_dir=wandb_dir, overrides=kept, wandb_project=project)
    record.write()
    return record


def hold_lock(folder: Path) -> None:
    """Hold ``folder``'s lock (``.lock``, flock) until this process exits: two processes training one run folder
    would both write its checkpoints and tickets and log every round twice into its W&B run."""
    handle = open(folder / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ResumeError(
            f"{folder} is being trained by {holder}. Hint: let it finish (or stop it) first; a second process "
            "would log every round of the run twice"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"PID {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    _HELD_LOCKS.append(handle)


def check_unchanged(saved: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    """Refuse a config that differs from the resumed run's in a key outside :data:`MAY_CHANGE`."""
    old, new = _flatten(saved), _flatten(current)
    for key in sorted(old.keys() | new.keys()):
        if key.startswith(MAY_CHANGE) or old.get(key) == new.get(key):
            continue
        if key in FORMER_DEFAULTS and new.get(key) is None and old.get(key) == FORMER_DEFAULTS[key]:
            continue  # a run from before these defaults became null (W&B's own variables): the same setting
        raise ResumeError(
            f"{key}={new.get(key)!r} differs from the run being resumed ({key}={old.get(key)!r}); a resumed run "
            "keeps the settings its checkpoint was trained with. Hint: drop that override, or start a new run "
            "without resume="
        )


def expand_argv(argv: Sequence[str]) -> list[str]:
    """The command line that continues the run ``resume=`` names; ``argv`` unchanged when there is none.

    Raises:
        ResumeError: the reference finds no run or checkpoint, or asks for a multirun.
        SystemExit: (code 0) the run already finished.
    """
    if launched_by_lightning():  # Lightning starts DDP ranks with rank 0's command line, already expanded
        return list(argv)
    refs = [a for a in argv if override_key(a) == "resume"]
    multirun = any(a in ("-m", "--multirun") for a in argv)
    if not refs:
        found = None if multirun else run_of_id(argv)
        if found is None:
            return list(argv)
        print(f"lth-train: continuing W&B run {os.environ['WANDB_RUN_ID']} in {found} (WANDB_RUN_ID names it)")
        refs = [f"resume={quote(found)}"]
        argv = [*argv, *refs]
    value = unquote(refs[-1].split("=", 1)[1])
    if value in ("", "null", "None"):
        return list(argv)
    if multirun:
        raise ResumeError(f"resume={value} continues one run; drop -m/--multirun. Hint: resume each job's folder")
    folder, checkpoint = locate(value)
    others = [a for a in argv if a not in refs and override_key(a) not in ("hydra.run.dir", "hydra.output_subdir")]
    if folder is None:  # a checkpoint from elsewhere: its weights and state, in a new run
        return [*others, f"resume={quote(checkpoint)}"]
    record = RunRecord.read(folder)
    if record is not None and record.status == "finished":
        print(f"lth-train: the run in {folder} already finished (W&B run {record.wandb_run_id}); nothing to resume.")
        raise SystemExit(0)
    if record is not None and record.status == "failed":
        raise ResumeError(f"the run in {folder} cannot continue: {record.reason} Hint: start a new run")
    if checkpoint is None:
        check_nothing_finished(folder)
        print(f"lth-train: {folder} has no checkpoint yet (killed in its first epoch): training it from the start.")
    resume_to = checkpoint if checkpoint is not None else folder
    given = {override_key(a) for a in others}
    saved = [o for o in saved_overrides(folder) if override_key(o) not in given]
    if record is not None and record.wandb_dir and "wandb.dir" not in given:
        # The run's W&B files stay where its earlier attempts wrote them, whatever the working directory now:
        # what those files hold is what the resumed run must not log again.
        others.append(f"wandb.dir={quote(Path(record.wandb_dir).parent)}")
    if record is not None and record.wandb_project and not record.config.get("wandb", {}).get("project"):
        os.environ["WANDB_PROJECT"] = record.wandb_project  # the project WANDB_PROJECT (or the default) gave it
    # Hydra writes each start's config and overrides; kept apart, .hydra/ stays the run's first command, so a
    # refused override (or a resume's own) never becomes one the next resume inherits.
    hydra = [f"hydra.run.dir={quote(folder)}", f"hydra.output_subdir={RESUMED_SUBDIR}"]
    return [*saved, *others, f"resume={quote(resume_to)}", *hydra]


def check_nothing_finished(folder: Path) -> None:
    """A run folder without ``last.ckpt`` may only be trained again from the start if no round beyond the first
    finished: a later round cannot end before the first epoch's checkpoint is written, so its files mean the
    checkpoint was lost (deleted, or never copied with the folder), and training from the start would log the
    finished rounds into the W&B run a second time."""
    done = sorted(
        {int(p.name.split("-")[1].split(".")[0]) for pattern in ("tickets/round-*", "rounds/round-*.safetensors")
         for p in folder.glob(pattern) if p.name.split("-")[1].split(".")[0].isdigit()}
    )  # fmt: skip
    if any(r > 0 for r in done):
        raise ResumeError(
            f"{folder} has no {CHECKPOINT}, but rounds {done} finished (their tickets and weights are in the "
            f"folder): the checkpoint was lost. Hint: restore {folder / CHECKPOINT} from a copy of the run, or "
            f"start a new run; the finished rounds' tickets stay usable (ticket={folder}/tickets/round-<r>/ticket)"
        )


def run_of_id(argv: Sequence[str]) -> Path | None:
    """The unfinished or finished run folder that ``WANDB_RUN_ID`` names, if one is here: a job that starts again
    under its run id (``wandb agent`` or lth-sweep after a requeue, preemption or restart, or a script that sets the
    variable) continues that run instead of starting a second one. Looked for in ``hydra.run.dir`` when the
    command gives it, else under ./outputs and ./multirun."""
    run_id = os.environ.get("WANDB_RUN_ID")
    if not run_id:
        return None
    given = [unquote(a.split("=", 1)[1]) for a in argv if override_key(a) == "hydra.run.dir"]
    places = [Path(given[-1])] if given else [path.parent for path in _run_files_here()]
    found = []
    for folder in places:
        try:
            record = RunRecord.read(folder)
        except ResumeError:
            continue  # another run's damaged record is not this run's
        if record is not None and record.wandb_run_id == run_id:
            found.append(folder)
    return max(found, key=lambda f: (f / RUN_FILE).stat().st_mtime) if found else None


def locate(ref: str) -> tuple[Path | None, Path | None]:
    """``(run folder, checkpoint)`` for a ``resume=`` value: ``last``, a run folder, or a checkpoint file. The
    folder is None for a checkpoint outside an lth-train run folder; the checkpoint None before the first save."""
    path = newest_run() if ref == "last" else Path(os.path.expanduser(ref))
    if path.is_dir():
        if RunRecord.read(path) is None:
            raise ResumeError(
                f"resume={ref}: {path} is not an lth-train run folder (no {RUN_FILE}). Hint: pass the folder "
                f"outputs/<date>/<time> of a run, or its {CHECKPOINT}"
            )
        checkpoint = path / CHECKPOINT
        return path, (check_checkpoint(checkpoint) if checkpoint.exists() else None)
    if not path.exists():
        raise ResumeError(
            f"resume={ref}: no such file or folder. Hint: resume=outputs/<date>/<time>/{CHECKPOINT}, the run "
            "folder itself, or resume=last for the newest run under ./outputs"
        )
    check_checkpoint(path)
    folder = path.parent.parent
    return (folder if path.parent.name == CHECKPOINT.parent.name and (folder / RUN_FILE).is_file() else None), path


def newest_run() -> Path:
    """The most recently written run folder under ``./outputs`` or ``./multirun``."""
    records = _run_files_here()
    if not records:
        raise ResumeError(f"resume=last: no run under ./outputs or ./multirun (no {RUN_FILE}). Hint: name the run")
    return max(records, key=lambda p: p.stat().st_mtime).parent


def _run_files_here() -> list[Path]:
    """Every run record under ./outputs and ./multirun (Hydra's default run folders)."""
    return [path for root in RUN_ROOTS for path in Path.cwd().glob(f"{root}/{RUN_FILE}")]


def saved_overrides(folder: Path) -> list[str]:
    """The overrides the run was started with, less any earlier ``resume=``: from ``run.json``, or, for runs of
    earlier versions, Hydra's record ``.hydra/overrides.yaml``."""
    record = RunRecord.read(folder)
    if record is not None and record.overrides is not None:
        return [o for o in record.overrides if override_key(o) != "resume"]
    path = folder / ".hydra" / "overrides.yaml"
    hint = "Hint: give the run's overrides again with resume= (run.json holds its whole config)"
    if not path.is_file():
        raise ResumeError(f"{path} is missing: it holds the overrides this run was started with. {hint}")
    try:
        overrides = yaml.safe_load(path.read_text()) or []
    except yaml.YAMLError as error:
        raise ResumeError(f"{path} is not valid YAML ({' '.join(str(error).split())}). {hint}") from None
    if not _is_overrides(overrides):
        raise ResumeError(f"{path} is not Hydra's list of overrides. {hint}")
    return [o for o in overrides if override_key(o) != "resume"]


def _is_overrides(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(o, str) for o in value)


def override_key(override: str) -> str:
    """The key an override sets: ``pruning.rounds`` for ``+pruning.rounds=3``."""
    return override.split("=", 1)[0].lstrip("+~")


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def unquote(value: str) -> str:
    """An override value as Hydra reads it: ``'runs/my run'`` (quoted for the shell's sake) is ``runs/my run``."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1].replace("\\" + value[0], value[0]).replace("\\\\", "\\")
    return value


def shell_override(folder: Path) -> str:
    """``resume=<folder>`` as a user types it in a shell: quoted twice (shell, then Hydra) when it has spaces."""
    text = f"resume={folder}"
    return text if " " not in text else f'"resume={quote(folder)}"'


def quote(path: Path | str) -> str:
    """A path as a Hydra override value: quoted, so spaces and `=` survive the override parser."""
    text = os.fspath(path)
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
