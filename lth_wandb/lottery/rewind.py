"""What every round starts from: θ0, the rewind point, and each round's masks and trained weights.

Everything is kept as CPU copies, and restoring copies values back into the live tensors. Nothing saved here
ever shares storage with the model or the optimizer, the bug that makes Lightning's ``ModelPruning`` rewind
rounds >= 2 to drifted values.

Memory does not grow with the rounds beyond bit masks: each round's mask is kept bit-packed (1 bit a weight), and
with a ``spill_dir`` each finished round's trained weights go to a safetensors file there (written atomically,
checked against its SHA-256 when read back) instead of staying in RAM and in every checkpoint.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shlex
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from lth_wandb import atomic
from lth_wandb.pruning import masks as M
from lth_wandb.pruning.masks import Masks, StateDict, dense_state, sparse_state
from lth_wandb.pruning.ticket import Ticket


class RoundStates:
    """Snapshots for rewinding, and the record each :class:`~lth_wandb.Ticket` is built from.

    Args:
        rewind: ``"init"`` (θ0), an int k (the state after k optimizer steps), ``"lr"`` (keep the weights,
            replay the optimizer and LR schedule from step 0) or ``"none"`` (rewind nothing).
        spill_dir: where finished rounds' trained weights go (``round-<r>.safetensors``); None keeps them in RAM.
    """

    def __init__(self, rewind: str | int, spill_dir: str | os.PathLike | None = None):
        self.rewind = rewind
        self.spill_dir = None if spill_dir is None else Path(spill_dir)
        self.theta0: StateDict | None = None  # weights at step 0: round 0's starting point
        self.point: dict[str, Any] | None = None  # step, weights, optimizer and scheduler states to rewind to
        self.masks = RoundMasks()  # the mask each round trained with
        # The weights each finished round ended with, stored sparse: checkpoints hold every round, so their size
        # follows the sum of the densities rather than growing by a dense model per round.
        self.trained: dict[int, StateDict] = {}
        self.spilled: dict[int, dict[str, str]] = {}  # rounds whose trained weights are on disk: file, sha256
        self.draws: dict[int, StateDict] = {}  # fresh initial values of the reinit control, per round

    @property
    def rewind_step(self) -> int | None:
        """Optimizer step to capture the rewind point at; None when nothing is rewound."""
        if self.rewind == "none":
            return None
        return 0 if self.rewind in ("init", "lr") else int(self.rewind)

    def capture(self, step: int, module: nn.Module, optimizers: Iterable, schedulers: Iterable) -> None:
        """Remember θ0 at step 0 and the rewind point at its step; called at every step until both are taken."""
        if self.theta0 is None and step == 0:
            self.theta0 = clone_state(module.state_dict())
        if self.point is not None or self.rewind_step is None or step < self.rewind_step:
            return
        self.point = {
            "step": step,
            # Learning-rate rewinding keeps the trained weights: only the schedule is remembered.
            "weights": None if self.rewind == "lr" else clone_state(module.state_dict()),
            "optimizers": [copy.deepcopy(opt.state_dict()) for opt in optimizers],
            "schedulers": [copy.deepcopy(s.state_dict()) for s in schedulers],
        }

    def start_weights(self, round: int) -> StateDict:
        """The masked weights round ``round`` starts from: θ0, the rewind point, or the previous round's end."""
        if round == 0:
            base = self.theta0
        elif self.rewind in ("lr", "none"):
            base = self.trained_weights(round - 1)
        else:
            base = self.point["weights"] if self.point else None
        if base is None or round not in self.masks:
            raise ValueError(f"round {round} has not started training yet, so it has no starting weights")
        return masked({**base, **self.draws.get(round, {})}, self.masks[round])

    def record_trained(self, round: int, module: nn.Module) -> None:
        """Remember the weights ``round`` ended with (pruned entries are zero: only survivors are kept)."""
        sparse = sparse_state(clone_state(module.state_dict()), self.masks[round])
        if self.spill_dir is None:
            self.trained[round] = sparse
            return
        data = safetensors.torch.save({k: t.contiguous() for k, t in sparse.items()})
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        path = self.spill_dir / f"round-{round}.safetensors"
        atomic.write_bytes(path, data)  # durable before the checkpoint that refers to it is written
        self.spilled[round] = {"file": str(path.resolve()), "sha256": hashlib.sha256(data).hexdigest()}

    def _spilled_file(self, round: int) -> dict[str, str]:
        """Where round ``round``'s weights are now: in this run's spill_dir (a moved run folder still works),
        else where they were written."""
        entry = self.spilled[round]
        if self.spill_dir is not None:
            return {**entry, "file": str(self.spill_dir / Path(entry["file"]).name)}
        return entry

    def trained_weights(self, round: int) -> StateDict | None:
        """The dense weights ``round`` ended with, or None if it has not finished."""
        if round in self.spilled:
            return dense_state(_read_spilled(round=round, **self._spilled_file(round)), self.masks[round])
        if round not in self.trained:
            return None
        return dense_state(self.trained[round], self.masks[round])

    def ticket(self, round: int, metadata: dict[str, Any]) -> Ticket:
        """Round ``round``'s ticket: its masks, the weights it starts from and those it trained to (None while it
        trains), with ``metadata`` and the round's densities."""
        if round not in self.masks:
            raise ValueError(f"round={round!r} has no ticket; available rounds: {sorted(self.masks)}")
        masks = self.masks[round]
        metadata = {**metadata, "density": M.density(masks), "layer_density": M.layer_densities(masks)}
        return Ticket(M.copy_masks(masks), self.start_weights(round), self.trained_weights(round), metadata)

    def restore_optimizers(self, optimizers: Iterable, schedulers: Iterable) -> None:
        """Put optimizer and LR-scheduler state back to the rewind point (nothing for ``rewind="none"``)."""
        if self.point is None:
            return
        for opt, state in zip(optimizers, self.point["optimizers"], strict=True):
            # deepcopy: load_state_dict keeps the tensors it is given, and later steps update them in place.
            opt.load_state_dict(copy.deepcopy(state))
        for scheduler, state in zip(schedulers, self.point["schedulers"], strict=True):
            scheduler.load_state_dict(copy.deepcopy(state))

    def state_dict(self) -> dict[str, Any]:
        return {
            "theta0": self.theta0,
            "rewind_point": self.point,
            "round_masks": {r: self.masks[r] for r in self.masks},  # bool, as checkpoints have always held them
            "trained": self.trained,
            "trained_files": self.spilled,
            "reinit_draws": self.draws,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.theta0 = state["theta0"]
        self.point = state["rewind_point"]
        self.masks = RoundMasks(state["round_masks"])
        self.trained = dict(state["trained"])
        self.spilled = dict(state.get("trained_files", {}))
        self.draws = dict(state.get("reinit_draws", {}))


class RoundMasks(MutableMapping):
    """round -> masks, held bit-packed (a bool mask costs a byte a weight, a packed one a bit); each read unpacks a
    fresh copy."""

    def __init__(self, masks: Mapping[int, Masks] | None = None):
        self._packed: dict[int, dict[str, tuple[torch.Tensor, tuple[int, ...]]]] = {}
        self.update(masks or {})

    def __getitem__(self, round: int) -> Masks:
        return {name: M.unpack_bits(bits, shape) for name, (bits, shape) in self._packed[round].items()}

    def __setitem__(self, round: int, masks: Masks) -> None:
        self._packed[round] = {name: (M.pack_bits(m), tuple(m.shape)) for name, m in masks.items()}

    def __delitem__(self, round: int) -> None:
        del self._packed[round]

    def __iter__(self) -> Iterator[int]:
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)


def check_spilled(trained_files: Mapping[int, Mapping[str, str]], spill_dir: Path) -> None:
    """Read back every finished round's weight file a checkpoint refers to (``trained_files``) from ``spill_dir``,
    as a resume will; raises on the first that is missing, not a regular file or changed (see ``_read_spilled``)."""
    for round, entry in sorted(trained_files.items()):
        _read_spilled(str(Path(spill_dir) / Path(entry["file"]).name), entry["sha256"], round)


def _read_spilled(file: str, sha256: str, round: int) -> StateDict:
    """A finished round's trained weights, read back as untrusted bytes: a regular file in its folder, whose
    SHA-256 is the one recorded when it was written."""
    path = Path(file)
    if not os.path.lexists(path):
        raise FileNotFoundError(
            f"{file} is missing: it holds round {round}'s trained weights (LotteryTicket spill_dir). "
            + _restore_hint(path, round, sha256, "keep the run folder whole when moving it")
        )
    target = path.resolve()
    problem = None
    if not target.is_file():  # /dev/zero would be read until memory runs out, a FIFO forever
        problem = f"links to {target}, not a regular file" if path.is_symlink() else "is not a regular file"
    elif not target.is_relative_to(path.parent.resolve()):
        problem = f"links to {target}, outside its folder"
    if problem:
        raise ValueError(
            f"{file} {problem}; expected round {round}'s trained weights as LotteryTicket wrote them. "
            + _restore_hint(path, round, sha256, "")
        )
    data = target.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(
            f"{file} changed after it was written (SHA-256 differs): it cannot be trusted as round {round}'s "
            "trained weights. " + _restore_hint(path, round, sha256, "")
        )
    return safetensors.torch.load(data)


def _restore_hint(path: Path, round: int, sha256: str, otherwise: str) -> str:
    """What to do about a lost or changed round file: copy it back from the round's model ticket, which lth-train
    saves beside (``tickets/round-<r>/model/trained.safetensors``, the same bytes), when that file is whole."""
    saved = path.parent.parent / "tickets" / f"round-{round}" / "model" / "trained.safetensors"
    if saved.is_file() and not saved.is_symlink() and hashlib.sha256(saved.read_bytes()).hexdigest() == sha256:
        copy = f"rm -f {shlex.quote(str(path))} && cp {shlex.quote(str(saved))} {shlex.quote(str(path))}"
        return f"Hint: {saved} is a whole copy (its SHA-256 matches): {copy}, then resume again"
    return f"Hint: {otherwise or 'restore it from a copy of the run folder'}, or start a new run"


def fresh_values(source: Mapping[str, torch.Tensor], names: Iterable[str], seed: int) -> StateDict:
    """The reinit control's new initial values: each named tensor of ``source`` (θ0) with its values shuffled.

    A random permutation of a tensor's own initial values is a draw from the distribution it was initialised
    from, whatever initialiser the model used (a fresh ``reset_parameters()`` is not: ResNet's kaiming fan_out in
    ``__init__`` draws with 2.4x the std). Drawn under a seeded CPU generator: every rank and every resumed run
    draws the same values, and the global RNG is untouched.
    """
    generator = torch.Generator().manual_seed(seed)
    draws = {}
    for name in names:
        values = source[name].detach().to("cpu").reshape(-1)
        draws[name] = values[torch.randperm(values.numel(), generator=generator)].reshape(source[name].shape)
    return draws


def masked(state: Mapping[str, torch.Tensor], masks: Masks) -> StateDict:
    """A new state dict with the masked entries zeroed (tensors without a mask pass through)."""
    return {name: (t * masks[name].to(t.device) if name in masks else t) for name, t in state.items()}


def clone_state(state: Mapping[str, torch.Tensor]) -> StateDict:
    """Independent CPU copies of every tensor."""
    return {name: t.detach().to("cpu", copy=True) for name, t in state.items()}
