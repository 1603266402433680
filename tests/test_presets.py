"""The papers' presets at real scale (docs/lth-train.md): every number pinned to its source, and each preset
composed and trained on CPU for a few steps on synthetic data of its shape (and ImageNet's on a folder of JPEGs).

Sources: open_lth (github.com/facebookresearch/open_lth, fetched at 2ce732f): models/cifar_resnet.py,
models/cifar_vgg.py and models/imagenet_resnet.py (``default_hparams``), models/initializers.py,
models/bn_initializers.py, datasets/cifar10.py, training/optimizers.py; and Frankle, Dziugaite, Roy & Carbin 2020,
"Linear mode connectivity and the lottery ticket hypothesis", Table 1 (pruned densities, one-shot ResNet-50).
"""

from __future__ import annotations

import pytest
from conftest import lth_train
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from PIL import Image


def preset(name: str, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="lth_wandb.conf", version_base="1.3"):
        return compose(config_name="config", overrides=[f"experiment={name}", *overrides])


def sgd_as_open_lth(cfg, lr: float) -> None:
    # training_hparams: optimizer_name='sgd', momentum=0.9, lr, weight_decay=1e-4 (no nesterov).
    assert cfg.optimizer.name == "sgd" and cfg.optimizer.lr == lr
    assert cfg.optimizer.momentum == 0.9 and cfg.optimizer.nesterov is False and cfg.optimizer.weight_decay == 1e-4


def cifar_as_open_lth(cfg) -> None:
    # dataset_hparams: dataset_name='cifar10', batch_size=128; datasets/cifar10.py augments (flip, crop 32 pad 4).
    assert cfg.data.name == "cifar10" and cfg.data.batch_size == 128 and cfg.data.augment is True
    # training_hparams: milestone_steps='80ep,120ep', gamma=0.1, training_steps='160ep', no warm-up.
    assert cfg.scheduler.name == "multistep" and list(cfg.scheduler.milestones) == [80, 120]
    assert cfg.scheduler.gamma == 0.1 and cfg.scheduler.warmup_epochs == 0 and cfg.pruning.epochs_per_round == 160
    # pruning_hparams: pruning_strategy='sparse_global', pruning_fraction=0.2, by magnitude.
    assert cfg.pruning.scope == "global" and cfg.pruning.prune_rate == 0.2 and cfg.pruning.criterion == "magnitude"
    assert dict(cfg.pruning.layer_rates) == {}
    # model_hparams: model_init='kaiming_normal', batchnorm_init='uniform'.
    assert cfg.model.init == "open_lth"


def test_resnet20_preset_is_open_lths_cifar_resnet_20():
    cfg = preset("resnet20_cifar10")
    assert cfg.model._target_ == "lth_wandb.models.ResNet20" and cfg.model.shortcut == "conv"  # cifar_resnet.Block
    sgd_as_open_lth(cfg, lr=0.1)
    cifar_as_open_lth(cfg)
    assert cfg.pruning.parameters is None  # no pruning_layers_to_ignore: fc (our `out`) is pruned too
    assert cfg.pruning.rounds == 8 and 0.8**8 == pytest.approx(0.168, abs=5e-4)  # LMC Table 1: 16.8%
    # Late rewinding inside the 500-2000 iterations of Frankle et al., to a whole epoch (45,000 / 128 -> 352 steps).
    assert cfg.pruning.rewind == 1760 == 5 * 352 and cfg.data.val_size == 5000


def test_vgg16_preset_is_open_lths_cifar_vgg_16():
    cfg = preset("vgg16_cifar10")
    assert cfg.model._target_ == "lth_wandb.models.VGG16"
    sgd_as_open_lth(cfg, lr=0.1)
    cifar_as_open_lth(cfg)
    # pruning_layers_to_ignore='fc.weight': the convolutions only.
    assert list(cfg.pruning.parameters) == ["*.conv.weight"] and cfg.pruning.rewind == "init"
    assert cfg.pruning.rounds == 19 and 0.8**19 == pytest.approx(0.0144, abs=1e-4)  # LMC Table 1: 1.5%


def test_resnet50_preset_is_open_lths_imagenet_resnet_50_under_ddp():
    cfg = preset("resnet50_imagenet")
    assert cfg.model._target_ == "lth_wandb.models.ResNet50" and cfg.model.width == 64 and cfg.model.init == "open_lth"
    sgd_as_open_lth(cfg, lr=0.4)
    # dataset_hparams: batch_size=1024, here per process on 8 GPUs; datasets/imagenet.py's folder layout.
    assert cfg.data._target_ == "lth_wandb.data.ImageNetFolder" and cfg.data.batch_size * 8 == 1024
    # training_hparams: milestone_steps='30ep,60ep,80ep', gamma=0.1, warmup_steps='5ep', training_steps='90ep'.
    assert list(cfg.scheduler.milestones) == [30, 60, 80] and cfg.scheduler.gamma == 0.1
    assert cfg.scheduler.warmup_epochs == 5 and cfg.pruning.epochs_per_round == 90
    # LMC Table 1: ResNet-50 pruned one-shot to 30%, globally (sparse_global), nothing ignored.
    assert cfg.pruning.rounds == 1 and cfg.pruning.prune_rate == 0.7 and cfg.pruning.scope == "global"
    assert dict(cfg.pruning.layer_rates) == {} and cfg.pruning.parameters is None and cfg.pruning.rewind == "init"
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.devices == "auto" and cfg.trainer.precision == "32-true"


# ----------------------------------------------------------------------------------------------------------------
# Smoke runs: each preset composes, builds and trains (two rounds) on CPU. Synthetic data of the preset's shape.

SMALL = ("logger=none", "data.num_workers=0", "data.val_size=16", "data.eval_batch_size=32")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet20_cifar10", "vgg16_cifar10"])
def test_cifar_presets_train_on_cifar_shaped_data(name, tmp_path):
    result = lth_train(tmp_path, f"experiment={name}", "data=synthetic", "data.options.shape=[3,32,32]",
                       "data.options.num_samples=80", "data.batch_size=16", *SMALL, "pruning.rounds=1",
                       "pruning.rewind=2")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "│     1 │  80.00% │" in result.stdout  # two rounds trained, 20% pruned


@pytest.mark.slow
def test_resnet50_preset_trains_under_ddp_on_imagenet_shaped_data(tmp_path):
    # Two CPU processes (gloo): the preset's DDP strategy, 224x224 inputs and 1000 classes.
    result = lth_train(tmp_path, "experiment=resnet50_imagenet", "data=synthetic", "data.options.shape=[3,224,224]",
                       "data.options.num_classes=1000", "data.options.num_samples=24", "data.batch_size=4",
                       *SMALL, "data.val_size=8", "data.eval_batch_size=8", "trainer.accelerator=cpu",
                       "trainer.devices=2")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "│     1 │  30.00% │" in result.stdout  # one-shot to 30%


def jpeg_folder(root, classes=("n01", "n02", "n03"), train=5, val=2, size=(40, 30)):
    """An ImageNet-layout folder of small JPEGs: each class one colour, so labels can be read off the pixels."""
    for label, name in enumerate(classes):
        for split, count in (("train", train), ("val", val)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                colour = (80 * label, 40 + 10 * i, 200 - 60 * label)
                Image.new("RGB", size, colour).save(folder / f"{name}_{i}.JPEG", quality=95)
    return root


@pytest.mark.slow
def test_resnet50_preset_reads_an_imagenet_folder(tmp_path):
    root = jpeg_folder(tmp_path / "imagenet")
    result = lth_train(tmp_path, "experiment=resnet50_imagenet", f"data.root={root}", "data.batch_size=4",
                       "data.val_size=3", "data.num_workers=0", "data.eval_batch_size=8", "logger=none",
                       "trainer=cpu", "trainer.val_every_n_steps=null")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "│     1 │  30.00% │" in result.stdout
