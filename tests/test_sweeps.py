"""Sweeps: every sweep file as `wandb agent` runs it, lth-sweep (grid, count, resume, hyperband), Hydra's Optuna
sweeper and submitit launcher. All offline; runs are read back from their W&B run files."""

import copy
import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sweeps
import torch
import yaml
from conftest import lth_train, subprocess_env
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args
from wandb.sdk.lib import config_util

from lth_wandb.app import train
from lth_wandb.app.config import OBJECTIVES
from lth_wandb.lottery.callback import LotteryTicket
from lth_wandb.sweeps import agent
from lth_wandb.sweeps import cli as sweep
from lth_wandb.sweeps.leaderboard import SweepRecord, rank, write_results
from lth_wandb.tracking.runfiles import find_runs, read_run

ROOT = Path(__file__).resolve().parents[1]
FAULTS = ROOT / "tests" / "faults"
SWEEP_FILES = sorted((ROOT / "sweeps").glob("*.yaml"))
# The study's grids (docs/results.md), run with lth-sweep: held to the same schema and keys.
EXPERIMENT_FILES = sorted((ROOT / "experiments").glob("*.yaml"))
AGENT_COMMAND = ["${env}", "${interpreter}", "-m", "lth_wandb.train", "${args_no_hyphens}"]
# A tiny budget, imposed the way a user would: as fixed values in the sweep file.
TINY = {"pruning.rounds": 1, "pruning.epochs_per_round": 1, "trainer.enable_progress_bar": False}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def tiny(config: dict, **fixed) -> dict:
    config = copy.deepcopy(config)
    config["parameters"].update({k: {"value": v} for k, v in {**TINY, **fixed}.items()})
    return config


def cfg_for(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="lth_wandb.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def as_hydra_reads(value):
    """What Hydra makes of a value the agent writes as `key=value`."""
    return None if value == "null" else value


def candidates(spec: dict) -> list:
    if "values" in spec:
        return spec["values"]
    if "value" in spec:
        return [spec["value"]]
    return [spec["min"], spec["max"]]


def logged_names() -> set[str]:
    """What the app logs: the Classifier's curves and the ticket summary (W&B summary `ticket/<key>`)."""
    summary = LotteryTicket(rounds=1, epochs_per_round=1).summary()
    return {"val/loss", "val/acc", "test/loss", "test/acc", "train/loss", "train/acc", "round/test_acc"} | {
        f"ticket/{k}" for k in summary
    }


# -- every sweep file ------------------------------------------------------------------------------------------


def test_the_sweep_files_exist():
    """The eight sweep files the docs' sweeps table lists, one row each."""
    assert {p.stem for p in SWEEP_FILES} == {
        "prune_rate_grid", "rewind_grid", "lr_bayes_hyperband", "controls_grid", "seed_hypothesis", "at_init",
        "early_bird", "instability",
    }  # fmt: skip


@pytest.mark.parametrize("path", SWEEP_FILES + EXPERIMENT_FILES, ids=lambda p: p.stem)
def test_sweep_file_matches_wandb_schema_and_the_app(path):
    config = load(path)
    assert sweeps.schema_violations_from_proposed_config(config) == []
    sweeps.SweepConfig(config)  # W&B's own validation raises on any violation
    assert agent.load_sweep(path) == config
    assert config["command"] == AGENT_COMMAND
    assert path.read_text().lstrip().startswith("#")  # says what it optimises and why
    assert config["metric"]["name"] in logged_names()
    assert config["metric"]["goal"] in ("minimize", "maximize")
    if "early_terminate" in config:
        # Hyperband counts logged values: the metric must come once per epoch (validation once per epoch).
        assert config["metric"]["name"].startswith("val/")
        assert config["parameters"]["trainer.val_every_n_steps"] == {"value": "null"}
    # Every value the engine can propose is a real key Hydra accepts, and arrives as that value.
    for name, spec in config["parameters"].items():
        assert "." in name or name in ("seed", "experiment"), (
            name
        )  # flat dotted keys (or a preset), as the agent passes
        for value in candidates(spec):
            (override,) = create_sweep_command_args({"args": {name: {"value": value}}})["args_no_hyphens"]
            got = OmegaConf.select(cfg_for(override), name, throw_on_missing=True)
            want = as_hydra_reads(value)
            assert got == want or str(got) == str(want), (name, value, got)


def test_a_sweep_file_that_breaks_the_schema_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: grdi\nparameters:\n  seed:\n    values: [0, 1]\n")
    with pytest.raises(ValueError, match=r"bad.yaml breaks W&B's sweep schema: .*'grdi'"):
        agent.load_sweep(bad)
    flow = tmp_path / "flow.yaml"
    flow.write_text("method: grid\nparameters: {seed: {values: [0]}}\ncommand: [${env}, ${interpreter}]\n")
    with pytest.raises(ValueError, match=r"not valid YAML.*Hint: write `command` as a block list"):
        agent.load_sweep(flow)


# -- `wandb agent`, emulated with W&B's own functions -------------------------------------------------------------


def agent_start(config: dict, cwd: Path, sweep_id: str, run_id: str) -> tuple[list[str], dict, subprocess.Popen]:
    """Start a run exactly as wandb/wandb_agent.py's Agent._command_run does, minus the server."""
    suggestion = sweeps.next_run(config, [], validate=True)
    args = json.loads(json.dumps(suggestion.config, default=lambda v: v.item()))  # the server sends JSON
    param_path = cwd / "wandb" / f"sweep-{sweep_id}" / f"config-{run_id}.yaml"
    config_util.save_config_file_from_dict(str(param_path), args)
    sweep_vars = create_sweep_command_args({"args": args})
    sweep_vars.update(interpreter=["python"], program=[""], env=["/usr/bin/env"])
    command = []
    for chunk in create_sweep_command(list(config["command"])):
        command += (sweep_vars.get(chunk[2:-1]) or []) if chunk.startswith("${") else [chunk]
    env = subprocess_env(
        WANDB_SWEEP_ID=sweep_id,
        WANDB_RUN_ID=run_id,
        WANDB_SWEEP_PARAM_PATH=str(param_path),
        WANDB_DIR=str(cwd),
        WANDB_PROJECT="lth-agent-test",
        # `python` on PATH is this environment's, as for an agent started from it.
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return command, {k: v["value"] for k, v in args.items()}, process


@pytest.fixture(scope="module")
def agent_runs(tmp_path_factory):
    """One agent-started run per sweep file, all at once (each alone takes ~10 s)."""
    started = {}
    for i, path in enumerate(SWEEP_FILES):
        cwd = tmp_path_factory.mktemp(path.stem)
        config = tiny(load(path))
        started[path.stem] = (cwd, config, *agent_start(config, cwd, "swp00001", f"run0000{i}"))
    done = {}
    for stem, (cwd, config, command, params, process) in started.items():
        output, _ = process.communicate(timeout=600)
        done[stem] = (cwd, config, command, params, process.returncode, output)
    return done


# Where a checkpoint records what training really used: (section, key) per sweep parameter.
def trained_value(ckpt: dict, name: str):
    section, _, key = name.rpartition(".")
    if section == "optimizer":
        return ckpt["hyper_parameters"]["optimizer" if key == "name" else key]
    if section == "scheduler":
        return ckpt["hyper_parameters"]["scheduler" if key == "name" else key]
    if section == "pruning" or name == "seed":
        return ckpt["callbacks"]["LotteryTicket"]["settings"][key or name]
    return None  # trainer.*: not in the checkpoint; the run config shows it


@pytest.mark.slow
@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_wandb_agent_runs_every_sweep_file(agent_runs, path):
    cwd, config, command, params, code, output = agent_runs[path.stem]
    assert command[:4] == ["/usr/bin/env", "python", "-m", "lth_wandb.train"]
    assert command[4:] == [f"{k}={v}" for k, v in params.items()]
    # lth-sweep builds the same command line (with an explicit interpreter).
    assert agent.command_line(config, params, interpreter="python") == command
    assert code == 0, output[-3000:]
    assert "locked by" not in output  # no conflict between the sweep's dotted keys and the nested Hydra config
    (run_dir,) = find_runs(cwd / "wandb")
    run = read_run(run_dir)
    assert run.state == "finished" and run.exit_code == 0 and run.run_id == run_dir.name.split("-")[-1]
    assert run.project == "lth-agent-test"
    ckpt = torch.load(next(cwd.glob("outputs/*/*/checkpoints/last.ckpt")), weights_only=False)
    for name, value in params.items():
        want = as_hydra_reads(value)
        assert run.config[name] == value  # the agent's locked, flat key
        node = run.config
        for part in name.split("."):
            node = node[part]
        assert node == want or str(node) == str(want), (name, node)  # Hydra composed it into the nested config
        trained = trained_value(ckpt, name)
        if trained is not None:
            assert trained == want or str(trained) == str(want), (name, trained)  # and training used it
    metric = config["metric"]["name"]
    assert metric in run.summary or any(metric in row for row in run.history), metric


# -- lth-sweep --------------------------------------------------------------------------------------------------


def write_sweep(tmp_path: Path, config: dict, name: str = "tiny.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


GRID = {
    "method": "grid",
    "metric": {"name": "ticket/winning_density", "goal": "minimize"},
    "parameters": {"seed": {"values": [0, 1, 2]}},
    "command": AGENT_COMMAND,
}


def lth_sweep(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        sweep.main([str(a) for a in args])
    return exit_info.value.code


@pytest.mark.slow
def test_lth_sweep_grid_with_count_then_resume(tmp_path, capsys):
    path, out = write_sweep(tmp_path, tiny(GRID)), tmp_path / "out"
    assert lth_sweep(path, "--count", 2, "--workers", 2, "--dir", out) == 0
    first = json.loads((out / "sweep.json").read_text())
    assert [r["state"] for r in first["runs"]] == ["finished", "finished"]
    assert sorted(r["params"]["seed"] for r in first["runs"]) == [0, 1]
    said = capsys.readouterr().out
    assert "Sweep " + first["sweep_id"] in said  # the leaderboard table
    assert "--count 2 covers 2 of the grid's 3 points" in said  # a partial grid says so
    for record in first["runs"]:
        run = read_run(out / record["wandb_run"])
        assert run.state == "finished" and run.run_id == record["run_id"]
        assert run.group == f"sweep-{first['sweep_id']}" and run.project == agent.DEFAULT_PROJECT
        assert run.config["seed"] == record["params"]["seed"] and run.config["pruning"]["rounds"] == 1
        assert record["metric_value"] == pytest.approx(run.summary["ticket/winning_density"])
        assert "locked by" not in (out / record["directory"] / "output.log").read_text()
    # As if lth-sweep had died while seed 1 ran: restarting must start seed 1 again (same run id and directory:
    # lth-train continues its run, here already finished), keep seed 0, and add seed 2.
    cut = next(r for r in first["runs"] if r["params"]["seed"] == 1)
    cut["state"] = "running"
    (out / "sweep.json").write_text(json.dumps(first))
    assert lth_sweep(path, "--workers", 2, "--dir", out) == 0
    final = json.loads((out / "sweep.json").read_text())
    assert final["sweep_id"] == first["sweep_id"]
    assert {r["state"] for r in final["runs"]} == {"finished"}
    assert sorted(r["params"]["seed"] for r in final["runs"]) == [0, 1, 2]
    by_id = {r["run_id"]: r for r in final["runs"]}
    kept = next(r for r in first["runs"] if r["params"]["seed"] == 0)
    assert by_id[kept["run_id"]]["attempt"] == 1  # not run again
    again = by_id[cut["run_id"]]
    assert again["attempt"] == 2 and again["directory"] == cut["directory"] and again["params"] == cut["params"]
    assert read_run(out / again["wandb_run"]).run_id == cut["run_id"]
    assert len(find_runs(out / cut["directory"] / "wandb")) == 1  # the run had finished: nothing trained twice
    assert "already finished" in (out / cut["directory"] / "output.log").read_text()
    assert len(list((out / "runs").iterdir())) == 3
    # The grid is exhausted and three runs ended: a third start runs nothing, even with a larger count.
    assert lth_sweep(path, "--count", 5, "--dir", out) == 0
    assert len(json.loads((out / "sweep.json").read_text())["runs"]) == 3
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [int(r["rank"]) for r in rows] == [1, 2, 3]
    values = [float(r["ticket/winning_density"]) for r in rows]
    assert values == sorted(values) and {r["state"] for r in rows} == {"finished"}


@pytest.mark.slow
def test_lth_sweep_hyperband_stops_the_clearly_worse_run(tmp_path, monkeypatch):
    # lr 1e-6 leaves val/loss at ~2.30 while lr 3e-3 is at ~0.15 by epoch 3: Hyperband's first band (min_iter=3,
    # eta=3) keeps the best third of the runs there, so the slow run is stopped long before its 40 epochs.
    # One worker, so the good run has set the bar before the bad one starts: side by side, a bad run that runs
    # ahead is judged at its latest band, which only it has reached (W&B's engine decides so too).
    config = tiny(
        {
            "method": "grid",
            "metric": {"name": "val/loss", "goal": "minimize"},
            "early_terminate": {"type": "hyperband", "min_iter": 3, "eta": 3},
            "parameters": {"optimizer.lr": {"values": [3e-3, 1e-6]}},
            "command": AGENT_COMMAND,
        },
        **{"pruning.rounds": 0, "pruning.epochs_per_round": 40, "trainer.val_every_n_steps": "null"},
    )
    # Each epoch takes at least 2 x 0.15 s (train and val passes, tests/faults/sitecustomize.py): the stop, read off
    # run files flushed every second, arrives while the bad run trains, however fast the machine.
    monkeypatch.setenv("LTH_PACE", "0.15")
    monkeypatch.setenv("PYTHONPATH", str(FAULTS))
    out = tmp_path / "out"
    assert lth_sweep(write_sweep(tmp_path, config), "--dir", out, "--kill-delay", 20, "--check-every", 1) == 0
    runs = {r["params"]["optimizer.lr"]: r for r in json.loads((out / "sweep.json").read_text())["runs"]}
    good, bad = runs[3e-3], runs[1e-6]
    assert good["state"] == "finished" and len(good["history"]) == 40
    assert bad["state"] == "stopped" and re.search(r"Band: \d+ .*STOP$", bad["stop_reason"])
    assert 4 <= len(bad["history"]) < 40  # stopped early, after the band it failed
    assert min(bad["history"]) > 2.0 > 0.5 > good["metric_value"]
    # The stopped run is a real W&B run that ended early, recorded as failed by lth-train with the signal's exit
    # code (143 = 128 + SIGTERM, W&B's convention), and so is the process's.
    run = read_run(out / bad["wandb_run"])
    assert run.exit_code == 143 and bad["exit_code"] == 143 and len([r for r in run.history if "val/loss" in r]) < 40
    assert [r["run_id"] for r in rank(SweepRecordView(out))] == [good["run_id"], bad["run_id"]]


@pytest.mark.slow
def test_lth_sweep_stops_after_repeated_failures(tmp_path, capsys):
    config = tiny(dict(GRID, parameters={"pruning.prune_rate": {"values": [2.0, 3.0, 4.0, 5.0, 6.0]}}))
    out = tmp_path / "out"
    assert lth_sweep(write_sweep(tmp_path, config), "--workers", 2, "--dir", out) == 1
    runs = json.loads((out / "sweep.json").read_text())["runs"]
    # The third failure stops new starts; the run beside it ends too; the fifth grid point never starts.
    assert [(r["state"], r["exit_code"]) for r in runs] == [("failed", 2)] * 4
    printed = capsys.readouterr().out
    assert "runs in a row failed: no new runs are started" in printed
    assert "pruning: prune_rate=2.0 is outside (0, 1)" in printed  # the run's own one-line error


class SweepRecordView(SweepRecord):
    """A read-only view of a sweep directory's record (no lock), for assertions."""

    def __init__(self, directory: Path):
        saved = json.loads((directory / "sweep.json").read_text())
        super().__init__(directory, saved["config"], saved["sweep_id"], saved["source"], saved["runs"])


def test_lth_sweep_refuses_bad_invocations(tmp_path, capsys):
    bayes = dict(GRID, method="bayes", parameters={"optimizer.lr": {"min": 1e-4, "max": 1e-2}})
    cases = [
        ([write_sweep(tmp_path, bayes, "b.yaml")], r"method='bayes' proposes runs without end; give a count"),
        ([write_sweep(tmp_path, GRID, "g.yaml"), "--workers", 0], r"--workers=0 must be >= 1"),
        ([tmp_path / "missing.yaml"], r"sweep file .*missing.yaml' does not exist"),
        ([write_sweep(tmp_path, dict(GRID, method="grdi"), "x.yaml")], r"breaks W&B's sweep schema"),
    ]
    for args, message in cases:
        assert lth_sweep(*args, "--dir", tmp_path / "out") == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert re.search(message, err[-1]), err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def one_line_error(capsys) -> str:
    """What lth-sweep printed on stderr: exactly one line (no traceback)."""
    (line,) = capsys.readouterr().err.strip().splitlines()
    return line


def test_lth_sweep_refuses_a_file_as_its_directory(tmp_path, capsys):
    path, taken = write_sweep(tmp_path, GRID), tmp_path / "notes.txt"
    taken.write_text("mine")
    assert lth_sweep(path, "--dir", taken) == 2
    assert re.fullmatch(
        r"lth-sweep: error: sweep directory .*notes.txt is a file, not a directory\. Hint: .*", one_line_error(capsys)
    )
    assert lth_sweep(path, "--dir", taken / "sweep") == 2
    assert re.search(
        r"cannot make the sweep directory .*notes.txt/sweep: .*Hint: pass another --dir", one_line_error(capsys)
    )
    assert taken.read_text() == "mine"


def test_lth_sweep_names_a_corrupt_sweep_json_and_the_way_out(tmp_path, capsys):
    path, out = write_sweep(tmp_path, GRID), tmp_path / "out"
    with SweepRecord.open(out, GRID, path):
        pass
    saved = (out / "sweep.json").read_text()
    for damaged, problem in [
        (saved[: len(saved) // 2], "is corrupt or truncated"),
        ("", "is corrupt or truncated"),
        ('{"runs": []}', "is not a sweep record"),
    ]:
        (out / "sweep.json").write_text(damaged)
        assert lth_sweep(path, "--dir", out) == 2
        line = one_line_error(capsys)
        assert f"{out / 'sweep.json'} {problem}" in line, line
        assert line.endswith(f"Hint: fix it, or delete it and {out / 'runs'} to start this sweep over"), line
        with pytest.raises(ValueError, match=problem):
            SweepRecord.open(out, GRID)
    (out / "sweep.json").write_text(saved)  # fixed: the lock was let go, and the sweep opens again
    with SweepRecord.open(out, GRID) as record:
        assert record.sweep_id == json.loads(saved)["sweep_id"]


# Writes sweep.json and sweep.csv for 3 runs, then is killed by the kernel (SIGXFSZ: over its file size limit) in
# the middle of writing one of them again: "json" adds a run too big for the limit; "csv" adds 400 runs with a
# summary key each, so the table (a column per key) outgrows the limit while the record does not.
KILLED_WRITER = """
import resource, signal, sys
from lth_wandb.sweeps.leaderboard import SweepRecord, write_results
def run(i, **extra):
    return {"run_id": f"r{i}", "params": {"seed": i}, "state": "finished", "metric_value": i, **extra}
config = {"method": "grid", "metric": {"name": "m"}, "parameters": {"seed": {"values": [0]}}}
with SweepRecord.open(sys.argv[1], config) as record:
    record.runs = [run(i) for i in range(3)]
    write_results(record)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it; a real kill is what we want
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
    if sys.argv[2] == "json":
        record.runs.append(run(3, pad="x" * 200_000))
    else:
        record.runs += [run(i, summary={f"ticket/k{i}": i}) for i in range(3, 403)]
    write_results(record)
"""


@pytest.mark.parametrize("killed_in", ["json", "csv"])
def test_a_kill_mid_write_leaves_the_previous_sweep_json_and_csv(tmp_path, killed_in):
    out = tmp_path / "out"
    writer = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(out), killed_in], capture_output=True, text=True)
    assert writer.returncode == -signal.SIGXFSZ, writer.stderr[-2000:]  # killed while writing
    runs = [r["run_id"] for r in json.loads((out / "sweep.json").read_text())["runs"]]
    assert runs == ([f"r{i}" for i in range(3)] if killed_in == "json" else [f"r{i}" for i in range(403)])
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [r["run_id"] for r in rows] == ["r0", "r1", "r2"]  # the table as it was before


def test_a_full_disk_writing_sweep_json_is_one_line(tmp_path):
    """lth-sweep itself on a full disk (injected by tests/faults at sweep.json's first write, before any run)."""
    env = subprocess_env(LTH_FAULT="enospc:*/.sweep.json.*.tmp:1", PYTHONPATH=str(FAULTS))
    command = [sys.executable, "-m", "lth_wandb.sweeps.cli", str(ROOT / "sweeps" / "controls_grid.yaml"), "--dir",
               str(tmp_path / "sweep")]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    (line,) = done.stderr.splitlines()
    assert line.startswith("lth-sweep: disk full: [Errno 28] No space left on device: ")
    assert line.endswith(
        f"{tmp_path / 'sweep' / 'sweep.json'} was not written. Hint: free some space (or raise the quota), then run "
        "the same lth-sweep command again to continue"
    )
    assert not (tmp_path / "sweep" / "sweep.json").exists() and not list(tmp_path.glob("sweep/.sweep.json.*"))


def test_sweep_dir_holds_one_sweep_and_one_runner(tmp_path):
    with SweepRecord.open(tmp_path, GRID, "a.yaml") as record:
        with pytest.raises(ValueError, match="another lth-sweep is running in"):
            SweepRecord.open(tmp_path, GRID)
        sweep_id = record.sweep_id
    other = dict(GRID, parameters={"seed": {"values": [7]}})
    with pytest.raises(ValueError, match=rf"holds sweep {sweep_id} of a.yaml, whose config differs.*another --dir"):
        SweepRecord.open(tmp_path, other, "b.yaml")
    with SweepRecord.open(tmp_path, GRID) as again:
        assert again.sweep_id == sweep_id


def test_leaderboard_ranks_by_goal_and_writes_csv(tmp_path):
    def run(run_id, state, value, seed):
        return {"run_id": run_id, "state": state, "params": {"seed": seed}, "history": [], "summary": {}} | (
            {"metric_value": value} if value is not None else {}
        )

    for goal, order in (("minimize", ["a", "c", "b", "d"]), ("maximize", ["b", "c", "a", "d"])):
        config = dict(GRID, metric={"name": "ticket/winning_density", "goal": goal})
        with SweepRecord.open(tmp_path / goal, config) as record:
            record.runs += [run("a", "finished", 0.1, 0), run("b", "stopped", 0.9, 1), run("c", "failed", 0.5, 2)]
            record.runs += [run("d", "finished", None, 3), run("e", "interrupted", 0.0, 4)]
            assert [r["run_id"] for r in rank(record)] == order
            rows = list(csv.reader(write_results(record).open()))
            assert rows[0][:5] == ["rank", "run_id", "state", "ticket/winning_density", "seed"]
            assert [r[1] for r in rows[1:]] == order


def test_run_env_is_the_agents_offline():
    base = {"WANDB_SERVICE": "2-123-tcp-localhost-1", "WANDB_SWEEP_ID": "old", "HOME": "/home/x"}
    env = agent.run_env(
        base, run_id="r1", param_path="/p.yaml", wandb_dir="/d", sweep_id="s1", project="p", group="sweep-s1"
    )
    assert "WANDB_SERVICE" not in env and env["HOME"] == "/home/x"
    assert (env["WANDB_MODE"], env["WANDB_SWEEP_ID"], env["WANDB_RUN_ID"]) == ("offline", "s1", "r1")
    assert (env["WANDB_SWEEP_PARAM_PATH"], env["WANDB_DIR"], env["WANDB_RUN_GROUP"]) == ("/p.yaml", "/d", "sweep-s1")
    syncable = agent.run_env(base, run_id="r1", param_path="/p.yaml", wandb_dir="/d", sweep_id=None, project="p")
    assert "WANDB_SWEEP_ID" not in syncable


def test_engine_values_become_plain_python():
    config = load(ROOT / "sweeps" / "lr_bayes_hyperband.yaml")
    params = agent.next_params(config, [])
    assert type(params["optimizer.lr"]) is float and 1e-4 <= params["optimizer.lr"] <= 3e-2
    done = agent.to_sweep_run("r1", params, "finished", "val/loss", [0.5, 0.3])
    assert done.metric_history("val/loss") == [0.5, 0.3]
    assert agent.next_params(config, [done]) != params


# -- Hydra: Optuna sweeper, submitit launcher ---------------------------------------------------------------------


def tiny_train(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return lth_train(cwd, *args, tiny=[f"{k}={v}" for k, v in TINY.items()])


@pytest.mark.slow
def test_optuna_tpe_sweeper_two_trials_offline(tmp_path):
    result = tiny_train(
        tmp_path, "-m", "hydra/sweeper=optuna_tpe", "hydra.sweeper.n_trials=2", "objective=ticket/winning_density"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [read_run(p) for p in find_runs(tmp_path / "wandb")]
    assert len(runs) == 2 and all(r.state == "finished" for r in runs)
    lrs = [r.config["optimizer"]["lr"] for r in runs]
    assert len(set(lrs)) == 2 and all(1e-4 <= lr <= 3e-2 for lr in lrs)  # TPE's draws reached the runs
    (results,) = tmp_path.glob("multirun/*/*/optimization_results.yaml")
    best = yaml.safe_load(results.read_text())
    assert best["best_value"] == pytest.approx(min(r.summary["ticket/winning_density"] for r in runs))
    assert any(best["best_params"]["optimizer.lr"] == pytest.approx(lr) for lr in lrs)


@pytest.mark.slow
def test_submitit_local_launcher_two_jobs_offline(tmp_path):
    result = tiny_train(tmp_path, "-m", "hydra/launcher=local", "seed=0,1")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [read_run(p) for p in find_runs(tmp_path / "wandb")]
    assert sorted(r.config["seed"] for r in runs) == [0, 1]
    assert all(r.state == "finished" and r.exit_code == 0 for r in runs)
    assert len({r.group for r in runs}) == 1 and runs[0].group.startswith("multirun-")
    assert len(list(tmp_path.glob("multirun/*/*/.submitit/*/*_result.pkl"))) == 2  # two submitit jobs


def test_launcher_and_sweeper_presets_compose():
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="lth_wandb.conf", version_base="1.3"):
        slurm = compose("config", ["hydra/launcher=slurm"], return_hydra_config=True).hydra.launcher
        local = compose("config", ["hydra/launcher=local"], return_hydra_config=True).hydra.launcher
        tpe = compose("config", ["hydra/sweeper=optuna_tpe"], return_hydra_config=True).hydra.sweeper
    assert slurm._target_.endswith("SlurmLauncher") and (slurm.timeout_min, slurm.gpus_per_node) == (240, 1)
    assert local._target_.endswith("LocalLauncher") and local.cpus_per_task == 1
    assert tpe._target_.endswith("OptunaSweeper") and tpe.sampler._target_ == "optuna.samplers.TPESampler"
    assert tpe.sampler.seed == 0 and tpe.direction == "minimize"
    assert set(tpe.params) == {"optimizer.lr", "optimizer.weight_decay"}


def test_objective_is_checked_before_training(monkeypatch, tmp_path, capsys):
    def exit_code(*args):
        monkeypatch.chdir(tmp_path)
        flags = [a for a in args if a.startswith("-")]  # Hydra wants its flags before the overrides
        overrides = [a for a in args if not a.startswith("-")]
        monkeypatch.setattr(sys, "argv", ["lth-train", *flags, "logger=none", *overrides])
        GlobalHydra.instance().clear()
        with pytest.raises(SystemExit) as exit_info:
            train.main()
        return exit_info.value.code, capsys.readouterr().err.strip().splitlines()[-1]

    code, err = exit_code("objective=ticket/winning_test_acc")
    assert code == 2 and "objective='ticket/winning_test_acc' is not one of" in err and "test set" in err
    code, err = exit_code("-m", "hydra/sweeper=optuna_tpe", "hydra.sweeper.n_trials=1")
    assert code == 2 and "objective is not set, but the Optuna sweeper optimises a number" in err
    assert not list(tmp_path.glob("multirun/*/*/*/checkpoints"))  # nothing was trained


def test_objective_value_is_the_summary_number():
    summary = {"winning_round": 2, "winning_density": 0.25, "winning_test_acc": 0.9}
    assert train.objective_value(summary, None) is summary
    assert train.objective_value(summary, "ticket/winning_density") == 0.25
    assert math.isnan(train.objective_value({"winning_density": None}, "ticket/winning_density"))
    assert set(OBJECTIVES) <= {f"ticket/{k}" for k in LotteryTicket(rounds=1, epochs_per_round=1).summary()}


def test_lth_sweep_takes_overrides_for_every_run_and_keeps_them(tmp_path, capsys):
    """A sweep's budget shrunk from the command line, no copy of the file: the overrides reach every run and stay
    in sweep.json; one that would fix a swept key is refused."""
    path, out = write_sweep(tmp_path, GRID), tmp_path / "out"
    budget = ["pruning.rounds=1", "pruning.epochs_per_round=1", "trainer.enable_progress_bar=false"]
    assert lth_sweep(path, *budget, "--count", 1, "--dir", out) == 0
    saved = json.loads((out / "sweep.json").read_text())
    assert saved["config"]["parameters"]["pruning.epochs_per_round"] == {"value": "1"}
    (record,) = saved["runs"]
    assert record["state"] == "finished"
    run = read_run(out / record["wandb_run"])
    assert run.config["pruning"]["rounds"] == 1 and run.config["pruning"]["epochs_per_round"] == 1
    assert lth_sweep(path, "seed=5", "--dir", tmp_path / "other") == 2
    assert "seed is a parameter the sweep varies" in capsys.readouterr().err
    assert lth_sweep(path, "pruning.prune_rat=0.3", "--dir", tmp_path / "typo") == 2  # composed once, up front
    assert "did you mean pruning.prune_rate?" in capsys.readouterr().err and not (tmp_path / "typo").exists()


def test_lth_sweep_takes_overrides_after_its_options_and_says_its_version(tmp_path, capsys):
    path = write_sweep(tmp_path, tiny(GRID))
    # An override after the options is read as one (argparse's intermixed parsing): its typo is caught as such.
    assert lth_sweep(path, "--count", 1, "--dir", tmp_path / "out", "pruning.prune_rat=0.3") == 2
    assert "pruning.prune_rat=0.3" in capsys.readouterr().err
    assert lth_sweep("--version") == 0
    assert capsys.readouterr().out.startswith("lth-sweep ")
