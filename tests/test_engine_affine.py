"""The engine's RandomAffine (convnet.engine.affine: one numba loop) against convnet.augment's NumPy version: the same bits."""
import numpy as np
import pytest

import convnet
from convnet import backends
from convnet.augment import RandomAffine
from convnet.engine import affine as engine_augment


@pytest.mark.parametrize("ranges", [(10, 0.1, 2), (90, 0.5, 6), (0, 0, 3), (30, 0, 0)])
@pytest.mark.parametrize("shape,dtype", [((16, 28, 28, 1), np.float32), ((3, 7, 9, 3), np.float64),
                                         ((1, 1, 1, 1), np.float32)])
def test_the_engine_draws_and_resamples_exactly_as_numpy(rng, ranges, shape, dtype):
    x = rng.random(shape).astype(dtype)
    x[:, : max(1, shape[1] // 4)] = 0                  # a blank border, as in MNIST
    augment = RandomAffine(*ranges)
    want = augment(x, np.random.default_rng(7))
    got = engine_augment.RandomAffine(augment)(x, np.random.default_rng(7))
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_all_ranges_zero_returns_the_batch_untouched(rng):
    x = rng.random((2, 5, 5, 1))
    assert engine_augment.RandomAffine(RandomAffine(0, 0, 0))(x, rng) is x


def test_bad_batches_get_the_textbook_message(rng):
    engine = engine_augment.RandomAffine(RandomAffine())
    with pytest.raises(ValueError, match="shape"):
        engine(rng.random((5, 5, 1)), rng)
    with pytest.raises(ValueError, match="floating"):
        engine(np.zeros((1, 5, 5, 1), np.uint8), rng)


def test_fit_augments_through_the_engine_with_the_textbooks_numbers(rng, make_small_convnet):
    x = rng.random((24, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 3, 24)
    weights = {}
    for name in ("engine", "textbook"):
        model = make_small_convnet(seed=4)
        model.compile()
        with convnet.backend(name):
            runner = backends.runner(model.layers)
            assert isinstance(runner.augmenter(RandomAffine()), engine_augment.RandomAffine) == (name == "engine")
            model.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=1, augment=RandomAffine(20, 0.1, 1))
        weights[name] = model.get_weights()
    for a, b in zip(weights["engine"], weights["textbook"]):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
