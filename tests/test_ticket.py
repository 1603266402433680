"""Ticket: save/load round trip, checksums, applying to a module."""

import json

import pytest
import torch
from torch import nn

from lth_wandb import Ticket


def make_ticket(net: nn.Module) -> Ticket:
    state = {k: v.clone() for k, v in net.state_dict().items()}
    masks = {"0.weight": torch.rand(net[0].weight.shape, generator=torch.Generator().manual_seed(0)) > 0.5}
    state["0.weight"] *= masks["0.weight"]
    trained = {k: v + 1 for k, v in state.items()}
    trained["0.weight"] *= masks["0.weight"]  # pruned weights stay zero through training
    return Ticket(masks, state, trained, {"round": 2, "note": "x"})


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))


def test_save_load_roundtrip_is_exact(tmp_path):
    ticket = make_ticket(net())
    ticket.save(tmp_path / "t")
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == [
        "masks.safetensors",
        "rewind.safetensors",
        "ticket.json",
        "trained.safetensors",
    ]
    loaded = Ticket.load(tmp_path / "t")
    assert loaded.metadata == {"round": 2, "note": "x"}
    for name in ticket.masks:
        assert torch.equal(loaded.masks[name], ticket.masks[name])
    for name in ticket.rewind_weights:
        assert torch.equal(loaded.rewind_weights[name], ticket.rewind_weights[name])
        assert torch.equal(loaded.trained_weights[name], ticket.trained_weights[name])
    assert loaded.density() == pytest.approx(ticket.density())


def test_tampered_file_fails_checksum(tmp_path):
    make_ticket(net()).save(tmp_path)
    path = tmp_path / "rewind.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"checksum mismatch for .*rewind.safetensors"):
        Ticket.load(tmp_path)


def test_missing_ticket_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="no ticket at .*ticket.json is missing"):
        Ticket.load(tmp_path)


def test_newer_format_refused(tmp_path):
    make_ticket(net()).save(tmp_path)
    manifest = json.loads((tmp_path / "ticket.json").read_text())
    manifest["format"] = 99
    (tmp_path / "ticket.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="ticket format 99 is newer"):
        Ticket.load(tmp_path)


def test_apply_loads_masked_rewind_weights():
    ticket = make_ticket(net())
    target = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))
    ticket.apply(target)
    assert torch.equal(target[0].weight, ticket.rewind_weights["0.weight"])
    assert torch.all(target[0].weight[~ticket.masks["0.weight"]] == 0)


def test_apply_shape_mismatch():
    ticket = make_ticket(net())
    with pytest.raises(ValueError, match=r"'0.weight' has shape \(5, 6\) in the ticket but \(7, 6\) in the module"):
        ticket.apply(nn.Sequential(nn.Linear(6, 7), nn.ReLU(), nn.Linear(7, 2)))


def test_apply_missing_name():
    ticket = make_ticket(net())
    with pytest.raises(ValueError, match=r"names only in the ticket: \['2.weight', '2.bias'\]"):
        ticket.apply(nn.Sequential(nn.Linear(6, 5)))


def test_parts_select_weight_files_and_storage_is_sparse(tmp_path):
    torch.manual_seed(0)
    big = nn.Sequential(nn.Linear(400, 300), nn.ReLU(), nn.Linear(300, 10))
    state = big.state_dict()
    masks = {"0.weight": torch.rand(300, 400) < 0.05}
    state["0.weight"] = state["0.weight"] * masks["0.weight"]
    ticket = Ticket(masks, state, state, {})
    ticket.save(tmp_path / "rewind_only", parts=("rewind",))
    loaded = Ticket.load(tmp_path / "rewind_only")
    assert loaded.trained_weights is None and torch.equal(loaded.rewind_weights["0.weight"], state["0.weight"])
    dense_bytes = 300 * 400 * 4
    stored = (tmp_path / "rewind_only" / "rewind.safetensors").stat().st_size
    stored -= (300 + 10 * 300 + 10) * 4  # the dense bias and output layer
    packed = (tmp_path / "rewind_only" / "masks.safetensors").stat().st_size
    # Survivors plus one bit per weight: about 5% + 1/32 of the dense fp32 layer (headers add a little).
    assert stored + packed < dense_bytes * (0.05 + 1 / 32) * 1.1
    trained_only = Ticket.load(ticket.save(tmp_path / "trained_only", parts=("trained",)))
    assert trained_only.rewind_weights is None
    with pytest.raises(ValueError, match="this ticket has no rewind weights"):
        trained_only.apply(big)
    with pytest.raises(ValueError, match=r"parts=\('weights',\) has unknown entries \['weights'\]"):
        ticket.save(tmp_path / "x", parts=("weights",))


def test_the_documented_numpy_reader_reads_what_ticket_save_writes(tmp_path):
    """docs/ticket-format.md's reader, run as written, agrees with Ticket.load."""
    import re
    from pathlib import Path

    import numpy as np

    doc = (Path(__file__).parents[1] / "docs" / "ticket-format.md").read_text()
    (code,) = re.findall(r"## A reader in numpy\n\n(?:<!--.*?-->\n)?```python\n(.*?)```", doc, re.S)
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 - the documented reader itself
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    masks = {"0.weight": torch.rand(5, 7) > 0.6, "2.weight": torch.rand(3, 5) > 0.3}
    state = {k: v * masks[k] if k in masks else v for k, v in net.state_dict().items()}
    Ticket(masks, state, metadata={"round": 2}).save(tmp_path / "t")
    read_masks, weights, metadata = namespace["read_ticket"](tmp_path / "t")
    loaded = Ticket.load(tmp_path / "t")
    assert metadata == loaded.metadata == {"round": 2}
    for name, mask in loaded.masks.items():
        assert np.array_equal(read_masks[name], mask.numpy())
    for name, tensor in loaded.rewind_weights.items():
        assert np.array_equal(weights[name], tensor.numpy()), name
