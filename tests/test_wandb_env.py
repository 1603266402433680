"""W&B's conventions through lth-train: each WANDB_* variable, one at a time, reaches the run when the config leaves
its setting null; a value set in the config wins over it; lth-train's own default project is lth-wandb. Runs are
offline and read back with the SDK's reader (``wandb leet inspect --json``)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY, subprocess_env

from lth_wandb.app.resume import RunRecord
from lth_wandb.tracking.runfiles import find_runs

VARIABLES = ("WANDB_DIR", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_GROUP", "WANDB_TAGS", "WANDB_NAME",
             "WANDB_JOB_TYPE")  # fmt: skip
RUN = ("pruning.rounds=0", "wandb.log_artifacts=false")


def train(cwd: Path, *overrides: str, **env: str) -> dict:
    """lth-train offline with exactly ``env`` of the variables; the run record W&B wrote, and where."""
    base = {k: v for k, v in subprocess_env().items() if k not in VARIABLES}
    command = [sys.executable, "-m", "lth_wandb.train", *TINY, *RUN, *overrides]
    done = subprocess.run(command, cwd=cwd, env={**base, **env}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (record,) = cwd.glob("outputs/*/*/run.json")
    wandb_dir = Path(RunRecord.read(record.parent).wandb_dir)
    (run_dir,) = find_runs(wandb_dir)
    (file,) = run_dir.glob("*.wandb")
    inspect = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(file)]
    lines = subprocess.run(inspect, capture_output=True, text=True, check=True).stdout.splitlines()
    run = next(json.loads(line)["run"] for line in lines if json.loads(line).get("type") == "run")
    return {"dir": wandb_dir, "project": run.get("project"), "entity": run.get("entity"),
            "group": run.get("run_group", ""), "tags": run.get("tags", []), "name": run.get("display_name"),
            "job_type": run.get("job_type")}  # fmt: skip


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("WANDB_DIR", "scratch", "dir", "{cwd}/scratch/wandb"),
        ("WANDB_PROJECT", "p", "project", "p"),
        ("WANDB_ENTITY", "team", "entity", "team"),
        ("WANDB_RUN_GROUP", "grp", "group", "grp"),
        ("WANDB_TAGS", "a,b", "tags", ["a", "b"]),
        ("WANDB_NAME", "nm", "name", "nm"),
        ("WANDB_JOB_TYPE", "jt", "job_type", "jt"),
    ],
)
def test_each_wandb_variable_reaches_the_run(tmp_path, variable, value, field, expected):
    run = train(tmp_path, **{variable: value})
    expected = expected.format(cwd=tmp_path) if isinstance(expected, str) else expected
    assert (str(run[field]) if field == "dir" else run[field]) == expected
    if variable != "WANDB_PROJECT":
        assert run["project"] == "lth-wandb"  # the app's own default, with no WANDB_PROJECT
    if variable != "WANDB_DIR":
        assert run["dir"] == tmp_path / "wandb"


def test_the_config_wins_over_every_variable(tmp_path):
    env = {"WANDB_DIR": "scratch", "WANDB_PROJECT": "p", "WANDB_ENTITY": "team", "WANDB_RUN_GROUP": "grp",
           "WANDB_TAGS": "a,b", "WANDB_NAME": "nm", "WANDB_JOB_TYPE": "jt"}  # fmt: skip
    config = ["wandb.dir=mine", "wandb.project=P2", "wandb.entity=team2", "wandb.group=G2", "wandb.tags=[t]",
              "wandb.name=N2", "wandb.job_type=J2"]  # fmt: skip
    run = train(tmp_path, *config, **env)
    assert run == {"dir": tmp_path / "mine" / "wandb", "project": "P2", "entity": "team2", "group": "G2",
                   "tags": ["t"], "name": "N2", "job_type": "J2"}  # fmt: skip
