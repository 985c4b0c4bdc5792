"""The fused tails (convnet.engine.fused) against the kernels they fuse, bit for bit.

Each fused kernel must give exactly what the unfused ones give one after
the other (and so what the textbook's bias, ReLU and pooling give):
bias + ReLU, and inference's bias + ReLU + 2x2 pooling, with ties, NaN and
windows below zero.
"""
import numpy as np

from convnet.engine import kernels
from convnet.windows import Window


def test_bias_relu_maxpool2x2_is_the_unfused_passes_bit_for_bit(rng):
    z = rng.standard_normal((3, 6, 8, 5)).astype(np.float32)
    z[0, 0, 0, 0] = z[0, 0, 1, 0]                   # a tie
    z[1, 2, 2, 1] = np.nan                          # a NaN wins its window
    z[2, :2, :2, 2] = -1.0                          # a whole window below zero
    b = rng.standard_normal(5).astype(np.float32)
    y = np.empty_like(z)
    kernels.add_bias_relu(z.copy().reshape(-1, 5), b, y.reshape(-1, 5), 0, z.size // 5)
    want = np.empty((3, 3, 4, 5), np.float32)
    kernels.maxpool_forward(y, Window(2, 2, 2, 2, 0, 0, 3, 4), want, np.empty(want.shape, np.int32), 0, 3)
    got = kernels.bias_relu_maxpool2x2(z, b, np.full_like(want, 7.0), 0, 3)
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[1, 1, 1, 1])


def test_bias_relu_maxpool2x2_writes_only_its_range(rng):
    z = rng.standard_normal((4, 4, 4, 2)).astype(np.float32)
    out = np.full((4, 2, 2, 2), 7.0, np.float32)
    kernels.bias_relu_maxpool2x2(z, np.zeros(2, np.float32), out, 1, 3)
    assert (out[[0, 3]] == 7.0).all() and not (out[1:3] == 7.0).any()


def test_fused_kernels_equal_the_kernels_they_fuse_bit_for_bit():
    rng = np.random.default_rng(5)
    z = rng.standard_normal((50, 8)).astype(np.float32)
    z[3, 2], z[7, 1] = np.nan, 0.0
    b = rng.standard_normal(8).astype(np.float32)
    y = np.empty_like(z)
    fused_z = z.copy()
    kernels.add_bias_relu(fused_z, b, y, 0, len(z))
    expected_z = kernels.add_bias(z.copy(), b, 0, len(z))
    np.testing.assert_array_equal(fused_z, expected_z)
    np.testing.assert_array_equal(y, kernels.relu_forward(expected_z, np.empty_like(z), 0, len(z)))
    assert np.isnan(y[3, 2])                         # NaN propagates as in relu_forward

    x = np.maximum(rng.integers(-2, 3, size=(3, 9, 9, 4)).astype(np.float32), 0)   # ReLU outputs, many ties and zeros
    window = Window(3, 3, 2, 2, 0, 0, 4, 4)          # overlapping windows: a pixel may receive several gradients
    out, argmax = np.empty((3, 4, 4, 4), np.float32), np.empty((3, 4, 4, 4), np.int32)
    kernels.maxpool_forward(x, window, out, argmax, 0, 3)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dx, dz = np.empty_like(x), np.empty_like(x)
    kernels.maxpool_relu_backward(dout, argmax, x, dx, dz, 0, 3)
    expected_dx = kernels.maxpool_backward(dout, argmax, np.empty_like(x), 0, 3)
    np.testing.assert_array_equal(dx, expected_dx)
    np.testing.assert_array_equal(dz, kernels.relu_backward(expected_dx, x, np.empty_like(x), 0, 3))
    assert (dz[x == 0] == 0).all() and (dx[x == 0] != 0).any()   # the ReLU mask did something
