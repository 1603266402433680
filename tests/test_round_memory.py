"""Memory that does not grow with the rounds: bit-packed round masks, and finished rounds' trained weights spilled
to disk (LotteryTicket(spill_dir=...); lth-train's <run folder>/rounds) with tickets identical to in-memory ones."""

import os
import re
import shutil
import subprocess

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


def test_a_round_file_that_is_a_link_or_not_a_regular_file_is_refused_unread(tmp_path):
    cb = fit(tmp_path / "rounds")
    path = tmp_path / "rounds" / "round-1.safetensors"
    path.unlink()
    path.symlink_to("/dev/zero")  # read whole, it would fill the memory
    with pytest.raises(
        ValueError, match=r"round-1.safetensors links to /dev/zero, not a regular file; expected round 1"
    ):
        cb.ticket(1)
    path.unlink()
    os.mkfifo(path)  # read, it would block forever
    with pytest.raises(ValueError, match=r"round-1.safetensors is not a regular file.*Hint: restore it from a copy"):
        cb.ticket(1)
    path.unlink()
    outside = tmp_path / "elsewhere.safetensors"
    outside.write_bytes(b"weights from somewhere else")
    path.symlink_to(outside)
    with pytest.raises(ValueError, match=rf"links to {outside}, outside its folder"):
        cb.ticket(1)


def test_a_changed_round_file_points_to_the_saved_copy_of_its_weights(tmp_path):
    """lth-train saves each round's trained weights twice: rounds/round-<r>.safetensors and the round's model ticket
    (tickets/round-<r>/model/trained.safetensors, the same bytes); a changed round file says how to copy it back."""
    cb = fit(tmp_path / "rounds")
    path = tmp_path / "rounds" / "round-1.safetensors"
    copy = cb.ticket(1).save(tmp_path / "tickets" / "round-1" / "model", parts=("trained",)) / "trained.safetensors"
    assert copy.read_bytes() == path.read_bytes()
    path.write_bytes(path.read_bytes() + b"!")
    with pytest.raises(ValueError, match=r"changed after it was written") as info:
        cb.ticket(1)
    (hint,) = re.findall(r"is a whole copy \(its SHA-256 matches\): (.*), then resume again", str(info.value))
    assert hint == f"rm -f {path} && cp {copy} {path}"
    subprocess.run(hint, shell=True, check=True)
    assert_same_ticket(cb.ticket(1), fit().ticket(1))
    path.unlink()
    with pytest.raises(FileNotFoundError, match=rf"round-1.safetensors is missing.*Hint: {copy} is a whole copy"):
        cb.ticket(1)
