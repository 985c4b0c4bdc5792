"""Where the engine's augmentation used to live: now :mod:`convnet.engine.affine` (this name is kept as an alias)."""
from .affine import RandomAffine, affine_bilinear  # noqa: F401
