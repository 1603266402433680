"""Online W&B, for real: ``lth-train`` and the SDK against the local W&B-compatible server (tests/wandb_server),
read back with ``wandb.Api()``. Real processes, the real SDK and wandb-core; nothing leaves loopback."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import wandb
import yaml
from conftest import all_known, online_env, subprocess_env

from lth_wandb import Ticket

pytestmark = pytest.mark.online
ENTITY, PROJECT = "tester", "lth-wandb"
FAULTS = Path(__file__).parent / "faults"
TINY = ("pruning.epochs_per_round=1", "trainer.enable_progress_bar=false", "wandb.mode=online")


def lth_train(server, cwd: Path, *overrides: str, fault: str | None = None) -> subprocess.CompletedProcess:
    extra = {"LTH_FAULT": fault, "PYTHONPATH": str(FAULTS)} if fault else {}
    return subprocess.run(
        [sys.executable, "-m", "lth_wandb.train", *TINY, *overrides],
        cwd=cwd, env=online_env(server, cwd, **extra), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def run_id_of(cwd: Path) -> str:
    (record,) = cwd.glob("outputs/*/*/run.json")
    return json.loads(record.read_text())["wandb_run_id"]


def round_rows(run) -> list[dict]:
    return [row for row in run.scan_history(keys=["round", "round/density"])]


def versions(api, kind: str, name: str) -> dict[int, list[str]]:
    """Version index -> aliases of every version of ``name`` the server lists (deleted ones are not listed)."""
    return {int(a.version[1:]): sorted(a.aliases) for a in api.artifacts(kind, f"{ENTITY}/{PROJECT}/{name}")}


@pytest.fixture(scope="module")
def first_run(_wandb_server, tmp_path_factory):
    """An online lth-train run of 2 rounds that links its winning ticket into a registry."""
    cwd = tmp_path_factory.mktemp("first")
    with all_known(_wandb_server):
        result = lth_train(_wandb_server, cwd, "pruning.rounds=2", "wandb.registry=model/lenet-tickets")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_id_of(cwd)


def test_online_run_has_config_round_rows_summary_and_mask_pictures(first_run, wandb_server, tmp_path):
    run = wandb.Api().run(f"{ENTITY}/{PROJECT}/{first_run}")
    assert run.state == "finished"
    assert run.config["pruning"]["rounds"] == 2 and run.config["data"]["name"] == "digits"
    rows = round_rows(run)
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert rows[0]["round/density"] == 1 and 0 < rows[2]["round/density"] < rows[1]["round/density"] < 1
    keys = ("winning_round", "winning_density", "winning_test_acc", "dense_test_acc")
    assert {f"ticket/{key}" for key in keys} <= set(dict(run.summary))
    pictures = [r["round/mask_first_layer"] for r in run.scan_history(keys=["round", "round/mask_first_layer"])]
    assert len(pictures) == 3 and all(p["_type"] == "image-file" and p["width"] >= 64 for p in pictures)
    png = run.file(pictures[1]["path"]).download(root=str(tmp_path), replace=True)
    assert Path(png.name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_round_versions_a_ticket_and_a_model_with_aliases_and_metadata(first_run, wandb_server):
    api = wandb.Api()
    run = api.run(f"{ENTITY}/{PROJECT}/{first_run}")
    winning = run.summary["ticket/winning_round"]
    for kind, name in (("lottery-ticket", f"ticket-{first_run}"), ("model", f"model-{first_run}")):
        found = versions(api, kind, name)
        assert sorted(found) == [0, 1, 2]
        for r, aliases in found.items():
            expected = {f"round-{r}"} | ({"dense"} if r == 0 else set()) | ({"latest"} if r == 2 else set())
            assert set(aliases) == expected | ({"winning"} if r == winning else set())
    ticket = api.artifact(f"{ENTITY}/{PROJECT}/ticket-{first_run}:winning")
    assert ticket.metadata["round"] == winning and ticket.metadata["parent"] == (
        f"ticket-{first_run}:round-{winning - 1}" if winning else None
    )
    assert ticket.metadata["density"] == pytest.approx(run.summary["ticket/winning_density"])
    assert {"criterion", "prune_rate", "early_stop_step", "test_acc", "config_digest"} <= set(ticket.metadata)
    logged = sorted(a.name for a in run.logged_artifacts())
    assert logged == sorted(f"{p}-{first_run}:v{v}" for p in ("ticket", "model") for v in range(3))


def test_the_registry_holds_the_winning_ticket(first_run, wandb_server):
    api = wandb.Api()
    linked = api.artifact(f"{wandb_server.backend.ORG}/wandb-registry-model/lenet-tickets:latest")
    winning = api.artifact(f"{ENTITY}/{PROJECT}/ticket-{first_run}:winning")
    assert linked.digest == winning.digest and linked.metadata == winning.metadata


def test_controls_of_a_wandb_run_need_only_its_run_path(first_run, wandb_server, tmp_path):
    """lth-train controls=<entity>/<project>/<run id> where the run's folder is not: its overrides and every round's
    ticket come from W&B; one run per control trains IMP's masks (reinit: the same masks) and lists the IMP run's
    round tickets as its inputs; the IMP run's registry link is not inherited."""
    result = lth_train(wandb_server, tmp_path, f"controls={ENTITY}/{PROJECT}/{first_run}")
    assert result.returncode == 0, result.stderr[-3000:]
    api = wandb.Api()
    imp_tickets = {f"ticket-{first_run}:v{n}": n for n in (1, 2)}  # round r is version r
    controls = {}
    for record in tmp_path.glob("multirun/*/*/*/run.json"):
        run = api.run(f"{ENTITY}/{PROJECT}/{json.loads(record.read_text())['wandb_run_id']}")
        assert run.state == "finished" and run.group == f"controls-of-{first_run}"
        assert run.config["pruning"]["rounds"] == 2 and run.config["wandb"]["registry"] is None
        assert sorted(a.name for a in run.used_artifacts()) == sorted(imp_tickets)
        controls[run.config["pruning"]["control"]] = run.id
    assert sorted(controls) == ["random_mask", "reinit"]
    for number in (1, 2):
        imp = Ticket.load(api.artifact(f"{ENTITY}/{PROJECT}/ticket-{first_run}:round-{number}").download())
        reinit = Ticket.load(api.artifact(f"{ENTITY}/{PROJECT}/ticket-{controls['reinit']}:round-{number}").download())
        assert all(torch.equal(imp.masks[name], reinit.masks[name]) for name in imp.masks)


def test_controls_of_a_wandb_run_that_cannot_be_fetched_fail_in_one_line(wandb_server, tmp_path):
    result = lth_train(wandb_server, tmp_path, f"controls={ENTITY}/{PROJECT}/nosuchrun")
    assert result.returncode == 2
    assert "is neither a local run folder nor a W&B run that could be fetched" in result.stderr
    assert not (tmp_path / "multirun").exists()


def test_a_ticket_from_the_server_trains_again_with_lineage_and_winning_latest_retention(
    first_run, wandb_server, tmp_path
):
    ref = f"{ENTITY}/{PROJECT}/ticket-{first_run}:winning"
    # A slow store: the last round's versions are still uploading when the run ends and prunes (a race it lost).
    wandb_server.upload_delay = 0.5
    try:
        result = lth_train(wandb_server, tmp_path, f"ticket={ref}", "pruning.rounds=2",
                           "wandb.retention=winning_latest")  # fmt: skip
    finally:
        wandb_server.upload_delay = 0.0
    assert result.returncode == 0, result.stderr[-3000:]
    home = tmp_path / "wandb-home"  # empty before: the ticket came from the server
    assert list((home / "artifacts").glob(f"ticket-{first_run}:v*/ticket.json"))
    assert list((home / "cache" / "artifacts" / "obj").rglob("*"))
    api = wandb.Api()
    run = api.run(f"{ENTITY}/{PROJECT}/{run_id_of(tmp_path)}")
    assert [a.name for a in run.used_artifacts()] == [f"ticket-{first_run}:v{api.artifact(ref).version[1:]}"]
    winning = run.summary["ticket/winning_round"]
    kept = {winning, 2}
    for kind, name in (("lottery-ticket", f"ticket-{run.id}"), ("model", f"model-{run.id}")):
        found = versions(api, kind, name)
        assert set(found) == kept  # the others are deleted, with their round-<r> aliases
        assert "latest" in found[2] and "winning" in found[winning]
        collection = wandb_server.backend.project(ENTITY, PROJECT).collection(name)
        assert sorted(a.versionIndex for a in collection.members if a.state == "DELETED") == sorted({0, 1, 2} - kept)


def test_a_killed_online_run_resumes_into_the_same_run_with_each_round_once(wandb_server, tmp_path):
    run_args = ("pruning.rounds=2",)
    killed = lth_train(wandb_server, tmp_path, *run_args, fault="replace:*/tickets/round-1/model/ticket.json:1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (folder,) = tmp_path.glob("outputs/*/*")
    resumed = lth_train(wandb_server, tmp_path, f"resume={folder}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run_id = run_id_of(tmp_path)
    assert len(list(tmp_path.glob("wandb/run-*"))) == 2  # two processes...
    api = wandb.Api()
    run = api.run(f"{ENTITY}/{PROJECT}/{run_id}")  # ...one W&B run
    assert run.state == "finished"
    assert [r["round"] for r in round_rows(run)] == [0, 1, 2]  # each round's row once
    for kind, name in (("lottery-ticket", f"ticket-{run_id}"), ("model", f"model-{run_id}")):
        found = versions(api, kind, name)
        assert sorted(found) == [0, 1, 2] and all(f"round-{r}" in found[r] for r in found)


# -- sweeps: `wandb sweep` + `wandb agent`, the server running W&B's sweep engine --------------------------------

ROOT = Path(__file__).resolve().parents[1]
SWEEP_FILES = sorted((ROOT / "sweeps").glob("*.yaml"))
TINY_SWEEP = {"pruning.rounds": 1, "pruning.epochs_per_round": 1, "trainer.enable_progress_bar": False}


def wandb_cli(server, cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wandb", *args],
        cwd=cwd, env=online_env(server, cwd, WANDB_SILENT="false"), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def create_sweep(server, cwd: Path, config: dict) -> str:
    """``wandb sweep`` on ``config`` written to a file; returns the sweep id it printed."""
    path = cwd / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    created = wandb_cli(server, cwd, "sweep", "--entity", ENTITY, "--project", PROJECT, str(path))
    assert created.returncode == 0, created.stderr[-3000:]
    (sweep_id,) = re.findall(r"Creating sweep with ID: (\w+)", created.stderr)
    return sweep_id


@pytest.mark.parametrize("sweep_file", SWEEP_FILES, ids=[p.stem for p in SWEEP_FILES])
def test_wandb_agent_runs_every_sweep_file_into_the_sweep(sweep_file, wandb_server, tmp_path):
    config = yaml.safe_load(sweep_file.read_text())
    config["parameters"].update({k: {"value": v} for k, v in TINY_SWEEP.items()})  # a tiny budget, same command
    sweep_id = create_sweep(wandb_server, tmp_path, config)
    agent = wandb_cli(wandb_server, tmp_path, "agent", "--count", "1", f"{ENTITY}/{PROJECT}/{sweep_id}")
    assert agent.returncode == 0, agent.stderr[-3000:]
    sweep = wandb.Api().sweep(f"{ENTITY}/{PROJECT}/{sweep_id}")
    (run,) = sweep.runs
    assert run.state == "finished", agent.stderr[-3000:]
    for key, spec in config["parameters"].items():  # the agent's flat keys and the same value in the Hydra config
        section, _, name = key.partition(".")
        nested = run.config[section][name] if name else run.config[section]
        flat = run.config[key]
        assert flat == spec["value"] if "value" in spec else True
        assert nested == (None if flat == "null" else flat)
    metric = config["metric"]["name"]
    assert metric in run.summary or any(metric in row for row in run.scan_history(keys=[metric]))


# -- wandb sync: offline runs uploaded later --------------------------------------------------------------------


def offline(cwd: Path, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=300)


def sync(server, cwd: Path, *run_folders: Path) -> subprocess.CompletedProcess:
    return wandb_cli(server, cwd, "sync", *map(str, run_folders))


def test_wandb_sync_uploads_an_offline_lth_train_run(wandb_server, tmp_path):
    trained = offline(tmp_path, sys.executable, "-m", "lth_wandb.train", "pruning.rounds=1", *TINY[:2])
    assert trained.returncode == 0, trained.stderr[-3000:]
    (folder,) = tmp_path.glob("wandb/offline-run-*")
    synced = sync(wandb_server, tmp_path, folder)
    assert synced.returncode == 0 and "ERROR" not in synced.stderr, synced.stderr[-3000:]
    api = wandb.Api()
    run = api.run(f"{ENTITY}/{PROJECT}/{run_id_of(tmp_path)}")
    assert run.state == "finished" and [r["round"] for r in round_rows(run)] == [0, 1]
    assert any("val/loss" in row for row in run.scan_history(keys=["val/loss"]))
    found = versions(api, "lottery-ticket", f"ticket-{run.id}")
    assert sorted(found) == [0, 1] and {"dense", "round-0"} <= set(found[0]) and {"latest", "round-1"} <= set(found[1])
    assert "winning" in found[run.summary["ticket/winning_round"]]


@pytest.mark.parametrize("flag", ["--sweep-id", None], ids=["with-sweep-id", "default"])
def test_wandb_sync_of_an_lth_sweep_run_needs_no_sweep_id(flag, wandb_server, tmp_path):
    """wandb#8115, settled: ``wandb sync`` sends the run's sweep id, which a server that never saw the local sweep
    refuses; lth-sweep therefore leaves WANDB_SWEEP_ID unset unless asked (--sweep-id)."""
    config = yaml.safe_load((ROOT / "sweeps" / "controls_grid.yaml").read_text())
    config["parameters"].update({k: {"value": v} for k, v in TINY_SWEEP.items()})
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(config))
    swept = offline(tmp_path, sys.executable, "-m", "lth_wandb.sweeps.cli", "sweep.yaml", "--count", "1",
                    "--dir", "s", *([flag] if flag else []))  # fmt: skip
    assert swept.returncode == 0, swept.stdout[-3000:]
    (folder,) = tmp_path.glob("s/runs/*/wandb/offline-run-*")
    record = json.loads((tmp_path / "s" / "sweep.json").read_text())
    synced = sync(wandb_server, tmp_path, folder)
    runs = list(wandb.Api().runs(f"{ENTITY}/{PROJECT}", filters={"group": f"sweep-{record['sweep_id']}"}))
    if flag:
        assert f"sweep {record['sweep_id']} not found" in synced.stderr and not runs  # refused, as W&B does
        return
    assert synced.returncode == 0 and "ERROR" not in synced.stderr, synced.stderr[-3000:]
    (run,) = runs
    assert run.state == "finished" and [r["round"] for r in round_rows(run)] == [0, 1]
    assert run.config["pruning.control"] == "null" and run.config["pruning"]["control"] is None
    assert len(list(run.logged_artifacts())) == 4  # ticket and model, rounds 0 and 1


def test_wandb_sync_of_a_killed_and_resumed_offline_run_gives_one_run(wandb_server, tmp_path):
    """Two offline run folders with one run id (docs/resume.md), synced in order."""
    run_args = ("pruning.rounds=2", *TINY[:2])
    env = subprocess_env(LTH_FAULT="replace:*/tickets/round-1/model/ticket.json:1", PYTHONPATH=str(FAULTS))
    command = [sys.executable, "-m", "lth_wandb.train", *run_args]
    killed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (folder,) = tmp_path.glob("outputs/*/*")
    resumed = offline(tmp_path, sys.executable, "-m", "lth_wandb.train", f"resume={folder}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    folders = sorted(tmp_path.glob("wandb/offline-run-*"))
    assert len(folders) == 2
    # An attempt killed before W&B's first flush (1 s; longer on a loaded machine) holds no record, which
    # `wandb sync` reports as unreadable: there is nothing in it to upload (docs/resume.md).
    written = [f for f in folders if _holds_records(f)]
    synced = sync(wandb_server, tmp_path, *written)
    assert synced.returncode == 0 and "ERROR" not in synced.stderr, synced.stderr[-3000:]
    api = wandb.Api()
    run = api.run(f"{ENTITY}/{PROJECT}/{run_id_of(tmp_path)}")
    assert run.state == "finished"
    assert [r["round"] for r in round_rows(run)] == [0, 1, 2]
    found = versions(api, "lottery-ticket", f"ticket-{run.id}")
    assert sorted(found) == [0, 1, 2] and all(f"round-{r}" in found[r] for r in found)


def _holds_records(run_folder) -> bool:
    from lth_wandb.tracking.runfiles import read_run

    try:
        read_run(run_folder)
    except ValueError:  # header only: killed before its first write
        return False
    return True


# -- lth-report --save: a W&B Report published and read back ---------------------------------------------------


@pytest.mark.parametrize("source", ["group", "sweep"])
def test_lth_report_publishes_a_report_that_reads_back_with_its_blocks(source, wandb_server, tmp_path):
    import wandb_workspaces.reports.v2 as wr

    if source == "group":
        name = f"report-{tmp_path.name}"
        trained = lth_train(wandb_server, tmp_path, "pruning.rounds=1", f"wandb.group={name}")
        assert trained.returncode == 0, trained.stderr[-3000:]
        run_id, title = run_id_of(tmp_path), f"group {name}"
    else:
        config = yaml.safe_load((ROOT / "sweeps" / "controls_grid.yaml").read_text())
        config["parameters"].update({k: {"value": v} for k, v in TINY_SWEEP.items()})
        name = create_sweep(wandb_server, tmp_path, config)
        agent = wandb_cli(wandb_server, tmp_path, "agent", "--count", "1", f"{ENTITY}/{PROJECT}/{name}")
        assert agent.returncode == 0, agent.stderr[-3000:]
        (run,) = wandb.Api().sweep(f"{ENTITY}/{PROJECT}/{name}").runs
        run_id, title = run.id, f"sweep {name}"
    command = [sys.executable, "-m", "lth_wandb.report.cli", "--entity", ENTITY, "--project", PROJECT,
               f"--{source}", name, "--save"]  # fmt: skip
    published = subprocess.run(command, cwd=tmp_path, env=online_env(wandb_server, tmp_path), capture_output=True,
                               text=True, timeout=300)  # fmt: skip
    assert published.returncode == 0, published.stderr[-3000:]
    (url,) = re.findall(r"Published: (\S+)", published.stdout)
    report = wr.Report.from_url(url)
    assert name in report.title and "1 run" in report.description and title in report.description
    grids = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    assert grids and all(g.runsets[0].project == PROJECT for g in grids)
    assert any(isinstance(b, wr.UnorderedList) for b in report.blocks)  # the ticket links
    text = json.dumps(report._to_model().model_dump(by_alias=True), default=str)
    assert f"ticket-{run_id}" in text and "round/density" in text


@pytest.mark.slow
def test_hyperband_stops_a_worse_run_under_the_real_agent(wandb_server, tmp_path):
    """sweeps/lr_bayes_hyperband.yaml's early termination, with the two learning rates fixed in a grid so the order
    is known: the good run finishes, the hopeless one is stopped at a band (3 or 9 epochs) by the agent."""
    config = yaml.safe_load((ROOT / "sweeps" / "lr_bayes_hyperband.yaml").read_text())
    epochs = 30
    config["method"] = "grid"
    fixed = {"optimizer.weight_decay": 0.0, "pruning.rounds": 0, "pruning.epochs_per_round": epochs,
             "trainer.enable_progress_bar": False}  # fmt: skip
    config["parameters"].update({k: {"value": v} for k, v in fixed.items()})
    config["parameters"]["optimizer.lr"] = {"values": [3e-3, 1e-7]}
    sweep_id = create_sweep(wandb_server, tmp_path, config)
    path = f"{ENTITY}/{PROJECT}/{sweep_id}"
    # The stop rides the agent's heartbeat (every 5 s) after the run's streamed history (every 1 s). Each epoch takes
    # at least 2 x 0.3 s (train and val passes, tests/faults/sitecustomize.py), so the bad run is still training
    # >= 15 s after its first band, however fast the machine.
    env = online_env(wandb_server, tmp_path, WANDB_X_FILE_STREAM_TRANSMIT_INTERVAL="1", LTH_PACE="0.3",
                     PYTHONPATH=str(FAULTS))  # fmt: skip
    for _ in range(2):  # one agent after the other: the good run has finished when the bad one starts
        agent = subprocess.run(
            [sys.executable, "-m", "wandb", "agent", "--count", "1", path], cwd=tmp_path, capture_output=True,
            text=True, timeout=300, env=env,
        )  # fmt: skip
        assert agent.returncode == 0, agent.stderr[-3000:]
    sweep = wandb_server.backend.project(ENTITY, PROJECT).sweep(sweep_id)
    good, bad = sorted(wandb.Api().sweep(path).runs, key=lambda r: r.config["optimizer.lr"], reverse=True)
    losses = {run.id: [row["val/loss"] for row in run.scan_history(keys=["val/loss"])] for run in (good, bad)}
    assert good.state == "finished" and len(losses[good.id]) == epochs
    assert sweep.stopped == {bad.id} and bad.state != "finished"
    assert 3 <= len(losses[bad.id]) < epochs  # stopped after its first band, before the end
