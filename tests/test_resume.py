"""Nothing lost: ``lth-train`` itself, SIGKILLed at chosen moments, resumes with the README's command into the same
run folder and the same W&B run, and ends with the same tickets, history and round rows as an uninterrupted run.

Real processes throughout. The moments of a kill are chosen by tests/faults/sitecustomize.py, which sends the
process SIGKILL from inside a file write; nothing in lth_wandb knows about it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import subprocess_env
from wandb_files import artifact_versions, round_rows

from lth_wandb.app.resume import shell_override
from lth_wandb.tracking.runfiles import find_runs, read_run

pytestmark = pytest.mark.slow
FAULTS = Path(__file__).parent / "faults"
# 4 rounds of 2 epochs: 8 epoch-end checkpoints, tickets at the end of epochs 1, 3, 5 and 7.
RUN = ("pruning.rounds=3", "pruning.epochs_per_round=2", "trainer.enable_progress_bar=false")
TIMINGS = ("seconds",)  # wall-clock facts, the only thing two identical runs may disagree on


def lth_train(cwd: Path, *args: str, fault: str | None = None) -> subprocess.Popen:
    env = subprocess_env(**({"LTH_FAULT": fault, "PYTHONPATH": str(FAULTS)} if fault else {}))
    command = [sys.executable, "-m", "lth_wandb.train", *args]
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def run_folder(cwd: Path) -> Path:
    (folder,) = cwd.glob("outputs/*/*")
    return folder


def tickets(folder: Path) -> dict[str, object]:
    """Every round's ticket and model files: bytes of the tensors, ticket.json less its timings."""
    found = {}
    for path in sorted((folder / "tickets").rglob("*")):
        key = str(path.relative_to(folder))
        if path.suffix == ".safetensors":
            found[key] = path.read_bytes()
        elif path.name == "ticket.json":
            manifest = json.loads(path.read_text())
            found[key] = {k: v for k, v in manifest["metadata"].items() if k not in TIMINGS}
    return found


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("uninterrupted")
    result = finish(lth_train(cwd, *RUN))
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd


def assert_same_as(uninterrupted: Path, cwd: Path) -> None:
    folder = run_folder(cwd)
    assert tickets(folder) == tickets(run_folder(uninterrupted))
    ids, rows = round_rows(cwd)
    expected_ids, expected_rows = round_rows(uninterrupted)
    record = json.loads((folder / "run.json").read_text())
    assert ids == {record["wandb_run_id"]} and record["status"] == "finished"  # one W&B run, resumed
    assert [r["round"] for r in rows] == [0, 1, 2, 3]  # no round row lost or logged twice
    assert rows == expected_rows
    assert artifact_versions(cwd) == artifact_versions(uninterrupted)


def kill_and_resume(cwd: Path, fault: str, resume: str = "checkpoint") -> None:
    killed = finish(lth_train(cwd, *RUN, fault=fault))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    checkpoint = run_folder(cwd) / "checkpoints" / "last.ckpt"
    torch.load(checkpoint, weights_only=False)  # whatever the moment, the checkpoint on disk loads
    # The docs' two commands: resume=outputs/<date>/<time>/checkpoints/last.ckpt, and resume=last (the newest run).
    docs_command = f"resume={checkpoint.relative_to(cwd)}" if resume == "checkpoint" else "resume=last"
    resumed = finish(lth_train(cwd, docs_command))
    assert resumed.returncode == 0, resumed.stderr[-3000:]


@pytest.mark.parametrize(
    ("fault", "resume"),
    [
        # just after a round boundary: tickets written, no checkpoint
        ("replace:*/tickets/round-1/model/ticket.json:1", "checkpoint"),
        ("fsync:*/tickets/round-2/ticket/*.tmp:1", "checkpoint"),  # while a ticket artifact is being written
        ("fsync:*/checkpoints/.last.ckpt.*.tmp:4", "last"),  # while a checkpoint is being written
    ],
    ids=["after-round-boundary", "mid-ticket-write", "mid-checkpoint-write-resume-last"],
)
def test_sigkill_at_a_write_then_resume_matches_uninterrupted(tmp_path, uninterrupted, fault, resume):
    kill_and_resume(tmp_path, fault, resume)
    assert_same_as(uninterrupted, tmp_path)


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path, uninterrupted):
    process = lth_train(tmp_path, *RUN)
    deadline = time.monotonic() + 240
    while not list(tmp_path.glob("outputs/*/*/checkpoints/last.ckpt")):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()[-3000:]
        time.sleep(0.05)
    time.sleep(0.5)  # well inside the next epoch (an epoch takes about a second here)
    os.kill(process.pid, signal.SIGKILL)
    assert finish(process).returncode == -signal.SIGKILL
    resumed = finish(lth_train(tmp_path, f"resume={run_folder(tmp_path)}"))  # the run folder works too
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_as(uninterrupted, tmp_path)


def test_a_checkpoint_every_n_steps_resumes_mid_epoch_into_the_same_run(tmp_path):
    """trainer.checkpoint_every_n_steps=5 saves inside the 22-step epochs of digits; killed right after the save at
    step 5, the run resumes from it (not bit-exact mid-epoch: docs/resume.md) into one W&B run, each round once."""
    killed = finish(lth_train(tmp_path, *RUN, "trainer.checkpoint_every_n_steps=5",
                              fault="replace:*/checkpoints/last.ckpt:1"))  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    folder = run_folder(tmp_path)
    saved = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 5 and saved["epoch"] == 0
    resumed = finish(lth_train(tmp_path, f"resume={folder}"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ids, rows = round_rows(tmp_path)
    assert ids == {json.loads((folder / "run.json").read_text())["wandb_run_id"]}
    assert [r["round"] for r in rows] == [0, 1, 2, 3]


def test_full_disk_keeps_the_last_checkpoint_and_fails_in_one_line(tmp_path, uninterrupted):
    failed = finish(lth_train(tmp_path, *RUN, fault="enospc:*/checkpoints/.last.ckpt.*.tmp:3"))
    assert failed.returncode == 1
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("lth-train: disk full: [Errno 28] No space left on device"), failed.stderr[-3000:]
    folder = run_folder(tmp_path)
    assert f"lth-train resume={folder}" in failed.stderr  # says how to continue
    assert torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 1  # the 2nd save
    assert not list((folder / "checkpoints").glob(".*.tmp"))  # no half-written file left behind
    (run,) = [read_run(p) for p in find_runs(tmp_path / "wandb")]
    assert run.state == "failed" and run.exit_code == 1
    resumed = finish(lth_train(tmp_path, f"resume={folder}"))  # space is back
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_as(uninterrupted, tmp_path)


def test_full_disk_during_a_ticket_write_then_resume(tmp_path, uninterrupted):
    """The disk fills while round 1's ticket is written: one line, the previous round's files intact, nothing
    half-written left; resumed once space is back, the tickets equal an uninterrupted run's."""
    failed = finish(lth_train(tmp_path, *RUN, fault="enospc:*/tickets/round-1/*.tmp:2"))
    assert failed.returncode == 1, failed.stderr[-3000:]
    assert failed.stderr.strip().splitlines()[-1].startswith("lth-train: disk full: [Errno 28]"), failed.stderr
    folder = run_folder(tmp_path)
    assert not list((folder / "tickets").rglob("*.tmp"))
    assert tickets(folder).keys() >= {k for k in tickets(run_folder(uninterrupted)) if "round-0" in k}
    resumed = finish(lth_train(tmp_path, f"resume={folder}"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_as(uninterrupted, tmp_path)


def test_a_real_full_disk_during_a_checkpoint(tmp_path, uninterrupted):
    """An 8 MiB tmpfs holds the run folder; filled up after the first checkpoint (needs root to mount)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        folder = disk / "run"
        process = lth_train(tmp_path, *RUN, f"hydra.run.dir={folder}")
        while not (folder / "checkpoints" / "last.ckpt").exists():
            assert process.poll() is None, process.stderr.read()[-3000:]
            time.sleep(0.02)
        filler = disk / "filler"
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        filler.write_bytes(b"\0" * max(0, free - 64 * 1024))  # a checkpoint is ~1.5 MB
        failed = finish(process)
        assert failed.returncode == 1, failed.stderr[-3000:]
        assert "lth-train: disk full:" in failed.stderr
        state = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)  # still loads
        assert state["epoch"] >= 0
        filler.unlink()  # space is back
        resumed = finish(lth_train(tmp_path, f"resume={folder}"))
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert tickets(folder) == tickets(run_folder(uninterrupted))
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_resuming_a_finished_run_says_so_and_starts_no_wandb_run(uninterrupted):
    runs_before = find_runs(uninterrupted / "wandb")
    result = finish(lth_train(uninterrupted, f"resume={run_folder(uninterrupted)}"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already finished" in result.stdout and "nothing to resume" in result.stdout
    assert find_runs(uninterrupted / "wandb") == runs_before


def test_an_override_that_changes_the_run_is_refused_naming_the_key(tmp_path, uninterrupted):
    folder = tmp_path / "outputs" / "day" / "run"
    shutil.copytree(run_folder(uninterrupted), folder)
    record = json.loads((folder / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps({**record, "status": "running"}))  # as if killed
    result = finish(lth_train(tmp_path, f"resume={folder}/checkpoints/last.ckpt", "pruning.rounds=5"))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("lth-train: error: resume: pruning.rounds=5 differs from the run being resumed")
    assert not (tmp_path / "wandb").exists()
    allowed = finish(lth_train(tmp_path, f"resume={folder}", "trainer.enable_progress_bar=false", "logger=none"))
    assert allowed.returncode == 2 and "logger.name='none' differs" in allowed.stderr
    command = (folder / ".hydra" / "overrides.yaml").read_text()
    plain = finish(lth_train(tmp_path, f"resume={folder}"))  # the refused overrides left nothing behind
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert (folder / ".hydra" / "overrides.yaml").read_text() == command  # still the run's first command


def test_paths_with_spaces(tmp_path):
    folder = tmp_path / "my runs" / "lenet 1"
    quoted = f"hydra.run.dir='{folder}'"  # README: quote a path with spaces for Hydra
    first = finish(lth_train(tmp_path, "pruning.rounds=0", "pruning.epochs_per_round=1", "logger=none", quoted))
    assert first.returncode == 0, first.stderr[-3000:]
    again = finish(lth_train(tmp_path, f"resume={folder / 'checkpoints' / 'last.ckpt'}"))
    assert again.returncode == 0 and "already finished" in again.stdout, again.stderr[-3000:]
    quoted_too = finish(lth_train(tmp_path, f"resume='{folder}'"))  # Hydra's quoting, as for hydra.run.dir
    assert quoted_too.returncode == 0 and "already finished" in quoted_too.stdout, quoted_too.stderr[-3000:]
    assert shell_override(folder) == f'"resume=\'{folder}\'"'  # what lth-train prints to continue a run
