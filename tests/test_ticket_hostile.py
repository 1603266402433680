"""Ticket.load on broken and hostile tickets, and Ticket.save's crash safety.

Each hostile ticket starts as a real saved ticket and is then edited on disk the way a sender could: a changed
file gets a matching checksum, so the checks behind the checksum are what is tested.
"""

import hashlib
import io
import json
import os
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import nn

from lth_wandb import Ticket
from lth_wandb.pruning.ticket import check_compatible

FILES = ["masks.safetensors", "rewind.safetensors", "ticket.json", "trained.safetensors"]


def make_ticket(seed: int = 0, width: int = 5) -> Ticket:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, width), nn.ReLU(), nn.Linear(width, 2))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    masks = {"0.weight": torch.rand(state["0.weight"].shape) > 0.5}
    state["0.weight"] *= masks["0.weight"]
    trained = {k: v + 1 for k, v in state.items()}
    trained["0.weight"] *= masks["0.weight"]
    return Ticket(masks, state, trained, {"round": 2, "density": 0.5})


def saved(tmp_path: Path, **kwargs) -> Path:
    folder = tmp_path / "ticket"
    make_ticket().save(folder, **kwargs)
    return folder


def edit_manifest(folder: Path, change) -> None:
    path = folder / "ticket.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def replace_file(folder: Path, name: str, data: bytes) -> None:
    """Swap a stored file and re-stamp its checksum, as a hostile sender would."""
    (folder / name).write_bytes(data)
    edit_manifest(folder, lambda m: m["sha256"].update({name: hashlib.sha256(data).hexdigest()}))


def stored(folder: Path, name: str) -> dict[str, torch.Tensor]:
    return safetensors.torch.load((folder / name).read_bytes())


def assert_same(a: Ticket, b: Ticket) -> None:
    assert a.masks.keys() == b.masks.keys() and all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)
    assert all(torch.equal(a.rewind_weights[n], b.rewind_weights[n]) for n in a.rewind_weights)
    assert all(torch.equal(a.trained_weights[n], b.trained_weights[n]) for n in a.trained_weights)
    assert a.metadata == b.metadata


# ---- 1. names stay inside the folder ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["../../../../etc/passwd", "/etc/passwd", "sub/masks.safetensors", "..\\masks.safetensors", ".."]
)
def test_sha256_key_that_is_a_path_is_refused(tmp_path, key):
    folder = saved(tmp_path)
    edit_manifest(folder, lambda m: m["sha256"].update({key: hashlib.sha256(b"").hexdigest()}))
    with pytest.raises(ValueError, match=r"'sha256' key .* is a path, not a file name inside the ticket folder"):
        Ticket.load(folder)


def test_sha256_key_that_is_not_a_ticket_file_is_refused(tmp_path):
    folder = saved(tmp_path)
    (folder / "notes.txt").write_bytes(b"hello")
    replace_file(folder, "notes.txt", b"hello")
    with pytest.raises(ValueError, match=r"'sha256' key 'notes.txt' is not a ticket file; allowed keys: \['masks"):
        Ticket.load(folder)


def test_symlink_out_of_the_folder_is_refused(tmp_path):
    folder = saved(tmp_path)
    outside = tmp_path / "elsewhere.safetensors"
    (folder / "rewind.safetensors").rename(outside)
    (folder / "rewind.safetensors").symlink_to(outside)  # checksum still matches: only the link is wrong
    with pytest.raises(ValueError, match=r"rewind.safetensors links to .*elsewhere.safetensors, outside the ticket"):
        Ticket.load(folder)


def test_symlink_inside_the_folder_is_followed(tmp_path):
    folder = saved(tmp_path)
    (folder / "rewind.safetensors").rename(folder / "copy.safetensors")
    (folder / "rewind.safetensors").symlink_to("copy.safetensors")
    assert_same(Ticket.load(folder), make_ticket())


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_listed_file_that_is_not_a_regular_file_is_refused(tmp_path):
    folder = saved(tmp_path)
    (folder / "trained.safetensors").unlink()
    os.mkfifo(folder / "trained.safetensors")  # reading it would block forever
    with pytest.raises(ValueError, match=r"trained.safetensors is not a regular file"):
        Ticket.load(folder)


# ---- 2. only listed files are read; masks are required ------------------------------------------------------


def test_unlisted_file_in_the_folder_is_not_read(tmp_path):
    folder = saved(tmp_path, parts=("rewind",))
    (folder / "trained.safetensors").write_bytes(b"not even safetensors")
    loaded = Ticket.load(folder)
    assert loaded.trained_weights is None
    assert torch.equal(loaded.rewind_weights["0.weight"], make_ticket().rewind_weights["0.weight"])


def test_masks_need_a_checksum_entry(tmp_path):
    folder = saved(tmp_path)
    edit_manifest(folder, lambda m: m["sha256"].pop("masks.safetensors"))
    with pytest.raises(ValueError, match=r"'sha256' has no entry for masks.safetensors; every ticket needs its masks"):
        Ticket.load(folder)


def test_listed_file_that_is_missing(tmp_path):
    folder = saved(tmp_path)
    (folder / "rewind.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"rewind.safetensors is listed in ticket.json but missing"):
        Ticket.load(folder)


def test_checksum_that_is_not_hex_is_refused(tmp_path):
    folder = saved(tmp_path)
    edit_manifest(folder, lambda m: m["sha256"].update({"masks.safetensors": 12}))
    with pytest.raises(ValueError, match=r"'sha256' of masks.safetensors must be 64 lowercase hex digits, got 12"):
        Ticket.load(folder)


# ---- 3. the manifest ----------------------------------------------------------------------------------------


def test_truncated_manifest_is_a_plain_value_error(tmp_path):
    folder = saved(tmp_path)
    text = (folder / "ticket.json").read_text()
    (folder / "ticket.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=r"ticket.json is not valid JSON \(.*\); expected the manifest") as info:
        Ticket.load(folder)
    assert type(info.value) is ValueError and isinstance(info.value.__cause__, json.JSONDecodeError)
    assert "\n" not in str(info.value)
    type(info.value)(str(info.value))  # callers rebuild errors this way; JSONDecodeError could not be


def test_manifest_that_is_a_list_is_refused(tmp_path):
    folder = saved(tmp_path)
    (folder / "ticket.json").write_text(json.dumps([json.loads((folder / "ticket.json").read_text())]))
    with pytest.raises(ValueError, match=r"ticket.json holds a JSON list; expected an object"):
        Ticket.load(folder)


@pytest.mark.parametrize("version", ["abc", True, 1.0, 0, None])
def test_format_must_be_a_positive_int(tmp_path, version):
    folder = saved(tmp_path)
    edit_manifest(folder, lambda m: m.update(format=version))
    with pytest.raises(ValueError, match=r"'format' must be an integer ticket format version \(1 to 1\), got "):
        Ticket.load(folder)


def test_manifest_without_sha256_is_refused(tmp_path):
    folder = saved(tmp_path)
    edit_manifest(folder, lambda m: m.pop("sha256"))
    with pytest.raises(ValueError, match=r"'sha256' must be an object mapping file names to checksums, got None"):
        Ticket.load(folder)


@pytest.mark.parametrize("shapes", [{"0.weight": [5, -6]}, {"0.weight": "5x6"}, {"0.weight": [5, 6.0]}])
def test_mask_shapes_must_be_lists_of_non_negative_ints(tmp_path, shapes):
    folder = saved(tmp_path)
    edit_manifest(folder, lambda m: m.update(mask_shapes=shapes))
    with pytest.raises(ValueError, match=r"'mask_shapes' entry '0.weight' must be a list of non-negative integers"):
        Ticket.load(folder)


def test_mask_shapes_must_be_an_object(tmp_path):
    folder = saved(tmp_path)
    edit_manifest(folder, lambda m: m.update(mask_shapes=[[5, 6]]))
    with pytest.raises(ValueError, match=r"'mask_shapes' must be an object mapping tensor names to lists"):
        Ticket.load(folder)


@pytest.mark.parametrize("density", [1.5, -0.1, "0.5", True, float("nan")])
def test_metadata_density_must_be_a_fraction(tmp_path, density):
    folder = saved(tmp_path)
    edit_manifest(folder, lambda m: m["metadata"].update(density=density))
    with pytest.raises(ValueError, match=r"'metadata.density' must be a number in \[0, 1\], got "):
        Ticket.load(folder)


@pytest.mark.parametrize("round", [-1, 1.5, "2", False])
def test_metadata_round_must_be_a_non_negative_int(tmp_path, round):
    folder = saved(tmp_path)
    edit_manifest(folder, lambda m: m["metadata"].update(round=round))
    with pytest.raises(ValueError, match=r"'metadata.round' must be an integer >= 0, got "):
        Ticket.load(folder)


def test_metadata_must_be_an_object(tmp_path):
    folder = saved(tmp_path)
    edit_manifest(folder, lambda m: m.update(metadata="round 2"))
    with pytest.raises(ValueError, match=r"'metadata' must be a JSON object, got 'round 2'"):
        Ticket.load(folder)


def test_mask_shape_must_match_the_packed_size(tmp_path):
    folder = saved(tmp_path)
    edit_manifest(folder, lambda m: m["mask_shapes"].update({"0.weight": [7, 6]}))  # 42 bits: 6 bytes, not 4
    with pytest.raises(ValueError, match=r"mask '0.weight' is torch.uint8 of shape \(4,\), but its shape \[7, 6\]"):
        Ticket.load(folder)


def test_mask_names_must_match_the_mask_file(tmp_path):
    folder = saved(tmp_path)
    edit_manifest(folder, lambda m: m["mask_shapes"].update({"2.weight": [2, 5]}))
    with pytest.raises(ValueError, match=r"name different tensors: only in the file: \[\], only in the manifest: \["):
        Ticket.load(folder)


def test_stored_values_must_match_the_mask_count(tmp_path):
    folder = saved(tmp_path)
    tensors = stored(folder, "rewind.safetensors")
    kept = tensors["0.weight"].numel()
    tensors["0.weight"] = torch.cat([tensors["0.weight"], torch.ones(1)])
    replace_file(folder, "rewind.safetensors", safetensors.torch.save(tensors))
    with pytest.raises(ValueError, match=rf"rewind.safetensors: '0.weight' stores {kept + 1} values .* keeps {kept}"):
        Ticket.load(folder)


def test_weight_file_must_hold_every_masked_tensor(tmp_path):
    folder = saved(tmp_path)
    tensors = stored(folder, "trained.safetensors")
    del tensors["0.weight"]
    replace_file(folder, "trained.safetensors", safetensors.torch.save(tensors))
    with pytest.raises(ValueError, match=r"trained.safetensors lacks masked tensors \['0.weight'\]"):
        Ticket.load(folder)


# ---- 4. not safetensors -------------------------------------------------------------------------------------


def test_pickle_renamed_to_safetensors_is_refused(tmp_path):
    folder = saved(tmp_path)
    buffer = io.BytesIO()
    torch.save(make_ticket().rewind_weights, buffer)  # a pickle: loading it with torch.load could run code
    replace_file(folder, "rewind.safetensors", buffer.getvalue())
    with pytest.raises(ValueError, match=r"rewind.safetensors is not a safetensors file \(.*header") as info:
        Ticket.load(folder)
    assert isinstance(info.value.__cause__, SafetensorError)


# ---- 5. a mask for a tensor the model lacks -----------------------------------------------------------------


def test_mask_for_a_tensor_the_model_lacks(tmp_path):
    ticket = make_ticket()
    ticket.masks["2.weight"] = torch.ones(2, 5, dtype=torch.bool)
    ticket.save(tmp_path)
    loaded = Ticket.load(tmp_path)
    with pytest.raises(ValueError, match=r"does not fit Sequential: names only in the ticket: \[[^]]*'2.weight'"):
        check_compatible(loaded, nn.Sequential(nn.Linear(6, 5)))


# ---- 6. saving ----------------------------------------------------------------------------------------------


def test_saved_files_are_world_readable_whatever_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        folder = saved(tmp_path)
    finally:
        os.umask(old)
    assert sorted(p.name for p in folder.iterdir()) == FILES  # no temporary files left behind
    assert {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()} == dict.fromkeys(FILES, 0o644)


def unsaveable_tensor(ticket: Ticket) -> None:
    # The last file's last tensor: the masks and rewind bytes of the ticket are ready before it fails.
    ticket.trained_weights["2.bias"] = ticket.trained_weights["2.bias"].to_sparse()


def unsaveable_metadata(ticket: Ticket) -> None:
    ticket.metadata["settings"] = {"criterion": object()}  # not JSON


@pytest.mark.parametrize("breaker", [unsaveable_tensor, unsaveable_metadata])
def test_a_save_that_fails_leaves_the_previous_ticket(tmp_path, breaker):
    folder = saved(tmp_path)
    broken = make_ticket(seed=1)
    breaker(broken)
    with pytest.raises((RuntimeError, TypeError, ValueError), match="(?i)sparse|contiguous|JSON serializable"):
        broken.save(folder)
    assert sorted(p.name for p in folder.iterdir()) == FILES
    assert_same(Ticket.load(folder), make_ticket())


def test_a_write_error_mid_save_leaves_the_previous_ticket(tmp_path):
    resource = pytest.importorskip("resource")
    folder = tmp_path / "ticket"
    make_ticket(width=500).save(folder)
    other = make_ticket(seed=1, width=500)
    assert (folder / "masks.safetensors").stat().st_size < 8192 < (folder / "rewind.safetensors").stat().st_size
    # A real write error: files may not grow past 8 KiB, so the masks file is written and the rewind file fails.
    # CPython ignores SIGXFSZ, so the write raises EFBIG instead of killing the process.
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8192, hard))
    try:
        with pytest.raises(OSError, match="too large"):
            other.save(folder)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert sorted(p.name for p in folder.iterdir()) == FILES
    assert_same(Ticket.load(folder), make_ticket(width=500))


# ---- 7. sizes a file declares but cannot hold ----------------------------------------------------------------


def test_a_tensor_declared_larger_than_its_file_is_refused_from_the_header(tmp_path):
    folder = saved(tmp_path)
    header = json.dumps({"2.bias": {"dtype": "F32", "shape": [2**30], "data_offsets": [0, 8]}}).encode()
    data = len(header).to_bytes(8, "little") + header + bytes(8)  # 4 GiB declared in a file of 100 bytes
    replace_file(folder, "rewind.safetensors", data)
    declared = r"tensor '2.bias' declares shape \[1073741824\] of F32 \(4294967296 bytes\), but its data_offsets"
    with pytest.raises(ValueError, match=rf"rewind.safetensors: {declared} \[0, 8\] in a file of"):
        Ticket.load(folder)


def test_mask_shapes_are_checked_against_the_module_before_any_tensor_is_read(tmp_path):
    """A mask the size of a billion weights is a valid ticket on its own (its file is 128 MiB, its dense copies 4 GiB
    each): only the module it is for tells it apart, and it does before a byte of the tensors is read."""
    folder = saved(tmp_path)
    edit_manifest(folder, lambda m: m["mask_shapes"].update({"0.weight": [2**30]}))
    (folder / "masks.safetensors").write_bytes(b"not read")  # reading it would fail its checksum
    module = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))
    declared = r"ticket.json gives '0.weight' shape \[1073741824\], but the module has shape \(5, 6\)"
    with pytest.raises(ValueError, match=rf"ticket does not fit Sequential: .*{declared}; nothing was read"):
        Ticket.load(folder, module)
    edit_manifest(folder, lambda m: m["mask_shapes"].update({"0.weight": [5, 6], "9.weight": [2]}))
    with pytest.raises(ValueError, match=r"gives '9.weight' shape \[2\], but the module has no such parameter"):
        Ticket.load(folder, module)
