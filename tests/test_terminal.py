"""What lth-train says on the terminal: no srun hint for one process that SLURM did not start, one line when an early
bird fires, and after an offline resume the ``wandb sync`` command that uploads every attempt of the run."""

import json
import shlex
import shutil

import pytest
from conftest import lth_train

from lth_wandb.tracking.runfiles import find_runs


@pytest.mark.skipif(shutil.which("srun") is None, reason="no srun here: Lightning gives its hint only where it is")
def test_no_srun_hint_for_one_process_outside_slurm(tmp_path):
    done = lth_train(tmp_path, "pruning.rounds=0", "logger=none")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "srun" not in done.stderr + done.stdout


def test_an_early_bird_says_so_in_one_line(tmp_path):
    bird = ("pruning=early_bird", "pruning.early_bird_window=2", "pruning.early_bird_threshold=0.5")
    done = lth_train(tmp_path, *bird, "pruning.rounds=1", "pruning.epochs_per_round=10", "logger=none",
                     tiny=("trainer.enable_progress_bar=false",))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in (done.stdout + done.stderr).splitlines() if "early bird at epoch" in line]
    assert len(lines) == 1 and "so round 0 ends here and pruning starts" in lines[0], lines
    assert "(threshold 0.5) over the last 2 masks" in lines[0]


def test_after_an_offline_resume_the_sync_command_names_every_attempt(tmp_path):
    first = lth_train(tmp_path, "pruning.rounds=1", "wandb.log_artifacts=false")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "upload all of it" not in first.stdout  # one attempt: W&B's own line is right
    (record,) = tmp_path.glob("outputs/*/*/run.json")
    record.write_text(json.dumps({**json.loads(record.read_text()), "status": "running"}))  # as if killed
    resumed = lth_train(tmp_path, f"resume={record.parent}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    attempts = [str(p.resolve()) for p in find_runs(tmp_path / "wandb")]
    assert len(attempts) == 2 and attempts[0].split("-")[-1] == attempts[1].split("-")[-1]  # one run id
    (line,) = [line for line in resumed.stdout.splitlines() if "upload all of it" in line]
    assert shlex.split(line.split(" with: ", 1)[1]) == ["wandb", "sync", *attempts]
