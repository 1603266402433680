"""ResNet-20 for CIFAR-10 (He et al. 2016, section 4.2): 3 stages of 3 basic blocks, 16/32/64 channels.

The output layer is named ``out`` like in the other models, so one pruning glob addresses it everywhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lth_wandb.models.init import apply_init, check_init

SHORTCUTS = ("pad", "conv")


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or downsampling) shortcut.

    Args:
        in_channels: channels entering the block.
        out_channels: channels leaving it.
        stride: 2 in the first block of a new stage, which halves height and width.
        shortcut: ``"pad"`` (option A: subsample and zero-pad channels, no parameters) or ``"conv"``
            (option B: 1x1 conv + BN) where the shape changes.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, shortcut: str = "pad") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.extra_channels = out_channels - in_channels
        self.stride = stride
        self.shortcut: nn.Module | None = None
        if shortcut == "conv" and (stride != 1 or in_channels != out_channels):
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self._skip(x))

    def _skip(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut is not None:
            return self.shortcut(x)
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra_channels:
            # Option A: new channels start at zero, split evenly on both sides as in He et al.'s code.
            half = self.extra_channels // 2
            x = F.pad(x, (0, 0, 0, 0, half, self.extra_channels - half))
        return x


class ResNet20(nn.Module):
    """CIFAR ResNet-20: 269,722 parameters with ``shortcut="pad"``, 272,474 with ``"conv"`` (10 classes).

    Args:
        in_channels: channels of the input images.
        num_classes: number of output logits.
        shortcut: ``"pad"`` (option A, the paper's CIFAR choice) or ``"conv"`` (1x1 projection, open_lth's).
        init: None (He normal fan-out convolutions, PyTorch's default elsewhere) or ``"open_lth"`` (see
            :mod:`lth_wandb.models.init`).
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, shortcut: str = "pad", init: str | None = None):
        super().__init__()
        check_init(init)
        if shortcut not in SHORTCUTS:
            raise ValueError(
                f"unknown shortcut {shortcut!r}; valid: {list(SHORTCUTS)}. "
                "Hint: 'pad' is He et al.'s option A (no parameters), 'conv' a 1x1 projection."
            )
        self.conv = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        blocks, channels = [], 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                blocks.append(BasicBlock(channels, width, stride if i == 0 else 1, shortcut))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        apply_init(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = self.blocks(x)
        return self.out(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
