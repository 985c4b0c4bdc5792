"""Moved to :mod:`convnet.io.onnx_import`; ``convnet.onnx_import`` is the same module under its earlier name."""
import sys

from .io import onnx_import

sys.modules[__name__] = onnx_import
