"""docs/results.md part 3: when does each early-bird rule fire? You et al.'s (ICLR 2020) channel rule on |BatchNorm
scaling factors| (with its L1 penalty) against lth-wandb's weight rule (round 1's unstructured magnitude mask), on
one network with BatchNorm: ResNet-20 (1x1 shortcuts; every BatchNorm γ starts equal, as in the authors' code) on
scikit-learn's digits, with SGD 0.1, momentum 0.9 and weight decay 1e-4 (the paper's optimizer) or Adam 1.2e-3;
threshold 0.1, window 5, round 0 of up to 30 epochs, 3 seeds. Prints one line per run and a summary table: the
epoch each rule ended round 0 at.

    python experiments/early_bird_rules.py [--seeds 0 1 2] [--epochs 30]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import warnings

import pytorch_lightning as pl
from hydra import compose, initialize_config_module

from lth_wandb.app.build import build_datamodule, build_lottery, build_model

logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
warnings.filterwarnings("ignore")
RULES = {
    "channels 30%": ["pruning=early_bird_channels", "pruning.early_bird_ratio=0.3"],
    "channels 50%": ["pruning=early_bird_channels", "pruning.early_bird_ratio=0.5"],
    "channels 70%": ["pruning=early_bird_channels", "pruning.early_bird_ratio=0.7"],
    "weights (round 1, 20%)": ["pruning=early_bird"],
}
OPTIMIZERS = {"sgd": ["optimizer=sgd", "optimizer.lr=0.1"], "adam": ["optimizer=adam", "optimizer.lr=1.2e-3"]}


def fired_at(overrides: list[str], seed: int) -> int | None:
    """Round 0's early-bird epoch of one run (None: it ran its full length)."""
    with initialize_config_module(config_module="lth_wandb.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=demo", "model=resnet20", "model.shortcut=conv",
                                                       *overrides, f"seed={seed}"])  # fmt: skip
    pl.seed_everything(seed, verbose=False)
    dm = build_datamodule(cfg)
    model = build_model(cfg, dm)
    lottery = build_lottery(cfg)
    trainer = pl.Trainer(callbacks=[lottery], logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", devices=1)  # fmt: skip
    trainer.fit(model, datamodule=dm)
    return lottery.history[0]["early_bird_epoch"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    summary = {}
    for optimizer, options in OPTIMIZERS.items():
        for rule, overrides in RULES.items():
            budget = ["pruning.rounds=0", f"pruning.epochs_per_round={args.epochs}", "pruning.early_bird_threshold=0.1",
                      "pruning.early_bird_window=5"]  # fmt: skip
            epochs = [fired_at([*overrides, *options, *budget], seed) for seed in args.seeds]
            summary[(optimizer, rule)] = epochs
            print(f"{optimizer:<5} {rule:<24} fired at epochs {epochs}", flush=True)
    for (optimizer, rule), epochs in summary.items():
        fired = [e for e in epochs if e is not None]
        middle = statistics.median(fired) if fired else None
        print(f"| {optimizer} | {rule} | {', '.join(str(e or f'never ({args.epochs})') for e in epochs)} | {middle} |")


if __name__ == "__main__":
    main()
