"""A directory of checksum-verified data files.

The cache holds one file per name (for MNIST: ``train-images-idx3-ubyte`` and
friends).  Its single rule is that **nothing enters the cache unverified**:
every file is checked against its expected SHA-256 before it is renamed into
place, and files already present are checked again whenever they are looked
up (hashing all of MNIST takes a fraction of a second).  Digests are always
taken over the *uncompressed* bytes, so a gzip-compressed copy and a plain
copy of the same file have the same digest.

A cached file that fails the check is moved aside to ``<name>.corrupt`` (so
the evidence is kept but never used) and treated as missing, if the cache
wrote it: the cache lists the files it wrote in :data:`MANIFEST` (and the
default cache directory, which is convnet's own, counts as written by it).
A damaged file that someone else put there is never renamed, replaced or
deleted: :class:`ForeignFileError` says so and what to do.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import zlib
from pathlib import Path
from typing import Callable, Iterator, Mapping

from ..utils import atomic_path
from ._files import gunzip_if_needed
from .idx import IDXError, read_idx_bytes

Log = Callable[[str], None]


class ChecksumError(ValueError):
    """A file's SHA-256 digest is not the expected one.

    Attributes ``name``, ``source``, ``expected`` and ``actual`` say which
    file, where it came from, and both digests.
    """

    def __init__(self, name: str, source: str, expected: str, actual: str):
        self.name, self.source, self.expected, self.actual = name, source, expected, actual
        super().__init__(
            f"checksum mismatch for {name} from {source}: "
            f"expected sha256 {expected}, got {actual}"
        )


class ForeignFileError(ValueError):
    """A file in the cache is not the expected one, and the cache did not write it, so it is left alone."""


#: The file, in the cache directory, listing the files the cache wrote itself (one name a line).
MANIFEST = ".convnet-cache-files"
MANIFEST_MAX_BYTES = 65536


def sha256_hex(data: bytes) -> str:
    """The SHA-256 digest of ``data`` as 64 lowercase hex digits."""
    return hashlib.sha256(data).hexdigest()


class VerifiedCache:
    """Files in ``directory`` whose SHA-256 digests must equal ``checksums[name]``."""

    def __init__(self, directory: str | os.PathLike, checksums: Mapping[str, str], log: Log, owned: bool = False):
        self.directory = Path(directory).expanduser()
        self.checksums = {name: digest.lower() for name, digest in checksums.items()}
        self.log = log
        self.owned = owned            # the whole directory is convnet's (the default cache)

    # -- what the cache wrote ----------------------------------------------

    def written(self) -> set[str]:
        """Names of the files this cache wrote (from :data:`MANIFEST`; bounded, a bad manifest counts as empty)."""
        try:
            with open(self.directory / MANIFEST, "rb") as f:
                text = f.read(MANIFEST_MAX_BYTES).decode("utf-8")
        except (OSError, UnicodeDecodeError):
            return set()
        return {line for line in text.splitlines() if line}

    def wrote(self, path: Path) -> bool:
        """Whether the cache created ``path`` (so it may move it aside or replace it)."""
        return self.owned or path.name in self.written()

    def _record(self, name: str) -> None:
        names = self.written()
        if name not in names:
            with atomic_path(self.directory / MANIFEST) as tmp:
                tmp.write_text("".join(f"{n}\n" for n in sorted(names | {name})), encoding="utf-8")

    # -- verification ------------------------------------------------------

    def verify(self, name: str, data: bytes, source: str) -> None:
        """Raise :class:`ChecksumError` unless ``data`` is the expected ``name``."""
        expected = self.checksums[name]
        actual = sha256_hex(data)
        if actual != expected:
            raise ChecksumError(name, source, expected, actual)

    # -- looking up --------------------------------------------------------

    def candidates(self, name: str) -> list[Path]:
        """Where ``name`` may be found in the cache: plain first, then ``.gz``."""
        return [self.directory / name, self.directory / f"{name}.gz"]

    def find(self, name: str) -> Path | None:
        """Return the path of a verified copy of ``name``, or ``None``.

        Copies that fail verification are reported and moved aside if the
        cache wrote them; :class:`ForeignFileError` if it did not.
        """
        for path in self.candidates(name):
            if not path.is_file():
                continue
            try:
                self.verify(name, read_idx_bytes(path), source=f"the cache ({path})")
            except (ChecksumError, IDXError, OSError) as exc:
                if not self.wrote(path):
                    raise ForeignFileError(
                        f"{path} is not the expected {name} ({exc}); convnet did not write it, so it is left "
                        f"as it is: move it away, or choose another data directory") from None
                self._quarantine(path, exc)
                continue
            return path
        return None

    def _quarantine(self, path: Path, reason: Exception) -> None:
        """Move a bad cached file to ``<path>.corrupt`` (or ``.corrupt-2``, ...: never over a file) and say so."""
        aside, k = path.with_name(path.name + ".corrupt"), 1
        while aside.exists() or aside.is_symlink():
            k += 1
            aside = path.with_name(f"{path.name}.corrupt-{k}")
        self.log(f"warning: cached file {path} is damaged and will be replaced: {reason}")
        with contextlib.suppress(OSError):
            os.replace(path, aside)
            self.log(f"         (moved it to {aside})")

    # -- adding files ------------------------------------------------------

    def store(self, name: str, data: bytes, source: str) -> Path:
        """Verify uncompressed IDX bytes ``data`` and write them as ``name``.

        Raises :class:`ChecksumError` (and writes nothing) if they are wrong.
        """
        self.verify(name, data, source)
        with self.incoming_file(name) as tmp:
            _write(tmp, data)
        return self.directory / name

    @contextlib.contextmanager
    def incoming(self, name: str, source: str) -> Iterator[Path]:
        """Yield a temporary path in the cache to download ``name`` into.

        When the ``with`` block ends, the file is decompressed if it is gzip,
        verified, and renamed into place.  If the block raises, or the file is
        damaged or has the wrong digest, the temporary file is deleted and the
        cache is unchanged.
        """
        with self.incoming_file(name) as tmp:
            yield tmp
            try:
                data = gunzip_if_needed(tmp.read_bytes())
            except ValueError as exc:
                raise IDXError(source, str(exc)) from None
            except (OSError, EOFError, zlib.error) as exc:
                raise IDXError(source, f"damaged gzip data ({exc})") from None
            self.verify(name, data, source)
            _write(tmp, data)

    @contextlib.contextmanager
    def incoming_file(self, name: str) -> Iterator[Path]:
        """A temporary file in the cache that becomes ``name`` on success (never over a file the cache did
        not write), recorded in :data:`MANIFEST`."""
        target = self.directory / name
        if (target.exists() or target.is_symlink()) and not self.wrote(target):
            raise ForeignFileError(f"{target} exists and convnet did not write it, so it is not replaced: move "
                                   f"it away, or choose another data directory")
        with atomic_path(target) as tmp:
            yield tmp
        self._record(name)


def _write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and flush it to disk."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
