"""Errors shared by several modules (so that none of them has to import another for its error alone)."""


class ConversionError(ValueError):
    """A model or layer that the converter cannot translate faithfully."""
