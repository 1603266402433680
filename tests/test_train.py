"""lth-train: every config option composes and builds; bad invocations fail in one line; packaging."""

import contextlib
import fractions
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import lth_train, lth_train_main
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from lth_wandb.app import train
from lth_wandb.data import ClassificationDataModule

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ["model", "data", "optimizer", "scheduler", "pruning", "trainer", "logger", "experiment"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


def cfg_for(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="lth_wandb.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def synthetic_dm(shape) -> ClassificationDataModule:
    dm = ClassificationDataModule("synthetic", num_samples=200, shape=shape, val_size=0.1)
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_composes(group):
    assert len(options(group)) >= 2
    for option in options(group):
        cfg = cfg_for(f"{group}={option}")
        assert cfg.pruning.prune_rate > 0 and cfg.seed == 0


@pytest.mark.parametrize("option", options("model"))
def test_every_model_builds(option):
    cfg = cfg_for(f"model={option}")
    shape = (1, 8, 8) if option in ("lenet_300_100", "tiny_mlp") else (3, 32, 32)
    model = train.build_model(cfg, synthetic_dm(shape))
    assert model.net(__import__("torch").zeros(2, *shape)).shape == (2, 10)


@pytest.mark.parametrize(("override", "fused"), [(None, False), ("optimizer.fused=true", True)])
def test_optimizer_fused_reaches_adam(override, fused):
    cfg = cfg_for(*([override] if override else []))
    optimizer = train.build_model(cfg, synthetic_dm((1, 8, 8))).configure_optimizers()
    assert isinstance(optimizer, __import__("torch").optim.Adam) and bool(optimizer.defaults["fused"]) is fused


@pytest.mark.parametrize("option", options("pruning"))
def test_every_pruning_option_builds_a_callback(option):
    # The early-bird presets on the demo's 3 epochs a round: their window cannot close, and LotteryTicket says so.
    said = pytest.warns(UserWarning, match="so the early bird never ends it early")
    with said if option.startswith("early_bird") else contextlib.nullcontext():
        lottery = train.build_lottery(cfg_for(f"pruning={option}"))
    assert lottery.rounds >= 0 and lottery.total_epochs >= 1


@pytest.mark.parametrize("option", options("data"))
def test_every_data_option_builds_a_datamodule(option):
    cfg = cfg_for(f"data={option}")
    dm = ClassificationDataModule(cfg.data.name, batch_size=cfg.data.batch_size)
    assert dm.num_classes == 10


@pytest.mark.parametrize("preset", options("experiment"))
def test_every_experiment_preset_builds(preset):
    cfg = cfg_for(f"experiment={preset}")
    assert cfg.experiment == preset
    lottery = train.build_lottery(cfg)
    shape = {"cifar10": (3, 32, 32)}.get(cfg.data.name, (1, 28, 28))
    model = train.build_model(cfg, synthetic_dm(shape))
    names = [n for n, _ in model.named_parameters()]
    # Every layer_rates glob of a preset must hit a real tensor, or the paper's rates silently do nothing.
    for glob in cfg.pruning.layer_rates:
        assert any(__import__("fnmatch").fnmatchcase(n, glob) for n in names), (preset, glob)
    assert lottery.total_epochs >= 1


def test_paper_presets_match_the_paper():
    cfg = cfg_for("experiment=lenet_mnist")
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.data.batch_size) == ("adam", 1.2e-3, 60)
    assert cfg.pruning.scope == "layerwise" and cfg.pruning.prune_rate == 0.2
    assert dict(cfg.pruning.layer_rates) == {"*out.weight": 0.1}
    assert 0.8**cfg.pruning.rounds <= 0.036
    assert cfg_for("experiment=lenet_fashion_mnist").data.name == "fashion_mnist"
    assert cfg_for("experiment=conv6_cifar10").pruning.prune_rate == 0.15


def run_main(monkeypatch, tmp_path, *args):
    return lth_train_main(monkeypatch, tmp_path, *args)


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["pruning.prune_rat=0.5"], "Hint: did you mean pruning.prune_rate?"),
        (["trainer.precison=16"], "Hint: did you mean trainer.precision?"),
        (["pruning.rounds=abc"], "pruning.rounds"),
        (["pruning.prune_rate=1.5"], "prune_rate=1.5"),
        (["pruning.epochs_per_round=0"], "epochs_per_round=0"),
        (["pruning.scope=local"], "scope 'local'"),
        (["pruning.criterion=l1"], "criterion 'l1'"),
        (["pruning.rewind=start"], "rewind 'start'"),
        (["pruning.control=shuffle"], "control 'shuffle'"),
        (["model=lenet"], "model/lenet"),
        (["optimizer.name=rmsprop"], "optimizer: unknown optimizer 'rmsprop'"),
        (["optimizer=sgd", "optimizer.fused=true"], "optimizer: fused=True needs optimizer 'adam' or 'adamw'"),
        (["data.batch_size=0"], "batch_size=0"),
        (["data=fashion_mnist", "data.root=/nonexistent/fmnist"], "data: "),
        (["data.name=imagenet"], "imagenet"),
        (["seed=1.5"], "seed"),
        (["wandb.mode=sometimes"], "sometimes"),
    ],
)
def test_malformed_invocations_fail_in_one_line(monkeypatch, tmp_path, capsys, args, key):
    code = run_main(monkeypatch, tmp_path, "logger=none", *args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("lth-train: error: "), err
    assert key in err[0]
    assert "Traceback" not in err[0]


def test_console_script_exit_codes(tmp_path):
    bad = subprocess.run(
        [sys.executable, "-m", "lth_wandb.train", "pruning.prune_rate=2"], cwd=tmp_path, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "pruning: prune_rate=2.0 is outside (0, 1)" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.slow
def test_installed_wheel_finds_its_configs(tmp_path):
    """`pip install .` (not editable) must ship conf/ inside the package."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path, ROOT],
        check=True,
    )
    wheel = next(tmp_path.glob("lth_wandb-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for group in GROUPS:
        assert f"lth_wandb/conf/{group}/{options(group)[0]}.yaml" in names
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site, wheel], check=True)
    code = (
        "import lth_wandb, sys; from hydra import compose, initialize_config_module;\n"
        "assert lth_wandb.__file__.startswith(sys.argv[1]), lth_wandb.__file__\n"
        "initialize_config_module(config_module='lth_wandb.conf', version_base='1.3')\n"
        "print(compose(config_name='config', overrides=['experiment=lenet_mnist']).experiment)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(site)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "lenet_mnist"


def tiny_train(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return lth_train(cwd, "pruning.rounds=2", *args)


def test_lth_train_end_to_end_offline_run_read_back(tmp_path):
    from lth_wandb.tracking.runfiles import find_runs, read_run

    result = tiny_train(tmp_path, "seed=3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Lottery ticket rounds" in result.stdout
    (run_dir,) = find_runs(tmp_path / "wandb")
    run = read_run(run_dir)
    assert run.state == "finished" and run.exit_code == 0
    assert run.config["seed"] == 3 and run.config["pruning"]["rounds"] == 2
    assert run.config["experiment"] == "demo" and run.config["data"]["name"] == "digits"
    rows = [r for r in run.history if "round/density" in r]
    assert [r["round"] for r in rows] == [0, 1, 2]
    # demo: hidden layers at 50% per round, the output layer at 25%.
    assert rows[0]["round/density"] == 1.0 and rows[2]["round/density/net.fc1.weight"] == pytest.approx(0.25, abs=0.01)
    for row in rows:
        assert row["round/early_stop_step"] > 0 and 0 < row["round/test_acc"] <= 1
        assert row["round/mask_first_layer"]["_type"] == "image-file"
    assert any("train/loss" in r and "trainer/global_step" in r for r in run.history)
    summary = run.summary
    dense_loss = rows[0]["round/best_val_loss"]  # the sparsest round at least as good as dense (tolerance 0)
    assert summary["ticket/winning_round"] == max(r["round"] for r in rows if r["round/best_val_loss"] <= dense_loss)
    assert summary["ticket/dense_test_acc"] == pytest.approx(rows[0]["round/test_acc"])
    winner = rows[summary["ticket/winning_round"]]
    assert summary["ticket/winning_density"] == pytest.approx(winner["round/density"])
    assert (next(tmp_path.glob("outputs/*/*/checkpoints/last.ckpt"))).stat().st_size > 0
    assert not list(tmp_path.glob("outputs/*/*/*.log"))  # no empty train.log
    for noise in ("💡 Tip", "LeafSpec", "Adding directory to artifact"):  # what a user cannot act on
        assert noise not in result.stdout + result.stderr


def test_rounds_from_a_target_density_and_lengths_in_steps(tmp_path):
    """pruning.target_density fixes the rounds ((1 - 0.5)^r <= 0.3: 2 rounds at the demo's 50%), and
    pruning.steps_per_round=30 makes each round 30 optimizer steps (an epoch of digits is 22): rounds end mid-epoch."""
    from lth_wandb.tracking.runfiles import find_runs, read_run

    result = lth_train(tmp_path, "pruning.target_density=0.3", "pruning.steps_per_round=30", "scheduler=none")
    assert result.returncode == 0, result.stderr[-3000:]
    run = read_run(find_runs(tmp_path / "wandb")[0])
    assert run.config["pruning"]["rounds"] == 2 and run.config["pruning"]["steps_per_round"] == 30
    rows = [r for r in run.history if "round/density" in r]
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert [30 * r["round"] < r["round/early_stop_step"] <= 30 * (r["round"] + 1) for r in rows] == [True] * 3
    assert max(r["trainer/global_step"] for r in run.history if "trainer/global_step" in r) <= 90
    assert torch.load(next(tmp_path.glob("outputs/*/*/checkpoints/last.ckpt")), weights_only=False)["global_step"] == 90


def test_failure_during_training_marks_the_run_failed(tmp_path):
    """A full disk at the first checkpoint (injected by tests/faults): one line, exit 1, the W&B run failed."""
    from conftest import subprocess_env

    from lth_wandb.tracking.runfiles import find_runs, read_run

    env = subprocess_env(LTH_FAULT="enospc:*/checkpoints/*.tmp:1", PYTHONPATH=str(ROOT / "tests" / "faults"))
    command = [sys.executable, "-m", "lth_wandb.train", "pruning.rounds=1", "pruning.epochs_per_round=1"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith("lth-train: disk full: [Errno 28]")
    run = read_run(find_runs(tmp_path / "wandb")[0])
    assert run.state == "failed" and run.exit_code == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pruning.parameters=[nothing*]"], "pruning: parameters=['nothing*'] selects no tensor"),
        (["model._target_=torch.nn.Identity"], "model: _target_='torch.nn.Identity' has no parameters"),
        (["pruning.rewind=100000"], "rewind=100000 is not inside round 0, which has 22 optimizer steps"),
        (["pruning.monitor=val/f1"], "monitor='val/f1' is not logged by the Classifier"),
        (["+pruning.bogus=1"], "pruning.bogus is not a setting of lth-train"),
        (["+pruning.prune_rat=0.3"], "did you mean pruning.prune_rate?"),
        (["+pruning.layer_rates={fc9.weight:0.1}"], "layer_rates globs ['fc9.weight'] match none"),
        (["pruning.layer_rates={out.weight:0.1}"], "Hint: a pruning.layer_rates key without * matches"),
        (["pruning.rewind=none", "pruning.control=reinit"], "control='reinit' with rewind='none'"),
        (["trainer.limit_train_batches=0"], "limit_train_batches=0.0 must be a fraction in (0, 1]"),
        (["trainer.val_every_n_steps=-5"], "trainer.val_every_n_steps=-5 must be >= 1"),
        (["trainer.val_every_n_steps=0"], "trainer.val_every_n_steps=0 must be >= 1"),
        (["trainer=gpu"], "no GPU is visible") if not torch.cuda.is_available() else (["seed=-2"], "seed=-2"),
        (["seed=-1"], "seed=-1 must be a whole number in [0, 4294967295]"),
        (["pruning.target_density=3"], "pruning: target_density=3.0 must be a fraction in (0, 1)"),
        (["pruning.steps_per_round=50", "scheduler=cosine"], "scheduler='cosine' steps once per epoch"),
        (["seed=99999999999999"], "seed=99999999999999 must be"),
        (["ticket=/nonexistent/ticket"], "ticket: ticket='/nonexistent/ticket' is neither"),
        (["resume=/nonexistent/last.ckpt"], "resume=/nonexistent/last.ckpt: no such file or folder"),
        (["resume=last"], "resume=last: no run under ./outputs"),
        (["trainer.precision=17"], "trainer: Precision '17' is invalid"),
        (["trainer.strategy=bogus"], "trainer: You selected an invalid strategy name"),
        (["trainer.devices=0"], "trainer: `Trainer(devices=0)` value is not a valid input"),
        (["trainer.checkpoint_every_n_steps=0"], "trainer.checkpoint_every_n_steps=0 must be >= 1"),
        (["trainer.log_every_n_steps=-1"], "trainer.log_every_n_steps=-1 must be >= 1"),
        (["wandb.retention=bogus"], "wandb: retention='bogus' is not one of ['all', 'winning_latest']"),
        (["wandb.artifact_ttl_days=-1"], "wandb: ttl_days=-1 must be a whole number of days >= 1"),
        (["instability=lmc", "instability.steps=0.5"], "instability: steps=[0.5] must be a non-empty list of "
         "optimizer steps (ints >= 0). Hint: [0]"),  # was: 'float' object is not iterable
    ],
)
def test_user_mistakes_fail_in_one_line_before_wandb_starts(monkeypatch, tmp_path, capsys, args, message):
    code = run_main(monkeypatch, tmp_path, "pruning.rounds=1", "pruning.epochs_per_round=1", *args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("lth-train: error: "), err
    assert message in err[0]
    assert not (tmp_path / "wandb").exists()  # no W&B run left behind


def test_resume_of_a_file_that_is_not_a_checkpoint(monkeypatch, tmp_path, capsys):
    (tmp_path / "last.ckpt").write_text("not a checkpoint")
    assert run_main(monkeypatch, tmp_path, f"resume={tmp_path / 'last.ckpt'}") == 2
    assert "is not a Lightning checkpoint" in capsys.readouterr().err


@pytest.fixture(scope="module")
def checkpoint_elsewhere(tmp_path_factory) -> Path:
    """A checkpoint of a finished 1-round lth-train run, copied out of its run folder."""
    cwd = tmp_path_factory.mktemp("elsewhere")
    assert lth_train(cwd, "pruning.rounds=1", "logger=none").returncode == 0
    return shutil.copy(next(cwd.glob("outputs/*/*/checkpoints/last.ckpt")), cwd / "copied.ckpt")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pruning.rounds=2"], "settings differ from the checkpoint's: rounds=2 (checkpoint: 1)"),
        (["pruning.rounds=1", "model=tiny_mlp"], "holds another model's weights (net.fc1."),
        (["pruning.rounds=1", "resume={plain}"], "is not a Lightning checkpoint"),  # a torch.save of a dict
        (["pruning.rounds=1", "resume={odd}"], "holds objects other than tensors and plain values"),  # never unpickled
    ],
)
def test_a_checkpoint_from_elsewhere_must_fit_before_wandb_starts(
    monkeypatch, tmp_path, capsys, checkpoint_elsewhere, args, message
):
    torch.save({"w": torch.zeros(3)}, tmp_path / "plain.ckpt")
    odd = torch.load(checkpoint_elsewhere, weights_only=True)
    odd["hyper_parameters"]["step"] = fractions.Fraction(1, 3)  # an object beyond tensors and plain values
    torch.save(odd, tmp_path / "odd.ckpt")
    given = {"plain": tmp_path / "plain.ckpt", "odd": tmp_path / "odd.ckpt"}
    args = [f"resume={checkpoint_elsewhere}", *(a.format(**given) for a in args)]
    assert run_main(monkeypatch, tmp_path, "pruning.epochs_per_round=1", *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "wandb").exists()


def test_ticket_file_errors_name_the_ticket_and_leave_no_run(monkeypatch, tmp_path, capsys):
    ticket = tmp_path / "ticket"
    ticket.mkdir()
    (ticket / "ticket.json").write_text('{"format": 1, "sha256": ')  # truncated
    assert run_main(monkeypatch, tmp_path, f"ticket={ticket}") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ticket: " in err[0] and "ticket.json" in err[0], err
    assert not (tmp_path / "wandb").exists()


@pytest.mark.slow
def test_multirun_makes_one_grouped_run_per_job(tmp_path):
    from lth_wandb.tracking.runfiles import find_runs, read_run

    result = tiny_train(tmp_path, "-m", "pruning.rounds=1", "seed=0,1")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [read_run(p) for p in find_runs(tmp_path / "wandb")]
    assert sorted(r.config["seed"] for r in runs) == [0, 1]
    assert all(r.state == "finished" for r in runs)
    assert len({run.run_id for run in runs}) == 2
    (group,) = {r.group for r in runs}
    assert group.startswith("multirun-")
    tiny_train(tmp_path, "seed=5", "pruning.rounds=1")  # another run in the same ./wandb, not in the multirun
    from lth_wandb.report.sources import collect_offline

    (sweep_folder,) = tmp_path.glob("multirun/*/*")  # README: lth-report --offline multirun/<date>/<time>
    study = collect_offline(sweep_folder)
    assert sorted(run.config["seed"] for run in study.runs) == [0, 1]


def test_users_own_lightning_module_via_target():
    from conftest import TinyNet

    cfg = cfg_for("model._target_=conftest.TinyNet", "+model.lr=0.5")
    model = train.build_model(cfg, synthetic_dm((1, 8, 8)))
    assert isinstance(model, TinyNet) and model.lr == 0.5  # used as is, with its own optimizer


def test_users_config_dir_adds_a_model_option(tmp_path, monkeypatch):
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "wide_mlp.yaml").write_text("_target_: lth_wandb.models.MLP\nhidden: [48, 24]\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "lth-train",
            "--config-dir",
            str(tmp_path / "conf"),
            "model=wide_mlp",
            "logger=none",
            "pruning.rounds=1",
            "pruning.epochs_per_round=1",
            "trainer.enable_progress_bar=false",
        ],
    )
    GlobalHydra.instance().clear()
    train.main()
    ckpt = __import__("torch").load(next(tmp_path.glob("outputs/*/*/checkpoints/last.ckpt")), weights_only=False)
    assert ckpt["state_dict"]["net.fc1.weight"].shape == (48, 64)
