"""The engine's layers (convnet/engine/layers.py): the paths that exist only for speed.

Conv2D keeps its im2col matrix or rebuilds it in blocks, and skips trailing
output rows/columns whose gradient is zero; each path must give the
textbook's results (the whole-layer comparison is in test_tiers.py).
"""
import numpy as np
import pytest

from convnet import Sequential, gradcheck, layers, windows
from convnet.engine import EngineModel
from convnet.engine import layers as engine_layers
from convnet.windows import Window

pytestmark = pytest.mark.usefixtures("serial")


def float64_layer(layer, input_shape, seed=0):
    layer.build(input_shape, np.random.default_rng(seed))
    return layer.astype(np.float64)


def assert_all_small(errors, tol=1e-6):
    bad = {k: v for k, v in errors.items() if not v < tol}
    assert not bad, f"relative errors above {tol}: {bad} (all: {errors})"

# ------------------------------------------- conv: im2col kept or rebuilt, in blocks
@pytest.mark.parametrize("padding, strides", [("valid", 1), ("same", 2)])
def test_conv_gradient_when_cols_is_rebuilt_in_small_blocks(rng, monkeypatch, padding, strides):
    # small layers keep their whole im2col matrix; force the path the seed model's conv2 takes
    monkeypatch.setattr(engine_layers.Conv2D, "KEEP_COLS_BYTES", 0)
    monkeypatch.setattr(engine_layers.Conv2D, "COLS_BLOCK_BYTES", 1)       # one image per block
    layer = float64_layer(layers.Conv2D(3, 3, strides=strides, padding=padding), (5, 6, 2))
    x = rng.standard_normal((3, 5, 6, 2))
    errors = gradcheck.check_layer(layer, x)
    assert layer.cache["cols"] is None
    assert max(errors.values()) < 1e-6, errors


def test_conv_kept_and_rebuilt_cols_give_identical_results(monkeypatch):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((7, 12, 12, 4)).astype(np.float32)
    dout = rng.standard_normal((7, 9, 9, 6)).astype(np.float32)
    monkeypatch.setattr(engine_layers.Conv2D, "COLS_BLOCK_BYTES", 2 * 81 * 64 * 4)   # blocks of 2 images
    results = []
    for keep in (1 << 30, 0):
        monkeypatch.setattr(engine_layers.Conv2D, "KEEP_COLS_BYTES", keep)
        layer = layers.Conv2D(6, 4)
        layer.build(x.shape[1:], np.random.default_rng(0))
        run = EngineModel([layer])
        out = run.forward(x, training=True)
        assert (layer.cache["cols"] is None) == (keep == 0)
        results.append((out, run.backward(dout), layer.grads["kernel"], layer.grads["bias"]))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


# ------------------- conv backward leaves out trailing output rows/columns with zero gradient
def test_gradient_extent_finds_the_last_row_and_column_with_a_nonzero():
    dz = np.zeros((2, 5, 6, 3))
    assert engine_layers._gradient_extent(dz) == (1, 1)
    dz[1, 2, 3, 2] = 1.0
    assert engine_layers._gradient_extent(dz) == (3, 4)
    dz[0, 4, 0, 0] = -1e-30                                   # any nonzero counts, however small
    assert engine_layers._gradient_extent(dz) == (5, 4)
    dz[0, 0, 5, 1] = 2.0
    assert engine_layers._gradient_extent(dz) == (5, 6)


def test_conv_before_a_flooring_pool_passes_the_whole_model_gradient_check(rng, monkeypatch):
    monkeypatch.setattr(engine_layers.Conv2D, "KEEP_COLS_BYTES", 0)           # the path conv2 takes
    extents = []
    real = engine_layers._gradient_extent
    monkeypatch.setattr(engine_layers, "_gradient_extent", lambda dz: extents.append(real(dz)) or extents[-1])
    model = Sequential([layers.Conv2D(3, 3, activation="relu"), layers.MaxPool2D(2), layers.Flatten(),
                        layers.Dense(4, activation="softmax")], input_shape=(11, 11, 2), seed=1)
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.astype(np.float64)
    errors = gradcheck.check_model(model, rng.standard_normal((3, 11, 11, 2)), np.array([0, 3, 1]), max_entries=None)
    assert_all_small(errors)
    assert (8, 8) in extents                  # 9 x 9 conv output, the pool reads 8 x 8: one row and column skipped


def test_conv_backward_skipping_zero_rows_equals_the_full_computation(monkeypatch):
    monkeypatch.setattr(engine_layers.Conv2D, "KEEP_COLS_BYTES", 0)
    r = np.random.default_rng(3)
    x = r.standard_normal((4, 10, 9, 2))
    dout = r.standard_normal((4, 8, 7, 5))
    dout[:, 6:] = 0                                            # the last two rows and the last column
    dout[:, :, 6] = 0
    layer = float64_layer(layers.Conv2D(5, 3), (10, 9, 2))
    run = EngineModel([layer])
    run.forward(x, training=True)
    dx = run.backward(dout)
    cols = windows.im2col(x, Window(3, 3, 1, 1, 0, 0, 8, 7))           # the full computation, every position
    np.testing.assert_allclose(layer.grads["kernel"].reshape(-1, 5), cols.T @ dout.reshape(-1, 5), rtol=1e-12)
    np.testing.assert_allclose(layer.grads["bias"], dout.sum(axis=(0, 1, 2)), rtol=1e-12)
    full_dx = windows.col2im(dout.reshape(-1, 5) @ layer.params["kernel"].reshape(-1, 5).T,
                             Window(3, 3, 1, 1, 0, 0, 8, 7), (4, 10, 9, 2))
    np.testing.assert_allclose(dx, full_dx, rtol=1e-12, atol=1e-12)
