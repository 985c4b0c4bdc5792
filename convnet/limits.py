"""Moved to :mod:`convnet.io.limits`; ``convnet.limits`` is the same module under its earlier name."""
import sys

from .io import limits

sys.modules[__name__] = limits
