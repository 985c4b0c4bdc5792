"""Dropout's random numbers: a counter-based stream, the same in both tiers.

Element ``e`` of a draw with key ``k`` gets the ``(e + 1)``-th output of the
SplitMix64 generator started at ``k``::

    bits = splitmix64(k + (e + 1) * 0x9E3779B97F4A7C15)
    u    = (bits >> 40) / 2**24          # the top 24 bits: uniform on [0, 1), exact in float32

Each element's number depends only on ``(k, e)``, so it can be computed in
any order, by any number of threads, and the engine's fused kernel
(:func:`convnet.engine.dropout.dropout_forward`) draws exactly the numbers
that :func:`uniforms` draws here. A :class:`~convnet.layers.Dropout` layer
takes one key per training step from its own generator, which the model
seeds from ``(seed, epoch, layer index)``.
"""
import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1, MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
#: a uniform keeps the top 24 of the 64 bits (a float32 has 24 significant bits)
BITS = 24


def splitmix64(z):
    """SplitMix64's output function: a bijective mix of the 64 bits of ``z`` (uint64, wraps around)."""
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    return z ^ (z >> np.uint64(31))


def uniforms(key, shape):
    """Uniform numbers on [0, 1) (multiples of 2**-24), element ``e`` a function of ``(key, e)`` only."""
    count = np.arange(1, int(np.prod(shape)) + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        bits = splitmix64(np.uint64(key) + count * GOLDEN)
    return (bits >> np.uint64(64 - BITS)).astype(np.float64).reshape(shape) * 2.0 ** -BITS


def threshold(rate):
    """The smallest 24-bit integer ``r`` with ``r / 2**24 >= rate``: ``u >= rate`` is ``bits >= threshold``."""
    return int(np.ceil(rate * 2 ** BITS))
