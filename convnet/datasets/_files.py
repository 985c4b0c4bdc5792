"""Small file helpers shared by the dataset modules.

Files are written atomically (:func:`convnet.utils.atomic_path`): under a
temporary name in the same directory, renamed to the final name only once
complete, so a reader sees either the old file or the whole new one, and an
interrupted program leaves no half-written file under the real name.
"""

from __future__ import annotations

import gzip
import os
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


def gunzip_if_needed(data: bytes) -> bytes:
    """Decompress ``data`` if it is gzip (detected by content, not by name).

    Raises ``ValueError`` (from ``gzip``/``zlib``) or ``EOFError`` if the
    compressed stream is damaged or cut short; callers turn these into errors
    that name the file.
    """
    return gzip.decompress(data) if is_gzip(data) else data
