"""Dropout's counter-based random stream (convnet/rng.py) and the engine kernel that draws it."""
import numpy as np
import pytest

from convnet import rng


def _splitmix64_python(key, e):
    """Element e's 64 bits, computed with Python integers (mod 2**64) straight from SplitMix64's definition."""
    z = (key + (e + 1) * 0x9E3779B97F4A7C15) % 2 ** 64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2 ** 64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2 ** 64
    return z ^ (z >> 31)


KEY = 2 ** 64 - 5                                # a key near the top: the counter wraps around


def test_uniforms_are_the_top_24_bits_of_splitmix64():
    u = rng.uniforms(np.uint64(KEY), (3, 4, 5))
    expected = [(_splitmix64_python(KEY, e) >> 40) / 2 ** 24 for e in range(60)]
    np.testing.assert_array_equal(u.reshape(-1), expected)
    assert u.shape == (3, 4, 5) and 0 <= u.min() and u.max() < 1


def test_uniforms_depend_on_the_key_and_the_element_only():
    a = rng.uniforms(np.uint64(7), (100,))
    np.testing.assert_array_equal(a[:10], rng.uniforms(np.uint64(7), (10,)))   # a prefix of the same stream
    assert not np.array_equal(a, rng.uniforms(np.uint64(8), (100,)))


@pytest.mark.parametrize("rate,expected", [(0.25, 2 ** 22), (0.5, 2 ** 23), (0.3, 5033165), (0.0, 0)])
def test_threshold_is_where_u_reaches_the_rate(rate, expected):
    t = rng.threshold(rate)
    assert t == expected
    assert t / 2 ** 24 >= rate and (t == 0 or (t - 1) / 2 ** 24 < rate)
