"""lth-sweep killed with SIGKILL: no run outlives it, and the restarted sweep runs and counts every run once.

Real processes throughout: lth-sweep in a subprocess, its runs (lth-train with W&B offline, each with W&B's
service, wandb-core), found through /proc by the sweep directory in their environment, cwd or command line.
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
from conftest import subprocess_env
from waiting import wait_for
from wandb_files import round_rows

from lth_wandb.report.sources import collect_offline
from lth_wandb.report.summary import summary_text

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")

AGENT_COMMAND = ["${env}", "${interpreter}", "-m", "lth_wandb.train", "${args_no_hyphens}"]
TINY = {"pruning.rounds": 1, "trainer.enable_progress_bar": False}
# Two epochs per round: each run outlives the moment the test sees it started, so the kill lands mid-run.
GRID = {
    "method": "grid",
    "metric": {"name": "ticket/winning_density", "goal": "minimize"},
    "parameters": {
        "seed": {"values": [0, 1]},
        **{k: {"value": v} for k, v in TINY.items()},
        "pruning.epochs_per_round": {"value": 2},
    },
    "command": AGENT_COMMAND,
}


def processes_under(root: Path, exclude: set[int] = frozenset()) -> dict[int, str]:
    """Live processes whose environment, working directory or command line names ``root``: pid -> command.

    Every process a run starts inherits ``WANDB_DIR=<its run directory>``, W&B's service included. Zombies have
    no environment, cwd or command line left, so only processes that still run are found.
    """
    root_text, found = str(root.resolve()), {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude or int(entry.name) == os.getpid():
            continue
        try:
            texts = [(entry / "environ").read_bytes(), (entry / "cmdline").read_bytes(), os.readlink(entry / "cwd")]
        except OSError:  # it ended meanwhile, or is not ours
            continue
        if any(root_text in (t.decode(errors="replace") if isinstance(t, bytes) else t) for t in texts):
            found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return found


def both_runs_started(out: Path, sweep_pid: int) -> dict[int, str] | None:
    """The runs' processes, once both runs have begun their W&B run (a run file, and W&B's service)."""
    if len(list(out.glob("runs/*/wandb/offline-run-*/*.wandb"))) < 2:
        return None
    found = processes_under(out, exclude={sweep_pid})
    return found if sum("wandb-core" in cmd for cmd in found.values()) == 2 else None


@pytest.mark.slow
def test_sigkilled_sweep_leaves_no_process_and_restart_counts_each_run_once(tmp_path):
    sweep_file, out = tmp_path / "grid.yaml", tmp_path / "out"
    sweep_file.write_text(yaml.safe_dump(GRID, sort_keys=False))
    command = [sys.executable, "-m", "lth_wandb.sweeps.cli", str(sweep_file), "--workers", "2", "--dir", str(out)]
    with open(tmp_path / "first.log", "wb") as log:
        sweep = subprocess.Popen(command, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        started = wait_for(lambda: both_runs_started(out, sweep.pid), 120, "both runs and their W&B services")
    finally:
        sweep.send_signal(signal.SIGKILL)
        sweep.wait()
    assert sum("lth_wandb.train" in cmd for cmd in started.values()) == 2, started
    cut = json.loads((out / "sweep.json").read_text())["runs"]
    assert [r["state"] for r in cut] == ["running", "running"]  # the kill came mid-run

    # Every process of the runs goes with lth-sweep: lth-train by its death signal, wandb-core after its parent.
    wait_for(lambda: not processes_under(out), 10, f"the runs' processes to end: {processes_under(out)}")

    again = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("started again (attempt 2") == 2
    final = json.loads((out / "sweep.json").read_text())
    assert [(r["run_id"], r["state"], r["attempt"]) for r in final["runs"]] == [
        (r["run_id"], "finished", 2) for r in cut
    ]
    assert sorted(r["params"]["seed"] for r in final["runs"]) == [0, 1]  # each grid point once
    assert not any("retries" in r for r in final["runs"])  # lth-sweep's own death spends no run's retry
    assert sorted(final["leaderboard"]) == sorted(r["run_id"] for r in cut)
    for record in final["runs"]:
        run_dir = out / record["directory"]
        # The second attempt continued the first: one run folder, and one W&B run with each round row once.
        (folder,) = run_dir.glob("outputs/*/*")
        assert json.loads((folder / "run.json").read_text())["status"] == "finished"
        ids, rows = round_rows(run_dir / "wandb")
        assert ids == {record["run_id"]} and [r["round"] for r in rows] == [0, 1]
        assert "continuing W&B run" in (run_dir / "output.log").read_text()

    # lth-report reads the whole tree (two attempts' files per run) and counts each run once.
    study = collect_offline(out)
    assert sorted(r.run_id for r in study.runs) == sorted(r["run_id"] for r in cut)
    assert all(r.status == "finished" and r.rounds[0].round == 0 for r in study.runs)
    assert study.skipped == []  # the cut-off attempts are superseded, not unreadable runs
    assert summary_text(study).startswith("2 runs: 2 finished")
    assert not processes_under(out)
