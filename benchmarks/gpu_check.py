"""GPU check: ResNet-20 on GPU-resident synthetic CIFAR-shaped data (3x32x32, 10 classes), lth-train's training
against a bare PyTorch loop doing the same work, with and without ``torch.compile`` and bf16 autocast; the masked
step (a pruned round, 20% of the weights) against the dense one; and data-parallel training on 2 GPUs when there
are two.

"lth-train's training" is what lth-train runs: the ``Classifier`` LightningModule (ResNet-20, SGD 0.1, momentum 0.9,
weight decay 1e-4, open_lth's settings) with ``LotteryTicket`` in a Lightning ``Trainer`` (bf16: its
``precision="bf16-mixed"``; compile: the network compiled, as a user compiles a submodule). The bare loop is the
same network, optimizer and batches in plain PyTorch (bf16: ``torch.autocast``), masked with one
``torch._foreach_mul_`` after each step. Round 0 is dense, round 1 keeps 20% of the weights (global magnitude). Each
variant runs ``--warmup`` steps (compilation included) and times ``--steps`` more, synchronising the device; the
variants are interleaved repeat by repeat. Prints median step times, the ratios, and on its last line
``key=value`` ratios of the default variant (fp32, eager).

    python benchmarks/gpu_check.py                                  # a GPU machine; DDP too with 2+ GPUs
    python benchmarks/gpu_check.py --device cpu --quick --backend aot_eager      # the CPU smoke run (seconds)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn

from lth_wandb import LotteryTicket
from lth_wandb.models import Classifier, ResNet20

logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
# Lightning's notes that do not apply here (no workers: the data is on the device; no validation; no SLURM).
warnings.filterwarnings("ignore", ".*(many workers|LeafSpec|logging interval|srun|validation_step).*")
DENSITY = 0.2  # the pruned round keeps this share of the weights
SGD = dict(lr=0.1, momentum=0.9, weight_decay=1e-4)


class Batches:
    """``steps`` batches drawn from a tensor dataset that lives on the device: no host-to-device copies."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch: int, steps: int, seed: int = 0):
        self.x, self.y, self.batch, self.steps, self.seed = x, y, batch, steps, seed

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        generator = torch.Generator(device=self.x.device).manual_seed(self.seed)
        for _ in range(self.steps):
            index = torch.randint(0, len(self.x), (self.batch,), device=self.x.device, generator=generator)
            yield self.x[index], self.y[index]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def network(device: torch.device, compile_backend: str | None) -> nn.Module:
    torch.manual_seed(0)
    net = ResNet20(shortcut="conv", init="open_lth").to(device)
    return torch.compile(net, backend=compile_backend) if compile_backend else net


def global_masks(net: nn.Module) -> dict[str, torch.Tensor]:
    """Keep the largest ``DENSITY`` of all conv and linear weights by magnitude (as round 1 of a global IMP run)."""
    weights = {n: p for n, p in net.named_parameters() if n.endswith("weight") and p.dim() > 1}
    flat = torch.cat([p.detach().abs().flatten() for p in weights.values()])
    threshold = flat.kthvalue(int(len(flat) * (1 - DENSITY))).values
    return {n: (p.detach().abs() > threshold) for n, p in weights.items()}


def bare(args, device, data: Batches, bf16: bool, compile_backend: str | None) -> dict[str, float]:
    """Median step times of a plain loop: dense for warmup + steps, then masked (20%) for warmup + steps."""
    net = network(device, compile_backend)
    optimizer = torch.optim.SGD(net.parameters(), **SGD)
    params = dict(net.named_parameters())
    masks = global_masks(net)
    factors = [masks[n].to(params[n].dtype) for n in masks]
    masked = [params[n] for n in masks]
    times: dict[str, list[float]] = {"dense": [], "masked": []}
    for step, (x, y) in enumerate(data):
        phase = "dense" if step < args.warmup + args.steps else "masked"
        synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if phase == "masked":
            with torch.no_grad():
                torch._foreach_mul_(masked, factors)
        synchronize(device)
        if step % (args.warmup + args.steps) >= args.warmup:
            times[phase].append(time.perf_counter() - start)
    return {phase: statistics.median(t) for phase, t in times.items()}


class StepTimer(pl.Callback):
    """Batch start to batch end of every step (forward, backward, optimizer step, every hook), by round."""

    def __init__(self, device: torch.device, skip: int):
        self.device, self.skip, self.times, self._start = device, skip, {0: [], 1: []}, 0.0
        self.lottery: LotteryTicket | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        synchronize(self.device)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        synchronize(self.device)
        round_steps = self.lottery.round_end_step(0)
        if (trainer.global_step - 1) % round_steps >= self.skip:
            self.times[self.lottery.round].append(time.perf_counter() - self._start)


def lightning(args, device, data: Batches, bf16: bool, compile_backend: str | None, devices: int = 1):
    """Median step times of lth-train's training: round 0 dense, round 1 at 20% (rewound, as IMP)."""
    model = Classifier(network(device, compile_backend), optimizer="sgd", **SGD)
    lottery = LotteryTicket(rounds=1, steps_per_round=args.warmup + args.steps, prune_rate=1 - DENSITY, scope="global")
    timer = StepTimer(device, args.warmup)
    timer.lottery = lottery
    quiet = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        precision="bf16-mixed" if bf16 else "32-true",
        callbacks=[lottery, timer],
        limit_val_batches=0,  # training steps only: no validation
        num_sanity_val_steps=0,
        **quiet,
    )
    trainer.fit(model, train_dataloaders=data)
    return {"dense": statistics.median(timer.times[0]), "masked": statistics.median(timer.times[1])}


def make_data(args, device: torch.device, steps: int) -> Batches:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(args.samples, 3, 32, 32, generator=generator).to(device)
    y = torch.randint(0, 10, (args.samples,), generator=generator).to(device)
    return Batches(x, y, args.batch, steps)


def variants(args) -> list[tuple[str, bool, str | None]]:
    compiled = [None] if args.no_compile else [None, args.backend]
    return [(f"{'bf16' if bf16 else 'fp32'}{'+compile' if c else ''}", bf16, c)
            for bf16 in (False, True) for c in compiled]  # fmt: skip


def single(args, device: torch.device) -> dict[str, dict[str, float]]:
    """Every variant, interleaved repeat by repeat; the median of the repeats' medians."""
    runs: dict[str, list[dict[str, float]]] = {}
    for _ in range(args.repeats):
        for name, bf16, backend in variants(args):
            data = make_data(args, device, 2 * (args.warmup + args.steps))
            b = bare(args, device, data, bf16, backend)
            torch._dynamo.reset()
            lt = lightning(args, device, data, bf16, backend)
            torch._dynamo.reset()
            runs.setdefault(name, []).append({"bare": b["dense"], "bare_masked": b["masked"],
                                              "lth": lt["dense"], "lth_masked": lt["masked"]})  # fmt: skip
    return {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}


def ddp_worker(args) -> None:
    """One rank of the 2-process run (started by torch.distributed.run): lth-train's training under DDP."""
    rank = int(os.environ["LOCAL_RANK"])
    device = torch.device("cuda", rank) if args.device == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    data = make_data(args, device, 2 * (args.warmup + args.steps))
    result = lightning(args, device, data, bf16=False, compile_backend=None, devices=2)
    if rank == 0:
        Path(args.ddp_out).write_text(json.dumps(result))


def ddp(args) -> dict[str, float] | None:
    """Per-step times of lth-train's training on 2 processes (each with the full batch: twice the images a step)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "ddp.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__,
                   *sys.argv[1:], "--ddp-worker", "--ddp-out", str(out)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0 or not out.is_file():
            print(f"DDP run failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
            return None
        return json.loads(out.read_text())


def report(args, results: dict[str, dict[str, float]], ddp_result: dict[str, float] | None) -> None:
    card = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    print(f"device={args.device} ({card}), batch {args.batch}, {args.steps} timed steps after {args.warmup}, "
          f"{args.repeats} repeats; ms per step")  # fmt: skip
    print(f"{'variant':<14} {'bare':>8} {'lth-train':>10} {'lth/bare':>9} {'bare masked':>12} {'lth masked':>11} "
          f"{'masked/dense (bare, lth)':>26}")  # fmt: skip
    for name, r in results.items():
        print(f"{name:<14} {1e3 * r['bare']:8.2f} {1e3 * r['lth']:10.2f} {r['lth'] / r['bare']:9.3f} "
              f"{1e3 * r['bare_masked']:12.2f} {1e3 * r['lth_masked']:11.2f} "
              f"{r['bare_masked'] / r['bare']:12.3f} {r['lth_masked'] / r['lth']:12.3f}")  # fmt: skip
    base = results["fp32"]
    ratios = {"lth_vs_bare": base["lth"] / base["bare"], "masked_vs_dense_bare": base["bare_masked"] / base["bare"],
              "masked_vs_dense_lth": base["lth_masked"] / base["lth"]}  # fmt: skip
    for name, r in results.items():
        if name != "fp32":
            ratios[f"speedup_{name.replace('+', '_')}_lth"] = base["lth"] / r["lth"]
            ratios[f"speedup_{name.replace('+', '_')}_bare"] = base["bare"] / r["bare"]
    if ddp_result is not None:
        # Two processes, a full batch each a step: throughput against one device = 2 x 1-device step / 2-process step.
        ratios["ddp2_throughput_vs_1"] = 2 * base["lth"] / ddp_result["dense"]
        print(f"DDP, 2 processes: {1e3 * ddp_result['dense']:.2f} ms a step (masked {1e3 * ddp_result['masked']:.2f})")
    print(" ".join(f"{k}={v:.3f}" for k, v in ratios.items()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=128, help="open_lth's CIFAR batch")
    parser.add_argument("--samples", type=int, default=50_000, help="images in the GPU-resident dataset")
    parser.add_argument("--steps", type=int, default=100, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first (compilation included)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--ddp", action="store_true", help="also run 2 processes (on CPU: gloo); default with 2+ GPUs")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: batch 8, 2+3 steps, 1 repeat")
    parser.add_argument("--threads", type=int, default=None, help="torch threads on the CPU")
    parser.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ddp-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.samples, args.steps, args.warmup, args.repeats = 8, 64, 3, 2, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.ddp_worker:
        ddp_worker(args)
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no GPU is visible; run with --device cpu")
    results = single(args, torch.device(args.device))
    two_gpus = args.device == "cuda" and torch.cuda.device_count() >= 2
    report(args, results, ddp(args) if args.ddp or two_gpus else None)


if __name__ == "__main__":
    main()
