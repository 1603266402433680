"""lth-sweep's launchers: runs as child processes here (local) or as jobs through submitit (slurm), the controller
staying in lth-sweep. SLURM itself is not here: its jobs run through submitit's local executor, the same code path
with another executor."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import submitit
import yaml
from conftest import subprocess_env

from lth_wandb.sweeps import agent
from lth_wandb.sweeps.launchers import SLURM_DEFAULTS, SubmititLauncher, slurm_launcher
from lth_wandb.sweeps.leaderboard import SweepRecord
from lth_wandb.sweeps.runner import SweepRunner
from lth_wandb.tracking.runfiles import find_runs, read_run

ROOT = Path(__file__).resolve().parents[1]
TINY = {"pruning.rounds": 1, "pruning.epochs_per_round": 1, "trainer.enable_progress_bar": False}


def tiny_grid(tmp_path: Path) -> Path:
    config = agent.load_sweep(ROOT / "sweeps" / "controls_grid.yaml")
    config["parameters"] = {"seed": {"values": [0, 1]}, **{k: {"value": v} for k, v in TINY.items()}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_lth_sweep_sends_each_run_as_a_submitit_job(tmp_path, monkeypatch):
    for key, value in subprocess_env().items():  # the runs' environment comes from lth-sweep's
        monkeypatch.setenv(key, value)
    path = tiny_grid(tmp_path)
    executor = submitit.LocalExecutor(folder=tmp_path / "jobs")
    executor.update_parameters(timeout_min=10)
    with SweepRecord.open(tmp_path / "sweep", agent.load_sweep(path), str(path)) as record:
        code = SweepRunner(record, workers=2, launcher=SubmititLauncher(executor)).run()
        assert code == 0
        assert [r["state"] for r in record.runs] == ["finished", "finished"]
        seeds = set()
        for run in record.runs:
            folder = tmp_path / "sweep" / run["directory"]
            assert "Trainer.fit" in (folder / "output.log").read_text()  # the run's output, written by the job
            (written,) = [read_run(p) for p in find_runs(folder / "wandb")]
            assert written.run_id == run["run_id"] and written.group == f"sweep-{record.sweep_id}"
            seeds.add(written.config["seed"])
        assert seeds == {0, 1}
    assert len(list((tmp_path / "jobs").glob("*_result.pkl"))) == 2  # one submitit job per run


def test_a_stopped_job_passes_sigterm_on_to_its_run(tmp_path):
    """Early termination cancels the job; the run gets SIGTERM (Lightning's clean stop) and its exit code counts."""
    script = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(7)); print('up', flush=True); "
        "time.sleep(60)"
    )
    executor = submitit.LocalExecutor(folder=tmp_path / "jobs")
    run = SubmititLauncher(executor).start([sys.executable, "-c", script], tmp_path, dict(os.environ))
    log = tmp_path / "output.log"
    while "up" not in (log.read_text() if log.exists() else ""):
        assert run.poll() is None
        time.sleep(0.1)
    run.stop()
    assert run.wait(timeout=30) == 7


def test_a_job_gets_the_agent_variables_on_top_of_the_environment_where_it_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("LTH_TEST_KEPT", "node")  # as if set by SLURM on the node
    monkeypatch.setenv("WANDB_SWEEP_ID", "stale")
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SWEEP_ID"}
    env["WANDB_RUN_ID"] = "abc12345"
    script = "import os; print(*(os.environ.get(k) for k in ('LTH_TEST_KEPT', 'WANDB_RUN_ID', 'WANDB_SWEEP_ID')))"
    run = SubmititLauncher(submitit.LocalExecutor(folder=tmp_path / "jobs")).start(
        [sys.executable, "-c", script], tmp_path, env
    )
    assert run.wait(timeout=60) == 0
    assert (tmp_path / "output.log").read_text().split() == ["node", "abc12345", "None"]


def test_slurm_launcher_asks_for_the_hydra_slurm_defaults_and_takes_overrides(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit only looks for it; nothing is submitted
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    launcher = slurm_launcher(tmp_path / "slurm", {"slurm_partition": "gpu", "timeout_min": 60})
    parameters = launcher.executor._executor.parameters
    assert parameters["partition"] == "gpu" and parameters["time"] == 60
    assert parameters["gpus_per_node"] == SLURM_DEFAULTS["gpus_per_node"] and parameters["mem"] == "16GB"
    with pytest.raises(ValueError, match="--slurm: .*no_such_parameter"):
        slurm_launcher(tmp_path / "slurm", {"no_such_parameter": 1})


def lth_sweep(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lth_wandb.sweeps.cli", *args]
    return subprocess.run(command, cwd=cwd, env=subprocess_env(**env), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--slurm", "slurm_partition=gpu"], "--slurm needs --launcher slurm"),
        (["--launcher", "slurm", "--slurm", "partition"], "--slurm 'partition' is not KEY=VALUE"),
    ],
)
def test_lth_sweep_launcher_mistakes_fail_in_one_line(tmp_path, args, message):
    result = lth_sweep(tmp_path, str(tiny_grid(tmp_path)), *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "lth-sweeps").exists()


def test_lth_sweep_without_slurm_says_so(tmp_path):
    if subprocess.run(["sh", "-c", "command -v srun"], capture_output=True).returncode == 0:
        pytest.skip("SLURM is installed here")
    result = lth_sweep(tmp_path, str(tiny_grid(tmp_path)), "--launcher", "slurm")
    assert result.returncode == 2
    assert "--launcher slurm needs SLURM on this machine" in result.stderr and "--launcher local" in result.stderr



def test_lth_sweep_slurm_without_submitit_says_what_to_install(tmp_path):
    """A plain install has no submitit (it comes with the hpo extra): one line naming the extra, no traceback."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "submitit.py").write_text("raise ImportError('submitit hidden by the test')\n")
    result = lth_sweep(tmp_path, str(tiny_grid(tmp_path)), "--launcher", "slurm", PYTHONPATH=str(hide))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "submitit, which is not installed. Hint: pip install 'lth-wandb[hpo]'" in result.stderr
