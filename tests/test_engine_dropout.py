"""The engine's dropout stream (convnet.engine.dropout) against convnet.rng and the textbook's mask, bit for bit."""
import numpy as np
import pytest

from convnet import rng
from convnet.engine import dropout as kernels

KEY = 2 ** 64 - 5                                # a key near the top: the counter wraps around


@pytest.mark.parametrize("rate", [0.3, 0.25])
def test_dropout_kernel_keeps_exactly_the_elements_with_u_at_least_rate(rate):
    x = np.arange(1, 3 * 4 * 5 + 1, dtype=np.float32).reshape(3, 4, 5)
    y, mask = np.empty_like(x), np.empty_like(x)
    kernels.dropout_forward(x, np.uint64(KEY), np.uint64(rng.threshold(rate)), 1 / (1 - rate), y, mask, 0, 3)
    kept = rng.uniforms(np.uint64(KEY), x.shape) >= rate
    assert 0 < kept.sum() < x.size
    np.testing.assert_array_equal(mask, np.where(kept, np.float32(1 / (1 - rate)), 0))
    np.testing.assert_array_equal(y, x * mask)
