"""``lth-sweep``: run a W&B sweep file on this machine, offline, with W&B's own sweep engine (see runner.py).

    lth-sweep sweeps/prune_rate_grid.yaml --workers 2
    lth-sweep sweeps/lr_bayes_hyperband.yaml --count 20 --dir runs/lr   # run it again to resume
    lth-sweep sweeps/controls_grid.yaml --launcher slurm --slurm partition=cpu --workers 8
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import version
from os import PathLike
from pathlib import Path
from typing import Any

import yaml

from lth_wandb import atomic
from lth_wandb.sweeps import agent
from lth_wandb.sweeps.launchers import LAUNCHERS
from lth_wandb.sweeps.leaderboard import SweepRecord, print_leaderboard, rank, write_results
from lth_wandb.sweeps.runner import SweepRunner, check_budget, gpus_asked, say
from lth_wandb.sweeps.slurm import SlurmLauncher


def with_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """The sweep with ``key=value`` overrides as fixed parameters, which every run gets as ``key=value`` and which
    sweep.json keeps (a restart with other overrides is another sweep)."""
    parameters = dict(config.get("parameters", {}))
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or not key:
            raise ValueError(f"{override!r} is not KEY=VALUE. Hint: lth-sweep {{file}} pruning.epochs_per_round=1")
        varied = parameters.get(key, {})
        if "values" in varied or "distribution" in varied or "min" in varied:
            raise ValueError(
                f"{key} is a parameter the sweep varies; fixing it with {override} would change the sweep itself. "
                "Hint: edit a copy of the sweep file"
            )
        parameters[key] = {"value": value}
    return {**config, "parameters": parameters} if overrides else config


def check_overrides(config: dict[str, Any], overrides: list[str]) -> None:
    """Fixed overrides of an lth-train sweep are composed once, before any run (``lth-train --cfg job``, a second
    or two): a misspelt key fails here in one line instead of failing every run."""
    if not overrides or "lth_wandb.train" not in " ".join(map(str, config.get("command", []))):
        return
    command = [sys.executable, "-m", "lth_wandb.train", "--cfg", "job", *overrides]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
        message = lines[-1].removeprefix("lth-train: error: ").removesuffix(" (LTH_DEBUG=1 shows the traceback)")
        raise ValueError(f"{' '.join(overrides)}: {message}")


def _option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of --slurm, the value read as YAML (``60`` is a number, ``gpu`` a string)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--slurm {text!r} is not KEY=VALUE, e.g. --slurm partition=gpu")
    return key, yaml.safe_load(value)


def grid_size(config: dict[str, Any]) -> int | None:
    """How many runs a grid sweep has (None for other methods, or a grid over a distribution)."""
    if config.get("method") != "grid":
        return None
    size = 1
    for spec in config.get("parameters", {}).values():
        if "values" in spec:
            size *= len(spec["values"])
        elif "value" not in spec:
            return None
    return size


def default_dir(sweep_file: str | PathLike) -> Path:
    """``lth-sweeps/<sweep file name>``: one directory per sweep file, so rerunning a file resumes it."""
    return Path("lth-sweeps") / Path(sweep_file).stem


def main(argv: list[str] | None = None) -> None:
    """Console entry point of ``lth-sweep``."""
    parser = argparse.ArgumentParser(
        prog="lth-sweep",
        description="Run a W&B sweep file offline on this machine with W&B's sweep engine; rerun to resume.",
    )
    parser.add_argument("sweep_file", help="a W&B sweep YAML, e.g. sweeps/prune_rate_grid.yaml")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="lth-train overrides for every run, e.g. pruning.epochs_per_round=1 (kept in sweep.json); a key the "
        "sweep varies cannot be fixed here",
    )
    parser.add_argument("--count", type=int, help="most runs in the sweep (default: the whole grid)")
    parser.add_argument("--workers", type=int, default=1, help="runs at the same time (default 1)")
    parser.add_argument("--dir", type=Path, help="sweep directory (default lth-sweeps/<file name>)")
    parser.add_argument(
        "--sweep-id",
        action="store_true",
        help="set WANDB_SWEEP_ID to the local sweep id, as `wandb agent` does; a W&B server refuses such runs on "
        "`wandb sync` (it never saw the sweep), so by default it is left unset",
    )
    parser.add_argument("--no-sweep-id", action="store_true", help=argparse.SUPPRESS)  # the default since 0.1
    parser.add_argument(
        "--launcher",
        choices=LAUNCHERS,
        default="local",
        help="where runs execute: child processes here (local, default) or SLURM jobs through sbatch (slurm); "
        "lth-sweep itself stays here",
    )
    parser.add_argument(
        "--slurm",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an sbatch option for every job of --launcher slurm, e.g. partition=cpu, cpus-per-task=4, time=60, "
        "mem=16G; repeat for more. Jobs ask for no GPU unless the run does (trainer=gpu)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=1,
        help="how many times a run that failed or was cancelled starts again, continuing from its checkpoint (1)",
    )
    parser.add_argument("--kill-delay", type=float, default=30.0, help="seconds from SIGTERM to SIGKILL (30)")
    parser.add_argument("--check-every", type=float, default=5.0, help="seconds between early-termination checks (5)")
    parser.add_argument("--version", action="version", version=f"lth-sweep {version('lth-wandb')}")
    args = parser.parse_intermixed_args(argv)  # overrides may come before or after the options
    for name, low in (("count", 1), ("workers", 1), ("kill_delay", 0), ("check_every", 0.5), ("retries", 0)):
        value = getattr(args, name)
        if value is not None and value < low:
            parser.error(f"--{name.replace('_', '-')}={value} must be >= {low}")
    directory = args.dir or default_dir(args.sweep_file)
    if args.slurm and args.launcher != "slurm":
        parser.error("--slurm needs --launcher slurm")
    try:
        options = dict(_option(text) for text in args.slurm)
        config = with_overrides(agent.load_sweep(args.sweep_file), args.overrides)
        check_overrides(config, args.overrides)
        check_budget(config, args.count, args.workers)
        launcher = None
        if args.launcher == "slurm":
            launcher = SlurmLauncher(options, poll_every=args.check_every, say=say)
            fixed = {k: spec["value"] for k, spec in config.get("parameters", {}).items() if "value" in spec}
            launcher.check(gpus=gpus_asked(fixed))  # a request no node can meet fails now, not after the queue
        size = grid_size(config)
        with SweepRecord.open(directory, config, args.sweep_file) as record:
            runner = SweepRunner(
                record, args.count, args.workers, args.sweep_id, args.kill_delay, args.check_every, launcher,
                args.retries,
            )  # fmt: skip
            say(f"sweep {record.sweep_id} in {directory} ({len(record.counted())} runs already ended)")
            if size is not None and args.count is not None and args.count < size:
                say(
                    f"--count {args.count} covers {args.count} of the grid's {size} points, in the grid's order (the "
                    "last parameter varies fastest): the rest never run. Hint: drop --count to run the whole grid"
                )
            code = runner.run()
            write_results(record)
            print_leaderboard(record, rank(record))
    except (ValueError, FileNotFoundError) as error:
        parser.exit(2, f"lth-sweep: error: {error}\n")
    except OSError as error:
        if error.errno not in atomic.DISK_FULL:
            raise
        kept = directory / SweepRecord.FILE
        state = f"{kept} holds the sweep as last written whole" if kept.is_file() else f"{kept} was not written"
        parser.exit(
            1,
            f"lth-sweep: disk full: {error}. {state}. Hint: free some space (or raise the quota), then run the same "
            "lth-sweep command again to continue\n",
        )
    sys.exit(code)


if __name__ == "__main__":
    main()
