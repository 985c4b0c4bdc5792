"""Gradient checks: every layer's backward against central differences, in float64.

``convnet.gradcheck.check_layer`` differentiates ``f = sum(layer(x) * R)``
numerically and compares with ``layer.backward(R)``; ``check_model`` does the
same for a compiled model's loss. A correct backward gives relative errors
around 1e-8 or less; we require < 1e-6 for the input and every parameter.

ReLU and max-pool are only differentiable away from kinks and ties, so their
inputs are built with values spaced far apart compared with the step h, or
the test asserts the distance to the kink first.

The second half makes sure the checks have teeth: a subtly wrong backward
(transposed kernel gradient, missing bias gradient, wrong max-pool routing,
...) patched into a layer must produce a large error (> 1e-2).
"""
import numpy as np
import pytest

import convnet
from convnet import Sequential, gradcheck, layers, losses
from convnet.activations import softmax
from conftest import on_tier

pytestmark = pytest.mark.usefixtures("serial")

TOL = 1e-6


@pytest.fixture
def textbook():
    """The deliberately broken backward passes below are patched into the textbook layers."""
    with convnet.backend("textbook"):
        yield


def assert_all_small(errors, tol=TOL):
    bad = {k: v for k, v in errors.items() if not v < tol}
    assert not bad, f"relative errors above {tol}: {bad} (all: {errors})"


def assert_some_large(errors, keys, tol=1e-2):
    for key in keys:
        assert errors[key] > tol, f"the wrong {key} gradient went unnoticed: {errors}"


def float64_layer(layer, input_shape, seed=0):
    layer.build(input_shape, np.random.default_rng(seed))
    return layer.astype(np.float64)


def assert_away_from_kink(z, margin=1e-4):
    """Precondition for checks through ReLU: no pre-activation within reach of the step h."""
    assert np.min(np.abs(z)) > margin, "test input too close to the ReLU kink; choose another seed"


# ------------------------------------------------------------- the checker itself
def test_relative_error_definition():
    assert gradcheck.relative_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert gradcheck.relative_error([1.0, 3.0], [1.0, 1.0]) == pytest.approx(0.5)     # |3-1| / (3+1)
    assert gradcheck.relative_error([0.0], [0.0]) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        gradcheck.relative_error(np.zeros(2), np.zeros(3))


def test_numerical_gradient_of_a_known_function(rng):
    x = rng.standard_normal((3, 4))
    x_before = x.copy()
    g = gradcheck.numerical_gradient(lambda: float(np.sum(x ** 3)), x)
    np.testing.assert_allclose(g, 3 * x_before ** 2, rtol=1e-8)
    np.testing.assert_array_equal(x, x_before)           # perturbations undone


def test_numerical_gradient_on_a_sample_leaves_others_nan(rng):
    x = rng.standard_normal(10)
    g = gradcheck.numerical_gradient(lambda: float(np.sum(x ** 2)), x, indices=[1, 4])
    np.testing.assert_allclose(g[[1, 4]], 2 * x[[1, 4]], rtol=1e-8)
    assert np.isnan(np.delete(g, [1, 4])).all()


# ------------------------------------------------------------------------ Conv2D
CONV_CASES = [
    # (input_shape, filters, kernel_size, strides, padding)
    ((6, 6, 1), 2, 3, 1, "valid"),
    ((5, 5, 3), 4, 3, 1, "same"),
    ((7, 8, 2), 3, (2, 3), 2, "valid"),
    ((7, 7, 3), 2, 4, 2, "same"),
    ((6, 5, 1), 3, (3, 2), (1, 2), "same"),
]


@pytest.mark.parametrize("input_shape,filters,ks,strides,padding", CONV_CASES)
def test_conv2d_gradients(rng, input_shape, filters, ks, strides, padding, each_backend):
    layer = float64_layer(layers.Conv2D(filters, ks, strides=strides, padding=padding), input_shape)
    layer.params["bias"][:] = rng.standard_normal(filters)
    x = rng.standard_normal((2,) + input_shape)
    assert_all_small(gradcheck.check_layer(layer, x))


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv2d_relu_gradients(rng, padding, each_backend):
    layer = float64_layer(layers.Conv2D(4, 3, padding=padding, activation="relu"), (5, 5, 3))
    layer.params["bias"][:] = [0.1, -0.1, 0.05, 0.0]
    x = rng.standard_normal((2, 5, 5, 3))
    on_tier(layer).forward(x)
    assert 0 < np.mean(layer.preactivation > 0) < 1        # both sides of the kink are exercised
    assert_away_from_kink(layer.preactivation)
    assert_all_small(gradcheck.check_layer(layer, x))


# --------------------------------------------------------------------- MaxPool2D
POOL_CASES = [
    # (input_shape, pool_size, strides, padding)
    ((4, 4, 2), 2, None, "valid"),
    ((5, 5, 2), 3, 1, "valid"),          # overlapping windows
    ((9, 9, 2), 2, None, "valid"),       # 9 -> 4
    ((25, 25, 1), 2, None, "valid"),     # 25 -> 12
    ((5, 5, 2), 2, None, "same"),
    ((7, 6, 1), 3, 2, "same"),           # overlapping + padding
]


@pytest.mark.parametrize("input_shape,pool,strides,padding", POOL_CASES)
def test_maxpool_gradients(rng, spaced, input_shape, pool, strides, padding, each_backend):
    layer = float64_layer(layers.MaxPool2D(pool, strides=strides, padding=padding), input_shape)
    x = spaced((2,) + input_shape, rng)
    assert_all_small(gradcheck.check_layer(layer, x))


# ------------------------------------------------------------------------- Dense
@pytest.mark.parametrize("activation", [None, "relu", "softmax"])
def test_dense_gradients(rng, activation, each_backend):
    layer = float64_layer(layers.Dense(4, activation=activation), (6,))
    layer.params["bias"][:] = [0.2, -0.1, 0.3, 0.05]
    x = rng.standard_normal((3, 6))
    if activation == "relu":
        on_tier(layer).forward(x)
        assert 0 < np.mean(layer.preactivation > 0) < 1
        assert_away_from_kink(layer.preactivation)
    assert_all_small(gradcheck.check_layer(layer, x))


# --------------------------------------------------------- parameter-free layers
def test_relu_layer_gradient(rng, spaced, each_backend):
    layer = float64_layer(layers.ReLU(), (4, 5))
    assert_all_small(gradcheck.check_layer(layer, spaced((2, 4, 5), rng)))


def test_softmax_layer_gradient(rng, each_backend):
    layer = float64_layer(layers.Softmax(), (5,))
    assert_all_small(gradcheck.check_layer(layer, 3 * rng.standard_normal((3, 5))))


def test_flatten_gradient(rng, each_backend):
    layer = float64_layer(layers.Flatten(), (3, 2, 4))
    assert_all_small(gradcheck.check_layer(layer, rng.standard_normal((2, 3, 2, 4))))


def test_dropout_gradient_with_fixed_mask(rng, each_backend):
    layer = float64_layer(layers.Dropout(0.5), (4, 3))
    layer.fixed_mask = (rng.random((2, 4, 3)) >= 0.5) / 0.5
    assert 0 < np.mean(layer.fixed_mask == 0) < 1
    assert_all_small(gradcheck.check_layer(layer, rng.standard_normal((2, 4, 3)), training=True))


def test_dropout_gradient_at_inference(rng, each_backend):
    layer = float64_layer(layers.Dropout(0.5), (4, 3))
    assert_all_small(gradcheck.check_layer(layer, rng.standard_normal((2, 4, 3)), training=False))


def test_dropout_gradient_in_training_mode_with_its_own_random_mask(rng, monkeypatch, each_backend):
    """The mask drawn by the layer (the same key at every draw, so f is a fixed function)."""
    layer = float64_layer(layers.Dropout(0.4), (4, 3))
    monkeypatch.setattr(layer, "next_key", lambda: np.uint64(7))
    x = rng.standard_normal((2, 4, 3))
    on_tier(layer).forward(x, training=True)
    assert 0 < np.mean(layer.output == 0) < 1
    assert_all_small(gradcheck.check_layer(layer, x, training=True))


# --------------------------------------------------------- softmax + cross-entropy
def test_fused_softmax_cross_entropy_through_compute_loss(rng, each_backend):
    model = Sequential([layers.Dense(4, activation="softmax")], input_shape=(5,), seed=3)
    model.compile("sgd", "sparse_categorical_crossentropy")
    assert model._fused() == "softmax"
    model.astype(np.float64)
    errors = gradcheck.check_model(model, rng.standard_normal((3, 5)), np.array([0, 3, 1]), max_entries=None)
    assert_all_small(errors)


def test_cross_entropy_from_logits_through_compute_loss(rng, each_backend):
    model = Sequential([layers.Dense(4)], input_shape=(5,), seed=3)
    model.compile("sgd", losses.SparseCategoricalCrossentropy(from_logits=True))
    assert model._fused() == "logits"
    model.astype(np.float64)
    errors = gradcheck.check_model(model, rng.standard_normal((3, 5)), np.array([2, 2, 0]), max_entries=None)
    assert_all_small(errors)


def test_cross_entropy_alone_from_logits(rng, each_backend):
    loss = losses.SparseCategoricalCrossentropy(from_logits=True)
    z, y = 2 * rng.standard_normal((4, 5)), np.array([0, 4, 2, 2])
    _, analytic = loss.forward_logits(y, z)
    numeric = gradcheck.numerical_gradient(lambda: loss.forward_logits(y, z)[0], z)
    assert gradcheck.relative_error(analytic, numeric) < TOL
    loss.forward(y, z)                                    # the non-fused entry point, same gradient
    np.testing.assert_allclose(loss.backward(), analytic, rtol=1e-12)


def test_cross_entropy_alone_from_probabilities(rng, each_backend):
    loss = losses.SparseCategoricalCrossentropy()
    p, y = softmax(rng.standard_normal((4, 5))), np.array([1, 0, 3, 3])
    loss.forward(y, p)
    analytic = loss.backward().copy()
    numeric = gradcheck.numerical_gradient(lambda: loss.forward(y, p), p)
    assert gradcheck.relative_error(analytic, numeric) < TOL


# ------------------------------------------------------------- the whole seed model
@pytest.mark.parametrize("training", [False, True])
def test_seed_model_end_to_end(rng, make_seed_model, training, each_backend):
    """All 150,858 parameters' layers and the input, 30 sampled entries each.

    The network has ~45,000 ReLU units and ~9,000 pooling windows, too many to
    keep every one of them away from its kink by construction. The weights
    (seed 0) and images (the ``rng`` fixture) are fixed, so whether a sampled
    finite difference straddles a kink is fixed too: it depends only on
    these values, not on how the kernels compute them. With other data, a
    straddled kink shows up as an error around 1e-3..1e-1 in ``conv2d`` only.
    """
    model = make_seed_model(seed=0)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.astype(np.float64)
    x, y = rng.random((2, 28, 28, 1)), np.array([3, 7])
    errors = gradcheck.check_model(model, x, y, training=training, max_entries=30)
    assert set(errors) == {"input"} | {key for key, _, _ in model.params_and_grads()}
    assert_all_small(errors)
    assert all(layer.fixed_mask is None for layer in model.layers if isinstance(layer, layers.Dropout))


# ====================================================== a wrong backward must fail
def patch_backprop(monkeypatch, layer, wrong):
    """Replace ``layer.backprop`` by ``wrong(dz, original_backprop)``."""
    original = layer.backprop
    monkeypatch.setattr(layer, "backprop", lambda dz: wrong(dz, original))


def test_transposed_kernel_gradient_is_caught(rng, monkeypatch, textbook):
    layer = float64_layer(layers.Conv2D(3, 3), (6, 6, 2))

    def wrong(dz, original):
        dx = original(dz)
        layer.grads["kernel"] = layer.grads["kernel"].transpose(1, 0, 2, 3).copy()   # swaps kernel rows/cols
        return dx

    patch_backprop(monkeypatch, layer, wrong)
    errors = gradcheck.check_layer(layer, rng.standard_normal((2, 6, 6, 2)))
    assert_some_large(errors, ["kernel"])
    assert errors["input"] < TOL and errors["bias"] < TOL


def test_conv_input_gradient_with_flipped_kernel_is_caught(rng, monkeypatch, textbook):
    """dL/dx computed with the kernel rotated by 180 degrees (a true-convolution mix-up)."""
    layer = float64_layer(layers.Conv2D(2, 3, padding="same"), (5, 5, 2))

    def wrong(dz, original):
        kernel = layer.params["kernel"]
        layer.params["kernel"] = kernel[::-1, ::-1].copy()
        try:
            return original(dz)
        finally:
            layer.params["kernel"] = kernel

    patch_backprop(monkeypatch, layer, wrong)
    assert_some_large(gradcheck.check_layer(layer, rng.standard_normal((2, 5, 5, 2))), ["input"])


def test_missing_bias_gradient_is_caught(rng, monkeypatch, textbook):
    layer = float64_layer(layers.Dense(3, activation="relu"), (4,))
    layer.params["bias"][:] = 0.5

    def wrong(dz, original):
        dx = original(dz)
        layer.grads["bias"] = np.zeros_like(layer.grads["bias"])   # forgot dL/db
        return dx

    patch_backprop(monkeypatch, layer, wrong)
    errors = gradcheck.check_layer(layer, rng.standard_normal((3, 4)))
    assert_some_large(errors, ["bias"])


def test_maxpool_routing_to_the_wrong_pixel_is_caught(rng, spaced, monkeypatch, textbook):
    """Routing every window's gradient to its top-left pixel instead of its maximum."""
    layer = float64_layer(layers.MaxPool2D(2), (4, 4, 1))

    def wrong(dz, original):
        dx = np.zeros((dz.shape[0], 4, 4, 1))
        dx[:, ::2, ::2, :] = dz
        return dx

    patch_backprop(monkeypatch, layer, wrong)
    assert_some_large(gradcheck.check_layer(layer, spaced((2, 4, 4, 1), rng)), ["input"])


def test_maxpool_overlapping_windows_without_accumulation_are_caught(rng, spaced, monkeypatch, textbook):
    """With overlapping windows a pixel may win several: overwriting instead of adding is wrong."""
    layer = float64_layer(layers.MaxPool2D(3, strides=1), (5, 5, 1))

    def wrong(dz, original):
        dx = np.zeros((dz.shape[0], 5, 5, 1))
        flat = dx.reshape(dz.shape[0], -1)
        k = layer.cache["winner"].reshape(dz.shape[0], 3, 3)         # each window's winner, 0..8
        oh, ow = np.indices((3, 3))
        winners = (oh + k // 3) * 5 + (ow + k % 3)                   # its pixel h * W + w
        for n in range(dz.shape[0]):
            flat[n, winners[n].reshape(-1)] = dz[n].reshape(-1)        # fancy assignment: last write wins
        return dx

    patch_backprop(monkeypatch, layer, wrong)
    x = spaced((2, 5, 5, 1), rng)
    x[:, 2, 2, 0] = 100.0                                   # the centre wins all nine windows
    assert_some_large(gradcheck.check_layer(layer, x), ["input"])


def test_softmax_backward_without_the_jacobian_cross_term_is_caught(rng, monkeypatch, textbook):
    layer = float64_layer(layers.Dense(4, activation="softmax"), (3,))
    monkeypatch.setattr(layer.activation, "backward", lambda dout, y: y * dout)
    assert_some_large(gradcheck.check_layer(layer, rng.standard_normal((2, 3))), ["input", "kernel"])


def test_relu_backward_that_ignores_the_mask_is_caught(rng, spaced, monkeypatch, textbook):
    layer = float64_layer(layers.ReLU(), (6,))
    monkeypatch.setattr(layer.activation, "backward", lambda dout, y: dout)
    assert_some_large(gradcheck.check_layer(layer, spaced((2, 6), rng)), ["input"])


def test_dropout_backward_that_ignores_the_mask_is_caught(rng, monkeypatch, textbook):
    layer = float64_layer(layers.Dropout(0.5), (6,))
    layer.fixed_mask = np.array([[2, 0, 2, 0, 2, 0], [0, 0, 2, 2, 0, 2]], dtype=np.float64)
    patch_backprop(monkeypatch, layer, lambda dz, original: dz)
    assert_some_large(gradcheck.check_layer(layer, rng.standard_normal((2, 6)), training=True), ["input"])


def test_flatten_backward_in_the_wrong_order_is_caught_end_to_end(rng, make_seed_model, monkeypatch, textbook):
    """A channels-first reshape in Flatten's backward breaks every gradient below it."""
    model = make_seed_model(seed=0)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.astype(np.float64)
    flatten = next(layer for layer in model.layers if isinstance(layer, layers.Flatten))

    def wrong(dz, original):
        H, W, C = flatten.input_shape
        return dz.reshape(dz.shape[0], C, H, W).transpose(0, 2, 3, 1)

    patch_backprop(monkeypatch, flatten, wrong)
    errors = gradcheck.check_model(model, rng.random((2, 28, 28, 1)), np.array([1, 5]), max_entries=10)
    assert_some_large(errors, ["conv2d/kernel", "conv2d_1/kernel"])
    assert errors["dense/kernel"] < TOL and errors["dense_1/kernel"] < TOL


def test_fused_loss_gradient_not_averaged_is_caught(rng, monkeypatch, textbook):
    model = Sequential([layers.Dense(4, activation="softmax")], input_shape=(5,), seed=3)
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.astype(np.float64)
    forward_logits = model.loss.forward_logits

    def wrong(y, logits):
        loss, dz = forward_logits(y, logits)
        return loss, dz * len(logits)                       # forgot the 1/N of the mean
    monkeypatch.setattr(model.loss, "forward_logits", wrong)
    errors = gradcheck.check_model(model, rng.standard_normal((3, 5)), np.array([0, 3, 1]), max_entries=None)
    assert_some_large(errors, ["input", "dense/kernel", "dense/bias"])


def test_norm_relative_error_ignores_roundoff_on_tiny_entries_but_not_real_errors():
    from convnet.gradcheck import norm_relative_error, relative_error
    analytic = np.array([1e-3, -2e-3, 3e-9])
    noisy = analytic + np.array([1e-12, -1e-12, 3e-9])        # noise the size of the tiny entry
    assert relative_error(analytic, noisy) > 0.2                # the element-wise view is fooled
    assert norm_relative_error(analytic, noisy) < 1e-6
    wrong = analytic * np.array([1.1, 1.0, 1.0])                # a 10% error in a real entry
    assert norm_relative_error(analytic, wrong) > 1e-2
    with pytest.raises(ValueError, match="shapes differ"):
        norm_relative_error(np.zeros(3), np.zeros(4))




# ------------------------------------------------ the checker works in float64 whatever it is given
def test_check_layer_casts_a_float32_input_to_float64(rng, each_backend):
    """Perturbing a float32 copy by h = 1e-5 would lose half the digits: the checker must cast first."""
    layer = float64_layer(layers.Dense(4, activation="softmax"), (6,))
    x32 = rng.standard_normal((3, 6)).astype(np.float32)
    assert_all_small(gradcheck.check_layer(layer, x32))


def test_check_model_casts_a_float32_input_to_float64(rng, each_backend):
    model = Sequential([layers.Dense(5, activation="relu"), layers.Dense(3, activation="softmax")],
                       input_shape=(4,), seed=2)
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.astype(np.float64)
    x32 = (rng.standard_normal((3, 4)) + 0.05).astype(np.float32)
    assert_all_small(gradcheck.check_model(model, x32, np.array([0, 2, 1]), max_entries=None))


@pytest.mark.parametrize("side", [+1, -1])
def test_check_model_leaves_out_an_entry_whose_step_crosses_a_kink_on_either_side(side, each_backend):
    """A ReLU at z = side * h/2: the step of one sign crosses the kink, the other does not; either way it is a kink."""
    h = 1e-5
    model = Sequential([layers.Dense(2, activation="relu"), layers.Dense(2, activation="softmax")],
                       input_shape=(1,), seed=0)
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.astype(np.float64)
    model.layers[0].params["kernel"][:] = [[1.0, 0.5]]
    model.layers[0].params["bias"][:] = [side * h / 2, 1.0]
    results = gradcheck.check_model(model, np.zeros((1, 1)), np.array([1]), h=h, max_entries=None, kinks=True)
    assert results["input"]["kinks"] == 1 and results["input"]["checked"] == 0
    assert results["dense/bias"]["kinks"] == 1 and results["dense/bias"]["checked"] == 1
    assert results["dense/bias"]["error"] < TOL


def test_check_model_in_training_mode_lets_go_of_the_mask_it_held(rng, each_backend):
    model = Sequential([layers.Dense(8, activation="relu"), layers.Dropout(0.5), layers.Dense(3, activation="softmax")],
                       input_shape=(4,), seed=1)
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.astype(np.float64)
    x = rng.standard_normal((6, 4))
    gradcheck.check_model(model, x, np.array([0, 1, 2, 0, 1, 2]), training=True, max_entries=3)
    dropout = model.layers[1]
    assert dropout.fixed_mask is None
    first = model.forward(x, training=True).copy()
    assert not np.array_equal(first, model.forward(x, training=True))    # new masks again


def test_switches_see_a_flipped_relu_and_a_moved_pool_winner(each_backend):
    model = Sequential([layers.Dense(4, activation="relu"), layers.Dense(4), layers.Flatten()],
                       input_shape=(4,), seed=0)
    pool = Sequential([layers.MaxPool2D(2), layers.Flatten()], input_shape=(2, 2, 1))
    x = np.array([[[[1.0], [2.0]], [[0.0], [0.5]]]])
    pool.forward(x)
    before = gradcheck.switches(pool, x)
    x[0, 0, 0, 0] = 3.0                                    # a new winner, same shapes
    pool.forward(x)
    assert not all(np.array_equal(a, b) for a, b in zip(before, gradcheck.switches(pool, x)))
    v = np.array([[0.5, -0.2, 0.1, 0.3]])
    model.forward(v)
    on = gradcheck.switches(model, v)
    model.layers[0].params["bias"][:] += 10.0             # every ReLU on
    model.forward(v)
    assert gradcheck.switches(model, v)[0].all() and not all(np.array_equal(a, b)
                                                            for a, b in zip(on, gradcheck.switches(model, v)))


def test_a_strided_view_cannot_be_perturbed_in_place_and_is_refused():
    x = np.zeros((3, 4)).T                           # its flat view would be a copy
    with pytest.raises(ValueError, match="contiguous"):
        gradcheck.numerical_gradient(lambda: float(np.sum(x)), x)
