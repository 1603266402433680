"""Memory that does not grow with the rounds: bit-packed round masks, and finished rounds' trained weights spilled
to disk (LotteryTicket(spill_dir=...); lth-train's <run folder>/rounds) with tickets identical to in-memory ones."""

import shutil

import pytest
import pytorch_lightning as pl
import torch
from conftest import TinyNet, loaders, trainer

from lth_wandb import LotteryTicket
from lth_wandb.lottery.rewind import RoundMasks


def fit(spill_dir=None, rounds=2):
    pl.seed_everything(0, verbose=False)
    cb = LotteryTicket(rounds=rounds, epochs_per_round=1, prune_rate=0.5, spill_dir=spill_dir)
    train, val = loaders()
    trainer([cb]).fit(TinyNet(), train, val)
    return cb


def assert_same_ticket(a, b):
    assert a.masks.keys() == b.masks.keys() and all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)
    for x, y in ((a.rewind_weights, b.rewind_weights), (a.trained_weights, b.trained_weights)):
        assert x.keys() == y.keys() and all(torch.equal(x[n], y[n]) for n in x)


def test_spilled_rounds_give_the_same_tickets_and_leave_ram_and_checkpoints(tmp_path):
    in_ram, spilled = fit(), fit(tmp_path / "rounds")
    for r in range(3):
        assert_same_ticket(in_ram.ticket(r), spilled.ticket(r))
    assert sorted(p.name for p in (tmp_path / "rounds").iterdir()) == [f"round-{r}.safetensors" for r in range(3)]
    state = spilled.state_dict()
    assert state["trained"] == {} and sorted(state["trained_files"]) == [0, 1, 2]
    assert len(in_ram.state_dict()["trained"]) == 3


def test_a_resumed_callback_reads_spilled_rounds_from_its_own_folder(tmp_path):
    """A checkpoint names the files; the run folder may have moved since (lth-train resume=<moved folder>)."""
    original = fit(tmp_path / "run" / "rounds")
    shutil.move(tmp_path / "run", tmp_path / "moved")
    resumed = LotteryTicket(rounds=2, epochs_per_round=1, prune_rate=0.5, spill_dir=tmp_path / "moved" / "rounds")
    resumed.load_state_dict(original.state_dict())
    expected = fit()  # the same run, in RAM
    assert_same_ticket(resumed.ticket(2), expected.ticket(2))


def test_a_changed_or_missing_spilled_file_fails_clearly(tmp_path):
    cb = fit(tmp_path)
    path = tmp_path / "round-1.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"round-1.safetensors changed after it was written \(SHA-256 differs\)"):
        cb.ticket(1)
    path.unlink()
    with pytest.raises(FileNotFoundError, match=r"round-1.safetensors is missing.*Hint: keep the run folder whole"):
        cb.ticket(1)
    assert cb.ticket(0).trained_weights is not None  # the other rounds are untouched


def test_round_masks_are_bit_packed_and_read_back_exactly():
    g = torch.Generator().manual_seed(0)
    masks = {"a": torch.rand(300, 784, generator=g) < 0.3, "b": torch.rand(10, 7, generator=g) < 0.5}
    store = RoundMasks({0: masks})
    packed_bytes = sum(bits.numel() for bits, _ in store._packed[0].values())
    assert packed_bytes == (300 * 784 + 7) // 8 + (70 + 7) // 8  # a bit a weight, not a byte
    assert all(torch.equal(store[0][n], masks[n]) for n in masks) and list(store) == [0]
    store[0]["a"][0, 0] = not store[0]["a"][0, 0]  # each read is a fresh copy: the store cannot be changed by it
    assert torch.equal(store[0]["a"], masks["a"])
