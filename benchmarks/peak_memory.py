"""Peak memory of keeping a network sparse: dense vs LotteryTicket vs Lightning's ModelPruning.

The training is overhead.py's: 2 epochs on random data, epoch 0 dense, then both pruning callbacks cut the same
80% of weights (global magnitude) for epoch 1. Each variant trains in a fresh subprocess, so no peak hides
another, and variants are interleaved repeat by repeat. A run reports (a) its peak RSS growth during
``trainer.fit``: ``ru_maxrss`` after fit minus ``ru_maxrss`` just before (it only ever rises, so this is what
fit added above every earlier peak), and (b) the bytes of tensors the callback holds beyond the model's own
parameters once fit ends, as ``numel * element_size`` over distinct tensors: masks (LotteryTicket's bool mask
per round and the float copies it multiplies by; ModelPruning's ``weight_mask`` buffers) and weight copies
(LotteryTicket's θ0, rewind point and trained rounds; ModelPruning's copy of the original layers and the
``weight = weight_orig * weight_mask`` its hook materialises). Prints the medians as a table; the last line is
``peak_vs_dense=<LotteryTicket/dense> modelpruning_vs_lotteryticket=<ratio>`` (peak RSS growth).

    python benchmarks/peak_memory.py [--model lenet|conv6] [--repeats 3] [--steps 100] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import warnings

import torch

# Run as a script, this folder is first on sys.path, so overhead.py imports as a sibling module.
from overhead import DENSITY, SHAPES, Net, make_net, make_trainer, pruning_callback, random_loader
from pytorch_lightning.callbacks import ModelPruning
from torch import nn

from lth_wandb import LotteryTicket

VARIANTS = ("dense", "lotteryticket", "modelpruning")
MIB = 2**20


def maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def tensor_bytes(obj, skip: set[int]) -> int:
    """``numel * element_size`` over the distinct tensors in nested dicts, lists, tuples and modules, leaving
    out those whose data is at an address in ``skip`` (the model's own parameters)."""
    found: dict[int, int] = {}
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, torch.Tensor):
            if o.data_ptr() not in skip:
                found[o.data_ptr()] = o.numel() * o.element_size()
        elif isinstance(o, nn.Module):
            stack += [*o.parameters(), *o.buffers()]
        elif isinstance(o, dict):
            stack += o.values()
        elif isinstance(o, list | tuple):
            stack += o
    return sum(found.values())


def kept_bytes(callbacks: list, net: nn.Module) -> tuple[int, int]:
    """(mask bytes, weight-copy bytes) the pruning callback holds after fit."""
    live = {p.data_ptr() for p in net.parameters()}
    for cb in callbacks:
        if isinstance(cb, LotteryTicket):
            # The enforcer's float masks are private but real memory: they are what each step multiplies by.
            masks = [cb.masks, cb._states.masks, cb._enforcer.factors]
            mask_bytes = tensor_bytes(masks, live)
            return mask_bytes, tensor_bytes([cb.state_dict(), masks], live) - mask_bytes
        if isinstance(cb, ModelPruning):
            pruned = [m for m in net.modules() if hasattr(m, "weight_mask")]
            # After the rewind weight_orig shares its storage with the original layer's copy (the aliasing
            # lth_wandb/lottery/rewind.py describes), so `live` leaves that copy's weights out and its biases remain.
            copies = [[m.weight for m in pruned], [ref["data"] for ref in cb._original_layers.values()]]
            return tensor_bytes([m.weight_mask for m in pruned], live), tensor_bytes(copies, live)
    return 0, 0


def measure(variant: str, model: str, steps: int, batch_size: int) -> dict[str, int]:
    """One training run in this process; call it in a fresh one."""
    loader = random_loader(model, steps, batch_size)
    torch.manual_seed(0)
    callbacks = pruning_callback(variant)
    trainer = make_trainer(callbacks)
    net = Net(make_net(model))
    before = maxrss_kib()
    # An earlier peak above the current RSS (imports, data) would swallow that much of fit's growth.
    hidden = max(0, before - rss_kib())
    trainer.fit(net, loader)
    masks, copies = kept_bytes(callbacks, net)
    return {"growth_kib": maxrss_kib() - before, "hidden_kib": hidden, "mask_bytes": masks, "copy_bytes": copies}


def run_child(variant: str, args: argparse.Namespace) -> dict[str, int]:
    cmd = [sys.executable, __file__, "--child", variant, "--model", args.model, "--steps", str(args.steps)]
    cmd += ["--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{variant} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.splitlines()[-1])  # Lightning may print before the result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(SHAPES), default="lenet")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per epoch")
    parser.add_argument("--batch-size", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)  # internal: one run, JSON out
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    if args.child:
        print(json.dumps(measure(args.child, args.model, args.steps, args.batch_size)))
        return

    runs: dict[str, list[dict[str, int]]] = {v: [] for v in VARIANTS}
    for repeat in range(args.repeats):
        for variant in VARIANTS:
            runs[variant].append(run_child(variant, args))
        print(f"repeat {repeat + 1}/{args.repeats} done", flush=True)

    growth = {v: statistics.median(r["growth_kib"] for r in rs) / 1024 for v, rs in runs.items()}
    setting = f"{args.model}, batch {args.batch_size}, Adam, {args.threads} threads, density {DENSITY:.0%}"
    print(f"\npeak memory: {setting} ({args.repeats} fresh processes per variant, median)")
    print("| variant | peak RSS growth (MiB) | vs dense | masks kept (MiB) | weight copies kept (MiB) |")
    print("|---|---:|---:|---:|---:|")
    for v, rs in runs.items():
        # Kept bytes are the same every repeat: same seed, same masks.
        masks, copies = rs[-1]["mask_bytes"] / MIB, rs[-1]["copy_bytes"] / MIB
        print(f"| {v} | {growth[v]:.2f} | x{growth[v] / growth['dense']:.3f} | {masks:.2f} | {copies:.2f} |")
    hidden = max(r["hidden_kib"] for rs in runs.values() for r in rs) / 1024
    if hidden > 1:
        print(f"note: a peak before fit exceeded the RSS at fit's start by up to {hidden:.1f} MiB; growth below that")
        print("      is not visible to ru_maxrss, so small growths may be understated")
    print(
        f"peak_vs_dense={growth['lotteryticket'] / growth['dense']:.3f} "
        f"modelpruning_vs_lotteryticket={growth['modelpruning'] / growth['lotteryticket']:.3f}"
    )


if __name__ == "__main__":
    main()
