"""Nothing lost, round 2: ``lth-train`` killed or stopped at the newer surfaces' moments (the instability analysis,
an early-bird round 0), two resumes at once, a resume from elsewhere, a lost checkpoint, signals, and sweep values
that look like interpolations. Real processes throughout, through ``lth-train`` itself.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import subprocess_env
from test_resume import FAULTS, run_folder, tickets
from waiting import wait_for
from wandb_files import round_rows, written_runs

pytestmark = pytest.mark.slow
TINY = ("trainer.enable_progress_bar=false",)
INSTABILITY = ("pruning.rounds=1", "pruning.epochs_per_round=2", "instability=lmc", "instability.steps=[0,5]")
EARLY_BIRD = ("pruning=early_bird", "pruning.rounds=1", "pruning.epochs_per_round=10")


def lth_train(cwd: Path, *args: str, fault: str | None = None, **env: str) -> subprocess.Popen:
    extra = {"LTH_FAULT": fault, "PYTHONPATH": str(FAULTS)} if fault else {}
    if "LTH_PACE" in env:
        extra["PYTHONPATH"] = str(FAULTS)
    command = [sys.executable, "-m", "lth_wandb.train", *TINY, *args]
    return subprocess.Popen(command, cwd=cwd, env=subprocess_env(**extra, **env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def done(process: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def instability_rows(where: Path) -> list[tuple[int, int]]:
    """(round, k) of every ``round/instability`` row in the run files, and how many path tables were logged."""
    rows = [row for run in written_runs(where) for row in run.history]
    return sorted((r["round"], r["round/instability_step"]) for r in rows if "round/instability" in r)


def path_tables(where: Path) -> int:
    return sum("instability/paths" in row for run in written_runs(where) for row in run.history)


def test_killed_while_the_instability_results_are_logged_resumes_logging_each_row_once(tmp_path):
    # Killed while run.json is being marked finished: the analysis is done and logged, the run not yet finished.
    killed = done(lth_train(tmp_path, *INSTABILITY, fault="fsync:*/.run.json.*.tmp:2"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    # What reached the run file before the kill (W&B writes it every second) must not be logged again.
    assert set(instability_rows(tmp_path)) <= {(0, 0), (0, 5), (1, 0), (1, 5)}
    report = (run_folder(tmp_path) / "instability.json").read_bytes()
    resumed = done(lth_train(tmp_path, f"resume={run_folder(tmp_path)}"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "computed before the run was cut off" in resumed.stdout  # not trained again
    assert instability_rows(tmp_path) == [(0, 0), (0, 5), (1, 0), (1, 5)] and path_tables(tmp_path) == 1
    assert (run_folder(tmp_path) / "instability.json").read_bytes() == report
    ids, rows = round_rows(tmp_path)
    assert len(ids) == 1 and [r["round"] for r in rows] == [0, 1]


def test_killed_in_an_early_bird_round_0_resumes_to_the_tickets_of_an_uninterrupted_run(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    full.mkdir(), cut.mkdir()
    assert done(lth_train(full, *EARLY_BIRD)).returncode == 0
    killed = done(lth_train(cut, *EARLY_BIRD, fault="fsync:*/checkpoints/.last.ckpt.*.tmp:4"))  # in round 0
    assert killed.returncode == -signal.SIGKILL
    resumed = done(lth_train(cut, f"resume={run_folder(cut)}"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert tickets(run_folder(cut)) == tickets(run_folder(full))  # the metrics snapshot included
    assert round_rows(cut)[1] == round_rows(full)[1]


def test_two_resumes_at_once_one_trains_and_the_other_says_who_does(tmp_path):
    killed = done(lth_train(tmp_path, "pruning.rounds=2", fault="replace:*/tickets/round-0/model/ticket.json:1"))
    assert killed.returncode == -signal.SIGKILL
    folder = run_folder(tmp_path)
    first = lth_train(tmp_path, f"resume={folder}", LTH_PACE="2")  # rounds 1 and 2 take a while
    wait_for(lambda: f"PID {first.pid} " in (folder / ".lock").read_text(), 120, "the first resume's lock")
    second = done(lth_train(tmp_path, f"resume={folder}"))
    assert second.returncode == 2 and f"is being trained by PID {first.pid}" in second.stderr, second.stderr
    assert done(first).returncode == 0
    ids, rows = round_rows(tmp_path)
    assert len(ids) == 1 and [r["round"] for r in rows] == [0, 1, 2]


def test_a_resume_from_another_directory_writes_to_the_runs_wandb_folder(tmp_path):
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir(), elsewhere.mkdir()
    killed = done(lth_train(here, "pruning.rounds=2", fault="replace:*/tickets/round-1/model/ticket.json:1"))
    assert killed.returncode == -signal.SIGKILL
    resumed = done(lth_train(elsewhere, f"resume={run_folder(here)}"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (elsewhere / "wandb").exists()
    ids, rows = round_rows(here)
    assert len(ids) == 1 and [r["round"] for r in rows] == [0, 1, 2]


def test_a_lost_checkpoint_with_finished_rounds_on_disk_is_refused_in_one_line(tmp_path):
    killed = done(lth_train(tmp_path, "pruning.rounds=2", fault="replace:*/tickets/round-1/model/ticket.json:1"))
    assert killed.returncode == -signal.SIGKILL
    folder = run_folder(tmp_path)
    (folder / "checkpoints" / "last.ckpt").unlink()
    files = sorted(p.name for p in (tmp_path / "wandb").iterdir())
    refused = done(lth_train(tmp_path, f"resume={folder}"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "has no checkpoints/last.ckpt, but rounds [0, 1] finished" in refused.stderr
    assert sorted(p.name for p in (tmp_path / "wandb").iterdir()) == files  # no W&B run started


@pytest.mark.parametrize("moment", ["training", "instability"])
def test_sigterm_exits_143_with_the_continue_line_and_a_failed_wandb_run(tmp_path, moment):
    process = lth_train(tmp_path, *INSTABILITY, LTH_PACE="0.3")
    marker = "checkpoints/last.ckpt" if moment == "training" else "tickets/round-1/model/ticket.json"
    wait_for(lambda: any(tmp_path.glob(f"outputs/*/*/{marker}")), 300, marker)
    if moment == "instability":
        time.sleep(1)  # the copies train now
    process.send_signal(signal.SIGTERM)
    stopped = done(process)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert "lth-train: SIGTERM; continue this run with: lth-train resume=" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    (run,) = written_runs(tmp_path)
    assert run.exit_code == 143
    assert json.loads((run_folder(tmp_path) / "run.json").read_text())["status"] == "running"


def test_sweep_values_that_look_like_interpolations_arrive_as_written(tmp_path):
    params = tmp_path / "config-abc.yaml"
    params.write_text("wandb.group:\n  value: ${oc.env:SECRET}\n")
    process = lth_train(
        tmp_path, "pruning.rounds=0", "wandb.group=${oc.env:SECRET}", SECRET="hunter2",
        WANDB_SWEEP_PARAM_PATH=str(params),
    )  # fmt: skip
    finished = done(process)
    assert finished.returncode == 0, finished.stderr[-3000:]
    record = (run_folder(tmp_path) / "run.json").read_text()
    assert "hunter2" not in record and json.loads(record)["config"]["wandb"]["group"] == "${oc.env:SECRET}"
    (run,) = written_runs(tmp_path)
    assert run.group == "${oc.env:SECRET}"


@pytest.mark.parametrize("damage", ["missing", "not YAML"])
def test_an_older_run_without_its_overrides_says_which_file_and_what_to_do(tmp_path, damage):
    killed = done(lth_train(tmp_path, "pruning.rounds=2", fault="replace:*/tickets/round-0/model/ticket.json:1"))
    assert killed.returncode == -signal.SIGKILL
    folder = run_folder(tmp_path)
    record = json.loads((folder / "run.json").read_text())
    del record["overrides"]  # as lth-train wrote it before run.json kept the overrides
    (folder / "run.json").write_text(json.dumps(record))
    overrides = folder / ".hydra" / "overrides.yaml"
    overrides.unlink() if damage == "missing" else overrides.write_text("[unclosed")
    refused = done(lth_train(tmp_path, f"resume={folder}"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert str(overrides) in refused.stderr and "Hint: give the run's overrides again" in refused.stderr


def test_a_changed_round_file_is_found_before_wandb_starts(tmp_path):
    killed = done(lth_train(tmp_path, "pruning.rounds=2", "pruning.epochs_per_round=1",
                            fault="replace:*/checkpoints/last.ckpt:2"))  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    round_file = run_folder(tmp_path) / "rounds" / "round-0.safetensors"
    round_file.write_bytes(round_file.read_bytes() + b"\0")
    files = sorted(p.name for p in (tmp_path / "wandb").iterdir())
    refused = done(lth_train(tmp_path, f"resume={run_folder(tmp_path)}"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"{round_file} changed after it was written" in refused.stderr and "Hint: " in refused.stderr
    assert "continue this run with" not in refused.stderr  # it cannot, as it is
    assert sorted(p.name for p in (tmp_path / "wandb").iterdir()) == files  # no W&B attempt
