"""lth-train given hostile or broken files: a ticket whose manifest declares a mask far larger than the model's
tensor, a ``ticket=`` that is a link to itself, and a run folder whose round file was replaced by a link to
/dev/zero. Real processes; the run is SIGKILLed by tests/faults/sitecustomize.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import subprocess_env

from lth_wandb.app.resume import RunRecord

FAULTS = Path(__file__).parent / "faults"
RUN = ("pruning.rounds=2", "pruning.epochs_per_round=1", "trainer.enable_progress_bar=false")


def lth_train(cwd: Path, *args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = subprocess_env(**({"LTH_FAULT": fault, "PYTHONPATH": str(FAULTS)} if fault else {}))
    command = [sys.executable, "-m", "lth_wandb.train", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def error_line(done: subprocess.CompletedProcess) -> str:
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("lth-train: error: ")]
    return line


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> Path:
    """A run of 3 rounds SIGKILLed at its second epoch's checkpoint: rounds 0 and 1 have finished (their tickets
    and round files are on disk), round 2 has not started."""
    cwd = tmp_path_factory.mktemp("killed")
    done = lth_train(cwd, *RUN, fault="replace:*/checkpoints/last.ckpt:2")
    assert done.returncode == -9, done.stderr[-3000:]
    (folder,) = cwd.glob("outputs/*/*")
    assert (folder / "rounds" / "round-1.safetensors").is_file()
    return folder


def test_a_ticket_declaring_a_huge_mask_is_refused_before_its_tensors_are_read(killed, tmp_path):
    ticket = Path(shutil.copytree(killed / "tickets" / "round-1" / "ticket", tmp_path / "ticket"))
    manifest = json.loads((ticket / "ticket.json").read_text())
    manifest["mask_shapes"]["net.fc1.weight"] = [2**30]  # a 128 MiB mask, 4 GiB dense per weight file
    (ticket / "ticket.json").write_text(json.dumps(manifest))
    done = lth_train(tmp_path, f"ticket={ticket}", *RUN)
    assert done.returncode == 2, done.stderr[-3000:]
    assert error_line(done) == (
        f"lth-train: error: ticket: ticket does not fit Classifier: {ticket / 'ticket.json'} gives 'net.fc1.weight' "
        "shape [1073741824], but the module has shape (300, 64); nothing was read from the ticket's tensor files. "
        "Hint: use a ticket found on this model, built with the same sizes. (LTH_DEBUG=1 shows the traceback)"
    )
    assert not (tmp_path / "wandb").exists()


def test_a_ticket_that_is_a_link_to_itself_is_called_a_broken_link(tmp_path):
    (tmp_path / "loop").symlink_to("loop")
    done = lth_train(tmp_path, f"ticket={tmp_path / 'loop'}", *RUN)
    assert done.returncode == 2, done.stderr[-3000:]
    assert error_line(done).startswith(
        f"lth-train: error: ticket: ticket='{tmp_path / 'loop'}' is a broken link (to 'loop', which leads back to "
        "itself). Hint: point ticket= at the folder Ticket.save wrote"
    )
    assert not (tmp_path / "wandb").exists()


@pytest.mark.slow
def test_a_round_file_linked_to_dev_zero_is_refused_and_its_hint_restores_it(killed, tmp_path):
    folder = Path(shutil.copytree(killed, tmp_path / "run", symlinks=True))
    round_file = folder / "rounds" / "round-1.safetensors"
    round_file.unlink()
    round_file.symlink_to("/dev/zero")  # read whole, it would fill the memory
    done = lth_train(tmp_path, f"resume={folder}")
    assert done.returncode == 2, done.stderr[-3000:]
    line = error_line(done)
    assert f"{round_file} links to /dev/zero, not a regular file; expected round 1's trained weights" in line
    (command,) = re.findall(r"is a whole copy \(its SHA-256 matches\): (.*), then resume again", line)
    subprocess.run(command, shell=True, check=True)
    done = lth_train(tmp_path, f"resume={folder}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert RunRecord.read(folder).status == "finished"


@pytest.mark.slow
def test_a_control_whose_imp_run_moved_names_it_and_resumes_once_linked_back(killed, tmp_path):
    """A control trains the IMP run's masks from ``pruning.masks_from``, a setting a resume may not change: when
    that folder has moved, the error says so (not a wrong path pattern), and its hint (a link) is what resumes."""
    imp = Path(shutil.copytree(killed, tmp_path / "imp", symlinks=True))
    control = ("pruning.control=random_mask", f"pruning.masks_from={imp}", "pruning.rounds=1")
    done = lth_train(tmp_path, *RUN, *control, fault="replace:*/checkpoints/last.ckpt:1")
    assert done.returncode == -9, done.stderr[-3000:]
    (job,) = tmp_path.glob("outputs/*/*")
    moved = imp.rename(tmp_path / "moved")
    done = lth_train(tmp_path, f"resume={job}")
    assert done.returncode == 2, done.stderr[-3000:]
    line = error_line(done)
    assert f"masks_from='{imp}' does not exist: it is the run folder whose tickets" in line
    (link,) = re.findall(r"\(ln -s <where it is now> (\S+)\)", line)
    Path(link).symlink_to(moved)
    done = lth_train(tmp_path, f"resume={job}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert RunRecord.read(job).status == "finished"
