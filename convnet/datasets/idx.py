"""Reading and writing IDX files, the simple array format MNIST is shipped in.

An IDX file is a header followed by the raw array data:

====================  =====================================================
bytes 0-1             always zero
byte 2                data type code (see ``IDX_DTYPES`` below)
byte 3                number of dimensions ``ndim``
next ``4 * ndim``     the size of each dimension, big-endian ``uint32``
rest                  the elements in C (row-major) order, big-endian
====================  =====================================================

For example the MNIST training images start with ``00 00 08 03`` (unsigned
bytes, three dimensions) followed by 60000, 28 and 28.  Files are often
distributed gzip-compressed; :func:`read_idx` recognises gzip by its magic
bytes ``1f 8b``, whatever the file is called.

Because the encoding of a given array is unique (there are no optional fields
or padding), :func:`encode_idx` reproduces an original IDX file byte for byte
from its array.  The MNIST loader relies on this to verify arrays that come
without their original files.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from ._files import atomic_write_bytes, gunzip_if_needed, is_gzip

__all__ = [
    "IDXError",
    "IDX_DTYPES",
    "read_idx",
    "write_idx",
    "decode_idx",
    "encode_idx",
    "read_idx_bytes",
]

#: Data type code (byte 2 of the header) -> big-endian NumPy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

#: The most bytes :func:`read_idx` reads or decompresses from one file (MNIST's largest: 47 MB);
#: a larger file, or a gzip stream that would inflate beyond it, is refused before it fills memory.
MAX_IDX_BYTES = 256 * 2**20

#: The reverse map, keyed by the dtype's kind and size (endianness ignored).
_CODE_FOR = {(dt.kind, dt.itemsize): code for code, dt in IDX_DTYPES.items()}


class IDXError(ValueError):
    """An IDX file is malformed or does not have the expected shape or type.

    ``str(error)`` names the file and says what was wrong.
    """

    def __init__(self, source: str, problem: str):
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")


# --------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------


def decode_idx(
    data: bytes,
    source: str = "<bytes>",
    expected_shape: Sequence[int | None] | None = None,
    expected_dtype: np.dtype | type | str | None = None,
) -> np.ndarray:
    """Decode uncompressed IDX bytes into a native-endian NumPy array.

    ``source`` is only used in error messages.  ``expected_shape`` may contain
    ``None`` for "any size", e.g. ``(None, 28, 28)`` for a stack of MNIST
    images.  Raises :class:`IDXError` if anything is wrong.
    """
    dtype, shape, offset = _parse_header(data, source)
    _check_data_length(data, offset, shape, dtype, source)
    array = np.frombuffer(data, dtype=dtype, count=_prod(shape), offset=offset).reshape(shape)
    # A writable single-byte array is a view of a mutable buffer (read_idx_bytes gives one) and is
    # used as it is; anything else is copied into native byte order, writable and fast to use.
    if not (array.flags.writeable and dtype.itemsize == 1):
        array = array.astype(dtype.newbyteorder("="))
    _check_expectations(array, source, expected_shape, expected_dtype)
    return array


def _parse_header(data: bytes, source: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """Return ``(dtype, shape, data_offset)`` from the IDX header of ``data``."""
    if len(data) < 4:
        raise IDXError(source, f"too short for an IDX header: {len(data)} bytes, need at least 4")
    zero1, zero2, code, ndim = data[:4]
    if zero1 != 0 or zero2 != 0:
        raise IDXError(
            source,
            f"bad magic number 0x{data[:4].hex()}: an IDX file must start with two zero bytes"
            + (" (it looks gzip-compressed but could not be decompressed)" if is_gzip(data) else ""),
        )
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise IDXError(source, f"unknown data type code 0x{code:02X} (known codes: {known})")
    if ndim == 0:
        raise IDXError(source, "the header declares 0 dimensions; an IDX array needs at least one")
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise IDXError(
            source,
            f"truncated header: {ndim} dimensions need {offset} header bytes, found {len(data)}",
        )
    shape = struct.unpack(f">{ndim}I", data[4:offset])
    return IDX_DTYPES[code], shape, offset


def _check_data_length(
    data: bytes, offset: int, shape: tuple[int, ...], dtype: np.dtype, source: str
) -> None:
    """Raise unless exactly ``prod(shape) * itemsize`` data bytes follow the header."""
    expected = _prod(shape) * dtype.itemsize
    found = len(data) - offset
    described = f"shape {shape} of {dtype.newbyteorder('=').name}"
    if found < expected:
        raise IDXError(
            source, f"truncated: expected {expected} data bytes for {described}, found {found}"
        )
    if found > expected:
        raise IDXError(
            source,
            f"trailing bytes: expected {expected} data bytes for {described}, "
            f"found {found} ({found - expected} extra)",
        )


def _check_expectations(
    array: np.ndarray,
    source: str,
    expected_shape: Sequence[int | None] | None,
    expected_dtype: np.dtype | type | str | None,
) -> None:
    """Raise if ``array`` does not match the expected shape (``None`` = any) or dtype."""
    if expected_shape is not None:
        expected_shape = tuple(expected_shape)
        matches = len(array.shape) == len(expected_shape) and all(
            want is None or want == got for want, got in zip(expected_shape, array.shape)
        )
        if not matches:
            pretty = "(" + ", ".join("any" if d is None else str(d) for d in expected_shape) + ")"
            raise IDXError(source, f"wrong dimensions: expected {pretty}, found {array.shape}")
    if expected_dtype is not None and array.dtype != np.dtype(expected_dtype):
        raise IDXError(
            source, f"wrong data type: expected {np.dtype(expected_dtype).name}, found {array.dtype.name}"
        )


def _prod(shape: Sequence[int]) -> int:
    """Product of the dimensions as a Python int (no overflow)."""
    result = 1
    for dim in shape:
        result *= int(dim)
    return result


# --------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------


def read_idx_bytes(path: str | os.PathLike, max_bytes: int = MAX_IDX_BYTES) -> bytes:
    """Return the uncompressed IDX bytes of ``path`` (plain or gzip), at most ``max_bytes`` of them.

    Raises :class:`IDXError` if the file or its decompressed data is larger
    than ``max_bytes``, or if the file is gzip but the compressed stream is
    damaged or cut short.
    """
    path = Path(path)
    with open(path, "rb") as f:              # into a bytearray: decode_idx can then view it, not copy it
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise IDXError(str(path), f"the file is {size:,} bytes, more than an IDX file convnet reads "
                                      f"({max_bytes:,}, convnet.datasets.idx.MAX_IDX_BYTES)")
        raw = bytearray(size)
        del raw[f.readinto(raw):]            # (only if the file shrank meanwhile)
    try:
        return gunzip_if_needed(raw, max_bytes)
    except ValueError as exc:
        raise IDXError(str(path), f"{exc} (convnet.datasets.idx.MAX_IDX_BYTES)") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise IDXError(str(path), f"damaged gzip data ({exc})") from None


def read_idx(
    path: str | os.PathLike,
    expected_shape: Sequence[int | None] | None = None,
    expected_dtype: np.dtype | type | str | None = None,
) -> np.ndarray:
    """Read an IDX file (plain or gzip-compressed) into a NumPy array.

    >>> images = read_idx("train-images-idx3-ubyte.gz", expected_shape=(None, 28, 28))

    Raises :class:`IDXError`, naming the file, if it is truncated, has a bad
    magic number or data type code, trailing bytes, or not the expected
    shape/dtype.
    """
    return decode_idx(read_idx_bytes(path), str(path), expected_shape, expected_dtype)


# --------------------------------------------------------------------------
# Encoding and writing
# --------------------------------------------------------------------------


def encode_idx(array: np.ndarray) -> bytes:
    """Encode ``array`` as IDX bytes (uncompressed).

    The dtype must be one IDX supports: uint8, int8, int16, int32, float32 or
    float64.  Raises ``TypeError`` otherwise and ``ValueError`` for 0-d arrays
    or dimensions that do not fit in 32 bits.
    """
    array = np.asarray(array)
    code = _CODE_FOR.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        supported = ", ".join(dt.newbyteorder("=").name for dt in IDX_DTYPES.values())
        raise TypeError(f"IDX cannot store dtype {array.dtype.name}; supported: {supported}")
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"IDX stores arrays with 1 to 255 dimensions, got {array.ndim}")
    if any(dim >= 2**32 for dim in array.shape):
        raise ValueError(f"IDX dimensions must be below 2**32, got shape {array.shape}")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    body = np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    return header + body


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` to ``path`` as an IDX file, atomically; return the path.

    The file is gzip-compressed if ``compress`` is true, or, when ``compress``
    is ``None``, if the name ends in ``.gz``.
    """
    path = Path(path)
    if compress is None:
        compress = path.suffix == ".gz"
    data = encode_idx(array)
    if compress:
        data = gzip.compress(data, mtime=0)  # mtime=0: same array, same bytes
    return atomic_write_bytes(path, data)
