"""Your own LightningDataModule in lth-train (data._target_): 1-D signals from a module outside the package train,
prune, log and report; a DataModule that lacks what the run needs fails in one line."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import lth_train_main, subprocess_env

from lth_wandb.tracking.runfiles import find_runs, read_run

USERPKG = Path(__file__).parent / "userpkg"


def test_your_datamodule_trains_prunes_logs_and_reports(tmp_path):
    env = subprocess_env(PYTHONPATH=str(USERPKG))
    command = [sys.executable, "-m", "lth_wandb.train", "data._target_=signals.Signals", "+data.num_samples=600",
               "pruning.rounds=2", "pruning.epochs_per_round=2", "trainer.enable_progress_bar=false"]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = find_runs(tmp_path / "wandb")
    run = read_run(run_dir)
    rows = [r for r in run.history if "round/density" in r]
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert all(0 < r["round/test_acc"] <= 1 for r in rows)  # test_dataloader() is measured at every validation
    assert not any("round/mask_first_layer" in r for r in rows)  # (N, 40) signals: no picture to draw
    assert run.config["data"]["_target_"] == "signals.Signals" and run.config["data"]["num_samples"] == 600
    report = [sys.executable, "-m", "lth_wandb.report.cli", "--offline", str(tmp_path / "wandb"),
              "--html", str(tmp_path / "r.html"), "--markdown", str(tmp_path / "r.md")]  # fmt: skip
    done = subprocess.run(report, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    table = (tmp_path / "r.md").read_text()
    assert table.count("winning ticket (IMP)") == 3 and (tmp_path / "r.html").stat().st_size > 0


def run_main(monkeypatch, tmp_path, *args, expect_exit=True):
    monkeypatch.syspath_prepend(str(USERPKG))
    quick = ["logger=none", "pruning.rounds=0", "pruning.epochs_per_round=1", "trainer.enable_progress_bar=false"]
    flags = list(args[:2]) if args[:1] == ("--config-dir",) else []  # Hydra's flags before the overrides
    return lth_train_main(monkeypatch, tmp_path, *flags, *quick, *args[len(flags) :], expect_exit=expect_exit)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data._target_=signals.NoValidation"], "NoValidation has no val_dataloader(); lth-train needs one"),
        (["data._target_=torch.nn.Identity"], "data._target_ built a Identity, not a LightningDataModule"),
        (["data._target_=signals.NoClasses"], "NoClasses does not say how many classes it has"),
        (["data._target_=signals.Signals", "+data.bogus=1"], "unexpected keyword argument 'bogus'"),
        (["data._target_=signals.Signals", "data.root=/x"], "data.root='/x' is a setting of lth-train's built-in "
         "datasets, and signals.Signals takes no 'root' (it takes ['num_samples', 'batch_size', 'seed', 'with_test'])"),
        (["data._target_=signals.Signals", "+data.seed=1", "+data.options.seed=2"], "data.seed and data.options.seed"),
        (["--config-dir", "{conf}", "data=extra_key"], "Hint: your own DataModule's arguments go in as +data.<arg>"),
        (["--config-dir", "{conf}", "data=bad_option"], "unexpected keyword argument 'bogus'"),
        (["data._target_=signals.SetupFails"], "data: SetupFails.setup() raised RuntimeError: cannot open "
         "/data/signals.h5. Hint: fix SetupFails.setup()"),
        (["data._target_=signals.EmptyTraining"], "data: EmptyTraining.train_dataloader() raised ValueError: "
         "num_samples should be a positive integer value, but got num_samples=0. Hint: its dataset is empty: check "
         "the data EmptyTraining.setup() loads for this split"),
        (["data._target_=signals.EmptyValidation"], "data: EmptyValidation.val_dataloader() yields no batch: its "
         "dataset is empty"),
        (["data._target_=signals.LabelsFrom1"], "data: LabelsFrom1.train_dataloader()'s first batch holds labels "
         "1..3, but the model has 3 classes (0..2). Hint: labels must be class indices 0..N-1"),
        (["data._target_=signals.Signals", "+data.with_test=false", "instability=lmc"], "data: instability.enabled="
         "true measures test error, but Signals has no test_dataloader(). Hint: give Signals a test_dataloader(), "
         "or instability.enabled=false"),
    ],
)
def test_a_datamodule_that_lacks_what_the_run_needs_fails_in_one_line(monkeypatch, tmp_path, capsys, args, message):
    conf = data_yamls(tmp_path)
    assert run_main(monkeypatch, tmp_path, *[a.format(conf=conf) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lth-train: error: ") and message in err[0], err


@pytest.mark.parametrize(
    ("target", "args", "message"),
    [
        ("LabelsFrom1", [], "LabelsFrom1.train_dataloader()'s first batch holds labels 1..3, but the model has 3"),
        ("Signals", ["+data.with_test=false", "instability=lmc"], "but Signals has no test_dataloader()"),
    ],
)
def test_your_datamodules_mistakes_stop_lth_train_before_wandb_starts(tmp_path, target, args, message):
    """Labels out of range failed in cross_entropy once W&B had started; a DataModule without test data failed in
    the instability analysis, after every round had trained. Now: one line, exit 2, no W&B run, no run folder."""
    env = subprocess_env(PYTHONPATH=str(USERPKG))
    command = [sys.executable, "-m", "lth_wandb.train", f"data._target_=signals.{target}", *args,
               "pruning.rounds=1", "pruning.epochs_per_round=1", "trainer.enable_progress_bar=false"]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("lth-train: error: data: ") and message in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no wandb/, no outputs/


def test_the_first_batch_checks_leave_the_run_as_it_was(monkeypatch, tmp_path):
    """check_loaders and check_labels read a batch of each loader: the global RNG (the shuffling's) is restored."""
    from lth_wandb.data import YourData

    monkeypatch.syspath_prepend(str(USERPKG))
    dm = YourData(__import__("signals").Signals())
    dm.setup("fit")
    model = torch.nn.Sequential(torch.nn.Linear(40, 3), torch.nn.BatchNorm1d(3)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.get_rng_state()
    dm.check_loaders()
    dm.check_labels(model)
    assert torch.equal(torch.get_rng_state(), state)
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # BN stats too


def test_a_model_given_its_own_sizes_needs_none_from_the_datamodule(monkeypatch, tmp_path):
    args = ["data._target_=signals.NoClasses", "model=tiny_mlp", "+model.num_classes=3"]
    run_main(monkeypatch, tmp_path, *args, expect_exit=False)  # trains: no SystemExit
    assert list(tmp_path.glob("outputs/*/*/checkpoints/last.ckpt"))


def data_yamls(tmp_path: Path) -> Path:
    """A --config-dir with data YAMLs for the Signals DataModule: its arguments under options (the way that works),
    at the top level (refused by the data schema), and an argument it does not take."""
    (tmp_path / "conf" / "data").mkdir(parents=True)
    for name, extra in (("signals", "options: {num_samples: 300}"), ("extra_key", "num_samples: 300"),
                        ("bad_option", "options: {bogus: 1}")):  # fmt: skip
        (tmp_path / "conf" / "data" / f"{name}.yaml").write_text(f"_target_: signals.Signals\n{extra}\n")
    return tmp_path / "conf"


def test_a_data_yaml_passes_its_options_to_your_datamodule(monkeypatch, tmp_path):
    """options: {num_samples: 300} reaches Signals: 150 training samples in lth-train's batches of 60 are 3 steps
    an epoch (its default 600 would make 5)."""
    run_main(monkeypatch, tmp_path, "--config-dir", str(data_yamls(tmp_path)), "data=signals", expect_exit=False)
    (checkpoint,) = tmp_path.glob("outputs/*/*/checkpoints/last.ckpt")
    assert torch.load(checkpoint, weights_only=False)["global_step"] == 3


def test_the_docs_datamodule_trains_as_written(monkeypatch, tmp_path):
    """The docs' "Your own data" example, copied from docs/your-own-code.md as it stands, on 200 random (40,)
    signals."""
    page = (Path(__file__).parents[1] / "docs" / "your-own-code.md").read_text()
    code = re.search(r"```python\n(# mypkg/signals.py.*?)```", page, re.S).group(1)
    (tmp_path / "readme_pkg").mkdir()
    (tmp_path / "readme_pkg" / "readme_signals.py").write_text(code)
    torch.save((torch.randn(200, 40), torch.randint(0, 5, (200,))), tmp_path / "signals.pt")
    monkeypatch.syspath_prepend(str(tmp_path / "readme_pkg"))
    args = ["data._target_=readme_signals.Signals", f"+data.path={tmp_path / 'signals.pt'}", "model=tiny_mlp"]
    run_main(monkeypatch, tmp_path, *args, expect_exit=False)
    assert next(tmp_path.glob("outputs/*/*/checkpoints/last.ckpt")).stat().st_size > 0
