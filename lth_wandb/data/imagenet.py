"""ImageNet from a standard folder, without torchvision: ``<root>/train/<class>/*.JPEG`` and ``<root>/val/<class>/*``
(the ImageFolder layout, with the validation images sorted into class folders), decoded with Pillow.

The transforms are open_lth's (``datasets/imagenet.py``), written here: training images are a random resized crop
(area 10-100%, aspect ratio 0.8-1.25, torchvision's sampling) to ``image_size`` and a left-right flip with
probability 1/2; evaluation images are resized so the shorter side is ``resize`` and centre-cropped to
``image_size``; both are scaled to [0, 1] and standardised with ImageNet's channel means and deviations.

ImageNet's ``val`` folder is the test set here (the papers report on it); lth-train's validation set, on which each
round's early-stop iteration is picked, is ``val_size`` images held out of ``train``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

EXTENSIONS = (".jpeg", ".jpg", ".png")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CROP_SCALE, CROP_RATIO = (0.1, 1.0), (0.8, 1.25)  # open_lth's RandomResizedCrop(224, scale=..., ratio=...)


def find_images(folder: Path, classes: list[str] | None = None) -> tuple[list[tuple[Path, int]], list[str]]:
    """``(path, label)`` for every image under ``folder/<class>/``, classes in sorted order (or ``classes``'s)."""
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} is not a folder. Hint: data.root is the ImageNet folder holding train/<class>/ and "
            "val/<class>/ (the ImageFolder layout)"
        )
    found = sorted(p.name for p in folder.iterdir() if p.is_dir())
    classes = found if classes is None else classes
    hint = "Hint: one folder of images per class, with the same names in train/ and val/"
    if not found:
        raise ValueError(f"{folder} has no class folders. {hint}")
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ValueError(f"{folder} has class folders that train/ does not have: {unknown[:5]}. {hint}")
    samples = [(p, label) for label, name in enumerate(classes) if (folder / name).is_dir()
               for p in sorted((folder / name).iterdir()) if p.suffix.lower() in EXTENSIONS]  # fmt: skip
    if not samples:
        raise ValueError(f"{folder} holds no {'/'.join(EXTENSIONS)} images. Hint: point data.root at ImageNet")
    return samples, classes


def crop_box(width: int, height: int, generator: torch.Generator | None = None) -> tuple[int, int, int, int]:
    """A random resized crop's ``(left, top, right, bottom)``: ten tries at an area and aspect ratio drawn from
    ``CROP_SCALE`` and (log-uniformly) ``CROP_RATIO``, else the centre crop at the nearest allowed ratio."""
    area, log_low, log_high = width * height, math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    for _ in range(10):
        target = area * (CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * torch.rand(1, generator=generator).item())
        ratio = math.exp(log_low + (log_high - log_low) * torch.rand(1, generator=generator).item())
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return left, top, left + w, top + h
    w, h = width, height
    if width / height < CROP_RATIO[0]:
        h = round(width / CROP_RATIO[0])
    elif width / height > CROP_RATIO[1]:
        w = round(height * CROP_RATIO[1])
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def to_tensor(image) -> torch.Tensor:
    """A PIL RGB image as a standardised float tensor (3, H, W)."""
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    x = pixels.reshape(image.height, image.width, 3).permute(2, 0, 1).float().div_(255)
    return (x - torch.tensor(MEAN).reshape(3, 1, 1)) / torch.tensor(STD).reshape(3, 1, 1)


class ImageFiles(Dataset):
    """Decoded and transformed images from ``samples``: training (random crop and flip) or evaluation (resize and
    centre crop)."""

    def __init__(self, samples: list[tuple[Path, int]], train: bool, image_size: int, resize: int):
        self.samples, self.train, self.image_size, self.resize = samples, train, image_size, resize

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path, label = self.samples[index]
        with Image.open(path) as raw:
            image = raw.convert("RGB")
        size = (self.image_size, self.image_size)
        if self.train:
            image = image.resize(size, Image.BILINEAR, box=crop_box(image.width, image.height))
            if torch.rand(1).item() < 0.5:
                image = image.transpose(Image.FLIP_LEFT_RIGHT)
        else:
            scale = self.resize / min(image.width, image.height)
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
            left = round((image.width - self.image_size) / 2)
            top = round((image.height - self.image_size) / 2)
            image = image.crop((left, top, left + self.image_size, top + self.image_size))
        return to_tensor(image), label


class ImageNetFolder(pl.LightningDataModule):
    """ImageNet (or any image set in the ImageFolder layout) for lth-train: ``data=imagenet data.root=<folder>``.

    Args:
        root: the folder holding ``train/`` and ``val/``.
        batch_size: training batch size per process (under DDP the global batch is this times the processes).
        val_size: training images held out for validation (picking each round's early-stop iteration): a count, or
            a fraction in (0, 1).
        num_workers: DataLoader worker processes; decoding JPEGs needs several per GPU.
        seed: seeds the validation split and the shuffle order.
        eval_batch_size: batch size of the validation and test loaders.
        image_size: side of the square crops (224).
        resize: shorter side of evaluation images before the centre crop (256).
    """

    def __init__(
        self,
        root: str | None = None,
        batch_size: int = 256,
        val_size: int | float = 10_000,
        num_workers: int = 8,
        seed: int = 0,
        eval_batch_size: int = 256,
        image_size: int = 224,
        resize: int = 256,
    ) -> None:
        super().__init__()
        if root is None:
            raise ValueError("data.root is not set: the ImageNet folder holding train/ and val/. Hint: data.root=...")
        if isinstance(val_size, float) and val_size.is_integer() and val_size >= 1:
            val_size = int(val_size)  # lth-train's data.val_size is typed float
        if isinstance(val_size, bool) or not isinstance(val_size, (int, float)) or not (
            isinstance(val_size, int) and val_size >= 1 or isinstance(val_size, float) and 0 < val_size < 1
        ):
            raise ValueError(f"val_size={val_size!r} must be a count >= 1 or a fraction in (0, 1). Hint: 10000")
        for what, value, low in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0),
                                 ("eval_batch_size", eval_batch_size, 1),
                                 ("image_size", image_size, 1), ("resize", resize, image_size)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{what}={value!r} must be an int >= {low}.")
        self.root, self.batch_size, self.val_size = Path(root).expanduser(), batch_size, val_size
        self.num_workers = num_workers
        self.seed, self.eval_batch_size, self.image_size, self.resize = seed, eval_batch_size, image_size, resize
        self.shuffle_generator = torch.Generator().manual_seed(seed)
        self.classes: list[str] | None = None
        self.train_set = self.val_set = self.test_set = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    @property
    def num_classes(self) -> int:
        if self.classes is None:
            self.setup("fit")
        return len(self.classes)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train, self.classes = find_images(self.root / "train")
        test, _ = find_images(self.root / "val", self.classes)
        held_out = self.val_size if isinstance(self.val_size, int) else round(self.val_size * len(train))
        if not 1 <= held_out < len(train):
            raise ValueError(
                f"val_size={self.val_size} holds out {held_out} of {len(train)} training images: at least one must "
                "remain on each side. Hint: a smaller data.val_size"
            )
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed)).tolist()
        held = [train[i] for i in order[:held_out]]
        kept = [train[i] for i in sorted(order[held_out:])]
        self.train_set = ImageFiles(kept, True, self.image_size, self.resize)
        self.val_set = ImageFiles(held, False, self.image_size, self.resize)
        self.test_set = ImageFiles(test, False, self.image_size, self.resize)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size)

    def state_dict(self) -> dict:
        return {"shuffle_generator": self.shuffle_generator.get_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict.get("shuffle_generator") is not None:
            self.shuffle_generator.set_state(state_dict["shuffle_generator"])

    def _loader(self, dataset, batch_size: int, shuffle: bool = False) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            generator=self.shuffle_generator if shuffle else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )
