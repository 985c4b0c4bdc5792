"""``Sequential``: summary, weights, forward/backward bookkeeping and the training loop."""
import re

import numpy as np
import pytest

from convnet import Sequential, layers, optimizers
from conftest import on_tier

pytestmark = pytest.mark.usefixtures("serial")

SEED_WEIGHT_NAMES = ["conv2d/kernel", "conv2d/bias", "conv2d_1/kernel", "conv2d_1/bias",
                     "dense/kernel", "dense/bias", "dense_1/kernel", "dense_1/bias"]
SEED_WEIGHT_SHAPES = [(4, 4, 1, 32), (32,), (4, 4, 32, 32), (32,), (512, 256), (256,), (256, 10), (10,)]


def blobs(rng, n, noise=0.3):
    """Tiny 8x8 images for 3 classes: class k has a bright 3x3 square in its own corner."""
    y = rng.integers(0, 3, size=n)
    x = noise * rng.random((n, 8, 8, 1))
    corners = [(0, 0), (0, 5), (5, 0)]
    for i, k in enumerate(y):
        r, c = corners[k]
        x[i, r:r + 3, c:c + 3, 0] += 1.0
    return x.astype(np.float32), y


def compiled(model, optimizer=None):
    model.compile(optimizer or optimizers.SGD(0.1), "sparse_categorical_crossentropy", ["accuracy"])
    return model


# ------------------------------------------------------------------- architecture
def test_seed_model_summary_shapes_and_param_counts(make_seed_model):
    model = make_seed_model()
    text = model.summary(print_fn=None)
    for shape in ["(None, 25, 25, 32)", "(None, 12, 12, 32)", "(None, 9, 9, 32)", "(None, 4, 4, 32)",
                  "(None, 512)", "(None, 256)", "(None, 10)"]:
        assert shape in text
    rows = {line.split()[0]: line for line in text.splitlines() if "(None" in line}
    assert list(rows) == [layer.name for layer in model.layers]
    expected = {"conv2d": ("(None, 25, 25, 32)", "544"), "max_pooling2d": ("(None, 12, 12, 32)", "0"),
                "conv2d_1": ("(None, 9, 9, 32)", "16,416"), "max_pooling2d_1": ("(None, 4, 4, 32)", "0"),
                "flatten": ("(None, 512)", "0"), "dense": ("(None, 256)", "131,328"),
                "dropout_2": ("(None, 256)", "0"), "dense_1": ("(None, 10)", "2,570")}
    for name, (shape, params) in expected.items():
        assert shape in rows[name]
        assert rows[name].split()[-1] == params
    assert "Total params: 150,858" in text
    assert model.count_params() == 150_858


def test_summary_prints_by_default(capsys, make_seed_model):
    make_seed_model().summary()
    assert "Total params: 150,858" in capsys.readouterr().out


def test_layer_names_are_keras_style(make_seed_model):
    assert [layer.name for layer in make_seed_model().layers] == [
        "conv2d", "max_pooling2d", "dropout", "conv2d_1", "max_pooling2d_1", "dropout_1",
        "flatten", "dense", "dropout_2", "dense_1"]
    with pytest.raises(ValueError, match="duplicate layer name 'a'"):
        Sequential([layers.Dense(2, name="a"), layers.Dense(2, name="a")], input_shape=(3,))


def test_input_shape_may_come_from_the_first_layer():
    model = Sequential([layers.Conv2D(2, 3, input_shape=(6, 6, 1)), layers.Flatten()])
    assert model.input_shape == (6, 6, 1)
    assert model.output_shape == (32,)


def test_unbuilt_model_says_so():
    model = Sequential([layers.Dense(2)])
    with pytest.raises(ValueError, match="input_shape"):
        model.forward(np.zeros((1, 3), np.float32))


def test_config_round_trip_rebuilds_the_same_model(make_seed_model):
    model = make_seed_model(seed=4)
    clone = Sequential.from_config(model.get_config())
    assert clone.summary(print_fn=None) == model.summary(print_fn=None)
    for a, b in zip(model.get_weights(), clone.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_clone_is_an_independent_copy(make_seed_model):
    model = make_seed_model(seed=4)
    copy = model.clone(np.float64)
    assert copy.summary(print_fn=None) == model.summary(print_fn=None)
    for a, b in zip(model.get_weights(), copy.get_weights()):
        assert b.dtype == np.float64 and a.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    copy.layers[0].params["kernel"] += 1                       # the copy's weights are its own
    assert not np.array_equal(copy.get_weights()[0], model.get_weights()[0])
    fresh = model.clone(seed=9, weights=False)
    assert fresh.seed == 9 and not np.array_equal(fresh.get_weights()[0], model.get_weights()[0])
    assert fresh.get_weights()[0].dtype == np.float32 and model.seed == 4


# ------------------------------------------------------------------------ weights
def test_get_weights_in_keras_order(make_seed_model):
    model = make_seed_model()
    weights = model.get_weights()
    assert [w.shape for w in weights] == SEED_WEIGHT_SHAPES
    assert [key for key, _, _ in model.params_and_grads()] == SEED_WEIGHT_NAMES
    weights[0][...] = 123                                          # copies, not views
    assert not np.any(model.get_weights()[0] == 123)


def test_set_weights_round_trip(rng, make_seed_model):
    source, target = make_seed_model(seed=1), make_seed_model(seed=2)
    x = rng.random((3, 28, 28, 1)).astype(np.float32)
    assert not np.allclose(source.predict(x), target.predict(x))
    target.set_weights([w.astype(np.float64) for w in source.get_weights()])
    for a, b in zip(source.get_weights(), target.get_weights()):
        np.testing.assert_array_equal(a, b)
        assert b.dtype == np.float32
    np.testing.assert_array_equal(source.predict(x), target.predict(x))


def test_set_weights_errors_leave_the_model_unchanged(make_seed_model):
    model = make_seed_model()
    before = model.get_weights()
    new = [np.ones_like(w) for w in before]

    with pytest.raises(ValueError, match=r"expected 8 arrays \(conv2d/kernel, conv2d/bias, .*dense_1/bias\), got 7"):
        model.set_weights(new[:7])
    bad = new[:-1] + [np.ones(11, np.float32)]                     # all fine but the last
    with pytest.raises(ValueError, match=re.escape("dense_1/bias expects shape (10,), got (11,)")):
        model.set_weights(bad)
    transposed = new[:4] + [new[4].T] + new[5:]
    with pytest.raises(ValueError, match=re.escape("dense/kernel expects shape (512, 256), got (256, 512)")):
        model.set_weights(transposed)
    for a, b in zip(before, model.get_weights()):                  # nothing half-applied
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------- forward / backward
def gradients_of(model, x, y, input_grad):
    """One forward/backward pass; returns dL/dx and copies of all parameter gradients."""
    out = model.forward(x, training=False)
    _, dout, pre = model.compute_loss(y, out)
    dx = model.backward(dout, preactivation=pre, input_grad=input_grad)
    return dx, {key: g.copy() for key, _, g in model.params_and_grads()}


def test_backward_without_input_grad_gives_the_same_parameter_gradients(rng, make_seed_model):
    model = compiled(make_seed_model())
    x, y = rng.random((4, 28, 28, 1)).astype(np.float32), np.array([0, 3, 9, 3])
    dx_skip, skipped = gradients_of(model, x, y, input_grad=False)     # first, on a fresh model
    assert dx_skip is None
    assert model.gradients["conv2d"] is None                       # nothing below the first conv
    dx_full, full = gradients_of(model, x, y, input_grad=True)
    assert dx_full.shape == x.shape
    assert list(skipped) == list(full) == SEED_WEIGHT_NAMES
    for key in full:
        np.testing.assert_array_equal(full[key], skipped[key])
    assert all(np.any(g != 0) for g in full.values())


def test_backward_without_input_grad_with_adjacent_trainable_layers(rng):
    """Only the very first trainable layer may skip dL/dx; the ones above it must pass it down."""
    model = compiled(Sequential([layers.Conv2D(3, 2), layers.Conv2D(2, 2, activation="relu"), layers.Flatten(),
                                 layers.Dense(4), layers.Dense(3, activation="softmax")],
                                input_shape=(5, 5, 1), seed=2))
    x, y = rng.random((3, 5, 5, 1)).astype(np.float32), np.array([0, 2, 1])
    dx_skip, skipped = gradients_of(model, x, y, input_grad=False)
    assert dx_skip is None
    assert model.gradients["conv2d_1"] is not None and model.gradients["dense_1"] is not None
    _, full = gradients_of(model, x, y, input_grad=True)
    for key in full:
        np.testing.assert_array_equal(full[key], skipped[key])
    assert all(np.any(g != 0) for g in full.values())


def test_activations_and_gradients_expose_every_layer(rng, make_seed_model):
    model = compiled(make_seed_model())
    x, y = rng.random((2, 28, 28, 1)).astype(np.float32), np.array([1, 2])
    out = model.forward(x)
    acts = model.activations
    assert list(acts) == [layer.name for layer in model.layers]
    assert all(acts[layer.name] is layer.output for layer in model.layers)
    assert acts["dense_1"] is out
    h = x
    for layer in model.layers:                                     # each output is the next layer's input
        assert acts[layer.name].shape == (2,) + layer.output_shape
        h = on_tier(layer).forward(h)                               # the layer alone, on the same tier
        np.testing.assert_array_equal(acts[layer.name], h)

    _, dout, pre = model.compute_loss(y, model.forward(x))
    dx = model.backward(dout, preactivation=pre)
    grads = model.gradients
    assert list(grads) == [layer.name for layer in model.layers]
    for layer in model.layers:
        assert grads[layer.name].shape == (2,) + layer.input_shape
    assert grads["conv2d"] is dx
    # dL/d(input of flatten) is dL/d(output of max_pooling2d_1) reshaped
    np.testing.assert_array_equal(grads["flatten"], model.layers[7].grad_input.reshape(2, 4, 4, 32))


# --------------------------------------------------------------------- training
def test_train_step_reduces_the_loss_on_a_fixed_batch(rng, make_seed_model):
    """The seed model (dropout on) fits 16 noisy images whose class is the row of a bright bar."""
    model = compiled(make_seed_model(), optimizers.Adam(1e-3))
    y = rng.integers(0, 10, size=16)
    x = 0.2 * rng.random((16, 28, 28, 1)).astype(np.float32)
    for i, k in enumerate(y):
        x[i, 2 + 2 * k:4 + 2 * k, 4:24, 0] = 1.0
    start = model.evaluate(x, y)[0]
    losses = [model.train_step(x, y)[0] for _ in range(30)]
    end, accuracy = model.evaluate(x, y)
    assert all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.3 * np.mean(losses[:5])
    assert end < 0.1 * start
    assert accuracy == 1.0


def test_fit_history_keys_and_running_means(rng, make_small_convnet):
    x, y = blobs(rng, 10)
    model = compiled(make_small_convnet(seed=0, dropout=False))
    history = model.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "seconds"}
    assert history.epoch == [0, 1]
    assert all(len(v) == 2 for v in history.history.values())
    assert model.history is history

    # the same updates by hand: per-epoch values are sample-weighted running means over batches 4, 4, 2
    twin = compiled(make_small_convnet(seed=0, dropout=False))
    for epoch in range(2):
        results = [twin.train_step(x[i:i + 4], y[i:i + 4]) for i in (0, 4, 8)]
        sizes = np.array([4, 4, 2])
        batch_losses = np.array([loss for loss, _ in results])
        expected_loss = np.sum(batch_losses * sizes) / 10
        assert history.history["loss"][epoch] == pytest.approx(expected_loss, rel=1e-6)
        assert history.history["accuracy"][epoch] == sum(correct for _, correct in results) / 10
        assert abs(expected_loss - batch_losses.mean()) > 1e-4     # (so weighting is really tested)
    for a, b in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_fit_with_validation_data_and_split(rng, make_small_convnet):
    x, y = blobs(rng, 20)
    model = compiled(make_small_convnet(seed=0))
    history = model.fit(x[:15], y[:15], validation_data=(x[15:], y[15:]), batch_size=5, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "seconds", "val_loss", "val_accuracy"}
    assert [history.history["val_loss"][0], history.history["val_accuracy"][0]] == \
        pytest.approx(model.evaluate(x[15:], y[15:]))

    model = compiled(make_small_convnet(seed=0))
    history = model.fit(x, y, validation_split=0.25, batch_size=5, verbose=0)   # the last 25% validate
    assert history.history["val_loss"][0] == pytest.approx(model.evaluate(x[15:], y[15:])[0])
    with pytest.raises(ValueError, match="validation_split"):
        model.fit(x, y, validation_split=1.5, verbose=0)


def test_fit_learns_a_separable_problem(rng, make_small_convnet):
    x, y = blobs(rng, 60)
    model = compiled(make_small_convnet(seed=0), optimizers.Adam(0.01))
    history = model.fit(x, y, epochs=8, batch_size=10, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert model.evaluate(x, y)[1] >= 0.95


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_named_before_training(rng, make_small_convnet, value):
    x, y = blobs(rng, 10)
    x[5, 3, 3, 0] = value
    model = compiled(make_small_convnet(seed=0))
    before = model.get_weights()
    for call in (lambda: model.fit(x, y, epochs=2, batch_size=4, verbose=0), lambda: model.evaluate(x, y),
                 lambda: model.fit(x[:4], y[:4], validation_data=(x, y), verbose=0)):
        with pytest.raises(ValueError, match=r"holds NaN or infinite values \(the first in sample 5\)"):
            call()
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before))     # not a single step


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, r"batch_size must be an integer of at least 1, got 0"),
    ({"batch_size": -4}, r"batch_size must be an integer of at least 1, got -4"),
    ({"batch_size": 2.5}, r"batch_size must be an integer of at least 1, got 2.5"),
    ({"batch_size": True}, r"batch_size must be an integer"),
    ({"epochs": -1}, r"epochs must be an integer of at least 0"),
    ({"validation_split": 0.99}, r"validation_split=0.99 of 10 samples leaves 0 for training"),
    ({"validation_split": 0.01}, r"leaves 9 for training and 1|leaves 10 for training and 0"),
    ({"validation_split": 1.5}, r"validation_split must be a number in \(0, 1\)"),
    ({"validation_split": "0.2"}, r"validation_split must be a number"),
    ({"validation_data": ("x", "y", "z")}, r"validation_data must be a pair"),
])
def test_bad_fit_arguments_are_value_errors(rng, make_small_convnet, kwargs, message):
    x, y = blobs(rng, 10)
    model = compiled(make_small_convnet(seed=0))
    if "0.01" in str(kwargs.get("validation_split")):
        model.fit(x, y, verbose=0, **kwargs)            # 9 + 1: fine
        return
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, verbose=0, **kwargs)


def test_bad_data_is_named_before_training(rng, make_small_convnet):
    x, y = blobs(rng, 10)
    model = compiled(make_small_convnet(seed=0))
    with pytest.raises(ValueError, match=r"fit: x is empty"):
        model.fit(x[:0], y[:0], verbose=0)
    with pytest.raises(ValueError, match=r"evaluate: x is empty"):
        model.evaluate(x[:0], y[:0])
    with pytest.raises(ValueError, match=r"labels have dtype <U\d+; expected integer class indices"):
        model.fit(x, y.astype(str), verbose=0)
    with pytest.raises(ValueError, match=r"one label per sample"):
        model.evaluate(x, 3)
    with pytest.raises(ValueError, match=r"validation_data: x has shape \(10, 9, 9, 1\), expected \(samples, 8, 8, 1\)"):
        model.fit(x, y, epochs=3, verbose=0, validation_data=(np.zeros((10, 9, 9, 1), np.float32), y))
    with pytest.raises(ValueError, match=r"validation_data: x has 10 samples but the labels have 3"):
        model.fit(x, y, verbose=0, validation_data=(x, y[:3]))
    assert model.optimizer.iterations == 0                   # every mistake was found before the first step


def test_huge_learning_rate_stops_fit_with_floating_point_error(rng, make_small_convnet):
    x, y = blobs(rng, 40)
    model = compiled(make_small_convnet(seed=0), optimizers.SGD(1e30))
    with np.errstate(all="ignore"), pytest.raises(FloatingPointError, match=r"epoch \d+, batch \d+/4"):
        model.fit(x, y, epochs=5, batch_size=10, verbose=0)


def test_same_seed_same_weights_after_fit(rng, make_small_convnet):
    x, y = blobs(rng, 24)

    def trained(seed, fit_seed=None):
        model = compiled(make_small_convnet(seed=seed), optimizers.Adam(0.01))   # with dropout and shuffling
        model.fit(x, y, epochs=2, batch_size=8, seed=fit_seed, verbose=0)
        return model.get_weights()

    a, b, c = trained(3), trained(3), trained(3, fit_seed=99)
    for wa, wb in zip(a, b):
        np.testing.assert_array_equal(wa, wb)
    assert any(not np.array_equal(wa, wc) for wa, wc in zip(a, c))


def test_every_epoch_shuffles_anew_and_a_resumed_run_repeats_the_order(rng, make_small_convnet):
    x, y = blobs(rng, 12)
    x[:, 0, 0, 0] = np.arange(12)                                 # each image carries its own index

    def orders(initial_epoch):
        model, seen = compiled(make_small_convnet(seed=0)), []
        step = model.train_step
        model.train_step = lambda xb, yb: (seen.append(xb[:, 0, 0, 0].astype(int)), step(xb, yb))[1]
        model.fit(x, y, epochs=3, batch_size=4, seed=7, verbose=0, initial_epoch=initial_epoch)
        return [np.concatenate(seen[i:i + 3]) for i in range(0, len(seen), 3)]

    full = orders(0)
    assert all(sorted(order) == list(range(12)) for order in full)
    assert not np.array_equal(full[0], full[1]) and not np.array_equal(full[1], full[2])
    np.testing.assert_array_equal(orders(2)[0], full[2])


def test_predict_in_chunks_equals_one_forward(rng, make_seed_model):
    model = make_seed_model()
    x = rng.random((7, 28, 28, 1)).astype(np.float32)
    full = model.forward(x)
    chunked = model.predict(x, batch_size=3)
    assert chunked.shape == (7, 10) and chunked.dtype == np.float32
    np.testing.assert_allclose(chunked, full, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(model.predict(x.astype(np.float64)), full, rtol=1e-5, atol=1e-7)


def test_evaluate_returns_loss_and_accuracy(rng, make_seed_model):
    model = compiled(make_seed_model())
    x, y = rng.random((7, 28, 28, 1)).astype(np.float32), rng.integers(0, 10, size=7)
    result = model.evaluate(x, y, batch_size=3)
    assert isinstance(result, list) and len(result) == 2
    p = model.forward(x)
    assert result[0] == pytest.approx(-np.mean(np.log(p[np.arange(7), y])), rel=1e-5)
    assert result[1] == np.mean(p.argmax(axis=1) == y)
    one_hot = np.eye(10)[y]
    assert model.evaluate(x, one_hot) == pytest.approx(result, rel=1e-5)


# ------------------------------------------------------------------ bad input
def test_fit_needs_compile_and_matching_data(rng, make_small_convnet):
    x, y = blobs(rng, 6)
    model = make_small_convnet()
    with pytest.raises(ValueError, match="compile"):
        model.fit(x, y, verbose=0)
    compiled(model)
    with pytest.raises(ValueError, match=re.escape("x has shape (6, 8, 8), expected (samples, 8, 8, 1)")):
        model.fit(x[..., 0], y, verbose=0)
    with pytest.raises(ValueError, match="6 samples but the labels have 5"):
        model.fit(x, y[:5], verbose=0)
    with pytest.raises(ValueError, match="unknown metrics"):
        model.compile("sgd", metrics=["auc"])


def test_integer_images_are_rejected_by_fit_predict_and_evaluate(rng, make_small_convnet):
    x, y = blobs(rng, 6)
    pixels = (x * 255).astype(np.uint8)
    model = compiled(make_small_convnet())
    for call in (lambda: model.fit(pixels, y, verbose=0), lambda: model.predict(pixels),
                 lambda: model.evaluate(pixels, y)):
        with pytest.raises(ValueError, match=r"uint8.*float"):
            call()


# --------------------------------------------------------------- dropout masks across epochs
def test_every_epoch_draws_new_dropout_masks_and_a_rerun_draws_the_same(rng, make_small_convnet, each_backend):
    """Masks come from (seed, epoch, layer): a resumed run repeats them, but no two epochs share them."""
    x = rng.random((16, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 3, 16)

    class FirstMasks:
        def __init__(self):
            self.masks = []

        def on_batch_end(self, batch, logs):
            if batch == 0:
                self.masks.append(self.model.layers[2].mask.copy())

    runs = []
    for _ in range(2):
        model, recorder = make_small_convnet(seed=1), FirstMasks()
        model.compile("sgd")
        model.fit(x, y, epochs=3, batch_size=8, shuffle=False, verbose=0, seed=5, callbacks=[recorder])
        runs.append(recorder.masks)
    first, again = runs
    assert len(first) == 3
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[1], first[2])
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


def test_seed_dropout_depends_on_seed_epoch_and_layer(make_small_convnet):
    model = make_small_convnet(seed=0)
    layer = model.layers[2]
    keys = {}
    for seed, epoch in [(1, 0), (1, 1), (2, 0), (1, 0)]:
        model.seed_dropout(seed, epoch)
        keys.setdefault((seed, epoch), []).append(int(layer.next_key()))
    assert keys[(1, 0)][0] == keys[(1, 0)][1]
    assert len({keys[(1, 0)][0], keys[(1, 1)][0], keys[(2, 0)][0]}) == 3


def test_two_dropout_layers_of_one_model_draw_different_masks():
    model = Sequential([layers.Dropout(0.5), layers.Dropout(0.5)], input_shape=(64,), seed=0)
    model.seed_dropout(1, 0)
    assert model.layers[0].next_key() != model.layers[1].next_key()
    model.seed_dropout(1, 0)
    x = np.ones((4, 64), np.float32)
    first = model.layers[0].forward(x, training=True)
    assert not np.array_equal(first != 0, model.layers[1].forward(x, training=True) != 0)


def test_a_model_without_an_input_shape_is_built_from_its_first_data(rng):
    def model():
        return Sequential([layers.Conv2D(4, 3, activation="relu"), layers.MaxPool2D(2), layers.Flatten(),
                           layers.Dense(3, activation="softmax")], seed=5)
    x = rng.random((4, 8, 8, 1), dtype=np.float32)
    lazy = model()
    out = lazy.predict(x)
    assert lazy.input_shape == (8, 8, 1) and out.shape == (4, 3)
    built = model()
    built.build((8, 8, 1))
    np.testing.assert_allclose(out, built.forward(x), rtol=1e-5)       # the weights a build from the shape draws
    with pytest.raises(ValueError, match=r"expected \(samples, \.\.\.\)"):
        model().predict(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="no layers"):
        Sequential().predict(x)
