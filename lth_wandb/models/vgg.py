"""VGG-16 for CIFAR-10 with BatchNorm, as open_lth builds it (``models/cifar_vgg.py``, ``cifar_vgg_16``) for
Frankle et al. 2020 ("Linear mode connectivity and the LTH", Table 1: 14.7M parameters).

Thirteen 3x3 convolutions (padding 1, with bias), each followed by BatchNorm and ReLU, in the plan below ("M" is 2x2
max-pooling); then 2x2 average pooling and one linear layer from 512 features. The output layer is named ``out``
like in the other models; the convolutions are ``layers.<i>.conv``, their BatchNorms ``layers.<i>.bn``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lth_wandb.models.init import apply_init

PLAN = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


class ConvBN(nn.Module):
    """3x3 convolution, BatchNorm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class VGG16(nn.Module):
    """CIFAR VGG-16: 14,728,266 parameters for 10 classes.

    Args:
        in_channels: channels of the input images.
        num_classes: number of output logits.
        init: None (PyTorch's defaults) or ``"open_lth"`` (see :mod:`lth_wandb.models.init`).
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, init: str | None = None) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for spec in PLAN:
            if spec == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers.append(ConvBN(channels, spec))
                channels = spec
        self.layers = nn.Sequential(*layers)
        self.out = nn.Linear(channels, num_classes)
        apply_init(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(x)
        # open_lth averages 2x2 (32x32 inputs end at 2x2); adaptive pooling gives the same there and takes any size.
        return self.out(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
