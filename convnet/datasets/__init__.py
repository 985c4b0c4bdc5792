"""Datasets for convnet: the IDX file format and the MNIST digits.

>>> from convnet.datasets import load_mnist, preprocess, to_categorical
>>> (x_train, y_train), (x_test, y_test) = load_mnist()   # fetched and verified once
>>> x = preprocess(x_train)                                # float32 (60000, 28, 28, 1)
>>> y = to_categorical(y_train, 10)                        # float32 (60000, 10)

Plots of the data live in :mod:`convnet.datasets.plots` (imported lazily so
that loading data does not pull in matplotlib).
"""

from ._cache import ChecksumError, ForeignFileError
from .idx import IDXError, decode_idx, encode_idx, read_idx, write_idx
from .mnist import (
    DEFAULT_MIRRORS,
    MNIST_FILES,
    MNIST_SHA256,
    MNISTUnavailableError,
    default_data_dir,
    fetch_mnist,
    load_data,
    load_mnist,
    preprocess,
    to_categorical,
)

#: everything loading MNIST can raise besides OSError: unavailable, corrupt, or not convnet's file
LOAD_ERRORS = (MNISTUnavailableError, ChecksumError, ForeignFileError, IDXError)

__all__ = [
    "LOAD_ERRORS",
    "ChecksumError",
    "ForeignFileError",
    "IDXError",
    "MNISTUnavailableError",
    "DEFAULT_MIRRORS",
    "MNIST_FILES",
    "MNIST_SHA256",
    "decode_idx",
    "encode_idx",
    "read_idx",
    "write_idx",
    "default_data_dir",
    "fetch_mnist",
    "load_mnist",
    "load_data",
    "preprocess",
    "to_categorical",
    "plot_label_distribution",
    "plot_samples",
]


def __getattr__(name):
    """Import the plotting functions on first use (matplotlib is slow to import)."""
    if name in ("plot_label_distribution", "plot_samples"):
        from . import plots

        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
