"""Moved to :mod:`convnet.io.keras`; ``convnet.interop`` is the same module under its earlier name."""
import sys

from .io import keras

sys.modules[__name__] = keras
