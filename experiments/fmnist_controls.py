"""Issue 7, part 1, the controls: train the tickets that experiments/fmnist_tickets.yaml found again, from fresh
random values (``pruning.control=reinit``) and with their weights at random positions (``random_mask``, same
per-layer densities), at 51%, 21%, 7% and 3.6% of the weights, as Frankle & Carbin's Figure 4 does.

Each control trains the IMP run's saved ticket (``ticket=<run>/tickets/round-<r>/ticket``) for one round of the
same length, with the IMP run's experiment and seed. One ``lth-sweep`` per seed does the runs, so rerunning this
script resumes.

    lth-sweep experiments/fmnist_tickets.yaml --workers 2 --dir runs/fmnist_tickets   # first: the tickets
    python experiments/fmnist_controls.py --workers 2                                   # then: the controls
    lth-report --offline runs/fmnist_tickets --at 100,51.3,21.1,7,3.6 --markdown results.md
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

ROUNDS = (3, 7, 12, 15)  # 51.3%, 21.1%, 7.0% and 3.6% of the weights under the preset's 20%/10% rates
CONTROLS = ("reinit", "random_mask")


def finished_imp_runs(tickets_dir: Path) -> list[tuple[Path, dict]]:
    """``(hydra output dir, its config)`` of every IMP run under ``tickets_dir`` that saved its last ticket."""
    found = []
    for config_file in sorted(tickets_dir.glob("runs/*/outputs/*/*/.hydra/config.yaml")):
        run_dir, config = config_file.parent.parent, yaml.safe_load(config_file.read_text())
        last = run_dir / "tickets" / f"round-{config['pruning']['rounds']}" / "ticket"
        if config["pruning"].get("control") is None and last.is_dir():
            found.append((run_dir, config))
    return found


def sweep_config(run_dir: Path, config: dict, rounds: list[int]) -> dict:
    """The grid for one IMP run: its tickets at ``rounds`` x :data:`CONTROLS`, trained as long as one of its
    rounds, with its experiment and seed."""
    tickets = [str((run_dir / "tickets" / f"round-{r}" / "ticket").resolve()) for r in rounds]
    return {
        "name": f"controls-seed-{config['seed']}",
        "method": "grid",
        "metric": {"name": "round/test_acc", "goal": "maximize"},
        "parameters": {
            "experiment": {"value": config["experiment"]},
            "ticket": {"values": tickets},
            "pruning.control": {"values": list(CONTROLS)},
            "pruning.rounds": {"value": 0},
            "pruning.epochs_per_round": {"value": config["pruning"]["epochs_per_round"]},
            "seed": {"value": config["seed"]},
            "trainer.enable_progress_bar": {"value": False},
        },
        "command": ["${env}", "${interpreter}", "-m", "lth_wandb.train", "${args_no_hyphens}"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickets", type=Path, default=Path("runs/fmnist_tickets"), help="the IMP sweep directory")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, nargs="+", default=list(ROUNDS), help="IMP rounds whose tickets to train")
    args = parser.parse_args(argv)
    runs = finished_imp_runs(args.tickets)
    if not runs:
        parser.exit(
            2,
            f"no finished IMP run under {args.tickets}. Hint: first run "
            f"`lth-sweep experiments/fmnist_tickets.yaml --workers 2 --dir {args.tickets}`.\n",
        )
    code = 0
    for run_dir, config in runs:
        missing = [r for r in args.rounds if not (run_dir / "tickets" / f"round-{r}" / "ticket").is_dir()]
        if missing:
            parser.exit(
                2, f"{run_dir} has no ticket for rounds {missing}; it saved rounds 0..{config['pruning']['rounds']}.\n"
            )
        sweep_dir = args.tickets / "controls" / f"seed-{config['seed']}"
        sweep_dir.mkdir(parents=True, exist_ok=True)
        sweep_file = sweep_dir / "controls.yaml"
        sweep_file.write_text(yaml.safe_dump(sweep_config(run_dir, config, args.rounds), sort_keys=False))
        command = ["lth-sweep", str(sweep_file), "--workers", str(args.workers), "--dir", str(sweep_dir)]
        code = subprocess.call(command) or code
    return code


if __name__ == "__main__":
    sys.exit(main())
