"""Your own code by ``_target_`` from the working directory, through the installed ``lth-train`` (not ``python -m``,
which would put the working directory on the path by itself): it imports the way ``python -m`` would, also in the
DDP ranks Lightning starts; a name that does not import is one line and exit code 2."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import lth_train_main, subprocess_env

LTH_TRAIN = str(Path(sys.executable).parent / "lth-train")
USERPKG = Path(__file__).parent / "userpkg"
QUICK = ("logger=none", "pruning.rounds=0", "pruning.epochs_per_round=1", "trainer.enable_progress_bar=false")


def project(tmp_path: Path) -> Path:
    """A user's folder holding the package ``mypkg`` (not installed, not on PYTHONPATH)."""
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    shutil.copy(USERPKG / "signals.py", tmp_path / "mypkg" / "signals.py")
    return tmp_path


def installed_lth_train(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = subprocess_env()
    env.pop("PYTHONPATH", None)
    return subprocess.run([LTH_TRAIN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_your_datamodule_imports_from_the_working_directory(tmp_path):
    result = installed_lth_train(project(tmp_path), "data._target_=mypkg.signals.Signals", *QUICK)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(tmp_path.glob("outputs/*/*/checkpoints/last.ckpt"))


@pytest.mark.slow
def test_ddp_ranks_import_it_too(tmp_path):
    """Lightning starts rank 1 as a second lth-train; it imports the DataModule from the same folder."""
    ddp = ("trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "trainer.val_every_n_steps=null")
    result = installed_lth_train(project(tmp_path), "data._target_=mypkg.signals.Signals", *QUICK, *ddp)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(tmp_path.glob("outputs/*/*/checkpoints/last.ckpt"))
    if shutil.which("srun"):  # two processes: Lightning's hint to start them with srun is kept
        assert "The `srun` command is available" in result.stderr


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("data._target_=mypkg.signals.Signalz",
         "data: cannot import _target_='mypkg.signals.Signalz': mypkg.signals has no 'Signalz'. Hint: did you mean "
         "mypkg.signals.Signals?"),
        ("data._target_=mypkg.signal.Signals",
         "cannot import _target_='mypkg.signal.Signals': mypkg has no 'signal'. Hint: did you mean mypkg.signals?"),
        ("data._target_=mypkz.signals.Signals",
         "cannot import _target_='mypkz.signals.Signals': no module named 'mypkz' in the working directory ({cwd}) "
         "or the installed packages. Hint: run lth-train from the folder that holds the package, install it "
         "(pip install -e .), or add its folder to PYTHONPATH"),
        ("model._target_=mypkg.broken.Net", "importing mypkg.broken failed: No module named 'scipyy'. Hint: install"),
        ("model._target_=Net", "_target_='Net' is not a dotted import path. Hint: module.Class"),
    ],
)  # fmt: skip
def test_a_target_that_does_not_import_is_one_line_and_leaves_no_folder(monkeypatch, tmp_path, capsys, target, message):
    cwd = project(tmp_path)
    (cwd / "mypkg" / "broken.py").write_text("import scipyy\n")
    monkeypatch.setattr(sys, "path", list(sys.path))  # lth-train adds the working directory; undone after the test
    monkeypatch.setenv("PYTHONPATH", "")
    assert lth_train_main(monkeypatch, cwd, target, *QUICK) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("lth-train: error: ") and message.format(cwd=cwd) in line, line
    assert not (cwd / "outputs").exists()  # Hydra's folder of the refused start is gone, and outputs/ with it
