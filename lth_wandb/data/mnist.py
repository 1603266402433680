"""MNIST, Fashion-MNIST and KMNIST: four IDX files each, same layout, different sources.

Local files are read as they are (the Debian package recompresses Fashion-MNIST, so its gzip bytes differ from
the published ones); checksums are verified on download, where corruption and tampering happen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lth_wandb.data.files import DownloadError, cache_dir, download, locate, not_found, search_dirs
from lth_wandb.data.idx import read_idx

TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
NUM_CLASSES = 10  # MNIST, Fashion-MNIST and KMNIST alike


@dataclass(frozen=True)
class IdxSource:
    """Where one IDX dataset lives.

    Attributes:
        name: registry name, also the cache and ``$LTH_DATA_DIR`` sub-folder.
        mirrors: base URLs, tried in order.
        md5: published MD5 of each gzip file, in ``FILES`` order.
        subdirs: sub-folders tried inside each search folder (torchvision's layout included).
        system_dirs: folders where an OS package installs the files.
        debian_package: the package that installs them, for the error message.
    """

    name: str
    mirrors: tuple[str, ...]
    md5: tuple[str, str, str, str]
    subdirs: tuple[str, ...]
    system_dirs: tuple[str, ...] = ()
    debian_package: str | None = None


SOURCES = {
    "mnist": IdxSource(
        "mnist",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        (
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3",
            "ec29112dd5afa0611ce80d1b7f02629c",
        ),
        ("mnist", "MNIST/raw"),
    ),
    "fashion_mnist": IdxSource(
        "fashion_mnist",
        (
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        (
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79",
            "bb300cfdad3c16e7a12a480ee83cd310",
        ),
        ("fashion_mnist", "fashion-mnist", "FashionMNIST/raw"),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        debian_package="dataset-fashion-mnist",
    ),
    "kmnist": IdxSource(
        "kmnist",
        ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        (
            "bdb82020997e1d708af4cf47b453dcf7",
            "e144d726b3acfaa3e44228e80efcd344",
            "5c965bf0a639b31b8f53240b1b52f4d7",
            "7320c461ea6c1c855c0b718fb2a4b134",
        ),
        ("kmnist", "KMNIST/raw"),
    ),
}


def load_idx_dataset(
    name: str,
    root: str | Path | None = None,
    download: bool = False,
    system_dirs: Sequence[str | Path] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Load an IDX dataset as ``(x_train, y_train, x_test, y_test)``.

    Images are float32 in [0, 1] shaped (N, 1, H, W); labels are int64.

    Args:
        name: ``"mnist"``, ``"fashion_mnist"`` or ``"kmnist"``.
        root: folder holding the four files (raw or ``.gz``); when given, only it is searched.
        download: fetch missing files from the official mirrors (into ``root`` or the cache folder).
        system_dirs: override the OS package folders searched (None: the dataset's defaults; ``()``: none).

    Raises:
        DatasetNotFoundError: the files are nowhere to be found; the message lists every way to provide them.
        DatasetUnreadableError: a file is a folder or cannot be read.
        ValueError: a file is not (gzip-compressed) IDX, or the files are not matching image/label pairs with
            labels in ``0..NUM_CLASSES-1``.
    """
    source = SOURCES[name]
    system = source.system_dirs if system_dirs is None else tuple(system_dirs)
    dirs = search_dirs(name, root, source.subdirs, system)
    paths = locate(dirs, FILES, suffixes=(".gz", ""))
    dest = Path(root).expanduser() if root is not None else cache_dir(name)
    reason = None
    if paths is None and download:
        try:
            for filename, md5 in zip(FILES, source.md5, strict=True):
                _download_missing(source, filename + ".gz", dest, md5)
            paths = locate([dest], FILES, suffixes=(".gz", ""))
        except DownloadError as err:
            reason = str(err)
    if paths is None:
        debian = (source.debian_package, source.system_dirs[0]) if source.debian_package else None
        raise not_found(name, [f + "[.gz]" for f in FILES], dirs, dest, debian, reason)
    x_train, y_train = _read_split(name, paths[TRAIN_IMAGES], paths[TRAIN_LABELS])
    x_test, y_test = _read_split(name, paths[TEST_IMAGES], paths[TEST_LABELS])
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"{paths[TEST_IMAGES]}: images of {tuple(x_test.shape[2:])} pixels, but {paths[TRAIN_IMAGES]} has "
            f"{tuple(x_train.shape[2:])}; expected one image size in both splits. Hint: the files come from "
            "different datasets; replace them with one dataset's four files."
        )
    return x_train, y_train, x_test, y_test


def _download_missing(source: IdxSource, filename: str, dest: Path, md5: str) -> None:
    if not (dest / filename).is_file():
        download(source.mirrors, filename, dest, md5)


def _read_split(name: str, images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One split's images (float in [0, 1], (N, 1, H, W)) and labels (int64), checked to pair up."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{images_path}: holds {images.dtype} values of shape {images.shape}; expected uint8 images "
            "(N, H, W). Hint: the file may be a labels file or from another dataset under this name."
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(
            f"{labels_path}: holds {labels.dtype} values of shape {labels.shape}; expected integer labels (N,). "
            "Hint: the file may be an images file or from another dataset under this name."
        )
    if len(labels) != len(images):
        raise ValueError(
            f"{labels_path}: {len(labels)} labels for the {len(images)} images of {images_path}; expected one "
            "label per image. Hint: the two files come from different splits or datasets; use a matching pair."
        )
    outside = (labels < 0) | (labels >= NUM_CLASSES)
    if outside.any():
        i = int(np.argmax(outside))
        raise ValueError(
            f"{labels_path}: label {labels[i]} at index {i} is outside 0..{NUM_CLASSES - 1}; expected the "
            f"{NUM_CLASSES} classes of {name!r}. Hint: the file may come from another dataset (EMNIST letters "
            f"has 26 classes); put the {labels_path.name} of {name!r} in its place."
        )
    return torch.from_numpy(images).unsqueeze(1).float().div_(255), torch.from_numpy(labels.astype(np.int64))
