"""W&B tracking, run for real in offline mode and read back from the run files with the SDK's reader."""

import logging

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import TinyNet, loaders, trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lth_wandb import LotteryTicket
from lth_wandb.tracking.rounds import RoundLogger, connectivity_image, first_layer_connectivity
from lth_wandb.tracking.run import finish_run, make_logger, resolve_mode
from lth_wandb.tracking.runfiles import find_runs, read_run


@pytest.fixture(autouse=True)
def no_run_left_active():
    """A test that fails mid-run must not hand its active run to the next WandbLogger."""
    yield
    finish_run(1)


@pytest.fixture
def no_wandb_env(monkeypatch, tmp_path):
    """No W&B settings or credentials from the machine: empty HOME, NETRC in tmp_path."""
    for var in ("MODE", "API_KEY", "IDENTITY_TOKEN_FILE", "SWEEP_ID", "BASE_URL"):
        monkeypatch.delenv(f"WANDB_{var}", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    return tmp_path


def write_netrc(path, machine="api.wandb.ai"):
    path.write_text(f"machine {machine}\n  login user\n  password {'a' * 40}\n")
    path.chmod(0o600)


# ------------------------------------------------------------------------------------------------------------
# resolve_mode


def test_explicit_mode_wins_over_env(no_wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_mode("online") == ("online", None)
    assert resolve_mode("disabled") == ("disabled", None)


def test_env_mode_wins_over_credentials(no_wandb_env, monkeypatch):
    write_netrc(no_wandb_env / "netrc")
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_mode(None) == ("offline", None)
    monkeypatch.setenv("WANDB_MODE", "dryrun")  # wandb's old spelling
    assert resolve_mode(None) == ("offline", None)


def test_credentials_mean_online(no_wandb_env, monkeypatch):
    write_netrc(no_wandb_env / "netrc")  # `wandb login` writes this entry
    assert resolve_mode(None) == ("online", None)
    (no_wandb_env / "netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "b" * 40)
    assert resolve_mode(None) == ("online", None)


def test_no_credentials_means_offline_with_sync_notice(no_wandb_env):
    write_netrc(no_wandb_env / "netrc", machine="example.com")  # a key for another host does not count
    mode, notice = resolve_mode(None, save_dir="outputs")
    assert mode == "offline"
    assert "wandb sync outputs/wandb/offline-run-*" in notice


def test_make_logger_prints_the_offline_notice_once(no_wandb_env, caplog):
    caplog.set_level(logging.INFO)
    for _ in range(2):
        logger = make_logger("p", save_dir=no_wandb_env)
    notices = [r.getMessage() for r in caplog.records if "wandb sync" in r.getMessage()]
    assert len(notices) == 1 and f"`wandb sync {no_wandb_env}/wandb/offline-run-*`" in notices[0]
    assert logger.experiment.settings.mode == "offline"


def test_sweep_agent_runs_online(no_wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")
    assert resolve_mode(None) == ("online", None)


def test_bad_modes_raise(no_wandb_env, monkeypatch):
    allowed = r"\['online', 'offline', 'disabled'\]"
    with pytest.raises(ValueError, match=rf"mode='sometimes' is not one of {allowed}"):
        resolve_mode("sometimes")
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(ValueError, match="WANDB_MODE='sometimes' is not one of"):
        resolve_mode(None)


def test_make_logger_rejects_non_dict_config(tmp_path):
    with pytest.raises(TypeError, match="config must be a plain dict.*OmegaConf.to_container"):
        make_logger("p", mode="offline", save_dir=tmp_path, config=[("a", 1)])


# ------------------------------------------------------------------------------------------------------------
# first_layer_connectivity


def test_linear_connectivity_counts_kept_connections_per_pixel():
    mask = torch.zeros(3, 2 * 4 * 4, dtype=torch.bool).reshape(3, 2, 4, 4)
    mask[:, :, 1:3, 1:3] = True  # every output keeps the centre 2x2 pixels of both channels
    mask[0, 0, 0, 0] = True  # and output 0 one corner connection
    counts = first_layer_connectivity(mask.reshape(3, -1), (2, 4, 4))
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[1:3, 1:3] = 3 * 2
    expected[0, 0] = 1
    np.testing.assert_array_equal(counts, expected)
    one_channel = first_layer_connectivity(mask[:, 0].reshape(3, -1), (4, 4))
    np.testing.assert_array_equal(one_channel, expected.clip(0, 3))


def test_conv_connectivity_is_kept_fraction_per_kernel_position():
    mask = torch.ones(4, 2, 3, 3, dtype=torch.bool)
    mask[:, :, 0, :] = False  # top kernel row pruned everywhere
    mask[:2, :, 1, 1] = False  # the centre in half the filters
    frac = first_layer_connectivity(mask, None)
    np.testing.assert_allclose(frac, [[0, 0, 0], [1, 0.5, 1], [1, 1, 1]])


def test_connectivity_is_none_without_an_image_shape():
    mask = torch.ones(5, 20, dtype=torch.bool)
    assert first_layer_connectivity(mask, None) is None
    assert first_layer_connectivity(mask, (20,)) is None  # not an image
    assert first_layer_connectivity(mask, (1, 4, 4)) is None  # 16 pixels for 20 inputs


def test_connectivity_image_scales_and_upscales_small_images():
    image = connectivity_image(np.array([[0, 2], [4, 4]]))
    assert image.dtype == np.uint8 and image.shape == (64, 64)
    assert image[0, 0] == 0 and image[0, 63] == 128 and image[63, 63] == 255
    assert connectivity_image(np.zeros((28, 28))).shape == (84, 84)


def test_round_logger_validates_input_shape():
    with pytest.raises(ValueError, match=r"input_shape=\(1, 0, 28\) must be None or a tuple of positive ints"):
        RoundLogger(LotteryTicket(), input_shape=(1, 0, 28))
    assert RoundLogger(LotteryTicket(), input_shape=[784]).input_shape == (784,)  # not an image: no picture


# ------------------------------------------------------------------------------------------------------------
# End to end: Trainer + LotteryTicket + RoundLogger + offline WandbLogger, read back from disk


class NetWithTest(TinyNet):
    """TinyNet that also logs train/loss, and test/acc from a second validation loader (report test, select on
    validation: the callback snapshots test/acc at the best val/loss)."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        x, y = batch
        logits = self(x)
        acc = (logits.argmax(1) == y).float().mean()
        if dataloader_idx == 1:
            self.log("test/acc", acc, add_dataloader_idx=False)
            return
        self.log("val/loss", nn.functional.cross_entropy(logits, y), add_dataloader_idx=False)
        self.log("val/acc", acc, add_dataloader_idx=False)


def test_rounds_are_logged_on_a_round_axis(tmp_path):
    pl.seed_everything(0, verbose=False)
    train, val = loaders()
    g = torch.Generator().manual_seed(1)
    x_test = torch.randn(128, 20, generator=g)
    test = DataLoader(TensorDataset(x_test, x_test[:, :3].argmax(1)), batch_size=128)
    lottery = LotteryTicket(rounds=2, epochs_per_round=1, prune_rate=0.5)
    config = {"model": {"name": "tiny", "hidden": [32, 16]}, "seed": 0}
    logger = make_logger("lth-test", mode="offline", save_dir=tmp_path, config=config, tags=("test",))
    callbacks = [lottery, RoundLogger(lottery, input_shape=(1, 4, 5))]
    trainer(callbacks, logger=logger, log_every_n_steps=2).fit(NetWithTest(), train, [val, test])
    finish_run(0)

    (run_dir,) = find_runs(tmp_path)
    run = read_run(run_dir)
    assert run.exit_code == 0 and run.state == "finished" and run.tags == ["test"]
    assert run.config["model"] == {"name": "tiny", "hidden": [32, 16]} and run.config["seed"] == 0

    rounds = [row for row in run.history if "round" in row]
    assert [row["round"] for row in rounds] == [0, 1, 2]
    for row, entry in zip(rounds, lottery.history, strict=True):
        assert row["round/density"] == pytest.approx(0.5 ** row["round"], abs=0.01)
        assert row["round/density/net.0.weight"] == pytest.approx(0.5 ** row["round"], abs=0.01)
        assert row["round/best_val_loss"] == pytest.approx(entry["best_value"])
        assert row["round/test_acc"] == pytest.approx(entry["metrics"]["test/acc"])
        assert "round/val_acc" in row
        step = row["round/early_stop_step"]
        assert step == int(step) and 0 < step <= entry["end_step"]
        assert row["trainer/global_step"] == entry["end_step"]
        image = row["round/mask_first_layer"]
        assert image["_type"] == "image-file" and (image["width"], image["height"]) == (80, 64)
        assert (run_dir / "files" / image["path"]).is_file()

    # Exact definitions put every round key on the round axis, whatever wandb-core's glob order.
    steps = {m["name"]: m.get("step_metric") for m in run.metrics if "name" in m}
    globs = {m["glob_name"]: m.get("step_metric") for m in run.metrics if "glob_name" in m}
    assert globs == {"*": "trainer/global_step", "round/*": "round"}
    for key in ("round/density", "round/best_val_loss", "round/test_acc", "round/density/net.0.weight"):
        assert steps[key] == "round"
    train_rows = [row for row in run.history if "train/loss" in row]
    assert len(train_rows) >= 5
    assert all("trainer/global_step" in row and "round" not in row for row in train_rows)

    by_round = {h["round"]: h for h in lottery.history}
    assert run.summary["ticket/rounds_completed"] == 3
    assert run.summary["ticket/winning_round"] == lottery.winning_round
    assert run.summary["ticket/winning_density"] == pytest.approx(by_round[lottery.winning_round]["density"])
    assert run.summary["ticket/winning_test_acc"] == pytest.approx(
        by_round[lottery.winning_round]["metrics"]["test/acc"]
    )
    assert run.summary["ticket/dense_test_acc"] == pytest.approx(by_round[0]["metrics"]["test/acc"])


def test_finish_run_marks_failure_and_is_safe_without_a_run(tmp_path):
    finish_run(1)  # no active run: nothing happens
    logger = make_logger("lth-test", mode="offline", save_dir=tmp_path)
    logger.experiment.log({"x": 1})
    finish_run(3)
    run = read_run(next(iter(find_runs(tmp_path / "wandb"))))
    assert run.exit_code == 3 and run.state == "failed" and run.history[0]["x"] == 1


def test_find_runs_lists_run_directories_oldest_first(tmp_path):
    names = ["offline-run-20260102_000000-a", "offline-run-20260101_120000-my-id", "run-20260101_130000-c"]
    for name in [*names, "latest-run", "debug-logs"]:
        (tmp_path / "wandb" / name).mkdir(parents=True)
    expected = [tmp_path / "wandb" / n for n in (names[1], names[2], names[0])]
    assert find_runs(tmp_path) == expected == find_runs(tmp_path / "wandb")


def test_read_run_needs_a_run_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run's .wandb file or a run directory.*found none"):
        read_run(tmp_path)


def test_round_logger_is_inert_without_wandb_logger():
    lottery = LotteryTicket(rounds=1, epochs_per_round=1, prune_rate=0.5)
    train, val = loaders()
    trainer([lottery, RoundLogger(lottery)]).fit(TinyNet(), train, val)
    assert len(lottery.history) == 2


def test_model_hparams_do_not_replace_the_run_config(tmp_path):
    class WithHparams(TinyNet):
        def __init__(self):
            super().__init__()
            self.save_hyperparameters({"width": 7})

    logger = make_logger("lth-test", mode="offline", save_dir=tmp_path, config={"seed": 3})
    train, val = loaders(n=64)
    trainer([], logger=logger, max_epochs=1).fit(WithHparams(), train, val)
    finish_run(0)
    run = read_run(find_runs(tmp_path)[0])
    assert run.config["seed"] == 3 and run.config["width"] == 7
