"""The engine's inference path (convnet.engine.inference) against the textbook forward pass.

``predict``/``evaluate`` on the default backend run :meth:`inference.Sequential.infer`;
these tests hold it to ``Sequential.forward`` on the textbook backend for the
seed model and for models that take each of its branches (fused
conv + ReLU + 2x2 pool, trimmed windows, a pool it cannot fuse, padding,
strides, activations alone, a layer it does not know).
"""
import numpy as np
import pytest

import convnet
from convnet import Sequential, layers
from convnet.engine import inference, kernels, threads
from convnet.windows import Window

from test_tiers import close


def textbook(model, x):
    """The last layer's (z, y) from the textbook forward pass."""
    with convnet.backend("numpy"):
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
    assert inference.plan(model) is not None
    z, y = inference.Sequential(model).infer(x)
    want_z, want_y = textbook(model, x)
    close(z, want_z)
    close(y, want_y)


def test_seed_model_predict_and_evaluate_match_the_textbook(rng, make_seed_model):
    model = make_seed_model(1)
    model.compile()
    x = rng.random((70, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 70)
    with convnet.backend("numpy"):
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
                results.append(inference.Sequential(model).infer(x)[1])
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
    assert inference.plan(model) is None
    z, y = inference.Sequential(model).infer(x)
    want_z, want_y = textbook(model, x)
    close(z, want_z)
    close(y, want_y)


def test_the_plan_fuses_the_seed_models_convolutions_and_drops_its_dropout(make_seed_model):
    steps, windowed, per_image = inference.plan(make_seed_model())
    # conv1+relu+pool, conv2+relu+pool | flatten, dense, relu, dense, softmax
    assert (len(steps), windowed) == (7, 2)
    assert per_image == 25 * 4 * 4 * 32              # conv2's Winograd tiles: 25 numbers per channel, 4x4 tiles


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


def test_winograd_is_chosen_only_where_it_fits(make_seed_model):
    seed = make_seed_model()
    assert not inference._winograd_fits(seed.layers[0], seed.layers[1])      # one input channel: im2col
    assert inference._winograd_fits(seed.layers[3], seed.layers[4])          # 4x4 on 32 channels
    assert not inference._winograd_fits(seed.layers[3], None)                # no pooling to end in
    model = Sequential([layers.Conv2D(4, 3, activation="relu"), layers.MaxPool2D(2), layers.Flatten(),
                        layers.Dense(2)], input_shape=(9, 9, 8))
    assert not inference._winograd_fits(model.layers[0], model.layers[1])   # a 3x3 kernel
    model = Sequential([layers.Conv2D(4, 4, strides=2, activation="relu"), layers.MaxPool2D(2), layers.Flatten(),
                        layers.Dense(2)], input_shape=(13, 13, 8))
    assert not inference._winograd_fits(model.layers[0], model.layers[1])   # strides


def test_winograd_kernels_match_the_direct_convolution_and_write_only_their_range(rng):
    """Input transform, products, output transform: conv + bias + ReLU + 2x2 pool on a range of images."""
    x = rng.standard_normal((5, 12, 14, 9)).astype(np.float32)
    K = rng.standard_normal((4, 4, 9, 7)).astype(np.float32)
    b = rng.standard_normal(7).astype(np.float32)
    PH, PW = 4, 5                                    # outputs 9x11, the pooling reads 8x10
    U = np.einsum("ik,klcf,jl->ijcf", inference._G, K.astype(np.float64), inference._G).reshape(25, 9, 7)
    V = np.full((25, 5 * PH * PW, 9), 7.0, np.float32)
    kernels.winograd4_tiles(x, inference._BT.astype(np.float32), PH, PW, V, 1, 4)
    out = np.full((5, PH, PW, 7), 7.0, np.float32)
    kernels.winograd4_bias_relu_maxpool(np.matmul(V, U.astype(np.float32)), inference._AT.astype(np.float32),
                                        b, out, 1, 4)
    z = np.einsum("nhwc,hwcf->nf", np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), (4, 4), axis=(1, 2))
                  .transpose(0, 1, 2, 4, 5, 3)[:, :8, :10].reshape(-1, 4, 4, 9), K.astype(np.float64))
    z = z.reshape(5, 8, 10, 7) + b
    want = np.maximum(z.reshape(5, 4, 2, 5, 2, 7).max(axis=(2, 4)), 0)
    close(out[1:4], want[1:4])
    assert (out[0] == 7).all() and (out[4] == 7).all()
    assert (V[:, :PH * PW] == 7).all() and (V[:, 4 * PH * PW:] == 7).all()


def test_the_transformed_winograd_kernel_follows_the_weights(rng, make_seed_model):
    """U = G K G^T is kept between batches, and computed again once the kernel's values change."""
    model = make_seed_model(1)
    x = rng.random((6, 28, 28, 1), dtype=np.float32)
    first = inference._transformed_kernel(model.layers[3])
    assert inference._transformed_kernel(model.layers[3]) is first
    model.layers[3].params["kernel"] *= 0.5                       # in place, as an optimizer updates it
    assert inference._transformed_kernel(model.layers[3]) is not first
    z, y = inference.Sequential(model).infer(x)
    close(y, textbook(model, x)[1])
