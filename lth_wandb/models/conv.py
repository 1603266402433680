"""The CIFAR-10 conv nets of Frankle & Carbin (2019): Conv-2, Conv-4 and Conv-6.

Each is ``pairs`` blocks of two 3x3 convolutions (padding 1, ReLU) followed by 2x2 max-pooling, with widths
64, 128, 256 for the first, second and third pair; then fc 256-256-num_classes. Layers are named
``conv1.. / fc1, fc2 / out`` so pruning globs such as ``"*conv*.weight"`` or ``"*out.weight"`` can tell
convolutions, hidden fc layers and the output layer apart (the paper prunes them at different rates).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

WIDTHS = (64, 128, 256)


class ConvNet(nn.Sequential):
    """``pairs`` conv-conv-pool blocks, then a 256-256 fully connected head.

    Args:
        pairs: number of conv-conv-pool blocks, 1 to 3 (Conv-2, Conv-4, Conv-6).
        in_channels: channels of the input images.
        num_classes: number of output logits.
        image_size: height and width of the (square) input; must be divisible by ``2**pairs``.
    """

    def __init__(self, pairs: int, in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> None:
        if pairs not in (1, 2, 3):
            raise ValueError(f"pairs={pairs!r} is not supported; valid: 1, 2, 3 (Conv-2, Conv-4, Conv-6).")
        if image_size % 2**pairs:
            raise ValueError(
                f"image_size={image_size} is not divisible by 2**pairs={2**pairs}; each pair halves it. "
                "Hint: CIFAR-10 uses 32."
            )
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_channels
        for pair in range(pairs):
            for j in (1, 2):
                index = 2 * pair + j
                layers[f"conv{index}"] = nn.Conv2d(channels, WIDTHS[pair], kernel_size=3, padding=1)
                layers[f"relu{index}"] = nn.ReLU()
                channels = WIDTHS[pair]
            layers[f"pool{pair + 1}"] = nn.MaxPool2d(2)
        side = image_size // 2**pairs
        layers["flatten"] = nn.Flatten()
        layers["fc1"] = nn.Linear(channels * side * side, 256)
        layers["fc_relu1"] = nn.ReLU()
        layers["fc2"] = nn.Linear(256, 256)
        layers["fc_relu2"] = nn.ReLU()
        layers["out"] = nn.Linear(256, num_classes)
        super().__init__(layers)


class Conv2(ConvNet):
    """Conv-2: 64-64 pool, fc 256-256-10; 4,301,642 parameters on 3x32x32 input."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> None:
        super().__init__(1, in_channels, num_classes, image_size)


class Conv4(ConvNet):
    """Conv-4: 64-64 pool 128-128 pool, fc 256-256-10; 2,425,930 parameters on 3x32x32 input."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> None:
        super().__init__(2, in_channels, num_classes, image_size)


class Conv6(ConvNet):
    """Conv-6: 64-64 pool 128-128 pool 256-256 pool, fc 256-256-10; 2,262,602 parameters on 3x32x32 input."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> None:
        super().__init__(3, in_channels, num_classes, image_size)
