"""lth-report's page and figures are one set on disk: a kill or a full disk while it writes leaves the previous
report whole (page and figures), and a new report never mixes with an old one's figures. Also: a malformed
``instability.json`` is named in one line.

The kill is real: ``lth-report`` runs as a process and tests/faults/sitecustomize.py SIGKILLs it in the middle of
a figure's write.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import subprocess_env
from test_report import log_run

from lth_wandb import atomic
from lth_wandb.report import cli

FAULTS = Path(__file__).parent / "faults"
FIGURES = ["accuracy", "compute", "early_stop", "val_curves"]  # what one IMP run without extras draws
FORMATS = ["png", "svg"]
ROUNDS = [(1.0, 0.90, 0.30), (0.5, 0.91, 0.29), (0.25, 0.88, 0.33)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """One offline W&B run of three rounds, as lth-train logs them."""
    folder = tmp_path_factory.mktemp("runs")
    run_id = log_run(folder, seed=0, rounds=ROUNDS)
    (folder / "run_id").write_text(run_id)
    return folder / "wandb"


def snapshot(report: Path) -> dict[str, bytes]:
    """Every file of the report (page and figures) by path relative to its folder; not the temporary ones."""
    files = sorted(report.parent.rglob("*"))
    return {str(p.relative_to(report.parent)): p.read_bytes() for p in files if p.is_file() and "/." not in str(p)}


def leftovers(report: Path) -> list[str]:
    return sorted(p.name for p in report.parent.iterdir() if p.name.startswith("."))


def lth_report(*args: str, fault: str) -> subprocess.CompletedProcess:
    env = subprocess_env(LTH_FAULT=fault, PYTHONPATH=str(FAULTS))
    command = [sys.executable, "-m", "lth_wandb.report.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def previous_report(folder: Path) -> tuple[Path, dict[str, bytes]]:
    """A report written before, with a figure that the new report does not draw."""
    page = folder / "out" / "report.html"
    (page.parent / "report-figures").mkdir(parents=True)
    page.write_text("<!DOCTYPE html>\n<title>previous</title>\n")
    for name in ("val_curves.png", "val_curves.svg", "early_bird.png"):
        (page.parent / "report-figures" / name).write_bytes(f"the previous {name}".encode())
    return page, snapshot(page)


@pytest.mark.slow
def test_a_kill_mid_report_leaves_the_previous_report(runs, tmp_path):
    page, first = previous_report(tmp_path)
    # SIGKILL while the second report writes its third figure file.
    killed = lth_report(
        "--offline", str(runs), "--html", str(page), "--title", "second", fault="fsync:*report-figures*:3"
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert snapshot(page) == first
    assert [name for name in leftovers(page) if name.startswith(".report-figures.")]  # the killed run's unfinished set
    assert cli.main(["--offline", str(runs), "--html", str(page), "--title", "third"]) == 0
    assert "report-figures/accuracy.png" in snapshot(page) and leftovers(page) == []


def test_a_full_disk_mid_report_leaves_the_previous_report(runs, tmp_path, capsys, monkeypatch):
    page, first = previous_report(tmp_path)
    # A full disk while the page is written: every figure is ready by then, and none is used.
    capsys.readouterr()
    real_fsync = os.fsync

    def full_disk(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        if fnmatch.fnmatch(path, "*/.report.html.*.tmp"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    assert cli.main(["--offline", str(runs), "--html", str(page), "--title", "second"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lth-report: disk full: [Errno 28] No space left on device")
    assert "the previous report and figures are as they were. Hint: free some space" in err
    assert snapshot(page) == first and leftovers(page) == []
    monkeypatch.undo()

    # The next report replaces the page and every figure: the previous report's early_bird.png is not left among
    # the new figures.
    assert cli.main(["--offline", str(runs), "--html", str(page), "--title", "third"]) == 0
    third = snapshot(page)
    assert sorted(third) == sorted(["report.html", *(f"report-figures/{n}.{fmt}" for n in FIGURES for fmt in FORMATS)])
    assert leftovers(page) == [] and "<title>third</title>" in third["report.html"].decode()
    assert all(os.stat(page.parent / name).st_mode & 0o777 == 0o644 for name in third)
    assert (page.parent / "report-figures").stat().st_mode & 0o777 == 0o755


def test_atomic_folder_keeps_the_old_folder_on_an_error(tmp_path):
    folder = tmp_path / "figures"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"old a")
    with pytest.raises(OSError, match="disk"):
        with atomic.atomic_folder(folder) as staging:
            (staging / "a.png").write_bytes(b"new a")
            raise OSError(errno.ENOSPC, "disk full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures"]
    assert (folder / "a.png").read_bytes() == b"old a"
    (tmp_path / ".figures.abc.old").mkdir()  # what a kill between the two renames leaves
    with atomic.atomic_folder(folder) as staging:
        (staging / "b.png").write_bytes(b"new b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures"]
    assert sorted(p.name for p in folder.iterdir()) == ["b.png"]


def test_a_malformed_instability_file_is_named(runs, tmp_path, capsys):
    run_dir = runs.parent / "outputs" / "2026-12-01" / "10-00-00"  # where lth-train's run.json links the run
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"wandb_run_id": (runs.parent / "run_id").read_text()}))
    try:
        for text, why in (
            ('{"results": [', "Expecting value"),
            ('{"results": [{"round": 0}]}', "missing key 'density'"),
        ):
            (run_dir / "instability.json").write_text(text)
            assert cli.main(["--offline", str(runs), "--html", str(tmp_path / "r.html")]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1, err
            assert f"lth-report: error: {run_dir / 'instability.json'} is not an instability analysis" in err
            assert why in err and "Hint: move it out of the run folder" in err
    finally:
        shutil.rmtree(runs.parent / "outputs")
