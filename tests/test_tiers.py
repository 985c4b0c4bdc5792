"""The two tiers agree: the engine against the textbook.

For every layer and activation and for whole training steps of the seed
model, the same inputs and parameters must give the same outputs, the same
gradients and the same updated weights on both tiers: float32 results
within 1e-5 of each array's norm after one step (the engine sums in other
orders), and bit-for-bit where both compute the same float operations
(dropout masks, pooling, ReLU, Adam's update).
"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import convnet
from convnet import backends, layers, optimizers
from convnet.architectures import mnist_cnn
from convnet.engine import plan

TOL = 1e-5


def close(a, b, tol=TOL):
    """``||a - b|| <= tol * ||b||`` (arrays of float32 sums agree to about 1e-7 relative)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    assert np.linalg.norm(a - b) <= tol * max(np.linalg.norm(b), 1e-30), np.abs(a - b).max()


def run_layer(name, make, x, dout, training=False, seed=0):
    """Forward + backward of a fresh layer on tier ``name``: (output, dx, grads)."""
    with convnet.backend(name):
        layer = make()
        layer.build(x.shape[1:], np.random.default_rng(seed))
        if isinstance(layer, layers.Dropout):
            layer.reseed(seed)
        run = backends.runner([layer])
        out = run.forward(x, training=training)
        dx = run.backward(dout)
        return out, dx, {k: g.copy() for k, g in layer.grads.items()}


LAYERS = [
    ("conv valid", lambda: layers.Conv2D(5, 3), (3, 9, 9, 2)),
    ("conv relu", lambda: layers.Conv2D(4, 4, activation="relu"), (4, 12, 12, 3)),
    ("conv same strided", lambda: layers.Conv2D(3, (2, 3), strides=2, padding="same"), (2, 7, 8, 2)),
    ("conv seed conv1", lambda: layers.Conv2D(32, 4, activation="relu"), (8, 28, 28, 1)),
    ("conv seed conv2 (large cols)", lambda: layers.Conv2D(32, 4, activation="relu"), (40, 12, 12, 32)),
    ("pool 2x2", lambda: layers.MaxPool2D(2), (3, 25, 25, 4)),
    ("pool overlapping same", lambda: layers.MaxPool2D(3, strides=2, padding="same"), (2, 7, 8, 3)),
    ("dense relu", lambda: layers.Dense(7, activation="relu"), (5, 11)),
    ("dense seed", lambda: layers.Dense(256, activation="relu"), (32, 512)),
    ("dense softmax", lambda: layers.Dense(10, activation="softmax"), (6, 20)),
    ("flatten", lambda: layers.Flatten(), (3, 4, 4, 2)),
    ("relu layer", lambda: layers.ReLU(), (3, 5, 4)),
    ("softmax layer", lambda: layers.Softmax(), (3, 10)),
]


@pytest.mark.parametrize("name,make,shape", LAYERS, ids=[case[0] for case in LAYERS])
def test_every_layer_agrees_between_the_tiers(rng, name, make, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    probe = make()
    probe.build(shape[1:], np.random.default_rng(0))
    dout = rng.standard_normal((shape[0],) + probe.output_shape).astype(np.float32)
    numpy_result, numba_result = (run_layer(b, make, x, dout) for b in ("textbook", "engine"))
    for a, b in zip(numba_result[:2], numpy_result[:2]):
        assert a.dtype == b.dtype == np.float32
        close(a, b)
    assert numba_result[2].keys() == numpy_result[2].keys()
    for key in numpy_result[2]:
        close(numba_result[2][key], numpy_result[2][key])


def test_pooling_picks_the_same_winners_bit_for_bit_with_ties_and_nan(rng):
    x = rng.integers(-2, 3, size=(3, 9, 9, 4)).astype(np.float32)     # ties in most windows
    x[0, 1, 1, 0] = x[1, 4, 5, 2] = np.nan
    dout = rng.standard_normal((3, 4, 4, 4)).astype(np.float32)
    (o1, d1, _), (o2, d2, _) = (run_layer(b, lambda: layers.MaxPool2D(2), x, dout) for b in ("textbook", "engine"))
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(d1, d2)


@pytest.mark.parametrize("rate", [0.25, 0.5, 0.2, 0.3])
def test_dropout_draws_the_same_masks_on_both_backends(rng, rate):
    x = rng.standard_normal((4, 6, 6, 3)).astype(np.float32)
    dout = rng.standard_normal(x.shape).astype(np.float32)
    (o1, d1, _), (o2, d2, _) = (run_layer(b, lambda: layers.Dropout(rate), x, dout, training=True)
                                for b in ("textbook", "engine"))
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(d1, d2)
    assert 0 < np.mean(o1 == 0) < 1


def test_adam_update_is_the_same_on_both_backends(rng):
    shapes = [(4, 4, 1, 8), (8,), (30, 7)]
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(3)]
    results = {}
    for name in ("textbook", "engine"):
        with convnet.backend(name):
            opt, ps = optimizers.Adam(learning_rate=0.01), [p.copy() for p in params]
            for step in grads:
                backends.runner([]).apply(opt, [(f"p{i}", p, g) for i, (p, g) in enumerate(zip(ps, step))])
            results[name] = ps + [opt.slots["m"][f"p{i}"] for i in range(3)] + [opt.slots["v"][f"p{i}"] for i in
                                                                                   range(3)]
    for a, b in zip(results["engine"], results["textbook"]):
        np.testing.assert_array_equal(a, b)


def train(name, steps, x, y, seed=0):
    with convnet.backend(name):
        model = mnist_cnn(seed)
        model.compile(optimizer="adam")
        model.seed_dropout(seed, 0)
        for s in range(steps):
            batch = slice(32 * s, 32 * (s + 1))
            model.train_step(x[batch], y[batch])
        return model


def test_one_training_step_of_the_seed_model_agrees(rng):
    x = rng.random((32, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 32)
    models = {name: train(name, 1, x, y) for name in ("textbook", "engine")}
    a, b = models["engine"], models["textbook"]
    for la, lb in zip(a.layers, b.layers):
        close(la.output, lb.output)
        if la.grad_input is not None:
            close(la.grad_input, lb.grad_input)
        for key in la.grads:
            close(la.grads[key], lb.grads[key])
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        close(wa, wb)


def _chain(seed=0):
    """Conv+ReLU -> pool twice (the engine fuses both pairs), as in the seed model, small."""
    return convnet.Sequential([layers.Conv2D(6, 3, activation="relu"), layers.MaxPool2D(2), layers.Dropout(0.25),
                               layers.Conv2D(5, 3, activation="relu"), layers.MaxPool2D(2), layers.Flatten(),
                               layers.Dense(10, activation="softmax")], input_shape=(14, 14, 2), seed=seed)


def _trained_chain(name, x, y, steps=3):
    with convnet.backend(name):
        model = _chain()
        model.compile(optimizer="adam")
        model.seed_dropout(0, 0)
        for s in range(steps):
            model.train_step(x[8 * s:8 * (s + 1)], y[8 * s:8 * (s + 1)])
        return model


def test_fused_conv_relu_pool_keeps_every_layer_inspectable_and_agrees(rng):
    """The training step's runs fuse each conv with its pool; every layer still exposes its own
    output, preactivation, grad_output and grad_input, equal to the textbook's."""
    x, y = rng.random((24, 14, 14, 2), dtype=np.float32), rng.integers(0, 10, 24)
    a, b = _trained_chain("engine", x, y), _trained_chain("textbook", x, y)
    fused = [(g.i, g.j) for g in a.runner().plan(True).groups if isinstance(g, plan.ConvGroup)]
    assert fused == [(0, 2), (3, 5)]                       # the fused path ran
    for la, lb in zip(a.layers, b.layers):
        for attr in ("output", "preactivation", "grad_output", "grad_input"):
            if getattr(lb, attr) is not None:
                close(getattr(la, attr), getattr(lb, attr))
        for key in la.grads:
            close(la.grads[key], lb.grads[key])
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        close(wa, wb)


def test_fusion_computes_exactly_what_the_unfused_engine_computes(rng, monkeypatch):
    x, y = rng.random((24, 14, 14, 2), dtype=np.float32), rng.integers(0, 10, 24)
    fused = _trained_chain("engine", x, y)
    make = plan.make
    monkeypatch.setattr(plan, "make", lambda layers, training=True, fuse=True: make(layers, training, fuse=False))
    plain = _trained_chain("engine", x, y)                 # no fusion at all: each layer on its own
    for la, lb in zip(fused.layers, plain.layers):
        for attr in ("output", "preactivation", "grad_output", "grad_input"):
            np.testing.assert_array_equal(getattr(la, attr), getattr(lb, attr))
    for wa, wb in zip(fused.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_large_outputs_are_not_fused_and_give_the_same_results(rng, monkeypatch):
    x, y = rng.random((24, 14, 14, 2), dtype=np.float32), rng.integers(0, 10, 24)
    fused = _trained_chain("engine", x, y)
    monkeypatch.setattr(convnet.engine.layers.Conv2D, "FUSE_MAX_BYTES", 1000)   # every output is "large"
    calls = []
    original = convnet.engine.layers.add_bias_relu
    monkeypatch.setattr(convnet.engine.layers, "add_bias_relu", lambda *a: calls.append(1) or original(*a))
    plain = _trained_chain("engine", x, y)
    assert not calls
    for wa, wb in zip(fused.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_a_layer_called_on_its_own_is_the_textbook_on_either_tier(rng):
    """The engine keeps nothing between calls and never stands in for a layer's own methods."""
    x = rng.standard_normal((4, 10, 10, 3)).astype(np.float32)
    model = convnet.Sequential([layers.Conv2D(4, 3, activation="relu"), layers.MaxPool2D(2)],
                               input_shape=(10, 10, 3), seed=0)
    conv, pool = model.layers
    model.forward(x)
    model.forward(x)
    y = conv.forward(x)
    other = np.ascontiguousarray(y[::-1])                  # same shape, other values
    expected = layers.MaxPool2D(2).forward(other)
    np.testing.assert_array_equal(pool.forward(other), expected)
    np.testing.assert_array_equal(conv.forward(x), np.maximum(conv.call(x, False), 0))


def test_many_steps_stay_close(rng):
    """Adam amplifies round-off over steps (1/sqrt(v) of tiny v), so the bound is looser."""
    x = rng.random((32 * 20, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, len(x))
    models = {name: train(name, 20, x, y) for name in ("textbook", "engine")}
    for wa, wb in zip(models["engine"].get_weights(), models["textbook"].get_weights()):
        close(wa, wb, tol=1e-3)


def test_fit_history_and_predictions_agree(rng):
    x = rng.random((160, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, len(x))
    out = {}
    for name in ("textbook", "engine"):
        with convnet.backend(name):
            model = mnist_cnn(0)
            model.compile(optimizer="adam")
            history = model.fit(x, y, epochs=2, batch_size=32, seed=3, verbose=0)
            out[name] = history.history["loss"], model.predict(x[:50])
    np.testing.assert_allclose(out["engine"][0], out["textbook"][0], rtol=1e-4)
    close(out["engine"][1], out["textbook"][1], tol=1e-4)


def test_the_engine_is_the_default_tier():
    done = subprocess.run([sys.executable, "-c", "import convnet; print(convnet.get_backend())"],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "engine", done.stderr


def test_the_backend_switch(monkeypatch):
    monkeypatch.setattr(backends, "_current", "engine")      # whatever an earlier test's command line set
    assert convnet.get_backend() == "engine" and backends.tier() == "engine"
    with convnet.backend("textbook"):
        assert convnet.get_backend() == "textbook"
        with pytest.raises(ValueError, match="unknown backend 'cuda'"):
            convnet.set_backend("cuda")
        assert convnet.get_backend() == "textbook"
        assert isinstance(backends.runner([]), convnet.loop.LayerLoop)
    assert convnet.get_backend() == "engine"
    assert isinstance(backends.runner([]), convnet.engine.EngineModel)


def test_the_older_names_of_the_tiers_still_work():
    for old, new in (("numpy", "textbook"), ("numba", "engine")):
        with convnet.backend(old):
            assert convnet.get_backend() == old and backends.tier() == new


def test_a_layer_the_engine_does_not_know_runs_its_own_math(rng):
    class Double(layers.Layer):
        def call(self, x, training):
            return 2 * x

        def backprop(self, dz):
            return 2 * dz

    layer = Double(input_shape=(3,))
    x = rng.standard_normal((2, 3)).astype(np.float32)
    model = convnet.Sequential([layer])
    assert model.runner().plan(True).groups[0].math is layer
    np.testing.assert_array_equal(model.forward(x), 2 * x)


def test_the_textbook_tier_never_loads_numba_nor_the_engine():
    """Train, predict, evaluate and check gradients on the textbook tier in a fresh process."""
    code = """
import sys
import numpy as np
import convnet
from convnet import gradcheck, layers
convnet.set_backend("textbook")
model = convnet.Sequential([layers.Conv2D(2, 3, activation="relu"), layers.MaxPool2D(2), layers.Dropout(0.3),
                            layers.Flatten(), layers.Dense(3, activation="softmax")], input_shape=(8, 8, 1), seed=0)
model.compile("adam")
x, y = np.random.default_rng(0).random((12, 8, 8, 1), dtype=np.float32), np.arange(12) % 3
model.fit(x, y, epochs=1, batch_size=4, verbose=0)
model.predict(x)
model.evaluate(x, y)
model.astype(np.float64)
assert max(gradcheck.check_model(model, x[:2], y[:2]).values()) < 1e-6
assert max(gradcheck.check_layer(model.layers[-1], model.layers[-2].output).values()) < 1e-6
print(sorted(name for name in sys.modules if name.split(".")[0] == "numba" or name.startswith("convnet.engine")))
"""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
