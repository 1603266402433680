"""ResNet-50 for ImageNet (He et al. 2016, with the stride on the 3x3 convolution as torchvision's "v1.5"), the
network of Frankle et al. 2020's ImageNet experiments; open_lth's ``imagenet_resnet_50`` is torchvision's.

torchvision does not import beside this project's CPU torch, so the network is written here, layer for layer as
torchvision's (same names but the last layer: ``out``, like in the other models): 25,557,032 parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lth_wandb.models.init import apply_init, check_init

STAGES = (3, 4, 6, 3)  # ResNet-50's bottleneck blocks per stage
EXPANSION = 4


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand, each with BatchNorm; a 1x1 projection where the shape changes."""

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    """ImageNet ResNet-50.

    Args:
        in_channels: channels of the input images.
        num_classes: number of output logits (1000 for ImageNet).
        width: channels of the first stage's bottlenecks (64; open_lth's ``imagenet_resnet_50_<W>`` varies it).
        init: None (torchvision's: He normal fan-out convolutions, BatchNorm γ = 1) or ``"open_lth"``.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 1000, width: int = 64, init: str | None = None):
        super().__init__()
        check_init(init)
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        channels, stages = width, []
        for index, blocks in enumerate(STAGES):
            stage_width = width * 2**index
            stage = []
            for block in range(blocks):
                stage.append(Bottleneck(channels, stage_width, 2 if index > 0 and block == 0 else 1))
                channels = stage_width * EXPANSION
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        apply_init(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), kernel_size=3, stride=2, padding=1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.out(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
