"""The engine's Adam (convnet.engine.adam) against the textbook's Adam.update, bit for bit.

The fused kernel needs contiguous arrays of one dtype; anything else takes
the textbook's update, and either way the numbers are the textbook's.
"""
import numpy as np
import pytest

from convnet import optimizers


@pytest.mark.parametrize("layout", ["non-contiguous gradient", "float64 gradient for a float32 parameter"])
def test_engine_adam_falls_back_to_the_textbook_update_exactly(layout):
    """The fused kernel needs contiguous arrays of one dtype; anything else takes Adam.update."""
    import convnet
    rng = np.random.default_rng(0)
    param = rng.standard_normal((6, 5)).astype(np.float32)
    grads = [rng.standard_normal((5, 6)).astype(np.float32).T for _ in range(3)]      # transposed views
    if layout.startswith("float64"):
        grads = [np.ascontiguousarray(g, dtype=np.float64) for g in grads]
    results = {}
    for backend in ("textbook", "engine"):
        with convnet.backend(backend):
            opt, p = optimizers.Adam(learning_rate=0.01), param.copy()
            for g in grads:
                convnet.backends.runner([]).apply(opt, [("w", p, g)])
            results[backend] = (p, opt.slots["m"]["w"], opt.slots["v"]["w"])
    for a, b in zip(results["engine"], results["textbook"]):
        np.testing.assert_array_equal(a, b)
    # and the textbook update is Adam's formula, written out here once more in float64
    m = v = 0
    expected = param.astype(np.float64)
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        expected = expected - 0.01 * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t) * m / (np.sqrt(v) + 1e-7)
    np.testing.assert_allclose(results["textbook"][0], expected, rtol=1e-5, atol=1e-6)
