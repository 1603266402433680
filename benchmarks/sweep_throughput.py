"""lth-sweep throughput with 1 vs 2 workers: the same small grid, run alternately with each, wall time per run.

A grid of 6 tiny lth-train runs (digits, LeNet-300-100, 2 rounds of 1 epoch, offline W&B) is run by ``lth-sweep``
in a fresh directory with ``--workers 1``, then ``--workers 2``, ``--repeats`` times in alternation. Each run
pins torch to one thread, so two workers share the two cores instead of fighting over them. Prints seconds per
run and the speed-up; the last line is ``speedup_2_vs_1_workers=<ratio>``.

    python benchmarks/sweep_throughput.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

RUNS = 6
GRID = {
    "name": "throughput",
    "method": "grid",
    "metric": {"name": "ticket/winning_density", "goal": "minimize"},
    "parameters": {
        "seed": {"values": list(range(RUNS))},
        "pruning.rounds": {"value": 2},
        "pruning.epochs_per_round": {"value": 1},
        "trainer.enable_progress_bar": {"value": False},
    },
    "command": ["${env}", "${interpreter}", "-m", "lth_wandb.train", "${args_no_hyphens}"],
}


def seconds_per_run(workers: int, root: Path) -> float:
    sweep_file = root / "grid.yaml"
    sweep_file.write_text(yaml.safe_dump(GRID))
    directory = Path(tempfile.mkdtemp(dir=root))
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="offline", WANDB_SILENT="true")
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "lth_wandb.sweeps.cli", str(sweep_file), "--workers", str(workers),
         "--dir", str(directory)],  # fmt: skip
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return (time.perf_counter() - start) / RUNS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lth-sweep-bench-"))
    per_run: dict[int, list[float]] = {1: [], 2: []}
    for repeat in range(args.repeats):
        for workers in (1, 2):
            per_run[workers].append(seconds_per_run(workers, root))
            print(f"repeat {repeat + 1}: {workers} worker(s): {per_run[workers][-1]:.2f} s per run", flush=True)
    one, two = statistics.median(per_run[1]), statistics.median(per_run[2])
    print(f"\n{RUNS} tiny lth-train runs per sweep, {os.cpu_count()} CPUs:")
    print(f"  1 worker {one:.2f} s/run, 2 workers {two:.2f} s/run")
    print(f"speedup_2_vs_1_workers={one / two:.3f}")


if __name__ == "__main__":
    main()
