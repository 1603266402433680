"""Reading IDX files, the format of MNIST, Fashion-MNIST and KMNIST, gzip-compressed or raw.

An IDX file is a 4-byte magic number ``0x00 0x00 TYPE NDIM``, then NDIM big-endian uint32 dimensions, then the
values in C order, big-endian.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from lth_wandb.data.files import read_file

# IDX type byte -> big-endian numpy dtype.
IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file into a writable numpy array in native byte order.

    Compression is detected from the content, not the name, so a gzip file without ``.gz`` also works.

    Args:
        path: the ``.gz`` or raw IDX file.

    Raises:
        ValueError: the file is not gzip or IDX, the gzip stream is incomplete, or the header or the size of the
            data does not match the IDX format.
        DatasetUnreadableError: ``path`` is a folder or cannot be read.
    """
    path = Path(path)
    data = read_file(path, "an IDX file")
    if data[:2] == GZIP_MAGIC:
        data = _gunzip(data, path)
    elif path.suffix == ".gz" and data[:2] != b"\x00\x00":
        # Neither gzip nor raw IDX: most often a web page saved under the data file's name.
        raise ValueError(
            f"{path}: not gzip-compressed (it starts with {data[:16]!r}); expected a gzip-compressed IDX file. "
            "Hint: a failed download can leave an HTML or text page under this name; delete it and fetch the "
            "file again (data.download=true fetches missing files)."
        )
    return parse_idx(data, source=str(path))


def _gunzip(data: bytes, path: Path) -> bytes:
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as err:  # BadGzipFile is an OSError
        raise ValueError(
            f"{path}: not a complete gzip file ({err}); expected a gzip-compressed IDX file. Hint: it is "
            "truncated or corrupt, e.g. by an interrupted download; delete it and fetch it again "
            "(data.download=true fetches missing files)."
        ) from err


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an uncompressed IDX file; ``source`` names it in error messages."""
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in IDX_DTYPES or data[3] == 0:
        magic = data[:4].hex() if len(data) >= 4 else f"{len(data)} bytes"
        raise ValueError(
            f"{source}: magic number {magic} is not an IDX header; expected 0000TTNN with type TT in "
            f"{[f'{code:02x}' for code in IDX_DTYPES]} and NN >= 1 dimensions. Hint: the file may be "
            "truncated, a different format, or compressed with something other than gzip."
        )
    dtype, ndim = IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(
            f"{source}: the header declares {ndim} dimensions, which need {header} header bytes, but the file has "
            f"only {len(data)}. Hint: the file is truncated or corrupt; fetch it again."
        )
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(shape) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{source}: dimensions {shape} of {dtype} need {expected} data bytes but the file holds "
            f"{len(data) - header}. Hint: the file is truncated or corrupt; fetch it again."
        )
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    # astype copies, which also makes the array writable (frombuffer's is read-only).
    return values.astype(dtype.newbyteorder("="))
