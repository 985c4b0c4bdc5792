"""Small file helpers shared by the dataset modules.

Files are written atomically (:func:`convnet.utils.atomic_path`): under a
temporary name in the same directory, renamed to the final name only once
complete, so a reader sees either the old file or the whole new one, and an
interrupted program leaves no half-written file under the real name.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

from ..utils import atomic_path

GZIP_MAGIC = b"\x1f\x8b"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def is_gzip(data: bytes) -> bool:
    """True if ``data`` starts with the gzip magic bytes ``1f 8b``."""
    return data[:2] == GZIP_MAGIC


#: The most bytes a gzip stream may inflate to (MNIST's largest file: 47 MB).
MAX_INFLATED_BYTES = 256 * 2**20


def gunzip_if_needed(data: bytes, max_bytes: int = MAX_INFLATED_BYTES) -> bytes:
    """Decompress ``data`` if it is gzip (detected by content, not by name), to at most ``max_bytes``.

    Raises ``ValueError`` if it would inflate to more (a gzip bomb is never
    inflated in full), ``zlib.error`` or ``EOFError`` if the compressed stream
    is damaged or cut short; callers turn these into errors that name the file.
    """
    if not is_gzip(data):
        return data
    out, rest = bytearray(), memoryview(data)
    while rest:                                   # one or more gzip members
        d = zlib.decompressobj(wbits=31)
        out += d.decompress(rest, max_bytes + 1 - len(out))
        if len(out) > max_bytes or d.unconsumed_tail:
            raise ValueError(f"the gzip data inflates to more than {max_bytes:,} bytes")
        if not d.eof:
            raise EOFError("compressed file ended before the end-of-stream marker was reached")
        rest = memoryview(d.unused_data)
    return out
