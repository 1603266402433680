"""CIFAR-style augmentation of training batches, without torchvision: every image shifted by a random crop of its
zero-padded copy (4 pixels each side) and flipped left-right with probability 1/2. He et al. 2016's CIFAR
augmentation, and open_lth's default (``datasets/cifar10.py``: RandomHorizontalFlip, RandomCrop(32, 4)).
"""

from __future__ import annotations

import torch

PAD = 4


def augment_batch(x: torch.Tensor, fill: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``x`` (B, C, H, W) with each image cropped from its padded copy at a random offset and maybe flipped. The
    padding takes ``fill`` (one value per channel): a black pixel, after the data's normalisation."""
    b, c, h, w = x.shape
    padded = fill.reshape(1, c, 1, 1).expand(b, c, h + 2 * PAD, w + 2 * PAD).clone()
    padded[:, :, PAD : PAD + h, PAD : PAD + w] = x
    dy = torch.randint(0, 2 * PAD + 1, (b,), generator=generator).tolist()
    dx = torch.randint(0, 2 * PAD + 1, (b,), generator=generator).tolist()
    flip = torch.rand(b, generator=generator) < 0.5
    out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])
    return torch.where(flip.reshape(b, 1, 1, 1), out.flip(-1), out)
