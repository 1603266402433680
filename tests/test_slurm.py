"""lth-sweep and lth-train on a real one-node SLURM cluster (tests/slurm_cluster.py), with the faults a cluster has:
a controller restart, lth-sweep itself SIGKILLed, a job cancelled, preempted or requeued, Ctrl+C, a request no node
can meet. Each fault ends with nothing lost, nothing trained twice, nothing left running and one line saying what
happened. Real processes throughout: lth-sweep, sbatch, slurmd's jobs, lth-train and W&B offline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import online_env, subprocess_env
from test_resume import tickets
from wandb_files import artifact_versions, round_rows

from lth_wandb.sweeps.slurm import SlurmLauncher

pytestmark = pytest.mark.slow
FAULTS = Path(__file__).parent / "faults"
ROOT = Path(__file__).resolve().parents[1]
COMMAND = ["${env}", "${interpreter}", "-m", "lth_wandb.train", "${args_no_hyphens}"]
# 3 rounds of 2 short epochs; LTH_PACE makes each epoch last a second, so a fault lands mid-run on any machine.
TINY = {"pruning.rounds": 2, "pruning.epochs_per_round": 2, "trainer.limit_train_batches": 5,
        "trainer.enable_progress_bar": False}  # fmt: skip
PACE = {"LTH_PACE": "1", "PYTHONPATH": str(FAULTS)}


def grid(tmp_path: Path, seeds: list[int], **fixed) -> Path:
    config = {
        "method": "grid",
        "metric": {"name": "ticket/winning_density", "goal": "minimize"},
        "command": COMMAND,
        "parameters": {"seed": {"values": seeds}, **{k: {"value": v} for k, v in {**TINY, **fixed}.items()}},
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def lth_sweep(cluster, cwd: Path, *args: str, **env: str) -> subprocess.Popen:
    """lth-sweep with --launcher slurm on the test cluster, its output in ``cwd/sweep-<n>.log``."""
    log = cwd / f"sweep-{len(list(cwd.glob('sweep-*.log')))}.log"
    command = [sys.executable, "-m", "lth_wandb.sweeps.cli", *args, "--launcher", "slurm", "--check-every", "1"]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, cwd=cwd, env=subprocess_env(**cluster.env, **env), stdout=out, stderr=subprocess.STDOUT
        )
    process.log = log
    return process


def finished(process: subprocess.Popen, timeout: float = 600) -> str:
    """Wait for lth-sweep; its output (the test fails with it on a non-zero exit)."""
    code = process.wait(timeout=timeout)
    text = process.log.read_text()
    assert code == 0, text[-4000:]
    assert "Traceback" not in text, text[-4000:]
    return text


def runs_of(out: Path) -> list[dict]:
    path = out / "sweep.json"
    return json.loads(path.read_text())["runs"] if path.is_file() else []


def assert_one_clean_wandb_run_per_run(out: Path) -> None:
    """Each run: one W&B run id over all its attempts' files, each round row and artifact version once, one run
    folder, and no traceback in anything the run printed."""
    for run in runs_of(out):
        directory = out / run["directory"]
        ids, rows = round_rows(directory / "wandb")
        assert ids == {run["run_id"]}, (run, ids)
        assert [r["round"] for r in rows] == [0, 1, 2], run
        assert artifact_versions(directory / "wandb") == sorted(
            (kind, (f"round-{r}",)) for kind in ("model", "ticket") for r in range(3)
        )
        (folder,) = directory.glob("outputs/*/*")  # one lth-train run folder: every attempt continued it
        assert json.loads((folder / "run.json").read_text())["status"] == "finished"
        assert "Traceback" not in (directory / "output.log").read_text()


def has_checkpoint(out: Path, run: dict) -> bool:
    return any((out / run["directory"]).glob("outputs/*/*/checkpoints/last.ckpt"))


def test_each_run_is_a_slurm_job_with_its_id_recorded_and_no_gpu_asked(cluster, tmp_path):
    sweep = lth_sweep(cluster, tmp_path, str(grid(tmp_path, [0, 1])), "--workers", "2", "--dir", "out")
    text = finished(sweep)
    runs = runs_of(tmp_path / "out")
    assert [r["state"] for r in runs] == ["finished", "finished"]
    jobs = [r["job_id"] for r in runs]
    assert len(set(jobs)) == 2 and all(r["jobs"] == [r["job_id"]] for r in runs)
    completed = (cluster.folder / "jobcomp.log").read_text()
    assert all(f"JobId={job} " in completed for job in jobs) and "JobState=COMPLETED" in completed
    for run in runs:
        script = (tmp_path / "out" / run["directory"] / "job.sh").read_text()
        asks = [line for line in script.splitlines() if line.startswith("#SBATCH")]
        assert not any("--gpus" in line or "--gres" in line for line in asks), asks  # a CPU partition takes it
        assert f"export WANDB_RUN_ID={run['run_id']}" in script
    assert "Sweep" in text and text.count("finished ticket/winning_density") == 2
    assert "sacct" not in text  # the test cluster has no accounting, and lth-sweep needs none
    assert_one_clean_wandb_run_per_run(tmp_path / "out")


@pytest.mark.parametrize(
    "args, said",
    [
        (["--slurm", "cpus-per-task=999"], "Requested node configuration is not available"),
        (["trainer=gpu"], "Invalid generic resource"),  # a run that asks for a GPU on a cluster without any
    ],
    ids=["more-cpus-than-any-node", "gpu-without-gpus"],
)
def test_a_request_no_node_can_meet_fails_in_one_line_before_any_run(cluster, tmp_path, args, said):
    sweep = lth_sweep(cluster, tmp_path, str(grid(tmp_path, [0])), "--dir", "out", *args)
    code = sweep.wait(timeout=300)
    text = sweep.log.read_text()
    assert code == 2 and said in text and "Traceback" not in text, text
    assert len(text.strip().splitlines()) == 1
    assert runs_of(tmp_path / "out") == [] and cluster.jobs() == []


def test_a_job_that_can_never_start_is_cancelled_with_one_line(cluster, tmp_path, monkeypatch):
    """The safety net behind the check above: a job already pending for a reason that never resolves."""
    monkeypatch.setenv("SLURM_CONF", cluster.env["SLURM_CONF"])
    said: list[str] = []
    launcher = SlurmLauncher({"cpus-per-task": 999}, poll_every=0.5, say=said.append)
    job = launcher.start(["true"], tmp_path, dict(os.environ))
    code = cluster.wait_for(lambda: job.poll(), 60, "the job to be found unstartable")
    assert code == 2 and "never starts (PartitionConfig)" in job.ending["slurm_state"]  # not retried
    assert len(said) == 1 and "can never start: SLURM says PartitionConfig" in said[0]
    cluster.wait_for(lambda: not cluster.jobs(), 30, "the job to be cancelled")


def test_an_adopted_job_that_left_the_queue_has_ended(cluster, tmp_path, monkeypatch):
    """lth-sweep restarted after its job ended and left squeue (MinJobAge): the job is over, not watched for ever."""
    monkeypatch.setenv("SLURM_CONF", cluster.env["SLURM_CONF"])
    job = SlurmLauncher(poll_every=0.1, say=print).adopt("999999", tmp_path)  # an id squeue no longer lists
    assert cluster.wait_for(lambda: job.poll(), 30, "the adopted job to be found gone") == 1
    assert job.ending == {"slurm_state": "GONE"}


def test_a_submission_whose_answer_was_lost_is_watched_not_repeated(cluster, tmp_path, monkeypatch):
    """sbatch timed out, or lth-sweep stopped before saving the job id: the run's job, found by its name, is
    adopted; a second job would train the run twice."""
    monkeypatch.setenv("SLURM_CONF", cluster.env["SLURM_CONF"])
    said: list[str] = []
    launcher = SlurmLauncher(poll_every=0.1, say=said.append)
    first = launcher.start(["sleep", "60"], tmp_path, dict(os.environ))
    again = SlurmLauncher(poll_every=0.1, say=said.append).start(["sleep", "60"], tmp_path, dict(os.environ))
    assert again.job_id == first.job_id and cluster.jobs() == [first.job_id]
    assert said == [f"SLURM job {first.job_id} of {tmp_path.name} is already queued; watching it"]
    again.kill()
    cluster.wait_for(lambda: again.poll() is not None, 60, "the cancelled job to end")


def test_a_controller_restart_delays_the_submission_and_the_sweep_goes_on(cluster, tmp_path):
    cluster.stop_controller()
    try:
        sweep = lth_sweep(cluster, tmp_path, str(grid(tmp_path, [0])), "--dir", "out")
        cluster.wait_for(lambda: "does not answer" in sweep.log.read_text(), 120, "lth-sweep to notice")
        assert sweep.poll() is None  # it waits, it does not fail
    finally:
        cluster.start_controller()
    text = finished(sweep)
    assert text.count("does not answer") == 1 and "answers again" in text
    assert [r["state"] for r in runs_of(tmp_path / "out")] == ["finished"]
    assert_one_clean_wandb_run_per_run(tmp_path / "out")


def test_a_sigkilled_lth_sweep_adopts_its_running_jobs_and_trains_nothing_twice(cluster, tmp_path):
    path, out = str(grid(tmp_path, [0, 1])), tmp_path / "out"
    first = lth_sweep(cluster, tmp_path, path, "--workers", "2", "--dir", "out", **PACE)
    try:
        cluster.wait_for(lambda: len([r for r in runs_of(out) if has_checkpoint(out, r)]) == 2, 300, "two runs")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    jobs = [r["job_id"] for r in runs_of(out)]
    assert sorted(cluster.jobs()) == sorted(jobs)  # the jobs live on without lth-sweep
    text = finished(lth_sweep(cluster, tmp_path, path, "--workers", "2", "--dir", "out"))
    assert all(f"watching SLURM job {job} again" in text for job in jobs)
    runs = runs_of(out)
    assert [r["state"] for r in runs] == ["finished", "finished"]
    assert [r["jobs"] for r in runs] == [[job] for job in jobs]  # no second job for either run
    assert_one_clean_wandb_run_per_run(out)


def test_cancelled_preempted_and_requeued_jobs_continue_their_runs_into_one_wandb_run(cluster, tmp_path):
    """``scancel`` (the run is retried), submitit's preemption signal (``scancel --batch --signal=USR2``: the job
    requeues itself) and SLURM's own requeue (``scontrol requeue``, as preemption with PreemptMode=REQUEUE): each
    run continues from its checkpoint under its W&B run id, and the leaderboard says what happened."""
    out = tmp_path / "out"
    sweep = lth_sweep(cluster, tmp_path, str(grid(tmp_path, [0, 1, 2])), "--workers", "3", "--dir", "out", **PACE)
    faults = [
        ("scancel",),
        ("scancel", "--batch", "--signal=USR2"),
        ("scontrol", "requeue"),
    ]
    for index, fault in enumerate(faults):
        started = lambda i=index: len(runs_of(out)) > i and has_checkpoint(out, runs_of(out)[i])  # noqa: E731
        cluster.wait_for(started, 300, f"run {index}'s first checkpoint")
        cluster.run(*fault, runs_of(out)[index]["job_id"])
    text = finished(sweep)
    cancelled, preempted, requeued = runs_of(out)
    assert all(r["state"] == "finished" for r in (cancelled, preempted, requeued)), text
    assert cancelled["attempt"] == 2 and cancelled["attempts"][0]["slurm_state"] == "CANCELLED"
    assert len(cancelled["jobs"]) == 2 and "starting it again (attempt 2, retry 1 of 1)" in text
    assert cancelled["retries"] == 1 and "retries" not in preempted  # SLURM's own requeue is no retry
    for run in (preempted, requeued):  # SLURM ran the same job again
        assert run["jobs"] == [run["job_id"]] and run["attempts"][-1]["restarts"] == 1
    assert "attempt 2; 1: CANCELLED, exit 143" in (out / "sweep.csv").read_text()
    assert "requeued by SLURM 1x" in (out / "sweep.csv").read_text()
    assert_one_clean_wandb_run_per_run(out)


def test_ctrl_c_of_lth_sweep_stops_its_jobs_cleanly_and_a_restart_finishes_them(cluster, tmp_path):
    path, out = str(grid(tmp_path, [0])), tmp_path / "out"
    first = lth_sweep(cluster, tmp_path, path, "--dir", "out", **PACE)
    cluster.wait_for(lambda: runs_of(out) and has_checkpoint(out, runs_of(out)[0]), 300, "the run's first epoch")
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == 130
    assert cluster.jobs() == []  # stopped, not left running
    (run,) = runs_of(out)
    assert run["state"] == "interrupted"
    log = (out / run["directory"] / "output.log").read_text()
    assert "Traceback" not in log and "W&B's service had already stopped" not in log  # W&B ended the run itself
    finished(lth_sweep(cluster, tmp_path, path, "--dir", "out"))
    assert_one_clean_wandb_run_per_run(out)


def test_multi_node_ddp_recipe_under_srun_resumes_after_a_kill(cluster, tmp_path):
    """The docs' recipe (docs/slurm/ddp.sh): srun starts one task per device (2 here, on one node), Lightning takes
    the ranks from SLURM, and a requeued job continues its run, found by WANDB_RUN_ID."""
    script = tmp_path / "ddp.sh"
    script.write_text((ROOT / "docs" / "slurm" / "ddp.sh").read_text())
    run = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.num_nodes=1"]
    run += [f"{k}={v}" for k, v in TINY.items()]
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]])  # lth-train, as with the venv active
    env = subprocess_env(**cluster.env, **PACE, PATH=path)
    sbatch = ["sbatch", "--parsable", "--ntasks-per-node=2", str(script), *run]
    job = subprocess.run(sbatch, cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.strip()
    folder = tmp_path / "runs" / job
    cluster.wait_for(lambda: (folder / "checkpoints" / "last.ckpt").exists(), 300, "the first checkpoint")
    cluster.run("scancel", "--signal=KILL", "--full", job)  # every task dies at once, with no clean-up
    cluster.wait_for(lambda: cluster.job_state(job) not in ("RUNNING", "COMPLETING"), 60, "the job to die")
    cluster.run("scontrol", "requeue", job)
    cluster.wait_for(lambda: cluster.job_state(job) == "COMPLETED", 600, "the requeued job to complete")
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "finished"
    ids, rows = round_rows(tmp_path / "wandb")
    assert ids == {record["wandb_run_id"]} and [r["round"] for r in rows] == [0, 1, 2]
    assert tickets(folder)  # every round's ticket is there, written once by rank 0


def test_lth_sweep_without_slurm_commands_says_so(tmp_path):
    bare = tmp_path / "bin"
    bare.mkdir()
    os.symlink(sys.executable, bare / "python")
    command = [sys.executable, "-m", "lth_wandb.sweeps.cli", str(grid(tmp_path, [0])), "--launcher", "slurm"]
    done = subprocess.run(command, cwd=tmp_path, env=subprocess_env(PATH=str(bare)), capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "sbatch is not on PATH" in done.stderr


@pytest.mark.online
def test_wandb_agents_as_a_slurm_array_resume_a_preempted_task_into_its_run(cluster, wandb_server, tmp_path):
    """The docs' array script (docs/slurm/agents.sh) against the local W&B test server: two agents, one preempted
    mid-run (SIGUSR2, as before a time limit): its run is marked preempting, the task requeues itself, W&B hands the
    run back to its agent, and lth-train continues it; each run reaches the server once, each round row once."""
    import wandb
    from test_online import ENTITY, PROJECT, create_sweep

    config = yaml.safe_load(grid(tmp_path, [0, 1]).read_text())
    sweep = f"{ENTITY}/{PROJECT}/{create_sweep(wandb_server, tmp_path, config)}"
    env = online_env(wandb_server, tmp_path, **cluster.env, **PACE, AGENT_COUNT="1")
    sbatch = ["sbatch", "--parsable", "--array=0-1", str(ROOT / "docs" / "slurm" / "agents.sh"), sweep]
    job = subprocess.run(sbatch, cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.strip()
    task = tmp_path / "agents" / f"{job}-0"
    cluster.wait_for(lambda: any(task.glob("outputs/*/*/checkpoints/last.ckpt")), 300, "task 0's first checkpoint")
    cluster.run("scancel", "--batch", "--signal=USR2", f"{job}_0")
    cluster.wait_for(lambda: not cluster.jobs(), 600, "both agents to finish")
    runs = wandb.Api().sweep(sweep).runs
    assert len(runs) == 2 and all(run.state == "finished" for run in runs), [(r.id, r.state) for r in runs]
    for run in runs:
        rounds = [row["round"] for row in run.scan_history(keys=["round", "round/density"])]
        assert rounds == [0, 1, 2], (run.id, rounds)
        tickets = sorted(a.name.split(":")[0] + "@" + ",".join(a.aliases) for a in run.logged_artifacts())
        assert len(tickets) == 6, tickets  # ticket and model of each round, once
    log = (tmp_path / f"slurm-{job}_0.out").read_text()
    assert "continuing W&B run" in log and "Traceback" not in log
    assert cluster.job_state(f"{job}_0") == "COMPLETED"
