"""docs/results.md part 3: pruning at initialisation against IMP's tickets, Fashion-MNIST LeNet-300-100.

``tickets``: for each seed, θ0 built as ``lth-train experiment=lenet_fashion_mnist seed=<s>`` builds it, and for
each criterion (snip, grasp, synflow, magnitude_init, random) its mask at IMP's density of rounds 7, 12 and 15
(21.1%, 7.0%, 3.6%; global ranking, the output layer on its own at 10% a round, as IMP's), saved as a ticket (the
mask and θ0). The same counts ``LotteryTicket(criterion=...)`` keeps in round r, without training rounds 0..r-1 that
an at-init mask does not depend on.

``train``: each ticket trained once from θ0 for one round (10 epochs, the part 1 protocol) with
``lth-train ticket=<dir> pruning.rounds=0``, and with ``pruning.control=random_mask`` for the layer-shuffle check of
Frankle et al. 2021 (the kept positions shuffled within each layer, same per-layer densities). Runs go to
``<dir>/runs/<criterion>-r<round>-seed<s>[-shuffled]``; finished ones are skipped, so rerunning resumes.

    python experiments/at_init.py tickets runs/at_init
    python experiments/at_init.py train runs/at_init --workers 2 [--shuffle-rounds 12]
    lth-report --offline runs/at_init/runs --at 21.1,7,3.6 --markdown at_init.md --html at_init.html
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module

from lth_wandb.app.build import build_datamodule, build_lottery, build_model
from lth_wandb.lottery.init_masks import training_batches
from lth_wandb.lottery.rewind import clone_state, masked
from lth_wandb.pruning import at_init
from lth_wandb.pruning import masks as M
from lth_wandb.pruning.ticket import Ticket

CRITERIA = ("snip", "grasp", "synflow", "magnitude_init", "random")
ROUNDS = (7, 12, 15)  # 21.1%, 7.0% and 3.6% of the weights under 20% a round (output layer 10%)
BASE = ("experiment=lenet_fashion_mnist", "pruning.scope=global", "pruning.epochs_per_round=10")


def config(seed: int):
    with initialize_config_module(config_module="lth_wandb.conf", version_base="1.3"):
        return compose(config_name="config", overrides=[*BASE, f"seed={seed}"])


def make_tickets(out: Path, seeds: list[int]) -> None:
    for seed in seeds:
        cfg = config(seed)
        pl.seed_everything(seed, workers=True, verbose=False)  # as lth-train: seed, then data, then model
        dm = build_datamodule(cfg)
        model = build_model(cfg, dm)
        theta0 = clone_state(model.state_dict())
        names = build_lottery(cfg).check_model(model)
        full = M.full_masks({n: p for n, p in model.named_parameters() if n in names})
        p = cfg.pruning
        for round in ROUNDS:
            groups = at_init.target_groups(full, p.prune_rate, p.scope, dict(p.layer_rates), round)
            for criterion in CRITERIA:
                if criterion == "random":
                    g = torch.Generator().manual_seed(seed * 1000 + round)
                    scores = {n: torch.rand(full[n].shape, generator=g) for n in full}
                    masks = at_init.keep_top(scores, groups)
                else:
                    batches = training_batches(dm.train_dataloader()) if criterion in at_init.NEEDS_DATA else ()
                    masks = at_init.masks_at_init(criterion, model, groups, batches, theta0)
                metadata = {"criterion": criterion, "round": round, "seed": seed, "density": M.density(masks),
                            "layer_density": M.layer_densities(masks)}  # fmt: skip
                Ticket(masks, masked(theta0, masks), None, metadata).save(ticket_dir(out, criterion, round, seed))
                print(f"seed {seed} round {round} {criterion}: density {M.density(masks):.4f} "
                      f"{ {n.split('.')[-2]: round_(d) for n, d in M.layer_densities(masks).items()} }")  # fmt: skip


def round_(x: float) -> float:
    return float(f"{x:.4f}")


def ticket_dir(out: Path, criterion: str, round: int, seed: int) -> Path:
    return out / "tickets" / f"{criterion}-r{round}-seed{seed}"


def train(out: Path, seeds: list[int], workers: int, shuffle_rounds: list[int]) -> None:
    jobs = [(c, r, s, False) for s in seeds for r in ROUNDS for c in CRITERIA]
    jobs += [(c, r, s, True) for s in seeds for r in shuffle_rounds for c in CRITERIA]
    exe = Path(sys.executable).with_name("lth-train")

    def run(job) -> str:
        criterion, round, seed, shuffled = job
        name = f"{criterion}-r{round}-seed{seed}" + ("-shuffled" if shuffled else "")
        folder = out / "runs" / name
        record = folder / "run.json"
        if record.is_file() and json.loads(record.read_text()).get("status") == "finished":
            return f"{name}: done before"
        folder.mkdir(parents=True, exist_ok=True)
        args = [*BASE, f"seed={seed}", f"ticket={ticket_dir(out, criterion, round, seed).resolve()}",
                "pruning.rounds=0", f"pruning.criterion={criterion}",
                "trainer.enable_progress_bar=false", "wandb.mode=offline", "wandb.group=at-init",
                f"wandb.name={name}", f"hydra.run.dir={folder.resolve()}", f"wandb.dir={folder.resolve()}"]  # fmt: skip
        if shuffled:
            args.append("pruning.control=random_mask")
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // workers))}
        done = subprocess.run([str(exe), *args], env=env, capture_output=True, text=True)
        return f"{name}: exit {done.returncode}" + (f"\n{done.stderr[-2000:]}" if done.returncode else "")

    with ThreadPoolExecutor(workers) as pool:
        for line in pool.map(run, jobs):
            print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("tickets", "train"))
    parser.add_argument("dir", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shuffle-rounds", type=int, nargs="*", default=[12], help="rounds to shuffle-check")
    args = parser.parse_args()
    if args.step == "tickets":
        make_tickets(args.dir, args.seeds)
    else:
        train(args.dir, args.seeds, args.workers, args.shuffle_rounds)


if __name__ == "__main__":
    main()
