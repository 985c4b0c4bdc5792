"""The engine's :class:`convnet.augment.RandomAffine`: the same draws, resampled by one numba loop.

The NumPy version (:func:`convnet.augment.affine`, which this is validated
against bit for bit in ``tests/test_engine_affine.py``) builds a dozen
batch-sized temporaries (coordinates, weights, four gathers); the kernel
computes each output pixel where it is written, over the batch shared
between threads, with the same operations in the same order.
"""
import numpy as np

from ..augment import affine, rotation
from . import threads
from .jit import _jit, _stop


@_jit
def affine_bilinear(images, cos, sin, shift, out, n0, n1):
    """:func:`convnet.augment.affine` for images ``n0 <= n < n1``, given each image's ``cos``, ``sin`` (already divided by its zoom) and ``shift``.

    The same float64 coordinates and float32 (the images' dtype) blend as
    the NumPy version, operation for operation, so the results are the same
    bits; a neighbour outside the image is 0, as in its zero-padded copy.
    """
    N, H, W, C = images.shape
    cy, cx = (H - 1) / 2.0, (W - 1) / 2.0
    one = images.dtype.type(1)
    zero = images.dtype.type(0)
    for n in range(n0, _stop(n1, N)):
        c, s = cos[n], sin[n]
        for i in range(H):
            ty = i - cy - shift[n, 0]
            for j in range(W):
                tx = j - cx - shift[n, 1]
                sy = min(max(cy + c * ty + s * tx + 1.0, 0.0), H + 1.0)    # in the padded image
                sx = min(max(cx - s * ty + c * tx + 1.0, 0.0), W + 1.0)
                y0, x0 = int(sy), int(sx)
                fy, fx = images.dtype.type(sy - y0), images.dtype.type(sx - x0)
                for k in range(C):
                    p00 = images[n, y0 - 1, x0 - 1, k] if 1 <= y0 <= H and 1 <= x0 <= W else zero
                    p01 = images[n, y0 - 1, x0, k] if 1 <= y0 <= H and 0 <= x0 < W else zero
                    p10 = images[n, y0, x0 - 1, k] if 0 <= y0 < H and 1 <= x0 <= W else zero
                    p11 = images[n, y0, x0, k] if 0 <= y0 < H and 0 <= x0 < W else zero
                    top = p00 * (one - fx) + p01 * fx
                    bottom = p10 * (one - fx) + p11 * fx
                    out[n, i, j, k] = top * (one - fy) + bottom * fy
    return out


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
        threads.over_images(affine_bilinear, len(images), images, cos, sin, shift, out)
        return out
