"""Start-up of lth-train: seconds from the command to its first optimizer step, and to ``--cfg job``.

Each run is a fresh process, timed from launch. For the first optimizer step, the process runs lth-train's own
entry point after registering a global optimizer-step hook that reports the time and ends the process (so the
rest of training is not waited for). Prints each run, the medians, and on the last line::

    first_step_s=<median> cfg_job_s=<median>

    python benchmarks/startup.py [--repeats 5] [-- <lth-train overrides>]   # default: the demo, offline W&B

``python -X importtime -c "import lth_wandb.app.train"`` shows where the import part of it goes.
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

# Runs in the child: everything lth-train does, up to its first optimizer step.
CHILD = """
import os, sys, time
import torch.optim.optimizer as o
def first_step(*_):
    print(f"FIRST_STEP {time.time():.6f}", flush=True)
    os._exit(0)
o.register_optimizer_step_pre_hook(first_step)
sys.argv = ["lth-train", *sys.argv[1:]]
from lth_wandb.app.train import main
main()
"""


def run(command: list[str], cwd: str, env: dict[str, str], marker: str | None) -> float:
    start = time.time()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if marker is None:
        if done.returncode != 0:
            sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
        return time.time() - start
    line = next((s for s in done.stdout.splitlines() if s.startswith(marker)), None)
    if line is None:
        sys.exit(f"no optimizer step in {' '.join(command)}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return float(line.split()[1]) - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("overrides", nargs="*", help="lth-train overrides (default: none, the demo)")
    args = parser.parse_args()
    exe = Path(sys.executable).with_name("lth-train")
    cfg_job = [str(exe)] if exe.exists() else [sys.executable, "-m", "lth_wandb.train"]
    env = {**os.environ, "WANDB_SILENT": "true"}
    env.pop("WANDB_MODE", None)
    times: dict[str, list[float]] = {"first_step": [], "cfg_job": []}
    with tempfile.TemporaryDirectory(prefix="lth-startup-") as tmp:
        for repeat in range(args.repeats):
            folder = Path(tmp) / str(repeat)
            folder.mkdir()
            overrides = [*args.overrides, f"hydra.run.dir={folder}", f"wandb.dir={folder}", "wandb.mode=offline"]
            first = run([sys.executable, "-c", CHILD, *overrides], tmp, env, "FIRST_STEP")
            job = run([*cfg_job, "--cfg", "job", *args.overrides], tmp, env, None)
            times["first_step"].append(first)
            times["cfg_job"].append(job)
            print(f"repeat {repeat + 1}/{args.repeats}: first optimizer step {first:5.2f} s, --cfg job {job:5.2f} s")
    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"first_step_s={median['first_step']:.2f} cfg_job_s={median['cfg_job']:.2f}")


if __name__ == "__main__":
    main()
