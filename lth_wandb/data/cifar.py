"""CIFAR-10 from its official python version: the ``cifar-10-batches-py`` folder of pickled batches.

Trust note: the batches are Python pickles, the format the dataset's authors publish. They are read only from
a folder the user pointed to (``root``, ``$LTH_DATA_DIR``) or from our checksum-verified download, and through
an unpickler that refuses everything but the few numpy globals the batches need, so a planted file cannot run
code. Still, do not point ``root`` at files you would not otherwise trust.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from lth_wandb.data.files import DownloadError, cache_dir, download, locate, not_found, read_file, search_dirs

NAME = "cifar10"
NUM_CLASSES = 10
MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)
ARCHIVE, ARCHIVE_MD5 = "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
SUBDIRS = (FOLDER, f"{NAME}/{FOLDER}", NAME)
# What numpy arrays need to unpickle (py2 and py3 module paths); nothing else is allowed.
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


def load_cifar10(
    root: str | Path | None = None, download: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Load CIFAR-10 as ``(x_train, y_train, x_test, y_test)``.

    Images are float32 (N, 3, 32, 32) in [0, 1]; labels are int64.

    Args:
        root: a folder holding ``cifar-10-batches-py``, or that folder; when given, only it is searched.
        download: fetch and unpack the official archive (MD5-checked) into ``root`` or the cache folder.

    Raises:
        DatasetNotFoundError: the batches are not found; the message lists every way to provide them.
        DatasetUnreadableError: a batch is a folder or cannot be read.
        ValueError: a batch is not a CIFAR-10 batch (truncated, another format, labels outside 0..9), or holds
            anything but numpy arrays (a planted pickle).
    """
    names = (*TRAIN_BATCHES, TEST_BATCH)
    dirs = search_dirs(NAME, root, SUBDIRS)
    paths = locate(dirs, names)
    dest = Path(root).expanduser() if root is not None else cache_dir(NAME)
    reason = None
    if paths is None and download:
        try:
            _fetch(dest)
            paths = locate([dest / FOLDER], names)
        except DownloadError as err:
            reason = str(err)
    if paths is None:
        raise not_found(NAME, [f"{FOLDER}/{n}" for n in names], dirs, dest, reason=reason)
    train = [_read_batch(paths[n]) for n in TRAIN_BATCHES]
    x_test, y_test = _read_batch(paths[TEST_BATCH])
    x_train = torch.cat([x for x, _ in train])
    y_train = torch.cat([y for _, y in train])
    return x_train, y_train, x_test, y_test


def _fetch(dest: Path) -> None:
    archive = download(MIRRORS, ARCHIVE, dest, ARCHIVE_MD5)
    with tarfile.open(archive, "r:gz") as tar:
        # The "data" filter rejects absolute paths, links out of dest and device files.
        tar.extractall(dest, filter="data")
    archive.unlink()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a CIFAR-10 batch only holds numpy arrays, lists and bytes"
            )
        return super().find_class(module, name)


def _read_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    raw = read_file(path, "a CIFAR-10 batch (a Python pickle)")
    try:
        # encoding="bytes": the batches were pickled by Python 2, so their dict keys come back as bytes.
        batch = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as err:  # a damaged pickle can raise almost anything; none of it is ours to let through
        raise ValueError(
            f"{path}: not a readable CIFAR-10 batch ({type(err).__name__}: {err}); expected a pickled dict with "
            "b'data' and b'labels'. Hint: it may be truncated or another file; fetch cifar-10-python.tar.gz again "
            "and unpack it (data.download=true does both)."
        ) from err
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise ValueError(
            f"{path}: data {data.shape} and labels {labels.shape} are not a CIFAR-10 batch; expected "
            "(N, 3072) and (N,). Hint: point root at the cifar-10-batches-py folder of the python version."
        )
    if labels.size and not 0 <= labels.min() <= labels.max() < NUM_CLASSES:
        raise ValueError(
            f"{path}: labels run from {labels.min()} to {labels.max()}; expected 0..{NUM_CLASSES - 1}. Hint: this "
            "may be a CIFAR-100 batch; CIFAR-10's is in cifar-10-python.tar.gz."
        )
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32)).float().div_(255)
    return images, torch.from_numpy(labels)
