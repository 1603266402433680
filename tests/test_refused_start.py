"""A start lth-train refuses leaves nothing behind: no ``outputs/<date>/<time>/`` folder holding only Hydra's
``.hydra/``, and a refused resume leaves the run folder byte for byte as it was."""

import json
from pathlib import Path

from conftest import lth_train, lth_train_main

QUICK = ("logger=none", "pruning.rounds=0", "pruning.epochs_per_round=1", "trainer.enable_progress_bar=false")


def tree(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def test_a_refused_start_leaves_no_folder_and_keeps_the_others(monkeypatch, tmp_path, capsys):
    other = tmp_path / "outputs" / "2000-01-01" / "00-00-00"
    other.mkdir(parents=True)
    (other / "keep.txt").write_text("an earlier run")
    # Refused after the run record is written (the W&B mode is checked when the logger is built).
    assert lth_train_main(monkeypatch, tmp_path, *QUICK, "wandb.mode=bogus") == 2
    assert "mode='bogus' is not one of" in capsys.readouterr().err
    assert tree(tmp_path / "outputs") == {"2000-01-01": None, "2000-01-01/00-00-00": None,
                                          "2000-01-01/00-00-00/keep.txt": b"an earlier run"}  # fmt: skip


def test_a_refused_resume_leaves_the_run_folder_as_it_was(tmp_path):
    """Processes of their own: a run folder is locked by the process that trains it, for as long as it lives."""
    assert lth_train(tmp_path, *QUICK).returncode == 0
    (folder,) = tmp_path.glob("outputs/*/*")

    def as_if_killed():
        record = json.loads((folder / "run.json").read_text())
        (folder / "run.json").write_text(json.dumps({**record, "status": "running"}))

    as_if_killed()
    assert lth_train(tmp_path, f"resume={folder}").returncode == 0  # Hydra writes .hydra-resumed/
    assert (folder / ".hydra-resumed" / "overrides.yaml").is_file()
    as_if_killed()
    before = tree(folder)
    refused = lth_train(tmp_path, f"resume={folder}", "pruning.rounds=5")
    assert refused.returncode == 2 and "pruning.rounds=5 differs from the run being resumed" in refused.stderr
    assert tree(folder) == before  # .hydra-resumed/ and .lock included
    # A new start into a folder that holds a run is refused, and leaves that run's .hydra/ as it was.
    again = lth_train(tmp_path, *QUICK, f"hydra.run.dir={folder}", "seed=3")
    assert again.returncode == 2 and "already holds a run" in again.stderr
    assert tree(folder) == before
