"""Layer behaviour through the public API: shapes, input checks, dropout, initialisation, bookkeeping.

(The gradients are in test_gradcheck.py, the window math in test_windows.py, the two tiers'
agreement in test_tiers.py.)
"""
import re

import numpy as np
import pytest

from convnet import Sequential, initializers, layers, rng as counter_rng
from conftest import on_tier


def built(layer, input_shape, seed=0):
    layer.build(input_shape, np.random.default_rng(seed))
    return layer


# ------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("size,expected", [(25, 12), (9, 4), (28, 14), (5, 2), (2, 1)])
def test_valid_pooling_floors_the_output_size(rng, size, expected):
    layer = built(layers.MaxPool2D(2), (size, size, 3))
    assert layer.output_shape == (expected, expected, 3)
    assert layer.forward(rng.standard_normal((2, size, size, 3)).astype(np.float32)).shape == (2, expected,
                                                                                                  expected, 3)


@pytest.mark.parametrize("layer,input_shape,expected", [
    (layers.Conv2D(32, 4), (28, 28, 1), (25, 25, 32)),
    (layers.Conv2D(8, 3, padding="same"), (9, 7, 2), (9, 7, 8)),
    (layers.Conv2D(8, 3, strides=2, padding="same"), (7, 8, 2), (4, 4, 8)),
    (layers.Conv2D(5, (2, 3), strides=2), (7, 8, 2), (3, 3, 5)),
    (layers.MaxPool2D(3, strides=1), (7, 7, 4), (5, 5, 4)),
    (layers.MaxPool2D(2, padding="same"), (5, 5, 1), (3, 3, 1)),
    (layers.Flatten(), (4, 4, 32), (512,)),
    (layers.Dense(10), (512,), (10,)),
    (layers.Dropout(0.5), (6, 2), (6, 2)),
])
def test_output_shapes(rng, layer, input_shape, expected):
    built(layer, input_shape)
    assert layer.output_shape == expected
    out = layer.forward(rng.standard_normal((3,) + input_shape).astype(np.float32))
    assert out.shape == (3,) + expected
    assert out.dtype == np.float32


def test_float64_input_is_cast_to_the_layer_dtype(rng):
    layer = built(layers.Dense(3), (4,))
    assert layer.forward(rng.standard_normal((2, 4))).dtype == np.float32
    layer.astype(np.float64)
    assert layer.forward(rng.standard_normal((2, 4))).dtype == np.float64
    assert layer.params["kernel"].dtype == np.float64


# ------------------------------------------------------------------ input checks
def seed_model_first_layers():
    return Sequential([layers.Conv2D(32, 4, activation="relu"), layers.MaxPool2D(2),
                       layers.Conv2D(32, 4, activation="relu"), layers.Flatten(), layers.Dense(10)],
                      input_shape=(28, 28, 1), seed=0)


def test_wrong_input_shape_names_layer_received_and_expected_shape():
    model = seed_model_first_layers()
    message = re.escape("layer 'conv2d' (Conv2D): received input of shape (2, 28, 28), expected (batch, 28, 28, 1)")
    with pytest.raises(ValueError, match=message):
        model.forward(np.zeros((2, 28, 28), np.float32))
    with pytest.raises(ValueError, match=r"'conv2d'.*\(5, 28, 28, 3\).*\(batch, 28, 28, 1\)"):
        model.forward(np.zeros((5, 28, 28, 3), np.float32))


def test_wrong_input_shape_in_the_middle_of_the_network():
    model = seed_model_first_layers()
    with pytest.raises(ValueError, match=r"'conv2d_1'.*\(1, 13, 13, 32\).*\(batch, 12, 12, 32\)"):
        model.layers[2].forward(np.zeros((1, 13, 13, 32), np.float32))
    with pytest.raises(ValueError, match=r"'dense'.*\(1, 10\).*\(batch, 2592\)"):
        model.layers[4].forward(np.zeros((1, 10), np.float32))


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.bool_])
def test_integer_input_is_rejected_with_a_clear_message(dtype):
    model = seed_model_first_layers()
    x = np.zeros((2, 28, 28, 1), dtype=dtype)
    with pytest.raises(ValueError, match=rf"'conv2d'.*dtype {np.dtype(dtype).name}.*floating-point.*\[0, 1\]"):
        model.forward(x)


def test_dense_on_images_asks_for_flatten():
    with pytest.raises(ValueError, match=r"'dense'.*Flatten"):
        Sequential([layers.Dense(10)], input_shape=(28, 28, 1))


def test_kernel_larger_than_input_is_rejected():
    with pytest.raises(ValueError, match=r"'conv2d'.*smaller than the 4x4 kernel"):
        Sequential([layers.Conv2D(2, 4)], input_shape=(3, 3, 1))
    with pytest.raises(ValueError, match=r"'max_pooling2d'.*smaller than the 3x3 pool"):
        Sequential([layers.MaxPool2D(3)], input_shape=(2, 5, 1))


def test_backward_checks_the_gradient(rng):
    layer = built(layers.Dense(3, name="head"), (4,))
    with pytest.raises(ValueError, match=r"'head'.*before forward"):
        layer.backward(np.zeros((2, 3), np.float32))
    layer.forward(rng.standard_normal((2, 4)).astype(np.float32))
    with pytest.raises(ValueError, match=r"'head'.*\(2, 4\).*\(2, 3\)"):
        layer.backward(np.zeros((2, 4), np.float32))


@pytest.mark.parametrize("make,match", [
    (lambda: layers.Conv2D(4, 3, padding="full"), "padding must be 'valid' or 'same'"),
    (lambda: layers.Conv2D(4, 0), "kernel_size must be a positive int"),
    (lambda: layers.Conv2D(4, (3, 3, 3)), "kernel_size"),
    (lambda: layers.MaxPool2D(2, strides=0), "strides"),
    (lambda: layers.Dense(4, activation="tanhh"), "unknown activation 'tanhh'"),
    (lambda: layers.Dropout(1.0), r"rate must be in \[0, 1\)"),
    (lambda: layers.Dropout(-0.1), r"rate must be in \[0, 1\)"),
    (lambda: layers.Dense(4, kernel_initializer="he_normal"), "unknown initializer"),
])
def test_bad_constructor_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ----------------------------------------------------------- parameter-free layers
def test_relu_values_and_gradient_mask():
    layer = built(layers.ReLU(), (4,))
    out = layer.forward(np.array([[-2.0, 0.0, 0.5, 3.0]], np.float32))
    np.testing.assert_array_equal(out, [[0, 0, 0.5, 3]])
    np.testing.assert_array_equal(layer.backward(np.array([[1, 2, 3, 4]], np.float32)), [[0, 0, 3, 4]])   # slope 0 at 0


def test_relu_propagates_nan():
    """NaN must not be turned into 0: a diverging network has to show NaN in its loss (fit then stops)."""
    layer = built(layers.ReLU(), (3,))
    out = layer.forward(np.array([[np.nan, 1.0, -1.0]], np.float32))
    assert np.isnan(out[0, 0])
    np.testing.assert_array_equal(out[0, 1:], [1, 0])


def test_nan_input_reaches_the_output_of_the_seed_model():
    model = seed_model(0)
    x = np.zeros((2, 28, 28, 1), np.float32)
    x[1, 10, 10, 0] = np.nan
    with np.errstate(invalid="ignore"):
        out = model.forward(x)
    assert np.all(np.isfinite(out[0]))
    assert np.all(np.isnan(out[1]))


def test_softmax_rows_are_distributions_even_for_huge_logits():
    layer = built(layers.Softmax(), (3,))
    with np.errstate(over="raise", divide="raise", invalid="raise"):    # exp(-2000) may underflow to 0
        out = layer.forward(np.array([[1000, -1000, 0], [1, 2, 3], [5, 5, 5]], np.float32))
    np.testing.assert_allclose(out.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(out[0], [1, 0, 0], atol=1e-7)
    np.testing.assert_allclose(out[1], np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum(), rtol=1e-6)
    np.testing.assert_allclose(out[2], 1 / 3, rtol=1e-6)


def test_flatten_uses_channels_last_row_major_order(rng):
    layer = built(layers.Flatten(), (2, 3, 4))
    x = rng.standard_normal((2, 2, 3, 4)).astype(np.float32)
    out = layer.forward(x)
    assert out[1, (1 * 3 + 2) * 4 + 3] == x[1, 1, 2, 3]        # index (h*W + w)*C + c
    dout = rng.standard_normal(out.shape).astype(np.float32)
    np.testing.assert_array_equal(layer.backward(dout), dout.reshape(x.shape))


def test_layer_keeps_output_and_gradients_after_a_pass(rng):
    layer = built(layers.Dense(3, activation="relu"), (4,))
    x = rng.standard_normal((2, 4)).astype(np.float32)
    out = layer.forward(x)
    assert layer.output is out
    dout = rng.standard_normal((2, 3)).astype(np.float32)
    dx = layer.backward(dout)
    np.testing.assert_array_equal(layer.grad_output, dout)
    assert layer.grad_input is dx
    np.testing.assert_allclose(dx, (dout * (out > 0)) @ layer.params["kernel"].T, rtol=1e-6)


# ------------------------------------------------------------------------ dropout
def test_dropout_is_the_identity_at_inference(rng, each_backend):
    layer = built(layers.Dropout(0.5), (10,))
    x = rng.standard_normal((4, 10)).astype(np.float32)
    np.testing.assert_array_equal(on_tier(layer).forward(x), x)
    np.testing.assert_array_equal(on_tier(layer).forward(x, training=False), x)
    np.testing.assert_array_equal(on_tier(layer).backward(x), x)


@pytest.mark.parametrize("rate", [0.25, 0.5])
def test_dropout_in_training_keeps_about_one_minus_rate_and_rescales(rate, each_backend):
    layer = built(layers.Dropout(rate, seed=11), (100, 100))
    x = np.ones((20, 100, 100), np.float32)
    out = on_tier(layer).forward(x, training=True)
    kept = out != 0
    assert abs(kept.mean() - (1 - rate)) < 0.005               # 200,000 draws: std of the mean ~0.001
    np.testing.assert_allclose(out[kept], 1 / (1 - rate), rtol=1e-6)
    dout = np.full(x.shape, 2.0, np.float32)
    dx = on_tier(layer).backward(dout)
    np.testing.assert_array_equal(dx != 0, kept)                # same mask backward
    np.testing.assert_allclose(dx[kept], 2 / (1 - rate), rtol=1e-6)


def test_dropout_masks_look_independent(each_backend):
    # neighbouring elements, neighbouring images and consecutive batches must not share decisions
    layer = built(layers.Dropout(0.5, seed=2), (64, 64))
    x = np.ones((16, 64, 64), np.float32)
    a, b = (on_tier(layer).forward(x, training=True) != 0 for _ in range(2))
    for u, v in [(a[:, :, 1:], a[:, :, :-1]), (a[:, 1:], a[:, :-1]), (a[1:], a[:-1]), (a, b)]:
        agree = (u == v).mean()
        assert abs(agree - 0.5) < 0.01, agree                  # 0.5 for independent fair coins


def test_dropout_masks_depend_only_on_the_seed(rng, each_backend):
    x = np.ones((8, 50), np.float32)
    a, b, c = (built(layers.Dropout(0.5, seed=s), (50,)) for s in (3, 3, 4))
    first_a = on_tier(a).forward(x, training=True)
    np.testing.assert_array_equal(first_a, on_tier(b).forward(x, training=True))
    assert not np.array_equal(first_a, on_tier(c).forward(x, training=True))
    assert not np.array_equal(first_a, on_tier(a).forward(x, training=True))    # a new mask for every batch


def test_dropout_masks_in_a_seeded_model_are_reproducible():
    x = np.ones((4, 6), np.float32)
    outs = [Sequential([layers.Dropout(0.5), layers.Dropout(0.5)], input_shape=(6,), seed=s).forward(x, training=True)
            for s in (5, 5, 6)]
    np.testing.assert_array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2])


def test_dropout_keeps_an_element_whose_uniform_equals_the_rate(each_backend):
    """keep = u >= rate: the boundary case u == rate is kept, by the textbook and by the engine's 24-bit threshold."""
    shape = (4, 64)
    key = built(layers.Dropout(0.5, seed=8), shape[1:]).next_key()      # the key the twin below will draw
    u = counter_rng.uniforms(key, shape)
    e = int(np.argmin(np.abs(u - 0.4)))
    rate = float(u.flat[e])                                  # a multiple of 2**-24: exactly some element's u
    layer = built(layers.Dropout(rate, seed=8), shape[1:])
    out = on_tier(layer).forward(np.ones(shape, np.float32), training=True)
    assert out.flat[e] != 0
    np.testing.assert_array_equal(out != 0, u >= rate)


def test_dropout_rate_zero_is_the_identity_in_training(rng):
    layer = built(layers.Dropout(0.0), (5,))
    x = rng.standard_normal((3, 5)).astype(np.float32)
    np.testing.assert_array_equal(layer.forward(x, training=True), x)


# ----------------------------------------------------------------- initialisation
def seed_model(seed):
    return Sequential([
        layers.Conv2D(32, 4, activation="relu"), layers.MaxPool2D(2), layers.Dropout(0.25),
        layers.Conv2D(32, 4, activation="relu"), layers.MaxPool2D(2), layers.Dropout(0.25),
        layers.Flatten(), layers.Dense(256, activation="relu"), layers.Dropout(0.5),
        layers.Dense(10, activation="softmax")], input_shape=(28, 28, 1), seed=seed)


# kernel shape -> (fan_in, fan_out) as Keras counts them
SEED_KERNELS = {(4, 4, 1, 32): (16, 512), (4, 4, 32, 32): (512, 512), (512, 256): (512, 256), (256, 10): (256, 10)}


def test_glorot_uniform_bounds_and_zero_biases():
    model = seed_model(0)
    for layer in model.trainable_layers():
        kernel, bias = layer.params["kernel"], layer.params["bias"]
        fan_in, fan_out = SEED_KERNELS[kernel.shape]
        limit = np.sqrt(6 / (fan_in + fan_out))
        assert np.abs(kernel).max() <= limit
        assert np.abs(kernel).max() > 0.9 * limit                # the whole range is used
        assert abs(kernel.mean()) < 0.1 * limit
        np.testing.assert_array_equal(bias, 0)
        assert kernel.dtype == bias.dtype == np.float32


def test_glorot_uniform_is_roughly_uniform():
    w = seed_model(0).layers[7].params["kernel"]                  # Dense 512 -> 256: 131,072 values
    limit = np.sqrt(6 / (512 + 256))
    counts, _ = np.histogram(w, bins=10, range=(-limit, limit))
    np.testing.assert_allclose(counts / w.size, 0.1, atol=0.005)
    assert w.std() == pytest.approx(limit / np.sqrt(3), rel=0.01)  # std of U(-a, a) is a / sqrt(3)


def test_initializer_functions_directly():
    assert initializers.fans((3, 5)) == (3, 5)
    assert initializers.fans((4, 4, 32, 64)) == (512, 1024)
    w = initializers.glorot_uniform((4, 4, 32, 64), np.random.default_rng(0))
    assert w.shape == (4, 4, 32, 64) and w.dtype == np.float32
    assert np.abs(w).max() <= np.sqrt(6 / (512 + 1024))
    np.testing.assert_array_equal(initializers.zeros((3,)), 0)


def test_same_seed_same_weights_different_seed_different():
    a, b, c = seed_model(7).get_weights(), seed_model(7).get_weights(), seed_model(8).get_weights()
    for wa, wb in zip(a, b):
        np.testing.assert_array_equal(wa, wb)
    for wa, wc in zip(a[::2], c[::2]):                            # kernels (biases are all zero)
        assert not np.array_equal(wa, wc)


def test_layers_of_one_model_draw_independent_weights():
    """Two identical layers in one model must not start from the same random numbers."""
    model = Sequential([layers.Dense(4), layers.Dense(4)], input_shape=(4,), seed=0)
    first, second = model.layers[0].params["kernel"], model.layers[1].params["kernel"]
    assert not np.allclose(first, second)
