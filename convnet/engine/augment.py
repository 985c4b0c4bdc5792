"""The engine's :class:`convnet.augment.RandomAffine`: the same draws, resampled by one numba loop.

The NumPy version builds a dozen batch-sized temporaries (coordinates,
weights, four gathers); the kernel computes each output pixel where it is
written, over the batch shared between threads, with the same operations
in the same order (the tests hold it to the same bits).
"""
import numpy as np

from ..augment import affine, rotation
from . import kernels, threads


class RandomAffine:
    """Stands in for a :class:`convnet.augment.RandomAffine` (``self.layer``): ``(images, rng) -> images``."""

    def __init__(self, layer):
        self.layer = layer

    def __call__(self, images, rng):
        augment = self.layer
        if augment.identity:
            return images
        angle, zoom, shift = augment.draw(len(images), rng)
        images = np.ascontiguousarray(images)
        if images.ndim != 4 or not np.issubdtype(images.dtype, np.floating):
            return affine(images, angle, zoom, shift)      # raises, naming the problem
        cos, sin = rotation(angle, zoom)
        out = np.empty_like(images)
        threads.over_images(kernels.affine_bilinear, len(images), images, cos, sin, shift, out)
        return out
