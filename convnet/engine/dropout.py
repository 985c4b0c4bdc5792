"""The dropout stream as a numba loop: the engine's :class:`convnet.layers.Dropout` (training).

Draws the counter-based stream of :func:`convnet.rng.uniforms` (same
constants, same numbers) and applies the mask in the same pass; validated
against :func:`convnet.rng.uniforms` and :meth:`convnet.layers.Dropout.call`
bit for bit (``tests/test_engine_dropout.py``).
"""
import numpy as np

from .. import rng
from .jit import _jit, _rows, _stop, _u


# Dropout draws the counter-based stream of convnet.rng (same constants, same numbers):
# element e of a call with key k is kept when the top 24 bits of
# splitmix64(k + (e + 1) * GOLDEN) reach the threshold.
_GOLDEN, _MIX1, _MIX2 = rng.GOLDEN, rng.MIX1, rng.MIX2
_S27, _S30, _S31 = np.uint64(27), np.uint64(30), np.uint64(31)
_SHIFT_TOP = np.uint64(64 - rng.BITS)


@_jit
def _splitmix64(z):
    """SplitMix64's output function (a bijective mix of the 64 bits of ``z``)."""
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@_jit
def dropout_forward(x, key, threshold, scale, y=None, mask=None, n0=0, n1=-1):
    """Inverted dropout in one pass, drawing its own random bits.

    Element ``e`` (flat index over the whole batch) gets the 24 bits ``r``
    that :func:`convnet.rng.uniforms` turns into ``u = r / 2**24``, and is
    kept when ``r >= threshold`` (``= convnet.rng.threshold(rate)``, so that
    this is ``u >= rate``): ``mask = scale * [kept]``, ``y = x * mask``.
    Returns ``(y, mask)``.
    """
    if y is None:
        y = np.empty(x.shape, dtype=x.dtype)
    if mask is None:
        mask = np.empty(x.shape, dtype=x.dtype)
    N = x.shape[0]
    xf, yf, mf = _rows(x), _rows(y), _rows(mask)
    L = xf.shape[1]
    s, zero = xf.dtype.type(scale), xf.dtype.type(0)
    t = np.uint64(threshold)
    for n in range(n0, _stop(n1, N)):
        start = _u(key) + _u(n * L) * _GOLDEN       # counter of element (n, 0), minus one step
        xn, yn, mn = xf[n], yf[n], mf[n]
        for k in range(_u(L)):
            r = _splitmix64(start + (k + _u(1)) * _GOLDEN) >> _SHIFT_TOP
            m = s if r >= t else zero
            mn[k] = m
            yn[k] = xn[k] * m
    return y, mask
