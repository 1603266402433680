"""Networks from the lottery-ticket papers, a model registry, and the ``Classifier`` LightningModule.

Every network names its last layer ``out``, so ``layer_rates={"*out.weight": 0.1}`` targets the output layer.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from lth_wandb.models.classifier import Classifier
from lth_wandb.models.conv import Conv2, Conv4, Conv6, ConvNet
from lth_wandb.models.imagenet_resnet import ResNet50
from lth_wandb.models.mlp import MLP, LeNet300100, TinyMLP
from lth_wandb.models.resnet import ResNet20
from lth_wandb.models.vgg import VGG16

MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet300100": LeNet300100,
    "tiny_mlp": TinyMLP,
    "mlp": MLP,
    "conv2": Conv2,
    "conv4": Conv4,
    "conv6": Conv6,
    "resnet20": ResNet20,
    "vgg16": VGG16,
    "resnet50": ResNet50,
}


def get(name: str, **kwargs) -> nn.Module:
    """Build the registered network ``name`` with ``kwargs`` (e.g. ``in_features``, ``num_classes``).

    Raises:
        ValueError: ``name`` is not registered; the message lists the valid names.
    """
    if name not in MODELS:
        raise ValueError(
            f"unknown model {name!r}; valid models: {sorted(MODELS)}. Hint: names are lower case, "
            "e.g. 'lenet300100' for LeNet-300-100."
        )
    return MODELS[name](**kwargs)


__all__ = [
    "MODELS",
    "MLP",
    "Classifier",
    "Conv2",
    "Conv4",
    "Conv6",
    "ConvNet",
    "LeNet300100",
    "ResNet20",
    "ResNet50",
    "VGG16",
    "TinyMLP",
    "get",
]
