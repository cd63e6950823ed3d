"""Reader for the IDX format of the MNIST files (LeCun, Cortes, Burges).

An IDX file starts with a 4-byte magic ``0x00 0x00 <dtype code> <ndim>`` followed by ``ndim``
big-endian uint32 sizes and the big-endian data. MNIST images have magic ``0x00000803``
(uint8, 3 dims: N x 28 x 28) and labels ``0x00000801`` (uint8, 1 dim). Used for paper 2's
MNIST source (SLF semantics alignment, Sec. IV).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from flwr_semcom.data.errors import DataFormatError, DataNotFoundError

MNIST_IMAGES_MAGIC = 0x00000803
MNIST_LABELS_MAGIC = 0x00000801

# IDX dtype codes -> big-endian numpy dtypes.
IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def _expected_text(expected_magic: int | None) -> str:
    if expected_magic is not None:
        return f"0x{expected_magic:08X}"
    return (
        f"0x{MNIST_IMAGES_MAGIC:08X} (images) or 0x{MNIST_LABELS_MAGIC:08X} (labels), "
        "i.e. 0x0000 + dtype code + ndim"
    )


def read_idx(path: str | Path, expected_magic: int | None = None) -> np.ndarray:
    """Read an IDX file, gzip-compressed (``.gz``) or raw.

    Parameters
    ----------
    path
        The file. A name ending in ``.gz`` (or starting with the gzip magic) is decompressed.
    expected_magic
        When given, the 4-byte magic the file must have (e.g. :data:`MNIST_IMAGES_MAGIC`).

    Returns
    -------
    numpy.ndarray
        The array in native byte order with the shape from the header.

    Raises
    ------
    DataNotFoundError
        When the file does not exist.
    DataFormatError
        On a wrong magic, an unknown dtype code, or a size that does not match the header.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(
            f"IDX file {path} does not exist; expected the MNIST IDX files under "
            "<paths.data_root>/mnist/ (see docs/datasets.md)"
        )
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataFormatError(f"IDX file {path}: corrupt gzip data ({exc})") from exc
    if len(raw) < 4:
        raise DataFormatError(
            f"IDX file {path} is {len(raw)} bytes long; expected a 4-byte magic "
            f"{_expected_text(expected_magic)} and a header"
        )
    magic = int.from_bytes(raw[:4], "big")
    code, ndim = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or code not in IDX_DTYPES or ndim == 0:
        raise DataFormatError(
            f"IDX file {path} has magic 0x{magic:08X}; expected {_expected_text(expected_magic)}"
        )
    if expected_magic is not None and magic != expected_magic:
        raise DataFormatError(
            f"IDX file {path} has magic 0x{magic:08X}; expected {_expected_text(expected_magic)}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFormatError(
            f"IDX file {path} ends inside its header; expected {ndim} big-endian uint32 sizes"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_DTYPES[code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataFormatError(
            f"IDX file {path} holds {len(raw) - header} data bytes; expected {expected} for "
            f"shape {shape} of {dtype.name}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))
