"""The engine's inference path (convnet.engine.inference) against the textbook forward pass.

``predict``/``evaluate`` on the engine run the steps of :func:`inference.plan`
(made once per model by ``EngineModel``); these tests hold them to
``Sequential.forward`` on the textbook tier for the
seed model and for models that take each of its branches (fused
conv + ReLU + 2x2 pool, trimmed windows, a pool it cannot fuse, padding,
strides, activations alone, a layer it does not know).
"""
import numpy as np
import pytest

import convnet
from convnet import Sequential, layers
from convnet.engine import EngineModel, inference, threads
from convnet.engine.winograd import TransformedKernel

from test_tiers import close


def planned(model):
    """The model's inference steps, as the engine's runner makes them."""
    return inference.plan(model.layers, TransformedKernel)


def textbook(model, x):
    """The last layer's (z, y) from the textbook forward pass."""
    with convnet.backend("textbook"):
        y = model.forward(x, training=False)
        return model.layers[-1].preactivation.copy(), y.copy()


MODELS = [
    ("conv relu, 2x2 pool after dropout, dense",
     lambda: [layers.Conv2D(6, 3, activation="relu"), layers.Dropout(0.5), layers.MaxPool2D(2),
              layers.Flatten(), layers.Dense(5, activation="softmax")], (11, 11, 2)),
    ("odd map trimmed twice",
     lambda: [layers.Conv2D(4, 2, activation="relu"), layers.MaxPool2D(2), layers.Conv2D(3, 2, activation="relu"),
              layers.MaxPool2D(2), layers.Flatten(), layers.Dense(4)], (12, 12, 1)),
    ("non-square map, fused",
     lambda: [layers.Conv2D(3, (2, 3), activation="relu"), layers.MaxPool2D(2), layers.Flatten(),
              layers.Dense(4, activation="softmax")], (9, 14, 2)),
    ("overlapping pool (not fused), padding same, strides",
     lambda: [layers.Conv2D(5, 3, strides=2, padding="same", activation="relu"),
              layers.MaxPool2D(3, strides=2, padding="same"), layers.Flatten(),
              layers.Dense(6, activation="relu"), layers.Dense(3, activation="softmax")], (9, 10, 2)),
    ("conv without activation before a pool (not fused)",
     lambda: [layers.Conv2D(3, 3), layers.MaxPool2D(2), layers.Flatten(), layers.Dense(2)], (8, 8, 1)),
    ("pool as the last layer",
     lambda: [layers.Conv2D(3, 3, activation="relu"), layers.MaxPool2D(2)], (8, 8, 2)),
    ("conv softmax as the last layer",
     lambda: [layers.Conv2D(4, 3, activation="relu"), layers.Conv2D(3, 2, activation="softmax")], (7, 7, 1)),
    ("4x4 conv on 8 channels, by Winograd, non-square",
     lambda: [layers.Conv2D(6, 4, activation="relu"), layers.MaxPool2D(2), layers.Flatten(),
              layers.Dense(3, activation="softmax")], (13, 11, 8)),
    ("4x4 conv by Winograd after an im2col conv, odd map",
     lambda: [layers.Conv2D(9, 2, activation="relu"), layers.Conv2D(5, 4, activation="relu"), layers.MaxPool2D(2),
              layers.Dropout(0.2), layers.Flatten(), layers.Dense(4)], (13, 15, 1)),
    ("activations as layers, dropout last",
     lambda: [layers.ReLU(), layers.Flatten(), layers.Dense(7), layers.ReLU(), layers.Dense(4),
              layers.Softmax(), layers.Dropout(0.3)], (3, 3, 2)),
]


@pytest.mark.parametrize("make,shape", [m[1:] for m in MODELS], ids=[m[0] for m in MODELS])
@pytest.mark.parametrize("n", [1, 5, 37])
def test_infer_matches_the_textbook_forward(rng, make, shape, n):
    model = Sequential(make(), input_shape=shape, seed=3)
    x = rng.standard_normal((n,) + shape).astype(np.float32)
    assert planned(model) is not None
    z, y = EngineModel(model.layers).infer(x)
    want_z, want_y = textbook(model, x)
    close(z, want_z)
    close(y, want_y)


def test_seed_model_predict_and_evaluate_match_the_textbook(rng, make_seed_model):
    model = make_seed_model(1)
    model.compile()
    x = rng.random((70, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 70)
    with convnet.backend("textbook"):
        want_p, want_e = model.predict(x), model.evaluate(x, y)
    for batch in (None, 1, 32, 1000):
        close(model.predict(x, batch_size=batch), want_p)
        loss, accuracy = model.evaluate(x, y, batch_size=batch)
        assert loss == pytest.approx(want_e[0], rel=1e-5)
        assert accuracy == want_e[1]


def test_every_thread_count_and_block_size_gives_the_same_numbers(rng, make_seed_model, monkeypatch):
    model = make_seed_model(2)
    x = rng.random((45, 28, 28, 1), dtype=np.float32)
    results = []
    for n_threads, block_bytes in [(1, inference.BLOCK_BYTES), (2, inference.BLOCK_BYTES), (2, 1), (1, 10 ** 9)]:
        monkeypatch.setattr(inference, "BLOCK_BYTES", block_bytes)
        previous = threads.get_num_threads()
        threads.set_num_threads(n_threads)
        try:
            with threads.limited():
                results.append(EngineModel(model.layers).infer(x)[1])
        finally:
            threads.set_num_threads(previous)
    for other in results[1:]:
        close(other, results[0], 1e-6)


def test_the_callers_array_is_left_alone(rng):
    model = Sequential([layers.ReLU(), layers.Flatten(), layers.Dense(3)], input_shape=(4, 4, 1), seed=0)
    x = rng.standard_normal((6, 4, 4, 1)).astype(np.float32)
    before = x.copy()
    model.predict(x)
    np.testing.assert_array_equal(x, before)


def test_predict_keeps_no_layer_output_and_leaves_the_last_forward_in_place(rng, make_small_convnet):
    model = make_small_convnet()
    x = rng.random((4, 8, 8, 1), dtype=np.float32)
    model.forward(x[:2])
    outputs = [layer.output for layer in model.layers]
    model.predict(x)
    assert all(layer.output is kept for layer, kept in zip(model.layers, outputs))


class Doubling(layers.Layer):
    """A layer the engine does not know."""

    def call(self, x, training):
        return 2 * x


def test_a_model_with_an_unknown_layer_runs_layer_by_layer(rng):
    model = Sequential([layers.Flatten(), Doubling(), layers.Dense(3, activation="softmax")],
                       input_shape=(3, 3, 1), seed=0)
    x = rng.standard_normal((5, 3, 3, 1)).astype(np.float32)
    assert planned(model) is None
    z, y = EngineModel(model.layers).infer(x)
    want_z, want_y = textbook(model, x)
    close(z, want_z)
    close(y, want_y)


def test_the_plan_fuses_the_seed_models_convolutions_and_drops_its_dropout(make_seed_model):
    steps, windowed, per_image, kernels = planned(make_seed_model())
    # conv1+relu+pool, conv2+relu+pool | flatten, dense, relu, dense, softmax
    assert (len(steps), windowed) == (7, 2)
    assert per_image == 25 * 4 * 4 * 32              # conv2's Winograd tiles: 25 numbers per channel, 4x4 tiles
    assert len(kernels) == 1                         # conv2's transformed kernel, refreshed per call
