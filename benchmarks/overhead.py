"""Per-step cost of keeping a network sparse: dense vs LotteryTicket vs Lightning's ModelPruning.

Each variant trains 2 epochs on random data; epoch 0 is dense for all three, then both pruning callbacks cut
the same 80% of weights (global magnitude) and epoch 1 is timed. Variants are interleaved repeat by repeat, so
drift of the machine hits all of them alike. A second table times the same three in a bare PyTorch loop
(forward, backward, Adam step; no Lightning): LotteryTicket's fused in-place multiply after the step, against
``torch.nn.utils.prune`` hooks. Prints median step times and the ratios; the last line is
``overhead_vs_dense=<ratio> modelpruning_vs_lotteryticket=<ratio>`` (the Lightning measurement).

    python benchmarks/overhead.py [--model lenet|conv6] [--repeats 5] [--steps 100] [--threads 2] [--fused-adam]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelPruning
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lth_wandb import LotteryTicket
from lth_wandb.models import Conv6, LeNet300100

DENSITY = 0.2
# Lightning's start-up messages (accelerator, tips) would repeat for every fit and bury the tables.
logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
SHAPES = {"lenet": ((1, 28, 28), LeNet300100), "conv6": ((3, 32, 32), Conv6)}


class Net(pl.LightningModule):
    def __init__(self, net: nn.Module, fused_adam: bool = False):
        super().__init__()
        self.net, self.fused_adam = net, fused_adam

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1.2e-3, fused=self.fused_adam)


class StepTimer(pl.Callback):
    """Wall time from batch start to batch end in the timed epoch: forward, backward, optimizer step and every
    hook. Data loading is left out: collating a TensorDataset costs more than LeNet's step and would hide it."""

    def __init__(self, timed_epoch: int):
        self.timed_epoch, self.times, self._start = timed_epoch, [], 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.timed_epoch:
            self.times.append(time.perf_counter() - self._start)


def pruning_callback(variant: str):
    if variant == "lotteryticket":
        return [LotteryTicket(rounds=1, epochs_per_round=1, prune_rate=1 - DENSITY, scope="global", monitor="none")]
    if variant == "modelpruning":
        # Same cut as LotteryTicket: global L1 after epoch 0, hooks kept for the rest of training.
        return [
            ModelPruning(
                "l1_unstructured",
                amount=1 - DENSITY,
                use_global_unstructured=True,
                apply_pruning=lambda epoch: epoch == 0,
                make_pruning_permanent=False,
            )
        ]
    return []


def make_net(model: str) -> nn.Module:
    _, net_class = SHAPES[model]
    return net_class(**({"in_features": 784} if model == "lenet" else {}))


def random_loader(model: str, steps: int, batch_size: int) -> DataLoader:
    """``steps`` batches of random inputs and labels, the same every call."""
    shape, _ = SHAPES[model]
    g = torch.Generator().manual_seed(0)
    n = steps * batch_size
    data = TensorDataset(torch.rand(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g))
    return DataLoader(data, batch_size=batch_size)


def make_trainer(callbacks: list[pl.Callback]) -> pl.Trainer:
    """2 epochs on the CPU with nothing but training: no logger, checkpoints, progress bar or validation."""
    return pl.Trainer(
        max_epochs=2,
        callbacks=callbacks,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )


def time_variant(variant: str, model: str, loader: DataLoader, fused_adam: bool) -> list[float]:
    torch.manual_seed(0)
    timer = StepTimer(timed_epoch=1)
    trainer = make_trainer([*pruning_callback(variant), timer])
    trainer.fit(Net(make_net(model), fused_adam), loader)
    return timer.times


def raw_loop_medians(model: str, steps: int, repeats: int, batch_size: int, fused_adam: bool) -> dict[str, float]:
    """Median step time of a bare training loop per variant, interleaved step by step."""
    from torch.nn.utils import prune as torch_prune

    from lth_wandb.pruning.masks import MaskEnforcer

    shape, _ = SHAPES[model]
    x, y = torch.rand(batch_size, *shape), torch.randint(0, 10, (batch_size,))
    nets = {}
    for variant in ("dense", "lotteryticket", "modelpruning"):
        torch.manual_seed(0)
        net = make_net(model)
        layers = [(m, "weight") for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        after_step = None
        if variant == "lotteryticket":
            weights = [m.weight for m, _ in layers]
            scores = torch.cat([w.detach().abs().flatten() for w in weights])
            threshold = scores.kthvalue(int((1 - DENSITY) * scores.numel())).values
            after_step = MaskEnforcer(weights, [w.detach().abs() > threshold for w in weights])
            after_step()
        elif variant == "modelpruning":
            torch_prune.global_unstructured(layers, torch_prune.L1Unstructured, amount=1 - DENSITY)
        nets[variant] = (net, torch.optim.Adam(net.parameters(), lr=1.2e-3, fused=fused_adam), after_step)
    times: dict[str, list[float]] = {v: [] for v in nets}
    for i in range(steps * repeats):
        for variant, (net, opt, after_step) in nets.items():
            start = time.perf_counter()
            loss = nn.functional.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step()
            if i >= steps // 10:  # warm-up
                times[variant].append(time.perf_counter() - start)
    return {v: statistics.median(t) for v, t in times.items()}


def print_table(title: str, median: dict[str, float]) -> None:
    print(title)
    for v, m in median.items():
        print(f"  {v:<14} median step {m * 1e3:7.3f} ms   x{m / median['dense']:.3f} vs dense")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(SHAPES), default="lenet")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per epoch")
    parser.add_argument("--batch-size", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--fused-adam",
        action="store_true",
        help="Adam(fused=True): its sqrt avoids MKL's slow path for exact zeros (see docs/benchmarks.md)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    loader = random_loader(args.model, args.steps, args.batch_size)

    variants = ["dense", "lotteryticket", "modelpruning"]
    times: dict[str, list[float]] = {v: [] for v in variants}
    for repeat in range(args.repeats):
        for variant in variants:
            times[variant] += time_variant(variant, args.model, loader, args.fused_adam)
        print(f"repeat {repeat + 1}/{args.repeats} done", flush=True)

    median = {v: statistics.median(t) for v, t in times.items()}
    adam = "fused Adam" if args.fused_adam else "Adam"
    setting = f"{args.model}, batch {args.batch_size}, {adam}, {args.threads} threads, density {DENSITY:.0%}"
    raw = raw_loop_medians(args.model, args.steps, args.repeats, args.batch_size, args.fused_adam)
    print_table(f"\nbare PyTorch loop: {setting}", raw)
    print(f"  modelpruning_vs_lotteryticket={raw['modelpruning'] / raw['lotteryticket']:.3f}")
    print_table(f"\nLightning step: {setting} ({len(times['dense'])} timed steps per variant)", median)
    overhead = median["lotteryticket"] / median["dense"]
    mp_ratio = median["modelpruning"] / median["lotteryticket"]
    print(f"overhead_vs_dense={overhead:.3f} modelpruning_vs_lotteryticket={mp_ratio:.3f}")


if __name__ == "__main__":
    main()
