"""Issue 7: train saved tickets again, one round each, with ``lth-train ticket=<dir>``.

``controls`` (part 1): the tickets IMP found (experiments/fmnist_tickets.yaml), trained from fresh random values
(``pruning.control=reinit``) and with their weights at random positions (``random_mask``, same per-layer
densities), at 51%, 21%, 7% and 3.6% of the weights, as Frankle & Carbin's Figure 4 does.

``rewound`` (part 2): the masks that pruning after every epoch found (experiments/continuous_tickets.yaml), with
the run's initial weights θ0: are they winning tickets too, or only good sparse networks?

Each run trains as long as one round of the source run (or ``--epochs``), with its experiment and seed. One
``lth-sweep`` per source run does the runs, in ``<sweep dir>/<mode>/seed-<seed>``, so rerunning this script resumes.

    lth-sweep experiments/fmnist_tickets.yaml --workers 2 --dir runs/fmnist_tickets   # first: the tickets
    python experiments/retrain.py controls runs/fmnist_tickets --workers 2              # then: the controls
    lth-report --offline runs/fmnist_tickets --at 100,51.3,21.1,7,3.6 --markdown results.md

    lth-sweep experiments/continuous_tickets.yaml --workers 2 --dir runs/continuous_tickets
    python experiments/retrain.py rewound runs/continuous_tickets --rounds 12 15 --epochs 10 --workers 2
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

from lth_wandb.pruning.ticket import Ticket

ROUNDS = (3, 7, 12, 15)  # 51.3%, 21.1%, 7.0% and 3.6% of the weights under the preset's 20%/10% rates
CONTROLS = ("reinit", "random_mask")


def finished_runs(sweep_dir: Path) -> list[tuple[Path, dict]]:
    """``(hydra output dir, its config)`` of every run under ``sweep_dir`` that saved its last round's ticket and
    was no control itself."""
    found = []
    for config_file in sorted(sweep_dir.glob("runs/*/outputs/*/*/.hydra/config.yaml")):
        run_dir, config = config_file.parent.parent, yaml.safe_load(config_file.read_text())
        if config["pruning"].get("control") is None and ticket_dir(run_dir, config["pruning"]["rounds"]).is_dir():
            found.append((run_dir, config))
    return found


def ticket_dir(run_dir: Path, number: int) -> Path:
    return run_dir / "tickets" / f"round-{number}" / "ticket"


def rewound_to_init(run_dir: Path, numbers: list[int], out: Path) -> list[Path]:
    """Each round's mask with round 0's starting weights (θ0), saved in ``out/round-<r>``."""
    theta0 = Ticket.load(ticket_dir(run_dir, 0)).rewind_weights
    saved = []
    for number in numbers:
        found = Ticket.load(ticket_dir(run_dir, number))
        metadata = {
            **found.metadata,
            "rewound_to": "round 0 start (theta0)",
            "source": str(ticket_dir(run_dir, number)),
        }
        saved.append(Ticket(found.masks, theta0, metadata=metadata).save(out / f"round-{number}", parts=("rewind",)))
    return saved


def sweep_config(config: dict, tickets: list[Path], controls: list[str | None], epochs: int) -> dict:
    """A grid of ``tickets`` x ``controls``, each trained for ``epochs``."""
    parameters = {
        "experiment": {"value": config["experiment"]},
        "ticket": {"values": [str(t.resolve()) for t in tickets]},
        "pruning.rounds": {"value": 0},
        "pruning.epochs_per_round": {"value": epochs},
        "seed": {"value": config["seed"]},
        "trainer.enable_progress_bar": {"value": False},
    }
    if controls != [None]:
        parameters["pruning.control"] = {"values": controls}
    return {
        "name": f"retrain-seed-{config['seed']}",
        "method": "grid",
        "metric": {"name": "round/test_acc", "goal": "maximize"},
        "parameters": parameters,
        "command": ["${env}", "${interpreter}", "-m", "lth_wandb.train", "${args_no_hyphens}"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["controls", "rewound"])
    parser.add_argument("sweep_dir", type=Path, help="the lth-sweep directory of the runs that found the tickets")
    parser.add_argument("--rounds", type=int, nargs="+", default=list(ROUNDS), help="whose tickets to train")
    parser.add_argument("--epochs", type=int, help="training epochs per ticket (default: a round of the source run)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    runs = finished_runs(args.sweep_dir)
    if not runs:
        parser.exit(2, f"no finished run under {args.sweep_dir}. Hint: first run its lth-sweep to the end.\n")
    code = 0
    for run_dir, config in runs:
        last = config["pruning"]["rounds"]
        if any(r > last or r < 1 for r in args.rounds):
            parser.exit(2, f"--rounds {args.rounds}: {run_dir} has rounds 1..{last}. Hint: --rounds 3 7\n")
        out = args.sweep_dir / args.mode / f"seed-{config['seed']}"
        if args.mode == "controls":
            tickets, controls = [ticket_dir(run_dir, r) for r in args.rounds], list(CONTROLS)
        else:
            tickets = rewound_to_init(run_dir, args.rounds, out / "tickets")
            controls = [None]
        out.mkdir(parents=True, exist_ok=True)
        sweep_file = out / "sweep.yaml"
        sweep_file.write_text(
            yaml.safe_dump(
                sweep_config(config, tickets, controls, args.epochs or config["pruning"]["epochs_per_round"]),
                sort_keys=False,
            )
        )
        command = ["lth-sweep", str(sweep_file), "--workers", str(args.workers), "--dir", str(out)]
        code = subprocess.call(command) or code
    return code


if __name__ == "__main__":
    sys.exit(main())
