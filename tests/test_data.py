"""Dataset readers, the registry and the DataModule: real files in tmp_path, no network, no mocks."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import lth_train
from torch.utils.data import DataLoader, TensorDataset

from lth_wandb.data import ClassificationDataModule, DatasetNotFoundError, DatasetUnreadableError, get, read_idx
from lth_wandb.data import mnist as mnist_module
from lth_wandb.data.cifar import load_cifar10
from lth_wandb.data.datamodule import BatchedTensorDataset
from lth_wandb.data.mnist import FILES, IdxSource, load_idx_dataset
from lth_wandb.data.toy import make_synthetic

IDX_CODES = {
    np.uint8: 0x08,
    np.int8: 0x09,
    np.int16: 0x0B,
    np.int32: 0x0C,
    np.float32: 0x0D,
    np.float64: 0x0E,
}
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    """Our own IDX writer, independent of the reader: magic, big-endian dims, big-endian values."""
    header = bytes([0, 0, IDX_CODES[array.dtype.type], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def write_idx_dataset(folder: Path, n_train: int = 12, n_test: int = 5, compress: bool = True) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        suffix = ".gz" if compress else ""
        write_idx(
            folder / f"{prefix}-images-idx3-ubyte{suffix}",
            rng.integers(0, 256, (n, 4, 4), np.uint8),
            compress,
        )
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(n, dtype=np.uint8) % 10, compress)


@pytest.fixture
def no_data_env(monkeypatch, tmp_path):
    """No $LTH_DATA_DIR and an empty cache: only what a test passes explicitly can be found."""
    monkeypatch.delenv("LTH_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, dtype, compress):
    array = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
    got = read_idx(write_idx(tmp_path / "a.idx", array, compress))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative and got.flags.writeable
    np.testing.assert_array_equal(got, array)


def _gz_tail_cut(data: bytes) -> bytes:
    return gzip.compress(data)[:-20]


def _gz_bad_crc(data: bytes) -> bytes:
    packed = bytearray(gzip.compress(data))
    packed[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    return bytes(packed)


# One IDX-level message each: (file name, bytes from a good 2x2 uint8 file's bytes, the message).
IDX_FILE_ERRORS = {
    "magic": ("a.idx", lambda good: b"\x00\x01" + good[2:], r"a\.idx: magic number 00010802 is not an IDX header"),
    "data size": (
        "a.idx",
        lambda good: good[:-1],
        r"a\.idx: dimensions \(2, 2\) of uint8 need 4 data bytes but the file holds 3\. Hint: .* fetch it again",
    ),
    "header size": (
        "a.idx",
        lambda good: good[:6],
        r"a\.idx: the header declares 2 dimensions, which need 12 header bytes, but the file has only 6\. Hint:",
    ),
    "not gzip": (
        "a.idx.gz",
        lambda good: b"<html>404 Not Found</html>",
        r"a\.idx\.gz: not gzip-compressed \(it starts with b'<html>404 Not Fo'\); expected a gzip-compressed IDX "
        r"file\. Hint: a failed download",
    ),
    "truncated gzip": (
        "a.idx.gz",
        _gz_tail_cut,
        r"a\.idx\.gz: not a complete gzip file \(Compressed file ended .*\); expected a gzip-compressed IDX file\. "
        r"Hint: it is truncated or corrupt",
    ),
    "corrupt gzip": ("a.idx.gz", _gz_bad_crc, r"a\.idx\.gz: not a complete gzip file \(CRC check failed\)"),
}


@pytest.mark.parametrize("case", IDX_FILE_ERRORS)
def test_idx_file_errors_name_the_file_and_the_problem(tmp_path, case):
    name, damage, message = IDX_FILE_ERRORS[case]
    good = write_idx(tmp_path / "good", np.zeros((2, 2), np.uint8), compress=False).read_bytes()
    (tmp_path / name).write_bytes(damage(good))
    with pytest.raises(ValueError, match=message):
        read_idx(tmp_path / name)


def test_raw_idx_named_gz_still_reads(tmp_path):
    # Compression is judged by content: only a .gz that is neither gzip nor IDX is refused.
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "raw.gz", array, compress=False)), array)


def test_folder_in_place_of_a_data_file(tmp_path):
    write_idx_dataset(tmp_path)
    (tmp_path / f"{FILES[0]}.gz").unlink()
    (tmp_path / f"{FILES[0]}.gz").mkdir()
    with pytest.raises(DatasetUnreadableError, match=rf"{FILES[0]}\.gz is a folder; expected an IDX file by that"):
        load_idx_dataset("mnist", root=tmp_path)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads files without permission")
def test_unreadable_data_file(tmp_path):
    write_idx_dataset(tmp_path)
    (tmp_path / f"{FILES[1]}.gz").chmod(0)
    with pytest.raises(DatasetUnreadableError, match=rf"{FILES[1]}\.gz cannot be read \(Permission denied\); .* chmod"):
        load_idx_dataset("mnist", root=tmp_path)


def _replace(name: str, array: np.ndarray):
    return lambda folder: write_idx(folder / f"{name}.gz", array, compress=True)


# One dataset-level message each: (what to write over a good 12/5-sample dataset, the message).
IDX_DATASET_ERRORS = {
    "label range": (
        _replace(FILES[1], np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], np.uint8)),
        rf"{FILES[1]}\.gz: label 10 at index 10 is outside 0\.\.9; expected the 10 classes of 'mnist'\. Hint:",
    ),
    "negative label": (_replace(FILES[3], np.array([0, 1, -1, 3, 4], np.int8)), r"label -1 at index 2 is outside"),
    "label count": (
        _replace(FILES[3], np.arange(4, dtype=np.uint8)),
        rf"{FILES[3]}\.gz: 4 labels for the 5 images of .*{FILES[2]}\.gz; expected one label per image\.",
    ),
    "image shape": (
        _replace(FILES[0], np.zeros(12, np.uint8)),
        rf"{FILES[0]}\.gz: holds uint8 values of shape \(12,\); expected uint8 images \(N, H, W\)\. Hint:",
    ),
    "label shape": (
        _replace(FILES[1], np.zeros((12, 1), np.float32)),
        rf"{FILES[1]}\.gz: holds float32 values of shape \(12, 1\); expected integer labels \(N,\)\. Hint:",
    ),
    "image size": (
        _replace(FILES[2], np.zeros((5, 3, 3), np.uint8)),
        rf"{FILES[2]}\.gz: images of \(3, 3\) pixels, but .*{FILES[0]}\.gz has \(4, 4\); expected one image size",
    ),
}


@pytest.mark.parametrize("case", IDX_DATASET_ERRORS)
def test_idx_dataset_errors_name_the_file_and_the_problem(tmp_path, case):
    damage, message = IDX_DATASET_ERRORS[case]
    write_idx_dataset(tmp_path)
    damage(tmp_path)
    with pytest.raises(ValueError, match=message):
        load_idx_dataset("mnist", root=tmp_path)


def test_lth_train_reports_a_truncated_data_file_in_one_line(tmp_path):
    write_idx_dataset(tmp_path / "data")
    images = tmp_path / "data" / f"{FILES[0]}.gz"
    images.write_bytes(images.read_bytes()[:-20])
    out = lth_train(tmp_path, "logger=none", "pruning.rounds=0", "data=mnist", f"data.root={tmp_path / 'data'}")
    assert out.returncode == 2, out.stderr
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"lth-train: error: data: {images}: not a complete gzip file"), err


def test_digits_split_sizes_shapes_and_determinism():
    dm = ClassificationDataModule("digits", seed=3)
    assert dm.input_shape == (1, 8, 8) and dm.num_classes == 10 and dm.in_features == 64  # before setup
    dm.setup()
    x, y = dm.train_set.tensors
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (1293, 144, 360)
    assert x.shape[1:] == (1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0 <= x.min() and x.max() == 1 and set(y.tolist()) == set(range(10))
    again = ClassificationDataModule("digits", seed=3)
    again.setup()
    assert torch.equal(again.val_set.tensors[0], dm.val_set.tensors[0])
    other = ClassificationDataModule("digits", seed=4)
    other.setup()
    assert not torch.equal(other.val_set.tensors[1], dm.val_set.tensors[1])
    assert torch.equal(other.test_set.tensors[0], dm.test_set.tensors[0])  # the test set never moves


def test_loaders_shuffle_reproducibly_and_resume_from_state_dict():
    def order(dm):
        return torch.cat([y for _, y in dm.train_dataloader()])

    first, second = (ClassificationDataModule("digits", batch_size=100, seed=1) for _ in range(2))
    for dm in (first, second):
        dm.setup()
    assert torch.equal(order(first), order(second))
    state = first.state_dict()
    expected = order(first)
    second.load_state_dict(state)
    assert torch.equal(order(second), expected)
    val, test = first.val_dataloader()
    assert len(val.dataset) == 144 and len(test.dataset) == 360


def test_batched_loaders_give_the_batches_and_generator_draws_of_per_sample_loading():
    """One gather per batch instead of a __getitem__ per sample and default_collate: same batches, same order,
    and the shuffle generator left where per-sample loading leaves it (what checkpoints save)."""
    dm = ClassificationDataModule("digits", batch_size=60, eval_batch_size=100, seed=3)
    dm.setup()
    x, y = dm.train_set.tensors
    plain = torch.Generator().manual_seed(3)
    per_sample = DataLoader(TensorDataset(x, y), batch_size=60, shuffle=True, generator=plain)
    for _ in range(2):  # each epoch continues the generator's stream
        batched, expected = list(dm.train_dataloader()), list(per_sample)
        assert len(batched) == len(expected) == 22  # 1293 = 21 * 60 + 33
        for (bx, by), (ex, ey) in zip(batched, expected, strict=True):
            assert torch.equal(bx, ex) and torch.equal(by, ey) and by.dtype == torch.int64
    assert torch.equal(dm.shuffle_generator.get_state(), plain.get_state())
    val, test = dm.val_dataloader()
    assert torch.equal(torch.cat([b[0] for b in test]), dm.test_set.tensors[0])
    assert [len(b[1]) for b in val] == [100, 44]


def test_batched_dataset_gathers_dtypes_numpy_lacks():
    x = torch.arange(12, dtype=torch.bfloat16).reshape(6, 2)
    data = BatchedTensorDataset(x, torch.arange(6))
    bx, by = data.__getitems__([4, 0, 4])
    assert bx.dtype == torch.bfloat16 and torch.equal(bx, x[[4, 0, 4]]) and by.tolist() == [4, 0, 4]


def test_val_size_errors():
    with pytest.raises(ValueError, match=r"val_size=5000 asks for 5000 validation samples, but 'digits' has 1437"):
        ClassificationDataModule("digits", val_size=5000).setup()
    with pytest.raises(ValueError, match=r"val_size=1.5 is out of range: a count must be >= 1 and a fraction in"):
        ClassificationDataModule("digits", val_size=1.5)
    with pytest.raises(ValueError, match=r"val_size=True must be an int count"):
        ClassificationDataModule("digits", val_size=True)
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar'; valid datasets: \['cifar10', 'digits'"):
        get("cifar")


def test_missing_dataset_names_every_way_to_provide_it(no_data_env, tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        ClassificationDataModule("fashion_mnist", system_dirs=[tmp_path / "no-debian"]).setup()
    message = str(info.value)
    for way in ("data.root=", "LTH_DATA_DIR", "apt-get install dataset-fashion-mnist", "data.download=true"):
        assert way in message
    assert str(tmp_path / "no-debian") in message and str(tmp_path / "cache" / "lth_wandb") in message
    with pytest.raises(DatasetNotFoundError, match=r"Searched: .*/given/kmnist, .*/given/KMNIST/raw, .*/given\."):
        load_idx_dataset("kmnist", root=tmp_path / "given")


def test_idx_dataset_found_through_lth_data_dir(no_data_env, monkeypatch, tmp_path):
    write_idx_dataset(tmp_path / "data" / "mnist", compress=False)
    monkeypatch.setenv("LTH_DATA_DIR", str(tmp_path / "data"))
    x_train, y_train, x_test, y_test = load_idx_dataset("mnist")
    assert x_train.shape == (12, 1, 4, 4) and x_test.shape == (5, 1, 4, 4)
    assert x_train.dtype == torch.float32 and 0 <= x_train.min() and x_train.max() <= 1
    assert y_train.dtype == torch.int64 and y_test.tolist() == [0, 1, 2, 3, 4]


def test_download_verifies_checksums(no_data_env, monkeypatch, tmp_path):
    mirror = tmp_path / "mirror"
    write_idx_dataset(mirror)
    md5 = tuple(hashlib.md5((mirror / f"{f}.gz").read_bytes()).hexdigest() for f in FILES)
    source = IdxSource("mnist", (mirror.as_uri(),), md5, ("mnist",))
    monkeypatch.setitem(mnist_module.SOURCES, "mnist", source)
    x_train, *_ = load_idx_dataset("mnist", root=tmp_path / "dest", download=True)
    assert x_train.shape == (12, 1, 4, 4) and (tmp_path / "dest" / f"{FILES[0]}.gz").is_file()

    bad = IdxSource("mnist", (mirror.as_uri(),), ("0" * 32, *md5[1:]), ("mnist",))
    monkeypatch.setitem(mnist_module.SOURCES, "mnist", bad)
    with pytest.raises(DatasetNotFoundError, match=r"Download failed: .* does not match the published 0{32}"):
        load_idx_dataset("mnist", root=tmp_path / "other", download=True)
    assert os.listdir(tmp_path / "other") == []  # no partial or unverified file is left behind


def write_cifar_batch(path: Path, n: int, start: int) -> None:
    data = np.arange(n * 3072).reshape(n, 3072) % 256
    with path.open("wb") as f:
        pickle.dump({b"data": data.astype(np.uint8), b"labels": [(start + i) % 10 for i in range(n)]}, f)


def test_cifar10_reads_batches_and_refuses_foreign_pickles(no_data_env, tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        write_cifar_batch(folder / f"data_batch_{i}", 2, i)
    write_cifar_batch(folder / "test_batch", 3, 0)
    x_train, y_train, x_test, y_test = load_cifar10(root=tmp_path)
    assert x_train.shape == (10, 3, 32, 32) and x_test.shape == (3, 3, 32, 32)
    assert x_train[0, 0, 0, 1] == pytest.approx(1 / 255) and y_train[:4].tolist() == [1, 2, 2, 3]

    class Planted:
        def __reduce__(self):
            return (os.getcwd, ())

    (folder / "test_batch").write_bytes(pickle.dumps(Planted()))
    with pytest.raises(ValueError, match="test_batch: .*refusing to load (posix|nt).getcwd"):
        load_cifar10(root=tmp_path)


def write_cifar_folder(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    for name in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"):
        write_cifar_batch(folder / name, 2, 0)
    return folder


def test_cifar10_truncated_batch(no_data_env, tmp_path):
    batch = write_cifar_folder(tmp_path) / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:100])
    with pytest.raises(
        ValueError, match=r"data_batch_3: not a readable CIFAR-10 batch \(.*\); expected a pickled dict"
    ):
        load_cifar10(root=tmp_path)


def test_cifar10_labels_out_of_range(no_data_env, tmp_path):
    batch = write_cifar_folder(tmp_path) / "test_batch"
    with batch.open("wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 57]}, f)
    with pytest.raises(ValueError, match=r"test_batch: labels run from 3 to 57; expected 0\.\.9\. Hint: .*CIFAR-100"):
        load_cifar10(root=tmp_path)


def test_synthetic_is_seeded_balanced_and_shaped():
    a, b = (
        make_synthetic(num_samples=60, shape=(2, 3, 3), seed=5),
        make_synthetic(num_samples=60, shape=(2, 3, 3), seed=5),
    )
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    x, y, x_test, _ = a
    assert x.shape == (60, 2, 3, 3) and x_test.shape == (12, 2, 3, 3) and 0 <= x.min() and x.max() <= 1
    assert torch.bincount(y).tolist() == [6] * 10
    dm = ClassificationDataModule("synthetic", num_samples=200, shape=(3, 4, 4), num_classes=4, normalize=True)
    assert dm.input_shape == (3, 4, 4) and dm.num_classes == 4
    dm.setup()
    assert dm.train_set.tensors[0].mean(dim=(0, 2, 3)).abs().max() < 1e-5


@pytest.mark.skipif(
    not all((FASHION_DIR / f"{f}.gz").is_file() for f in FILES),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_from_the_debian_package():
    dm = ClassificationDataModule("fashion_mnist", root=FASHION_DIR, val_size=5000)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (55_000, 5_000, 10_000)
    x, y = dm.test_set.tensors
    assert x.shape == (10_000, 1, 28, 28) and dm.train_set.tensors[0].shape[1:] == (1, 28, 28)
    assert x.min() == 0 and x.max() == 1 and y.min() == 0 and y.max() == 9
    assert torch.bincount(y).tolist() == [1000] * 10
