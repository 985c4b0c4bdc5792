"""The engine's plan (convnet.engine.plan) against the engine's layers run one at a time.

``train_step`` on the engine fuses groups of layers and runs runs of them
(conv, pool, dropout) as one pass per thread. These tests hold it, bit for
bit, to the same layers called one by one (the plan made with
``fuse=False``, each layer sharing its own work between threads): every layer's output,
preactivation, gradients and the updated weights, for models that take each
branch (a ReLU conv fused with its pool, a pool it does not fuse, a conv
without activation, a ReLU conv that cannot join a run, dropout that draws no
mask), batch sizes that do not split evenly, and 1 or 2 threads. The
textbook comparison of ``train_step`` is in ``test_tiers.py``.
"""
import numpy as np
import pytest

import convnet
from convnet import Sequential, layers
from convnet.engine import EngineModel, plan, threads

ATTRS = ("output", "preactivation", "grad_output", "grad_input")

MODELS = [
    ("seed-like: conv relu, 2x2 pool, dropout, twice",
     lambda: [layers.Conv2D(6, 3, activation="relu"), layers.MaxPool2D(2), layers.Dropout(0.25),
              layers.Conv2D(5, 3, activation="relu"), layers.MaxPool2D(2), layers.Dropout(0.25),
              layers.Flatten(), layers.Dense(10, activation="softmax")], (14, 14, 2)),
    ("overlapping pool after a relu conv, padding same, strides",
     lambda: [layers.Conv2D(5, 3, strides=2, padding="same", activation="relu"),
              layers.MaxPool2D(3, strides=2, padding="same"), layers.Dropout(0.5), layers.Flatten(),
              layers.Dense(3, activation="softmax")], (9, 10, 2)),
    ("conv without activation and pool; a relu conv before dropout runs alone",
     lambda: [layers.Conv2D(3, 3), layers.MaxPool2D(2), layers.Conv2D(4, 2, activation="relu"),
              layers.Dropout(0.3), layers.Flatten(), layers.Dense(4, activation="softmax")], (11, 11, 1)),
    ("dropout with rate 0 splits the run",
     lambda: [layers.Conv2D(4, 3, activation="relu"), layers.MaxPool2D(2), layers.Dropout(0.0),
              layers.Conv2D(3, 2), layers.Dropout(0.5), layers.Flatten(), layers.Dense(3)], (10, 10, 1)),
]


def layer_by_layer_step(model, x, y):
    """``train_step``'s body with the engine's layers one at a time, nothing fused."""
    run = EngineModel(model.layers, fuse=False)
    with run.running():
        out = run.forward(x, training=True)
        loss, dout, pre = model.compute_loss(y, out)
        run.backward(dout, preactivation=pre, input_grad=False)
        run.apply(model.optimizer, model.params_and_grads())
    return loss


def trained(make, shape, x, y, step, steps=3):
    model = Sequential(make(), input_shape=shape, seed=5)
    model.compile(optimizer="adam")
    model.seed_dropout(1, 0)
    per = len(x) // steps
    losses = [step(model, x[per * s:per * (s + 1)], y[per * s:per * (s + 1)]) for s in range(steps)]
    return model, losses


def assert_identical(a, b):
    for la, lb in zip(a.layers, b.layers):
        for attr in ATTRS:
            va, vb = getattr(la, attr), getattr(lb, attr)
            assert (va is None) == (vb is None), (la.name, attr)
            if va is not None:
                np.testing.assert_array_equal(va, vb, err_msg=f"{la.name}.{attr}")
        for key in la.grads:
            np.testing.assert_array_equal(la.grads[key], lb.grads[key], err_msg=f"{la.name} d{key}")
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


@pytest.mark.parametrize("make,shape", [m[1:] for m in MODELS], ids=[m[0] for m in MODELS])
@pytest.mark.parametrize("per_step", [1, 7, 16])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_train_step_is_the_layer_by_layer_engine_bit_for_bit(rng, monkeypatch, make, shape, per_step, n_threads):
    monkeypatch.setattr(threads, "MIN_SPLIT_ELEMENTS", 0)          # split even these small batches
    x = rng.standard_normal((3 * per_step,) + shape).astype(np.float32)
    y = rng.integers(0, 3, len(x))
    threads.set_num_threads(n_threads)
    try:
        runs, run_losses = trained(make, shape, x, y, lambda m, xb, yb: m.train_step(xb, yb)[0])
        plain, plain_losses = trained(make, shape, x, y, layer_by_layer_step)
    finally:
        threads.set_num_threads(threads._from_environment())
    assert run_losses == plain_losses
    assert_identical(runs, plain)


def runs(model_layers, training=True):
    return plan.make(model_layers, training).runs()


def test_the_runs_found_in_each_model():
    def found(make, shape):
        return runs(Sequential(make(), input_shape=shape).layers)
    assert [found(*m[1:]) for m in MODELS] == [[(0, 6)], [(0, 3)], [(0, 2)], [(0, 2), (3, 5)]]
    # a relu conv needs the pool that computes its ReLU's gradient; the last layer never joins
    assert found(lambda: [layers.Conv2D(2, 3, activation="relu"), layers.Dropout(0.5), layers.Flatten(),
                          layers.Dense(2)], (6, 6, 1)) == []
    assert found(lambda: [layers.Conv2D(2, 3), layers.MaxPool2D(2)], (6, 6, 1)) == []
    assert found(lambda: [layers.Conv2D(2, 3), layers.MaxPool2D(2), layers.Flatten()], (6, 6, 1)) == [(0, 2)]
    model = Sequential(MODELS[0][1](), input_shape=MODELS[0][2])
    model.layers[2].fixed_mask = np.ones((6, 6, 6), np.float32)     # a fixed mask: the textbook call
    assert runs(model.layers) == [(0, 2), (3, 6)]
    assert runs(model.layers, training=False) == [(0, 2), (3, 5)]


def test_seed_model_step_takes_four_hand_offs(rng, make_seed_model, monkeypatch):
    """The point of the module: forward run, dense backward products, backward run, Adam."""
    model = make_seed_model(0)
    model.compile(optimizer="adam")
    x, y = rng.random((32, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 32)
    threads.set_num_threads(2)
    monkeypatch.setattr(threads, "LATE_SPLITS", 10 ** 9)          # no fallback to one thread, even if busy
    calls = []
    original = threads._run_blocks
    monkeypatch.setattr(threads, "_run_blocks", lambda fn, bounds: calls.append(fn) or original(fn, bounds))
    try:
        model.train_step(x, y)
        model.train_step(x, y)
    finally:
        threads.set_num_threads(threads._from_environment())
    assert len(calls) == 8


def test_an_input_the_first_layer_would_cast_runs_layer_by_layer(rng):
    make, shape = MODELS[0][1:]
    x = rng.standard_normal((12,) + shape)                          # float64 into a float32 model
    y = rng.integers(0, 3, 12)
    runs, _ = trained(make, shape, x, y, lambda m, xb, yb: m.train_step(xb, yb)[0])
    plain, _ = trained(make, shape, x, y, layer_by_layer_step)
    assert_identical(runs, plain)


def test_the_textbook_backend_runs_its_own_forward(rng):
    """On the textbook tier train_step is the textbook forward and backward: nothing of the engine."""
    make, shape = MODELS[0][1:]
    x, y = rng.standard_normal((8,) + shape).astype(np.float32), rng.integers(0, 3, 8)
    with convnet.backend("textbook"):
        model = Sequential(make(), input_shape=shape, seed=5)
        model.compile(optimizer="adam")
        assert isinstance(model.runner(), convnet.loop.LayerLoop)
        model.train_step(x, y)
        assert all(layer.output is not None for layer in model.layers)


def test_backward_after_a_forward_without_training_passes_dropout_through(rng):
    """No mask was drawn: each dropout's backward is the identity, as in the textbook."""
    make, shape = MODELS[0][1:]
    x, dout = rng.standard_normal((6,) + shape).astype(np.float32), rng.standard_normal((6, 10)).astype(np.float32)
    grads = []
    for run in (lambda m: m.backward(dout, preactivation=True),
                lambda m: EngineModel(m.layers, fuse=False).backward(dout, preactivation=True)):
        model = Sequential(make(), input_shape=shape, seed=5)
        model.forward(x, training=False)
        run(model)
        grads.append([g.copy() for layer in model.layers for g in layer.grads.values()])
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)


def test_one_plan_per_model_kept_while_the_layers_stay_the_same(rng):
    make, shape = MODELS[0][1:]
    model = Sequential(make(), input_shape=shape, seed=5)
    model.compile(optimizer="adam")
    x, y = rng.standard_normal((6,) + shape).astype(np.float32), rng.integers(0, 3, 6)
    model.train_step(x, y)
    first = model.runner().plan(True)
    model.train_step(x, y)
    assert model.runner().plan(True) is first
    model.layers[2].fixed_mask = np.ones((6, 6, 6), np.float32)     # the dropout no longer draws: a new plan
    assert model.runner().plan(True) is not first
    assert model.runner().plan(True).runs() == [(0, 2), (3, 6)]


def test_every_record_a_group_lists_is_written_by_a_training_step(rng):
    """The plan says what each group writes on its layers; a step writes exactly those records anew."""
    make, shape = MODELS[0][1:]
    model = Sequential(make(), input_shape=shape, seed=5)
    model.compile(optimizer="adam")
    x, y = rng.standard_normal((6,) + shape).astype(np.float32), rng.integers(0, 3, 6)
    model.train_step(x, y)
    groups = model.runner().plan(True).groups
    assert [g.kind for g in groups[:4]] == ["conv + bias + ReLU + pool", "dropout"] * 2
    by_name = {layer.name: layer for layer in model.layers}
    records = [r for g in groups for r in g.records]
    assert len(records) == len(set(records))                        # each record has one writer
    assert {name for name, _ in records} == set(by_name)
    def seen(name, attr):
        value = getattr(by_name[name], attr)
        return tuple(value.values()) if attr == "grads" else (value,)    # grads: the dict's arrays
    before = {(name, attr): seen(name, attr) for name, attr in records}
    model.train_step(x, y)
    for (name, attr), old in before.items():
        new = seen(name, attr)
        if (name, attr) == (model.layers[0].name, "grad_input"):
            assert new == (None,)                                    # nobody needs dL/d(input)
        else:
            assert all(v is not None and v is not o for v, o in zip(new, old)), (name, attr)


def test_the_plan_in_words_names_every_group():
    text = EngineModel(Sequential(MODELS[0][1](), input_shape=MODELS[0][2]).layers).plan(True).describe()
    assert text.splitlines()[0] == ("one hand-off: conv2d + max_pooling2d: conv + bias + ReLU + pool; dropout: dropout; "
                                    "conv2d_1 + max_pooling2d_1: conv + bias + ReLU + pool; dropout_1: dropout")
    assert "writes dropout.preactivation, dropout.output, dropout.mask, dropout.grad_output, dropout.grad_input" in text
