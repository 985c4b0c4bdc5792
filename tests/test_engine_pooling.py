"""The engine's pooling kernels (convnet.engine.pooling) against the general loops and the textbook's MaxPool2D.

The general kernels are held to the naive loops in ``tests/test_windows.py``;
here the 2x2 tile kernels (the seed model's pools) are held to them bit for
bit, with ties, NaN, -0.0 and the row a flooring pool leaves uncovered.
"""
import numpy as np
import pytest

from convnet import layers
from convnet.engine import kernels
from convnet.windows import Window


@pytest.mark.parametrize("size", [25, 9, 8])
def test_2x2_tile_pooling_equals_the_general_kernels_bit_for_bit(size):
    """The tile kernels (the seed model's pools) against the general loops: ties, NaN, -0.0, and the
    row and column a flooring pool leaves uncovered."""
    rng = np.random.default_rng(size)
    x = np.maximum(rng.integers(-2, 3, size=(3, size, size, 5)).astype(np.float32), 0)
    x[0, 1, 1, 0] = x[2, 4, 5, 3] = np.nan
    window = Window(2, 2, 2, 2, 0, 0, size // 2, size // 2)
    assert kernels.tiles_2x2(window, size, size)
    out, argmax = np.empty((3, size // 2, size // 2, 5), np.float32), np.empty((3, size // 2, size // 2, 5), np.int32)
    kernels.maxpool_forward(x, window, out, argmax, 0, 3)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dout[0, 0, 0, :2] = -0.0
    textbook = layers.MaxPool2D(2)                    # the textbook: winners by argmax over each window
    np.testing.assert_array_equal(out, textbook.forward(x))
    textbook_dx = textbook.backward(dout)
    dx, dz = np.full_like(x, np.nan), np.full_like(x, np.nan)
    kernels.maxpool2x2_backward(dout, argmax, x, dx, dz, True, 0, 3)
    expected_dx = kernels.maxpool_backward(dout, argmax, np.empty_like(x), 0, 3)
    expected_dz = kernels.relu_backward(expected_dx, x, np.empty_like(x), 0, 3)
    np.testing.assert_array_equal(dx.view(np.int32), expected_dx.view(np.int32))     # the sign of zero too
    np.testing.assert_array_equal(dz.view(np.int32), expected_dz.view(np.int32))
    np.testing.assert_array_equal(dx, textbook_dx)
    untouched = np.full_like(x, 7.0)
    kernels.maxpool2x2_backward(dout, argmax, x, dx, untouched, False, 0, 3)
    np.testing.assert_array_equal(dx.view(np.int32), expected_dx.view(np.int32))
    assert (untouched == 7.0).all()


def test_the_general_kernel_routes_a_window_with_two_nans_to_the_first():
    """Windows that are no 2x2 tiles take the general loop: there too the first NaN in scan order wins."""
    x = np.zeros((1, 3, 3, 1), np.float32)
    x[0, 0, 2, 0] = x[0, 2, 0, 0] = np.nan                  # flat indices 2 and 6: 2 comes first
    window = Window(3, 3, 1, 1, 0, 0, 1, 1)
    assert not kernels.tiles_2x2(window, 3, 3)
    out, argmax = np.empty((1, 1, 1, 1), np.float32), np.empty((1, 1, 1, 1), np.int32)
    kernels.maxpool_forward(x, window, out, argmax, 0, 1)
    assert np.isnan(out[0, 0, 0, 0]) and argmax[0, 0, 0, 0] == 2
    dx = kernels.maxpool_backward(np.full((1, 1, 1, 1), 5.0, np.float32), argmax, np.empty_like(x), 0, 1)
    textbook = layers.MaxPool2D(3)
    textbook.forward(x)
    np.testing.assert_array_equal(dx, textbook.backward(np.full((1, 1, 1, 1), 5.0, np.float32)))
    assert dx[0, 0, 2, 0] == 5 and dx.sum() == 5
