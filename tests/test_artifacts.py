"""Ticket and model artifacts of a real offline lth-train run, read back from its run file; tickets reused."""

import json

import pytest
import torch
from conftest import lth_train

from lth_wandb import Ticket
from lth_wandb.tracking.artifacts import TicketArtifacts
from lth_wandb.tracking.runfiles import find_runs, read_run
from lth_wandb.tracking.tickets import load_ticket

ROUNDS = 3


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("imp")
    result = lth_train(cwd, f"pruning.rounds={ROUNDS}")
    assert result.returncode == 0, result.stderr[-3000:]
    run = read_run(find_runs(cwd / "wandb")[0])
    return cwd, run


def by_type(run, kind):
    return [a for a in run.artifacts if a["type"] == kind]


def test_one_ticket_version_per_round_with_aliases_and_metadata(finished):
    _, run = finished
    tickets = by_type(run, "lottery-ticket")
    assert [a["name"] for a in tickets] == [f"ticket-{run.run_id}"] * (ROUNDS + 1)
    rounds = [json.loads(a["metadata"])["round"] for a in tickets]
    assert rounds == list(range(ROUNDS + 1))
    for r, artifact in enumerate(tickets):
        aliases = set(artifact["aliases"])
        assert {f"round-{r}", "latest"} <= aliases
        assert ("dense" in aliases) == (r == 0)
        meta = json.loads(artifact["metadata"])
        assert meta["parent"] == (f"ticket-{run.run_id}:round-{r - 1}" if r else None)
        row = next(h for h in run.history if h.get("round") == r and "round/density" in h)
        assert meta["density"] == pytest.approx(row["round/density"])
        assert meta["early_stop_step"] == row["round/early_stop_step"]
        for key in ("early_stop_step", "test_acc", "best_value", "criterion", "rewind", "seed", "config_digest"):
            assert meta[key] is not None, key
        assert meta["model_class"].endswith("Classifier") and meta["criterion"] == "magnitude"
    # "winning" was last given to the run's winning round, so that version holds the alias in W&B.
    winners = [json.loads(a["metadata"])["round"] for a in tickets if "winning" in a["aliases"]]
    assert winners[0] == 0 and winners[-1] == run.summary["ticket/winning_round"]
    densities = [json.loads(a["metadata"])["density"] for a in tickets]
    assert densities == sorted(densities, reverse=True) and densities[0] == 1.0


def test_model_artifacts_are_sparse(finished):
    _, run = finished
    models = by_type(run, "model")
    assert len(models) == ROUNDS + 1
    total_weights, prunable = 50_890, 50_800  # LeNet-300-100 on 8x8 digits: 64-300-100-10
    for artifact in models:
        meta = json.loads(artifact["metadata"])
        sizes = {c["path"]: int(c["size"]) for c in artifact["manifest"]["contents"]}
        assert set(sizes) == {"masks.safetensors", "trained.safetensors", "ticket.json"}
        tensor_bytes = sizes["masks.safetensors"] + sizes["trained.safetensors"]
        bound = (meta["density"] * prunable + (total_weights - prunable)) * 4 + prunable / 8
        assert tensor_bytes <= bound + 2048, (meta["round"], tensor_bytes, bound)  # + safetensors headers


def test_ticket_from_one_run_trains_in_another_exactly(finished, tmp_path):
    cwd, run = finished
    source_dir = next(cwd.glob("outputs/*/*/tickets/round-2/ticket"))
    result = lth_train(tmp_path, f"ticket={source_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    (second,) = [read_run(p) for p in find_runs(tmp_path / "wandb")]
    assert second.config["ticket"] == str(source_dir)
    rows = [r for r in second.history if "round/density" in r]
    assert len(rows) == 1  # pruning.rounds defaults to 0 when training a given ticket
    source = Ticket.load(source_dir)
    trained_from = Ticket.load(next(tmp_path.glob("outputs/*/*/tickets/round-0/ticket")))
    for name, mask in source.masks.items():
        assert torch.equal(trained_from.masks[name], mask)
    for name, value in source.rewind_weights.items():
        assert torch.equal(trained_from.rewind_weights[name], value)
    assert rows[0]["round/density"] == pytest.approx(source.density())


def test_tampered_ticket_fails_in_one_line(finished, tmp_path):
    cwd, _ = finished
    source_dir = next(cwd.glob("outputs/*/*/tickets/round-1/ticket"))
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for f in source_dir.iterdir():
        (tampered / f.name).write_bytes(f.read_bytes())
    data = bytearray((tampered / "rewind.safetensors").read_bytes())
    data[-5] ^= 0x01
    (tampered / "rewind.safetensors").write_bytes(bytes(data))
    result = lth_train(tmp_path, f"ticket={tampered}", "logger=none")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "ticket: checksum mismatch for" in line and "rewind.safetensors" in line


def test_unfetchable_reference_says_how_to_provide_a_ticket(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    with pytest.raises(FileNotFoundError, match=r"ticket='me/proj/ticket-x:winning' is neither a local ticket"):
        load_ticket("me/proj/ticket-x:winning")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(retention="some"), r"retention='some' is not one of \['all', 'winning_latest'\]"),
        (dict(ttl_days=0), r"ttl_days=0 must be a whole number of days >= 1"),
    ],
)
def test_bad_artifact_settings(kwargs, message):
    from lth_wandb import LotteryTicket

    with pytest.raises(ValueError, match=message):
        TicketArtifacts(LotteryTicket(), **kwargs)
