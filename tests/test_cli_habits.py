"""Command-line habits: ``--version`` of lth-train and lth-report (the version defined once, in pyproject.toml),
and ``lth-train --help`` that says what lth-train is and how to run the controls and resume a run."""

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

import lth_wandb

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_the_version_is_defined_once_in_pyproject():
    (declared,) = re.findall(r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert lth_wandb.__version__ == version("lth-wandb") == declared
    literal = re.compile(rf"""["']{re.escape(declared)}["']""")
    assert [p for p in (ROOT / "lth_wandb").rglob("*.py") if literal.search(p.read_text())] == []


@pytest.mark.parametrize("program", ["lth-train", "lth-report"])
def test_version_names_the_program_and_its_libraries(program):
    done = subprocess.run([str(BIN / program), "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == lth_wandb.version_text(program) + "\n"
    assert done.stdout.startswith(f"{program} {version('lth-wandb')} (torch ")
    assert f"pytorch-lightning {version('pytorch-lightning')}" in done.stdout and "Hydra 1." not in done.stdout


def test_help_says_what_lth_train_is_and_how_to_run_controls_and_resume():
    done = subprocess.run([str(BIN / "lth-train"), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.startswith("lth-train: find lottery tickets")
    assert "lth-train controls=outputs/<date>/<time>" in text and "lth-train resume=outputs/<date>/<time>" in text
    assert re.search(r"^pruning: .*\bimp\b.*\bsnip\b", text, re.M)  # the config groups, listed by Hydra
    assert "powered by Hydra" not in text
