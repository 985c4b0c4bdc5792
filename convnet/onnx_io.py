"""Moved to :mod:`convnet.io.onnx`; ``convnet.onnx_io`` is the same module under its earlier name."""
import sys

from .io import onnx

sys.modules[__name__] = onnx
