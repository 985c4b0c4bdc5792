"""Small file helpers shared by the dataset modules.

The one idea here is the *atomic write*: a file is first written under a
temporary name in the same directory and only renamed to its final name
(``os.replace``, atomic on POSIX and Windows) once it is complete.  A reader
therefore sees either the old file or the whole new one, never half of it, and
an interrupted program leaves no half-written file under the real name.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import secrets
from pathlib import Path
from typing import Iterator

#: Every temporary file we create starts with this prefix, so leftovers from a
#: killed process are easy to recognise (and are never mistaken for data).
TEMP_PREFIX = ".convnet-tmp-"

GZIP_MAGIC = b"\x1f\x8b"


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``.

    If the ``with`` block raises, the temporary file is deleted and ``path`` is
    left untouched.  ``suffix`` is appended to the temporary name (useful when a
    writer infers the format from the extension, like matplotlib).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp_file(path.parent, f"{TEMP_PREFIX}{path.name}.", suffix + ".part")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _create_temp_file(directory: Path, prefix: str, suffix: str) -> Path:
    """Create a new empty file with a unique name in ``directory``.

    Unlike ``tempfile.mkstemp`` (always mode 0600), the file gets the usual
    permissions allowed by the umask, since it becomes a normal file.
    """
    while True:
        candidate = directory / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return candidate


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_output(path) as tmp:
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
