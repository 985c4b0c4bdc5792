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
