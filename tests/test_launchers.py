"""lth-sweep's launchers, the parts that need no cluster: the SLURM job's wrapper (lth_wandb.sweeps.job) with real
processes and signals, the batch script lth-sweep writes, and the --slurm options. Jobs on a real SLURM cluster are
in tests/test_slurm.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import subprocess_env

from lth_wandb.sweeps import agent
from lth_wandb.sweeps.slurm import SlurmLauncher, sbatch_options

ROOT = Path(__file__).resolve().parents[1]
TINY = {"pruning.rounds": 1, "pruning.epochs_per_round": 1, "trainer.enable_progress_bar": False}
# A run that says it is up, then waits; what it receives decides its exit code.
RUN = (
    "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(7)); print('up', flush=True); "
    "time.sleep(60)"
)


def tiny_grid(tmp_path: Path) -> Path:
    config = agent.load_sweep(ROOT / "sweeps" / "controls_grid.yaml")
    config["parameters"] = {"seed": {"values": [0, 1]}, **{k: {"value": v} for k, v in TINY.items()}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def wrapped(tmp_path: Path) -> subprocess.Popen:
    """The SLURM job's wrapper around RUN, started as a job's batch step would start it; returns once RUN is up."""
    command = [sys.executable, "-m", "lth_wandb.sweeps.job", str(tmp_path), sys.executable, "-c", RUN]
    job = subprocess.Popen(command, env=subprocess_env(SLURM_JOB_ID="42"))
    log = tmp_path / "output.log"
    while "up" not in (log.read_text() if log.exists() else ""):
        assert job.poll() is None
        time.sleep(0.05)
    return job


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=["scancel", "lth-sweep-stop"])
def test_the_job_wrapper_passes_a_stop_on_to_the_run_and_records_how_it_ended(tmp_path, signum):
    job = wrapped(tmp_path)
    job.send_signal(signum)
    assert job.wait(timeout=30) == 7  # the run's own exit code: it got SIGTERM
    ending = json.loads((tmp_path / "job-exit.json").read_text())
    assert ending["job_id"] == "42" and ending["exit_code"] == 7 and ending["requeued"] is False
    assert ending["signals"] == [signal.Signals(signum).name]
    assert (tmp_path / "output.log").read_text().startswith("=== lth-sweep: SLURM job 42 (restart 0)")


def test_the_run_ignores_the_signals_meant_for_the_wrapper(tmp_path):
    """SIGUSR1/SIGUSR2 reach every process of a batch step: the run (and W&B's service) must not die of them."""
    job = wrapped(tmp_path)
    run = int(subprocess.run(["pgrep", "-P", str(job.pid)], capture_output=True, text=True).stdout.split()[0])
    os.kill(run, signal.SIGUSR1)
    os.kill(run, signal.SIGUSR2)
    time.sleep(0.5)
    assert job.poll() is None  # still running
    job.send_signal(signal.SIGTERM)
    assert job.wait(timeout=30) == 7


def test_a_run_killed_by_a_signal_ends_the_job_with_128_plus_its_number(tmp_path):
    """The out-of-memory killer's SIGKILL, say: the job and job-exit.json say 137, as a shell would (not -9)."""
    job = wrapped(tmp_path)
    run = int(subprocess.run(["pgrep", "-P", str(job.pid)], capture_output=True, text=True).stdout.split()[0])
    os.kill(run, signal.SIGKILL)
    assert job.wait(timeout=30) == 137
    ending = json.loads((tmp_path / "job-exit.json").read_text())
    assert ending["exit_code"] == 137 and ending["signals"] == []


def test_the_batch_script_sets_the_agent_variables_on_top_of_the_node_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LTH_TEST_KEPT", "node")
    monkeypatch.setenv("WANDB_SERVICE", "stale")
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env["WANDB_RUN_ID"] = "abc12345"
    script = SlurmLauncher({"partition": "cpu"})._script(["lth-train", "seed=1"], tmp_path, env, gpus=0)
    lines = script.splitlines()
    assert "export WANDB_RUN_ID=abc12345" in lines and "unset WANDB_SERVICE" in lines
    assert not any("LTH_TEST_KEPT" in line for line in lines)  # the node's own environment stands
    assert "#SBATCH --partition=cpu" in lines and "#SBATCH --requeue" in lines
    assert not any("gpus" in line for line in lines if line.startswith("#SBATCH"))
    assert lines[-1].endswith(f"-m lth_wandb.sweeps.job {tmp_path} lth-train seed=1")
    gpu = SlurmLauncher({})._script(["lth-train"], tmp_path, env, gpus=2)
    assert "#SBATCH --gpus-per-node=2" in gpu.splitlines()  # only when the run asks for GPUs (trainer=gpu)


def test_slurm_options_take_sbatch_names_and_submitits(tmp_path):
    assert sbatch_options({"partition": "gpu", "cpus_per_task": 4, "mem_gb": 16, "timeout_min": 60}) == {
        "partition": "gpu", "cpus-per-task": "4", "mem": "16G", "time": "60"
    }  # fmt: skip
    with pytest.raises(ValueError, match="'no such' is not an sbatch option. Hint: --slurm partition=gpu"):
        sbatch_options({"no such": 1})


def lth_sweep(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lth_wandb.sweeps.cli", *args]
    return subprocess.run(command, cwd=cwd, env=subprocess_env(**env), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--slurm", "partition=gpu"], "--slurm needs --launcher slurm"),
        (["--launcher", "slurm", "--slurm", "partition"], "--slurm 'partition' is not KEY=VALUE"),
        (["--retries", "-1"], "--retries=-1 must be >= 0"),
    ],
)
def test_lth_sweep_launcher_mistakes_fail_in_one_line(tmp_path, args, message):
    result = lth_sweep(tmp_path, str(tiny_grid(tmp_path)), *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "lth-sweeps").exists()
