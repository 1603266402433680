"""Networks (shapes, exact parameter counts), the model registry, and the Classifier LightningModule."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import Logger

from lth_wandb import models
from lth_wandb.data import ClassificationDataModule
from lth_wandb.models import Classifier, Conv2, ConvNet, LeNet300100, ResNet20, TinyMLP

# Parameter counts by hand (weights + biases), for 10 classes:
# LeNet-300-100: 784*300+300 + 300*100+100 + 100*10+10                               = 266,610
# TinyMLP:       64*32+32 + 32*10+10                                                  = 2,410
# Conv convs (3x3, with bias): 3->64: 1,792; 64->64: 36,928; 64->128: 73,856; 128->128: 147,584;
#   128->256: 295,168; 256->256: 590,080. Head: fc1 (C*s*s)*256+256, fc2 65,792, out 2,570.
# Conv-2: 1,792+36,928 + (64*16*16*256+256 = 4,194,560) + 65,792+2,570                = 4,301,642
# Conv-4: 1,792+36,928+73,856+147,584 + (128*8*8*256+256 = 2,097,408) + 68,362        = 2,425,930
# Conv-6: 1,792+36,928+73,856+147,584+295,168+590,080 + (256*4*4*256+256 = 1,048,832) + 68,362 = 2,262,602
# ResNet-20 (convs without bias, BN = 2 per channel): stem 432+32; stage 1: 3 * (2*2,304 + 2*32) = 14,016;
#   stage 2: (4,608+9,216+128) + 2*(2*9,216+128) = 51,072; stage 3: (18,432+36,864+256) + 2*(2*36,864+256)
#   = 203,520; out 650. Total 269,722. The 1x1-conv shortcut adds (512+64) + (2,048+128) = 2,752.
CASES = [
    ("lenet300100", {}, (1, 28, 28), 266_610),
    ("tiny_mlp", {}, (1, 8, 8), 2_410),
    ("conv2", {}, (3, 32, 32), 4_301_642),
    ("conv4", {}, (3, 32, 32), 2_425_930),
    ("conv6", {}, (3, 32, 32), 2_262_602),
    ("resnet20", {}, (3, 32, 32), 269_722),
    ("resnet20", {"shortcut": "conv"}, (3, 32, 32), 272_474),
]


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize(("name", "kwargs", "shape", "count"), CASES)
def test_forward_shape_and_parameter_count(name, kwargs, shape, count):
    torch.manual_seed(0)
    net = models.get(name, **kwargs)
    assert n_params(net) == count
    assert net(torch.rand(3, *shape)).shape == (3, 10)
    # Every network names its output layer "out", so one pruning glob addresses it.
    assert "out.weight" in dict(net.named_parameters())


def test_mlp_flattens_any_input_shape_and_sizes_to_the_data():
    net = LeNet300100()
    assert net(torch.rand(2, 784)).shape == net(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert TinyMLP(in_features=12, hidden=5, num_classes=3)(torch.rand(4, 3, 2, 2)).shape == (4, 3)
    assert Conv2(in_channels=1, num_classes=7, image_size=28)(torch.rand(2, 1, 28, 28)).shape == (2, 7)
    assert ResNet20(in_channels=1, num_classes=4)(torch.rand(2, 1, 8, 8)).shape == (2, 4)


def test_model_registry_and_constructor_errors():
    with pytest.raises(ValueError, match=r"unknown model 'lenet'; valid models: \[.*'lenet300100'"):
        models.get("lenet")
    with pytest.raises(ValueError, match="pairs=4 is not supported; valid: 1, 2, 3"):
        ConvNet(4)
    with pytest.raises(ValueError, match="image_size=30 is not divisible by 2\\*\\*pairs=4"):
        ConvNet(2, image_size=30)
    with pytest.raises(ValueError, match="unknown shortcut 'B'; valid: \\['pad', 'conv'\\]"):
        ResNet20(shortcut="B")
    with pytest.raises(ValueError, match="hidden width=0 must be a positive int"):
        TinyMLP(hidden=0)


def test_classifier_fit_logs_val_and_test_metrics_on_digits():
    pl.seed_everything(0)
    dm = ClassificationDataModule("digits", batch_size=32, eval_batch_size=100, seed=0)
    model = Classifier(TinyMLP(), lr=1e-2, scheduler="cosine")
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    metrics = trainer.callback_metrics
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc"} <= set(metrics)
    assert metrics["val/acc"] > 0.5 and metrics["test/acc"] > 0.5  # chance is 0.1
    assert trainer.lr_scheduler_configs[0].scheduler.T_max == 2  # cosine spans trainer.max_epochs
    # test/acc is a per-sample mean over all 360 test images, although the last batch holds only 60.
    x, y = dm.test_set.tensors
    with torch.no_grad():
        direct = (model(x).argmax(1) == y).float().mean()
    assert metrics["test/acc"] == pytest.approx(direct.item(), abs=1e-6)
    (result,) = trainer.test(model, datamodule=dm, verbose=False)
    assert result["test/acc"] == pytest.approx(direct.item(), abs=1e-6) and "test/loss" in result


def test_train_acc_is_the_accuracy_over_the_epoch():
    """train/acc is counted over the epoch's batches and logged once, at its last batch."""

    class Predictions(pl.Callback):
        def __init__(self):
            self.correct = self.seen = 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            x, y = batch
            with torch.no_grad():  # the weights this batch's forward pass sees
                self.correct += int((pl_module(x).argmax(1) == y).sum())
            self.seen += len(y)

    pl.seed_everything(0)
    dm = ClassificationDataModule("digits", batch_size=100, seed=0)
    predictions = Predictions()
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        callbacks=[predictions],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(Classifier(TinyMLP(), lr=1e-2), datamodule=dm)
    assert predictions.seen == 1293  # 1797 digits less 360 for test and 144 for validation
    assert trainer.callback_metrics["train/acc"].item() == pytest.approx(predictions.correct / 1293, abs=1e-6)


def test_configure_optimizers_builds_the_named_optimizer_and_schedule():
    sgd = Classifier(
        TinyMLP(),
        lr=0.1,
        optimizer="sgd",
        nesterov=True,
        weight_decay=1e-4,
        scheduler="step",
        step_size=5,
        gamma=0.5,
    )
    config = sgd.configure_optimizers()
    opt, sched = config["optimizer"], config["lr_scheduler"]
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9
    assert opt.defaults["weight_decay"] == 1e-4
    assert sched["interval"] == "epoch" and sched["scheduler"].step_size == 5
    adamw = Classifier(TinyMLP(), optimizer="adamw", scheduler="cosine", cosine_epochs=7).configure_optimizers()
    assert isinstance(adamw["optimizer"], torch.optim.AdamW) and adamw["lr_scheduler"]["scheduler"].T_max == 7
    assert isinstance(Classifier(TinyMLP()).configure_optimizers(), torch.optim.Adam)
    assert "net" not in Classifier(TinyMLP()).hparams


class LogsEveryStep(Classifier):
    """The Classifier as it logged before: train/loss and train/acc through self.log at every step."""

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        self.log("train/loss", loss, on_step=True, on_epoch=False, batch_size=len(y))
        accuracy = (logits.argmax(1) == y).float().mean()
        self.log("train/acc", accuracy, on_step=False, on_epoch=True, batch_size=len(y))
        return loss


class Recorder(Logger, pl.Callback):
    """What the loggers receive, and callback_metrics where callbacks read them (validation and epoch ends)."""

    name, version, experiment = "recorder", 0, None

    def __init__(self):
        super().__init__()
        self.logged, self.seen = [], []

    def log_metrics(self, metrics, step=None):
        self.logged.append((step, {k: float(v) for k, v in metrics.items()}))

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
            self.seen.append(("val", trainer.global_step, metrics))

    def on_train_epoch_end(self, trainer, pl_module):
        self.seen.append(("epoch", trainer.global_step, {k: float(v) for k, v in trainer.callback_metrics.items()}))


@pytest.mark.parametrize("val_check_interval", [7, None, 0.5])
def test_train_metrics_reach_loggers_and_callbacks_as_when_logged_every_step(val_check_interval):
    """train/loss is logged only on the steps something reads it: what loggers get, and what callbacks see at
    validation and epoch ends, is what logging at every step gave."""
    runs = []
    for module in (LogsEveryStep, Classifier):
        pl.seed_everything(0)
        recorder = Recorder()
        trainer = pl.Trainer(
            max_epochs=2,
            accelerator="cpu",
            logger=recorder,
            callbacks=[recorder],
            log_every_n_steps=5,
            val_check_interval=val_check_interval,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        dm = ClassificationDataModule("digits", batch_size=32, eval_batch_size=100, seed=0)
        trainer.fit(module(TinyMLP(), lr=1e-2), datamodule=dm)
        runs.append(recorder)
    before, after = runs
    assert [step for step, _ in after.logged] == [step for step, _ in before.logged]
    for (_, old), (_, new) in zip(before.logged, after.logged, strict=True):
        assert old.keys() == new.keys() and old == pytest.approx(new, abs=1e-6)
    assert len(after.seen) == len(before.seen) >= 4
    for (where, step, old), (_, _, new) in zip(before.seen, after.seen, strict=True):
        assert old["train/loss"] == new["train/loss"], (where, step)
        assert old.keys() == new.keys() and old == pytest.approx(new, abs=1e-6), (where, step)


def test_fused_adam_is_opt_in():
    net = TinyMLP()
    assert not Classifier(net).configure_optimizers().defaults["fused"]  # PyTorch's default: results unchanged
    assert Classifier(net, fused=True).configure_optimizers().defaults["fused"]
    assert Classifier(net, optimizer="adamw", fused=True).configure_optimizers().defaults["fused"]
    with pytest.raises(ValueError, match=r"fused=True needs optimizer 'adam' or 'adamw' \(got 'sgd'\)"):
        Classifier(net, optimizer="sgd", fused=True)


def test_classifier_rejects_bad_settings():
    with pytest.raises(ValueError, match=r"unknown optimizer 'rmsprop'; valid: \['adam', 'adamw', 'sgd'\]"):
        Classifier(TinyMLP(), optimizer="rmsprop")
    with pytest.raises(ValueError, match=r"unknown scheduler 'linear'; valid: \['none', 'step', 'cosine', 'multistep'"):
        Classifier(TinyMLP(), scheduler="linear")
    with pytest.raises(ValueError, match=r"lr=0 is outside \(0.0, inf\)"):
        Classifier(TinyMLP(), lr=0)
    with pytest.raises(ValueError, match="nesterov=True needs optimizer='sgd'"):
        Classifier(TinyMLP(), nesterov=True)
