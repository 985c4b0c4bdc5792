"""Errors shared by several modules (so that none of them has to import another for its error alone)."""


class ConversionError(ValueError):
    """A model or layer that the converter cannot translate faithfully."""


class ModelFileError(ValueError):
    """A model file is unreadable, of another format, or does not fit the model."""


class OnnxFileError(ModelFileError):
    """An ONNX file that is unreadable, damaged, or holds a graph convnet cannot import.

    A :class:`ModelFileError` (so a ``ValueError``), as :func:`convnet.load_model`
    raises for any model file it cannot read."""
