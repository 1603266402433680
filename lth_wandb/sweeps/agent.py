"""What ``wandb agent`` does to start one sweep run, without a server: validate the sweep file, draw parameters
with W&B's own engine, write the parameter file, build the command line and the environment.

Everything that decides what the run sees comes from W&B's code (the ``sweeps`` engine and the SDK's
``create_sweep_command`` / ``create_sweep_command_args`` / ``save_config_file_from_dict``), so a run started here
is the run ``wandb agent`` would start. ``lth-sweep`` (``runner.py``) schedules these runs; the tests use them to
check every sweep file the way the agent runs it.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import sys
import warnings
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import yaml
from wandb.sdk.launch.sweeps.utils import DEFAULT_SWEEP_COMMAND, create_sweep_command, create_sweep_command_args
from wandb.sdk.lib import config_util

with warnings.catch_warnings():  # sweeps 0.2 declares its pydantic models in v1 style; harmless under v2
    warnings.simplefilter("ignore", UserWarning)
    import sweeps
    from sweeps import RunState, SweepRun

METHODS = ("grid", "random", "bayes")
DEFAULT_PROJECT = "lth-wandb"  # the app's own default (wandb.project), used when the sweep file names none
_ID_ALPHABET = string.ascii_lowercase + string.digits


def load_sweep(path: str | PathLike) -> dict[str, Any]:
    """Read a sweep YAML and check it against W&B's sweep schema, as ``wandb sweep`` does.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a mapping, or it breaks the schema (every violation is named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep file {str(path)!r} does not exist. Hint: the project's sweeps are in sweeps/")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        hint = "Hint: write `command` as a block list (- ${env}); in [ ] the braces of ${...} are YAML syntax"
        raise ValueError(f"{path} is not valid YAML: {' '.join(str(error).split())}. {hint}") from error
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a sweep file is a YAML mapping (method, metric, parameters...), got {config!r}")
    violations = schema_violations(config)
    if violations:
        raise ValueError(f"{path} breaks W&B's sweep schema: " + "; ".join(violations))
    return config


def schema_violations(config: Mapping[str, Any]) -> list[str]:
    """W&B's own schema check of a sweep config: one message per violation, empty when valid."""
    try:
        found = sweeps.schema_violations_from_proposed_config(dict(config))
    except ValueError as error:  # raised for shapes the schema walker cannot even iterate
        return [str(error)]
    if config.get("method") not in METHODS:
        found.append(f"method={config.get('method')!r} is not one of {list(METHODS)}")
    return found


def new_id() -> str:
    """A fresh id in W&B's format (8 lowercase letters and digits), for runs and local sweeps."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))


def to_sweep_run(
    run_id: str,
    params: Mapping[str, Any],
    state: str,
    metric: str | None = None,
    history: Sequence[float] = (),
    summary: Mapping[str, Any] | None = None,
) -> SweepRun:
    """A run as the ``sweeps`` engine sees it: its parameters, state and metric values.

    Args:
        state: a ``sweeps.RunState`` value (``"running"``, ``"finished"``, ``"failed"``, ``"killed"``...).
        history: the sweep metric's logged values, in order.
    """
    rows = [{metric: value} for value in history] if metric else []
    # The engine's models only fill fields by their camelCase aliases under pydantic 2.
    return SweepRun(
        name=run_id,
        state=RunState(state),
        config={name: {"value": value} for name, value in params.items()},
        sampledHistory=rows,
        summaryMetrics=dict(summary or {}),
    )


def next_params(config: Mapping[str, Any], runs: list[SweepRun]) -> dict[str, Any] | None:
    """The engine's next parameters for a grid, random or bayes sweep, given every run so far; None when a
    grid is exhausted. Values are plain Python (the engine hands out numpy scalars, which YAML cannot write)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy and scikit-learn chatter from the bayes model
        suggestion = sweeps.next_run(dict(config), runs, validate=True)
    if suggestion is None:
        return None
    return {name: _plain(entry["value"]) for name, entry in suggestion.config.items()}


def runs_to_stop(config: Mapping[str, Any], runs: list[SweepRun]) -> dict[str, str]:
    """The running runs the engine's early termination (hyperband) would stop now, as run id -> the engine's
    reason (band, threshold, the run's best value); empty without ``early_terminate``."""
    if not config.get("early_terminate"):
        return {}
    stop = sweeps.stop_runs(dict(config), runs, validate=True)
    # Every run's info shares one list of lines (a shallow copy in the engine): pick this run's own line.
    lines = {run.name: (run.early_terminate_info or {}).get("lines", []) for run in stop}
    return {name: next((ln for ln in found if ln.startswith(f"Run: {name} ")), "") for name, found in lines.items()}


def write_params(path: str | PathLike, params: Mapping[str, Any]) -> Path:
    """Write the parameter file the agent writes (``WANDB_SWEEP_PARAM_PATH``); wandb.init locks these keys."""
    path = Path(path)
    config_util.save_config_file_from_dict(str(path), {name: {"value": value} for name, value in params.items()})
    return path


def command_line(
    config: Mapping[str, Any],
    params: Mapping[str, Any],
    interpreter: str = sys.executable,
    args_json_file: str | PathLike | None = None,
) -> list[str]:
    """The command ``wandb agent`` runs for ``params``: the sweep's ``command`` with its macros filled in by the
    SDK's own functions, macro by macro as the agent does it.

    Args:
        interpreter: what ``${interpreter}`` becomes. The agent uses ``python`` from PATH; the default here is
            the interpreter running this code, so an unactivated virtual environment still works.
        args_json_file: where ``${args_json_file}`` is written, if the command uses it.
    """
    command = create_sweep_command(list(config.get("command") or DEFAULT_SWEEP_COMMAND))
    values = create_sweep_command_args({"args": {name: {"value": value} for name, value in params.items()}})
    values.update(interpreter=[interpreter], program=[str(config.get("program", ""))], env=["/usr/bin/env"])
    if "${args_json_file}" in command:
        if args_json_file is None:
            raise ValueError("the sweep's command uses ${args_json_file}; pass args_json_file=<path to write>")
        Path(args_json_file).write_text(values["args_json"][0])
        values["args_json_file"] = [str(args_json_file)]
    line: list[str] = []
    for chunk in map(str, command):
        if chunk.startswith("${") and chunk.endswith("}"):
            line += values.get(chunk[2:-1]) or []  # an unknown macro expands to nothing, as in the agent
        else:
            line.append(chunk)
    return line


def run_env(
    base: Mapping[str, str],
    *,
    run_id: str,
    param_path: str | PathLike,
    wandb_dir: str | PathLike,
    sweep_id: str | None,
    project: str,
    entity: str | None = None,
    group: str | None = None,
) -> dict[str, str]:
    """The environment of one run: what the agent sets, offline.

    ``WANDB_SWEEP_ID``, ``WANDB_RUN_ID``, ``WANDB_SWEEP_PARAM_PATH`` and ``WANDB_DIR`` as the agent sets them, and
    ``WANDB_PROJECT`` / ``WANDB_ENTITY`` as ``wandb agent entity/project/id`` does. ``WANDB_MODE=offline``
    because no server answers, and because under a sweep id the app would otherwise go online.
    ``WANDB_SERVICE`` is dropped: a child inheriting it would hand its run to the parent's W&B service.

    Args:
        sweep_id: None leaves ``WANDB_SWEEP_ID`` unset (runs a server can take without knowing the sweep).
        group: the W&B run group (``WANDB_RUN_GROUP``), e.g. ``sweep-<id>``.
    """
    env = {k: v for k, v in base.items() if k != "WANDB_SERVICE"}
    env.pop("WANDB_SWEEP_ID", None)
    env.update(
        WANDB_MODE="offline",
        WANDB_RUN_ID=run_id,
        WANDB_SWEEP_PARAM_PATH=os.fspath(param_path),
        WANDB_DIR=os.fspath(wandb_dir),
        WANDB_PROJECT=project,
    )
    if sweep_id is not None:
        env["WANDB_SWEEP_ID"] = sweep_id
    if entity:
        env["WANDB_ENTITY"] = entity
    if group:
        env["WANDB_RUN_GROUP"] = group
    return env


def param_path(wandb_dir: str | PathLike, sweep_id: str, run_id: str) -> Path:
    """Where the agent writes a run's parameter file: ``<WANDB_DIR>/wandb/sweep-<id>/config-<run>.yaml``."""
    return Path(wandb_dir) / "wandb" / f"sweep-{sweep_id}" / f"config-{run_id}.yaml"


def _plain(value: Any) -> Any:
    """numpy scalars (and containers of them) as plain Python values."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))
