"""The networks, initialisation, schedule and augmentation of the papers' real-scale presets: VGG-16 and ResNet-50
(sizes as open_lth's), open_lth's initialisation, open_lth's multistep schedule with warm-up, CIFAR augmentation."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from conftest import trainer
from torch import nn

from lth_wandb.data import ClassificationDataModule
from lth_wandb.data.augment import PAD, augment_batch
from lth_wandb.models import VGG16, Classifier, ResNet20, ResNet50
from lth_wandb.models.schedules import WarmupMultiStep


def count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_sizes_are_open_lths():
    # cifar_vgg_16: 14.7M (LMC Table 1); imagenet_resnet_50 is torchvision's resnet50: 25,557,032.
    assert count(VGG16()) == 14_728_266 and count(ResNet50()) == 25_557_032
    assert VGG16()(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert ResNet50(num_classes=7, width=8)(torch.zeros(1, 3, 64, 64)).shape == (1, 7)
    # open_lth's cifar_resnet_20 has 1x1 convolution shortcuts: our shortcut="conv".
    assert count(ResNet20(shortcut="conv")) == 272_474


@pytest.mark.parametrize("build", [lambda: VGG16(init="open_lth"), lambda: ResNet20(shortcut="conv", init="open_lth")])
def test_open_lth_init_is_he_fan_in_and_uniform_batchnorm(build):
    torch.manual_seed(0)
    net = build()
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            gamma = module.weight.detach()
            assert 0 <= float(gamma.min()) and float(gamma.max()) < 1 and not module.bias.any()
    big = max((m for m in net.modules() if isinstance(m, nn.Conv2d)), key=lambda m: m.weight.numel())
    fan_in = big.weight[0].numel()
    assert float(big.weight.detach().std()) == pytest.approx(math.sqrt(2 / fan_in), rel=0.02)  # kaiming_normal_, fan-in
    with pytest.raises(ValueError, match=r"unknown init 'xavier'; valid: \[None, 'open_lth'\]\. Hint"):
        VGG16(init="xavier")


class Rates(pl.Callback):
    def __init__(self):
        self.lrs = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def rates(**kwargs) -> list[float]:
    net = nn.Sequential(nn.Flatten(), nn.Linear(20, 3))
    model = Classifier(net, lr=0.4, optimizer="sgd", scheduler="multistep", **kwargs)
    x, y = torch.randn(32, 20), torch.arange(32) % 3
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)  # 4 steps an epoch
    probe = Rates()
    trainer([probe], max_epochs=6, limit_val_batches=0).fit(model, loader)
    return probe.lrs


def test_multistep_drops_at_milestone_epochs():
    lrs = rates(milestones=[2, 4], gamma=0.1)
    assert lrs == pytest.approx([0.4] * 8 + [0.04] * 8 + [0.004] * 8)


def test_warmup_is_open_lths_per_iteration_schedule():
    # open_lth (training/optimizers.py): lr * gamma^bisect(milestones, it) * min(1, it / warmup), per iteration.
    lrs = rates(milestones=[2, 4], gamma=0.1, warmup_epochs=1)
    expected = [0.4 * 0.1 ** sum(it >= m for m in (8, 16)) * min(1.0, it / 4) for it in range(24)]
    assert lrs == pytest.approx(expected)
    assert WarmupMultiStep([8, 16], 0.1, 4)(0) == 0.0  # open_lth's first step has rate 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(scheduler="multistep"), r"scheduler='multistep' needs milestones \(epochs\)\. Hint"),
        (dict(scheduler="multistep", milestones=[120, 80]), r"milestones=\[120, 80\] must be increasing epochs"),
        (dict(scheduler="multistep", milestones=[80], warmup_epochs=-1), r"warmup_epochs=-1 must be a whole number"),
        (dict(scheduler="step", warmup_epochs=5), r"warmup_epochs=5 is part of scheduler 'multistep', not 'step'"),
    ],
)
def test_schedule_arguments_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Classifier(nn.Linear(2, 2), **kwargs)


def test_augment_crops_the_padded_image_and_flips_by_hand():
    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).reshape(2, 1, 3, 3) + 1
    fill = torch.tensor([-5.0])
    out = augment_batch(x, fill, torch.Generator().manual_seed(3))
    draws = torch.Generator().manual_seed(3)
    dy = torch.randint(0, 2 * PAD + 1, (2,), generator=draws).tolist()
    dx = torch.randint(0, 2 * PAD + 1, (2,), generator=draws).tolist()
    flip = (torch.rand(2, generator=draws) < 0.5).tolist()
    for i in range(2):
        padded = torch.full((1, 3 + 2 * PAD, 3 + 2 * PAD), -5.0)
        padded[:, PAD:-PAD, PAD:-PAD] = x[i]
        crop = padded[:, dy[i] : dy[i] + 3, dx[i] : dx[i] + 3]
        assert torch.equal(out[i], crop.flip(-1) if flip[i] else crop)


def test_augment_leaves_the_order_and_evaluation_alone():
    def dm(augment):
        d = ClassificationDataModule("synthetic", num_samples=64, shape=(3, 8, 8), batch_size=16, augment=augment,
                                     normalize=True, val_size=16)  # fmt: skip
        d.setup()
        return d

    plain, augmented = dm(False), dm(True)
    for (xa, ya), (xb, yb) in zip(plain.train_dataloader(), augmented.train_dataloader(), strict=True):
        assert torch.equal(ya, yb) and xa.shape == xb.shape and not torch.equal(xa, xb)
    for a, b in zip(plain.val_dataloader(), augmented.val_dataloader(), strict=True):
        assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b, strict=True))
    # Padding is black: 0 in [0, 1] images, (0 - mean) / std after normalisation (below zero: the means are > 0).
    assert bool((augmented.train_set.fill < 0).all())
    raw = ClassificationDataModule("synthetic", num_samples=64, shape=(3, 8, 8), augment=True, val_size=16)
    raw.setup()
    assert torch.equal(raw.train_set.fill, torch.zeros(3))
    with pytest.raises(ValueError, match=r"augment='yes' must be true or false"):
        ClassificationDataModule("synthetic", augment="yes")
