"""Moved to :mod:`convnet.io.npz`; ``convnet.saving`` is the same module under its earlier name."""
import sys

from .io import npz

sys.modules[__name__] = npz
