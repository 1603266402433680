"""Fully connected classifiers: LeNet-300-100 (Frankle & Carbin's MNIST network) and a tiny MLP for tests.

Layers are named ``fc1, fc2, ...`` and the last one ``out``, so pruning configs can address the output layer
with a glob such as ``"*out.weight"`` (the paper prunes it at half the hidden-layer rate).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn


class MLP(nn.Sequential):
    """Flatten, then ``Linear -> ReLU`` per hidden width, then a linear output layer.

    Args:
        in_features: number of input values after flattening (e.g. 784 for 1x28x28 images).
        hidden: widths of the hidden layers, in order; empty for a linear classifier.
        num_classes: number of output logits.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int) -> None:
        widths = [in_features, *hidden, num_classes]
        for what, value in (("in_features", in_features), ("num_classes", num_classes)):
            _check_positive(what, value)
        for width in hidden:
            _check_positive("hidden width", width)
        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-2], widths[1:-1], strict=True), start=1):
            layers[f"fc{i}"] = nn.Linear(fan_in, fan_out)
            layers[f"relu{i}"] = nn.ReLU()
        layers["out"] = nn.Linear(widths[-2], num_classes)
        super().__init__(layers)


class LeNet300100(MLP):
    """LeNet-300-100: 784-300-100-10 with ReLU, 266,610 parameters for MNIST-sized input."""

    def __init__(self, in_features: int = 784, num_classes: int = 10) -> None:
        super().__init__(in_features, [300, 100], num_classes)


class TinyMLP(MLP):
    """One hidden layer; sized for the 8x8 ``digits`` set so tests train in a second."""

    def __init__(self, in_features: int = 64, hidden: int = 32, num_classes: int = 10) -> None:
        super().__init__(in_features, [hidden], num_classes)


def _check_positive(what: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what}={value!r} must be a positive int. Hint: in_features is C*H*W of one input.")
