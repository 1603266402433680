"""A NaN or infinite training loss stops the run with one line naming the step, a failed W&B run and exit 1, and
nothing is pruned from (or saved of) the NaN weights. Through LotteryTicket in a Trainer, and through lth-train."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import TinyNet, loaders, subprocess_env, trainer
from torch.utils.data import DataLoader, TensorDataset

from lth_wandb import LotteryTicket
from lth_wandb.lottery.finite import NonFiniteLoss
from lth_wandb.tracking.runfiles import find_runs, read_run

USERPKG = Path(__file__).parent / "userpkg"


def nan_at(batch: int, n: int = 256, batch_size: int = 32):
    """Loaders whose training batch ``batch`` (0-based) holds a NaN input; no shuffling, so the step is known."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 20, generator=g)
    y = x[:, :3].argmax(1)
    x_bad = x.clone()
    x_bad[batch * batch_size + 3, 0] = float("nan")
    return DataLoader(TensorDataset(x_bad, y), batch_size=batch_size), DataLoader(TensorDataset(x, y), batch_size=128)


@pytest.mark.parametrize("steps_per_round", [None, 4])
def test_a_nan_loss_stops_the_round_before_anything_is_pruned(steps_per_round):
    """Batch 5 of 8 is NaN: optimizer step 6. Rounds of an epoch stop at round 0's end; rounds of 4 steps at round
    1's end (step 8), round 0 (finite) recorded and pruned; each before the NaN round is recorded or pruned."""
    pl.seed_everything(0, verbose=False)
    cb = LotteryTicket(rounds=2, epochs_per_round=1, prune_rate=0.5, steps_per_round=steps_per_round)
    train, val = nan_at(5)
    round = 0 if steps_per_round is None else 1
    message = rf"the training loss is NaN at optimizer step 6 \(round {round}\): .* nothing is pruned or saved from"
    with pytest.raises(NonFiniteLoss, match=message + r" this round.*Hint: lower the learning rate"):
        trainer([cb]).fit(TinyNet(), train, val)
    assert [h["round"] for h in cb.history] == ([] if steps_per_round is None else [0])
    assert cb.round == round and cb.density() == (1.0 if round == 0 else 0.5)  # nothing pruned from NaN weights


def test_a_diverging_learning_rate_stops_at_its_first_infinite_loss():
    pl.seed_everything(0, verbose=False)
    cb = LotteryTicket(rounds=1, epochs_per_round=2, prune_rate=0.5)
    with pytest.raises(NonFiniteLoss, match=r"the training loss is (NaN|inf) at optimizer step \d+ \(round 0\)"):
        trainer([cb]).fit(TinyNet(optimizer="sgd", lr=1e6), *loaders())
    assert cb.history == []


def test_lth_train_stops_a_nan_run_in_one_line_with_a_failed_wandb_run(tmp_path):
    env = subprocess_env(PYTHONPATH=str(USERPKG))
    command = [sys.executable, "-m", "lth_wandb.train", "data._target_=signals.NaNInputs", "pruning.rounds=1",
               "pruning.epochs_per_round=1", "trainer.enable_progress_bar=false"]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 1, done.stderr[-3000:]
    ours = [line for line in done.stderr.splitlines() if line.startswith("lth-train")]
    (line,) = ours  # no "continue this run with": a resume would reach the same NaN
    assert line.startswith("lth-train: stopped: the training loss is NaN at optimizer step ")
    assert "(round 0)" in line and "this run cannot continue as it is" in line and "optimizer.lr" in line
    (run_dir,) = find_runs(tmp_path / "wandb")
    run = read_run(run_dir)
    assert run.state == "failed" and run.exit_code == 1
    assert not [r for r in run.history if "round/density" in r] and not run.artifacts
    (folder,) = tmp_path.glob("outputs/*/*")
    assert not (folder / "tickets").exists() and not (folder / "rounds").exists()
    # The run is recorded as one that cannot continue: a resume says so in one line instead of training again.
    assert json.loads((folder / "run.json").read_text())["status"] == "failed"
    again = subprocess.run([*command[:3], f"resume={folder}"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 2 and "cannot continue: " in again.stderr and "Hint: start a new run" in again.stderr
    assert len(find_runs(tmp_path / "wandb")) == 1  # no second W&B attempt
