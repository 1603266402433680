"""Wall time of lth-train against a bare PyTorch loop doing the same work: the paper's LeNet-300-100 protocol.

Both sides train LeNet-300-100 on Fashion-MNIST (``/usr/share/datasets/fashion-mnist``; ``apt-get install
dataset-fashion-mnist``): 55K/5K train/validation split, batch 60, Adam 1.2e-3, validation on the 5K and test on
the 10K every 100 steps, a dense round and one pruned round of ``--epochs-per-round`` epochs each, layer-wise
magnitude pruning at 20% (output layer 10%), rewinding to θ0 with a fresh optimizer.

The bare loop is written below: tensors in memory, one ``randperm`` per epoch, ``torch._foreach_mul_`` masks after
each step, PyTorch's default Adam, evaluation in batches of 1000. The lth-train side is the command a user runs::

    lth-train experiment=lenet_fashion_mnist pruning.rounds=1 pruning.epochs_per_round=2 logger=none
    lth-train experiment=lenet_fashion_mnist pruning.rounds=1 pruning.epochs_per_round=2 wandb.mode=offline

(the second logs to W&B offline, per-round artifacts included). Every variant runs as a fresh process, timed from
launch to exit, so interpreter start, imports and data loading count on both sides. Variants are interleaved
repeat by repeat in a rotating order, so drift of a shared machine hits all of them alike. Prints each run's
wall and CPU time (CPU time moves less when other work shares the machine), the medians, and the ratios of the
median wall times on the last line::

    lth_train_vs_bare=<ratio> lth_train_wandb_vs_bare=<ratio>

    python benchmarks/end_to_end.py [--repeats 3] [--epochs-per-round 2] [--threads 2] [lth-train overrides...]
"""

from __future__ import annotations

import argparse
import gzip
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path("/usr/share/datasets/fashion-mnist")
BATCH, LR, VAL_SIZE, EVAL_EVERY, EVAL_BATCH, SEED = 60, 1.2e-3, 5000, 100, 1000, 0
RATES = {"1.weight": 0.2, "3.weight": 0.2, "5.weight": 0.1}  # Sequential indices of fc1, fc2, out


def read_idx(path: Path):
    import numpy as np

    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def bare(epochs_per_round: int) -> None:
    """The loop a researcher would write: the whole protocol in one function, printing each round's result."""
    import torch
    from torch import nn

    def load(images: str, labels: str):
        x = torch.from_numpy(read_idx(DATA / images).copy()).float().div_(255).flatten(1)
        return x, torch.from_numpy(read_idx(DATA / labels).astype("int64"))

    x_all, y_all = load("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    x_test, y_test = load("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    order = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(SEED))
    x_val, y_val = x_all[order[:VAL_SIZE]], y_all[order[:VAL_SIZE]]
    x_train, y_train = x_all[order[VAL_SIZE:]], y_all[order[VAL_SIZE:]]

    torch.manual_seed(SEED)
    hidden = (nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU())
    net = nn.Sequential(nn.Flatten(), *hidden, nn.Linear(100, 10))
    theta0 = {k: v.clone() for k, v in net.state_dict().items()}
    params = dict(net.named_parameters())
    masks = {name: torch.ones_like(params[name]) for name in RATES}
    shuffle = torch.Generator().manual_seed(SEED)

    @torch.no_grad()
    def evaluate(x, y):
        net.eval()
        loss = correct = 0.0
        for i in range(0, len(x), EVAL_BATCH):
            logits = net(x[i : i + EVAL_BATCH])
            loss += nn.functional.cross_entropy(logits, y[i : i + EVAL_BATCH], reduction="sum").item()
            correct += (logits.argmax(1) == y[i : i + EVAL_BATCH]).sum().item()
        net.train()
        return loss / len(x), correct / len(x)

    for round in range(2):
        if round > 0:  # prune the smallest surviving weights of each layer, rewind to θ0, fresh Adam
            for name, rate in RATES.items():
                alive = params[name].detach().abs()[masks[name].bool()]
                threshold = alive.kthvalue(int(round_half(rate * alive.numel()))).values
                masks[name] = masks[name] * (params[name].detach().abs() > threshold)
            net.load_state_dict(theta0)
        optimizer = torch.optim.Adam(net.parameters(), lr=LR)
        weights, factors = [params[n] for n in masks], list(masks.values())
        with torch.no_grad():
            torch._foreach_mul_(weights, factors)
        best = (float("inf"), 0.0, 0)
        step = 0
        for _ in range(epochs_per_round):
            perm = torch.randperm(len(x_train), generator=shuffle)
            for batch, i in enumerate(range(0, len(x_train), BATCH), start=1):
                idx = perm[i : i + BATCH]
                loss = nn.functional.cross_entropy(net(x_train[idx]), y_train[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if round > 0:
                    with torch.no_grad():
                        torch._foreach_mul_(weights, factors)
                step += 1
                if batch % EVAL_EVERY == 0:
                    val_loss, _ = evaluate(x_val, y_val)
                    _, test_acc = evaluate(x_test, y_test)
                    best = min(best, (val_loss, test_acc, step))
        density = sum(float(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
        print(f"round {round}: density {density:.2%}, best val/loss {best[0]:.4f} at step {best[2]}, "
              f"test acc there {best[1]:.2%}")  # fmt: skip


def round_half(x: float) -> int:
    return int(x + 0.5)


def lth_train_command(epochs_per_round: int, wandb: bool, folder: Path, overrides: list[str]) -> list[str]:
    exe = Path(sys.executable).with_name("lth-train")
    base = [str(exe)] if exe.exists() else [sys.executable, "-m", "lth_wandb.train"]
    args = [
        "experiment=lenet_fashion_mnist",
        "pruning.rounds=1",
        f"pruning.epochs_per_round={epochs_per_round}",
        f"hydra.run.dir={folder}",
    ]
    args += ["wandb.mode=offline", f"wandb.dir={folder}"] if wandb else ["logger=none"]
    return base + args + overrides


def timed(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, the process and what it waited for, W&B's service included)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed with exit code {done.returncode}:\n{done.stdout[-3000:]}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs-per-round", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads on both sides (OMP_NUM_THREADS)")
    parser.add_argument("--bare", action="store_true", help="run the bare loop once, in this process")
    parser.add_argument("overrides", nargs="*", help="more lth-train overrides, e.g. optimizer.fused=true")
    args = parser.parse_args()
    if args.bare:
        return bare(args.epochs_per_round)
    if not DATA.is_dir():
        sys.exit(f"{DATA} is missing: apt-get install dataset-fashion-mnist")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "WANDB_SILENT": "true"}
    env.pop("WANDB_MODE", None)
    variants = {
        "bare": lambda folder: [sys.executable, __file__, "--bare", f"--epochs-per-round={args.epochs_per_round}"],
        "lth_train": lambda folder: lth_train_command(args.epochs_per_round, False, folder, args.overrides),
        "lth_train_wandb": lambda folder: lth_train_command(args.epochs_per_round, True, folder, args.overrides),
    }
    names = list(variants)
    times: dict[str, list[float]] = {v: [] for v in names}
    cpu: dict[str, list[float]] = {v: [] for v in names}
    with tempfile.TemporaryDirectory(prefix="lth-e2e-") as tmp:
        for repeat in range(args.repeats):
            for name in names[repeat % 3 :] + names[: repeat % 3]:  # rotate who goes first
                folder = Path(tmp) / f"{name}-{repeat}"
                folder.mkdir()
                seconds, cpu_seconds = timed(variants[name](folder), env, folder)
                times[name].append(seconds)
                cpu[name].append(cpu_seconds)
                print(f"repeat {repeat + 1}/{args.repeats} {name:<16} {seconds:7.2f} s wall {cpu_seconds:7.2f} s CPU")
    median = {v: statistics.median(t) for v, t in times.items()}
    median_cpu = {v: statistics.median(t) for v, t in cpu.items()}
    for v in names:
        print(
            f"  {v:<16} median {median[v]:7.2f} s wall (x{median[v] / median['bare']:.3f} vs bare), "
            f"{median_cpu[v]:7.2f} s CPU (x{median_cpu[v] / median_cpu['bare']:.3f})"
        )
    print(
        f"lth_train_vs_bare={median['lth_train'] / median['bare']:.3f} "
        f"lth_train_wandb_vs_bare={median['lth_train_wandb'] / median['bare']:.3f}"
    )


if __name__ == "__main__":
    main()
