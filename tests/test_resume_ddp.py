"""Real processes: a run killed with SIGKILL mid-round resumes exactly; DDP ranks agree on masks and weights."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).parent / "scripts" / "train_tiny.py"
pytestmark = pytest.mark.slow


def run(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(out), *args], capture_output=True, text=True, timeout=300)


def assert_same_tensors(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module", params=[[], ["--shuffle"]], ids=["fixed-order", "shuffled"])
def uninterrupted(tmp_path_factory, request):
    out = tmp_path_factory.mktemp("full")
    result = run(out, *request.param)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, request.param


# Epochs 0-1 are round 0, 2-3 round 1, 4-5 round 2, 6-7 round 3. Stalling in epoch 3 resumes from the
# checkpoint of epoch 2 (mid-round); stalling in epoch 4 resumes from epoch 3's, saved just before the round ends.
# "shuffled": the user's DataLoader draws each epoch's order from the global RNG, which LotteryTicket checkpoints.
@pytest.mark.parametrize("stall_epoch", [3, 4])
def test_sigkill_mid_round_then_resume_matches_uninterrupted(tmp_path, uninterrupted, stall_epoch):
    uninterrupted, flags = uninterrupted
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(tmp_path), "--stall-at-epoch", str(stall_epoch), *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 240
    while not (tmp_path / "stalled").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "the run never reached the stall point"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "final.safetensors").exists()

    result = run(tmp_path, "--resume", *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_tensors(load_file(tmp_path / "final.safetensors"), load_file(uninterrupted / "final.safetensors"))
    assert (tmp_path / "history.txt").read_text() == (uninterrupted / "history.txt").read_text()


def test_ddp_two_cpu_processes_agree_on_masks_and_weights(tmp_path):
    result = run(tmp_path, "--ddp")
    assert result.returncode == 0, result.stderr[-3000:]
    for epoch in range(8):
        rank0 = load_file(tmp_path / f"rank0_epoch{epoch}.safetensors")
        rank1 = load_file(tmp_path / f"rank1_epoch{epoch}.safetensors")
        assert_same_tensors(rank0, rank1)
    final = load_file(tmp_path / "final.safetensors")
    density = sum(int(v.sum()) for k, v in final.items() if k.startswith("mask.")) / sum(
        v.numel() for k, v in final.items() if k.startswith("mask.")
    )
    assert density == pytest.approx(0.7**3, abs=0.01)
