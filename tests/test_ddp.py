"""DDP through ``lth-train`` itself, with W&B: 2 CPU processes (gloo), one W&B run written by rank 0, each round row
and ticket once; rank 0 killed with SIGKILL (rank 1 goes with it) resumes into the same W&B run with the tickets of
an uninterrupted DDP run. And ``wandb.mode=disabled``, and ``trainer=ddp`` where it would start one process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import lth_train, subprocess_env
from test_resume import run_folder, tickets
from wandb_files import artifact_versions, round_rows

FAULTS = Path(__file__).parent / "faults"
DDP = ("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")
RUN = (*DDP, "pruning.rounds=2", "pruning.epochs_per_round=2")


def lth_train_ddp(cwd: Path, *args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = subprocess_env(**({"LTH_FAULT": fault, "PYTHONPATH": str(FAULTS)} if fault else {}))
    command = [sys.executable, "-m", "lth_wandb.train", "trainer.enable_progress_bar=false", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("ddp")
    done = lth_train_ddp(cwd, *RUN)
    assert done.returncode == 0, done.stderr[-3000:]
    return cwd


@pytest.mark.slow
def test_ddp_through_lth_train_is_one_wandb_run_with_each_round_and_ticket_once(uninterrupted):
    ids, rows = round_rows(uninterrupted)
    record = json.loads((run_folder(uninterrupted) / "run.json").read_text())
    assert ids == {record["wandb_run_id"]} and record["status"] == "finished"  # rank 0's run, and no other
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert artifact_versions(uninterrupted) == sorted(
        (kind, (f"round-{r}",)) for kind in ("model", "ticket") for r in range(3)
    )
    assert len(list(uninterrupted.glob("outputs/*/*"))) == 1  # the ranks shared one run folder


@pytest.mark.slow
def test_ddp_sigkill_of_rank_0_then_resume_equals_an_uninterrupted_ddp_run(tmp_path, uninterrupted):
    # Killed right after round 1's tickets are written: rank 1 must not train on alone.
    killed = lth_train_ddp(tmp_path, *RUN, fault="replace:*/tickets/round-1/model/ticket.json:1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    leftover = subprocess.run(["pgrep", "-f", f"hydra.run.dir=.*{tmp_path.name}"], capture_output=True, text=True)
    assert leftover.stdout == "", "a DDP rank outlived rank 0"
    resumed = lth_train_ddp(tmp_path, f"resume={run_folder(tmp_path)}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert tickets(run_folder(tmp_path)) == tickets(run_folder(uninterrupted))
    ids, rows = round_rows(tmp_path)
    assert len(ids) == 1 and [r["round"] for r in rows] == [0, 1, 2]
    assert artifact_versions(tmp_path) == artifact_versions(uninterrupted)


def test_trainer_ddp_that_would_start_one_process_is_refused_in_one_line(tmp_path):
    done = lth_train(tmp_path, "trainer=ddp", "trainer.accelerator=cpu")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "starts one process here" in done.stderr and "trainer.devices=2" in done.stderr
    assert not (tmp_path / "wandb").exists()


def test_wandb_mode_disabled_trains_and_writes_no_wandb_files(tmp_path):
    done = lth_train(tmp_path, "wandb.mode=disabled", "pruning.rounds=1", "trainer.limit_train_batches=3")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((run_folder(tmp_path) / "run.json").read_text())["status"] == "finished"
    assert not list(tmp_path.rglob("*.wandb"))


@pytest.mark.slow
def test_ddp_validates_every_n_steps_of_each_ranks_share_of_an_epoch(tmp_path):
    """Each rank trains on 1/world of the samples: the validation interval is clamped to that share's batches."""
    run = lth_train_ddp(tmp_path, *DDP, "pruning.rounds=0", "data.batch_size=200", "trainer.val_every_n_steps=5")
    assert run.returncode == 0, run.stderr[-3000:]
