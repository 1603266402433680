"""Bytes per round of the ticket and model artifacts vs a dense fp32 state_dict, LeNet-300-100.

Rounds 0, 3, 7, 12 and 15 of the paper's layer-wise schedule (20% per round, output layer 10%) give the
densities Frankle & Carbin report: 100%, 51.3%, 21.1%, 7.0% and 3.6%. Prints one row per density and the
ratio to the dense state_dict; the ideal for a sparse file is density + 1/32 (a bit per weight for the mask).

    python benchmarks/artifact_size.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from lth_wandb import Ticket
from lth_wandb.models import LeNet300100
from lth_wandb.pruning import masks as M
from lth_wandb.pruning.prune import prune

ROUNDS = (0, 3, 7, 12, 15)


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir())


def main() -> None:
    torch.manual_seed(0)
    net = LeNet300100()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    weights = {n: p for n, p in state.items() if n.endswith("weight")}
    tmp = Path(tempfile.mkdtemp())
    save_file(state, tmp / "dense.safetensors")
    dense = (tmp / "dense.safetensors").stat().st_size
    torch.save(state, tmp / "dense.pt")
    print(f"dense fp32 state_dict: {dense:,} bytes (safetensors), {(tmp / 'dense.pt').stat().st_size:,} (torch.save)")
    print(f"{'density':>8} {'ticket bytes':>13} {'model bytes':>12} {'model/dense':>12} {'ideal':>7}")
    masks = M.full_masks(weights)
    for r in range(max(ROUNDS) + 1):
        if r in ROUNDS:
            sparse = {k: (v * masks[k] if k in masks else v) for k, v in state.items()}
            ticket = Ticket(masks, sparse, sparse, {"round": r})
            t_bytes = folder_bytes(ticket.save(tmp / f"t{r}", parts=("rewind",)))
            m_bytes = folder_bytes(ticket.save(tmp / f"m{r}", parts=("trained",)))
            d = M.density(masks)
            print(f"{d:>8.1%} {t_bytes:>13,} {m_bytes:>12,} {m_bytes / dense:>12.3f} {d + 1 / 32:>7.3f}")
        masks = prune({k: v.abs() for k, v in weights.items()}, masks, 0.2, "layerwise", {"out.weight": 0.1})


if __name__ == "__main__":
    main()
