"""The explorer's computations (experiments/explore/core.py), without HTTP.

Each view's numbers are checked against the model itself: the activations
against ``forward``, a unit's dot product against the layer's
preactivation, the backward view against the layers' gradients and
convnet.study's saliency, the previewed Adam step against the applied
one, and the gradient check against a known-correct backward.
"""
import time

import numpy as np
import pytest

import convnet
from convnet import study
from convnet.architectures import mnist_cnn
from experiments.explore import core
from experiments.explore.core import ExploreError, Explorer, decode
from explore_support import in_threads


def _model(seed=0):
    """The reference architecture with small random biases (zero biases would put blank regions on ReLU kinks)."""
    model = mnist_cnn(seed=seed)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if "bias" in layer.params:
            layer.params["bias"][...] = rng.uniform(-0.05, 0.05, layer.params["bias"].shape)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def explorer():
    e = Explorer(_model(), model_path="test")
    yield e
    e.close()


@pytest.fixture
def make_explorer():
    """Explorers closed (training stopped, BLAS threads restored) after the test."""
    made = []

    def make(model=None, **kwargs):
        made.append(Explorer(model if model is not None else _model(), model_path="test", **kwargs))
        return made[-1]
    yield make
    for e in reversed(made):
        e.close()


@pytest.fixture
def image():
    rng = np.random.default_rng(3)
    img = np.zeros((28, 28), np.float32)
    img[6:22, 9:19] = rng.uniform(0.3, 1.0, (16, 10))       # a block of ink, blank border
    return img


def test_encode_round_trip():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 5
    d = core.encode(a)
    assert d["shape"] == [2, 3, 4] and d["min"] == -5 and d["max"] == 18
    np.testing.assert_array_equal(decode(d), a)


def test_predict_layers_are_the_models_outputs(explorer, image):
    r = explorer.predict(None, image, layers=True)
    ref = _model()
    out = ref.forward(image[None, :, :, None], training=False)
    assert r["prediction"] == int(out[0].argmax())
    np.testing.assert_allclose(r["probabilities"], out[0], rtol=1e-5, atol=1e-7)
    assert [l["name"] for l in r["layers"]] == [l.name for l in ref.layers]
    for entry, layer in zip(r["layers"], ref.layers):
        np.testing.assert_allclose(decode(entry["output"]), layer.output[0], rtol=1e-5, atol=1e-6)


def test_conv_unit_is_the_dot_product_the_layer_computed(explorer, image):
    u = explorer.unit(None, image, 0, [10, 7, 5])
    ins, ws, ps = decode(u["inputs"]), decode(u["weights"]), decode(u["products"])
    np.testing.assert_array_equal(ins[..., 0], image[10:14, 7:11])
    np.testing.assert_allclose(ps, ins * ws, rtol=1e-6)
    assert u["z"] == pytest.approx(u["preactivation"], abs=1e-5)
    assert u["value"] == pytest.approx(max(u["z"], 0), abs=1e-5)
    assert u["receptive_field"] == {"top": 10, "bottom": 13, "left": 7, "right": 10, "whole": False}


def test_deeper_units(explorer, image):
    conv2 = explorer.unit(None, image, 3, [3, 2, 1])     # conv2d_1: 4x4 over pool(2) over 4x4 conv
    assert conv2["z"] == pytest.approx(conv2["preactivation"], rel=1e-4, abs=1e-5)
    assert len(conv2["channel_sums"]) == 32
    assert conv2["sum"] == pytest.approx(sum(conv2["channel_sums"]), rel=1e-6, abs=1e-6)
    # rows 3..6 of pool1 -> rows 6..13 of conv1 -> rows 6..16 of the input
    assert conv2["receptive_field"] == {"top": 6, "bottom": 16, "left": 4, "right": 14, "whole": False}
    pool = explorer.unit(None, image, 1, [5, 5, 2])
    assert pool["kind"] == "max" and pool["max"] == pytest.approx(pool["value"])
    assert np.max(pool["values"]) == pytest.approx(pool["value"])
    # the winner is [row, column] of the window's first maximum in scan order
    winners = []
    for position in ([5, 5, 2], [6, 4, 0], [3, 7, 9], [7, 6, 17], [4, 8, 30], [8, 3, 11]):
        u = explorer.unit(None, image, 1, position)
        values = np.array(u["values"])
        assert u["winner"] == list(np.unravel_index(np.argmax(values), values.shape))
        winners.append(u["winner"])
    assert any(r != c for r, c in winners)
    flat = explorer.unit(None, image, 6, [37])
    assert flat["source"] == list(np.unravel_index(37, (4, 4, 32)))
    assert flat["input_value"] == pytest.approx(flat["value"])
    dense = explorer.unit(None, image, 9, [4])
    assert dense["z"] == pytest.approx(dense["preactivation"], rel=1e-4, abs=1e-5)
    assert dense["receptive_field"]["whole"]
    assert len(dense["top"]) == 12
    with pytest.raises(ExploreError, match="within"):
        explorer.unit(None, image, 0, [25, 0, 0])
    with pytest.raises(ExploreError, match="layer must be"):
        explorer.unit(None, image, 10, [0])


def test_backward_view_is_the_chain_of_layer_gradients(explorer, image):
    b = explorer.backward(None, image, 3)
    ref = _model()
    x = image[None, :, :, None]
    saliency = study.saliency_map(ref, x, target=3)
    np.testing.assert_allclose(decode(b["saliency"]), saliency[0, :, :, 0], rtol=1e-4, atol=1e-7)
    out = ref.forward(x)
    loss, dout, pre = ref.compute_loss(np.array([3]), out)
    dx = ref.backward(dout, preactivation=pre)
    assert b["loss"] == pytest.approx(loss, rel=1e-5)
    np.testing.assert_allclose(decode(b["input_gradient"]), dx[0, :, :, 0], rtol=1e-4, atol=1e-8)
    layers = b["layers"]
    for below, above in zip(layers, layers[1:]):       # what leaves a layer arrives at the one below
        np.testing.assert_array_equal(decode(above["grad_input"]), decode(below["grad_output"]))
    for entry, layer in zip(layers, ref.layers):
        for k, g in layer.grads.items():
            np.testing.assert_allclose(decode(entry["params"][k]["grad"]), g, rtol=1e-4, atol=1e-8)
            assert entry["params"][k]["grad_norm"] == pytest.approx(np.linalg.norm(g), rel=1e-4)
    # the last layer's dL/dz is p - onehot(target) for one example
    p = np.array(b["probabilities"])
    np.testing.assert_allclose(decode(layers[-1]["grad_output"]), p - np.eye(10)[3], atol=1e-6)


def test_gradcheck_agrees_and_catches_a_wrong_gradient(explorer, image, monkeypatch):
    r = explorer.gradcheck(None, image, 5, per_tensor=3)
    keys = [t["tensor"] for t in r["tensors"]]
    assert keys == ["input"] + [k for k, _, _ in explorer.base.params_and_grads()]
    for t in r["tensors"]:
        assert len(t["entries"]) == 3 and t["kinks"] == 0
        assert t["norm_error"] < 1e-5, t
    # a backward that is off by 10% in one layer must show up
    from convnet import layers

    original = layers.Dense.backprop

    def wrong(self, dz):
        dx = original(self, dz)
        self.grads["kernel"] = self.grads["kernel"] * 1.1
        return dx
    monkeypatch.setattr(layers.Dense, "backprop", wrong)
    with convnet.backend("numpy"):                      # the patched textbook Dense runs
        r = explorer.gradcheck(None, image, 5, per_tensor=3)
    errors = {t["tensor"]: t["norm_error"] for t in r["tensors"]}
    assert errors["dense_1/kernel"] > 1e-2 and errors["conv2d/kernel"] < 1e-5


def test_gradcheck_marks_entries_at_a_kink(explorer):
    # a flat block of ink: max-pool windows full of ties, so nudging one pixel changes a winner
    flat = np.zeros((28, 28), np.float32)
    flat[5:20, 10:16] = 1
    r = explorer.gradcheck(None, flat, 3, per_tensor=10)
    pixels = r["tensors"][0]
    assert pixels["tensor"] == "input" and pixels["kinks"] > 0
    for e in pixels["entries"]:
        if not e["kink"]:
            assert e["relative_error"] < 1e-5 or abs(e["analytic"] - e["numeric"]) < 1e-9
    # the weights are smooth there: no kinks, every error small
    assert all(t["kinks"] == 0 and t["norm_error"] < 1e-5 for t in r["tensors"][1:])


def test_previewed_step_is_the_applied_step_and_reset_restores(image, make_explorer):
    explorer = make_explorer()
    s = explorer.session("0" * 32)
    before = s.model.get_weights()
    preview = explorer.preview_step(s, image, 7)
    np.testing.assert_array_equal(s.model.get_weights()[0], before[0])      # a preview changes nothing
    assert s.model.optimizer.iterations == 0
    assert preview["optimizer"]["name"] == "Adam" and preview["optimizer"]["iterations_after"] == 1
    assert preview["optimizer"]["lr_t"] == pytest.approx(1e-3 * np.sqrt(1 - 0.999) / (1 - 0.9))
    assert preview["loss_after"] < preview["loss"]
    applied = explorer.apply_step(s, image, 7)
    after = s.model.get_weights()
    for p, old, new in zip(preview["params"], before, after):
        np.testing.assert_array_equal(decode(p["update"]), (new - old).astype(np.float32))
    # Adam's first step moves every weight with a nonzero gradient by about lr
    conv = decode(preview["params"][0]["update"])
    assert np.abs(conv).max() == pytest.approx(1e-3, rel=1e-3)
    assert applied["steps_applied"] == 1 and applied["probabilities"][7] == pytest.approx(
        preview["probabilities_after"][7], rel=1e-5)
    for w, b in zip(explorer.base.get_weights(), before):          # the loaded model is untouched
        np.testing.assert_array_equal(w, b)
    explorer.reset(s)
    for w, b in zip(s.model.get_weights(), before):
        np.testing.assert_array_equal(w, b)
    assert s.model.optimizer.iterations == 0


def test_sessions_are_independent_and_bounded(image, make_explorer):
    explorer = make_explorer(max_sessions=2)
    a, b = explorer.session("a" * 32), explorer.session("b" * 32)
    explorer.apply_step(a, image, 1)
    pa = explorer.predict(a, image)["probabilities"]
    pb = explorer.predict(b, image)["probabilities"]
    assert pa != pb and pb == explorer.predict(None, image)["probabilities"]
    explorer.session("c" * 32)                      # a third page: the least recently used goes
    assert set(explorer.sessions) == {"b" * 32, "c" * 32}
    assert explorer.session("a" * 32).steps_applied == 0
    with pytest.raises(ExploreError, match="session"):
        explorer.apply_step(None, image, 1)


def _wait(run, seconds=120):
    deadline = time.monotonic() + seconds
    while run.running and time.monotonic() < deadline:
        time.sleep(0.05)
    return run.status()


@pytest.mark.slow
def test_live_training_learns_and_stops(make_explorer):
    explorer = make_explorer()
    s = explorer.session("d" * 32)
    first = explorer.start_training(s, images=640, epochs=1, batch_size=32, seed=1)
    assert first["steps"] == 20
    with pytest.raises(ExploreError, match="already"):
        explorer.start_training(s, images=640)
    st = _wait(s.training)
    assert st["state"] == "finished", st["message"]
    assert st["step"] == 20 and st["curve"]["step"][-1] == 20
    assert st["curve"]["loss"][-1] < st["curve"]["loss"][0]
    assert set(st["grad_norms"]) == {k for k, _, _ in explorer.base.params_and_grads()}
    assert all(len(v) == len(st["curve"]["step"]) for v in st["grad_norms"].values())
    assert decode(st["filters"]).shape == (4, 4, 1, 32)
    explorer.use_trained(s)
    np.testing.assert_array_equal(s.model.get_weights()[0], s.training.model.get_weights()[0])
    # a long run stopped at once: it ends after the current batch, and the slot is free again
    other = explorer.session("e" * 32)
    explorer.start_training(other, images=60000, epochs=5)
    with pytest.raises(ExploreError, match="another page"):
        explorer.start_training(s, images=640)
    explorer.stop_training(other)
    st = _wait(other.training)
    assert st["state"] == "stopped" and st["step"] < st["steps"]
    explorer.start_training(s, images=100, batch_size=100)
    assert _wait(s.training)["state"] == "finished"


@pytest.mark.slow
def test_pages_get_right_answers_while_a_model_trains(make_explorer, image):
    """Requests of other pages run beside the training thread: each gets its own model's numbers."""
    explorer = make_explorer()
    trainer = explorer.session("f" * 32)
    expected = explorer.predict(None, image, layers=True)
    explorer.start_training(trainer, images=3200, epochs=1, batch_size=32)

    def page(n):
        s = explorer.session(f"{n:032x}")
        for _ in range(15):
            r = explorer.predict(s, image, layers=True)
            assert r["probabilities"] == expected["probabilities"]
            b = explorer.backward(s, image, 2)
            assert b["probabilities"] == expected["probabilities"]
    errors = in_threads(page, 3)
    explorer.stop_training(trainer)
    assert _wait(trainer.training)["state"] in ("stopped", "finished")
    assert not errors, errors[:2]


def test_step_learning_rate_of_constants_schedules_and_no_optimizer():
    from convnet import optimizers, schedules

    assert core.step_learning_rate(optimizers.SGD(0.05))[0] == 0.05
    assert core.step_learning_rate(None)[0] == 1e-3
    cosine = optimizers.Adam(schedules.CosineDecay(2e-3, decay_steps=10))
    cosine.iterations = 50                                  # past the end of the decay: the schedule gives 0
    rate, source = core.step_learning_rate(cosine)
    assert rate == 2e-3 and "initial rate of the model's CosineDecay" in source and "at 0" in source
    warm = optimizers.Adam(schedules.CosineDecay(1e-4, 10, warmup_target=3e-3, warmup_steps=5))
    assert core.step_learning_rate(warm)[0] == 3e-3
    steps = optimizers.SGD(schedules.PiecewiseConstantDecay([5], [0.1, 0.01]))
    assert core.step_learning_rate(steps)[0] == 0.1


def test_a_step_after_a_finished_cosine_schedule_moves_the_model(image, make_explorer):
    """The default recipe's model: Adam, a cosine decay that has reached 0, averaged weights."""
    from convnet import optimizers, schedules

    model = _model()
    model.compile(optimizer=optimizers.Adam(schedules.CosineDecay(1e-3, decay_steps=3), use_ema=True),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    model.fit(rng.uniform(0, 1, (64, 28, 28, 1)).astype(np.float32), rng.integers(0, 10, 64), epochs=1,
              batch_size=16, verbose=0)
    assert model.optimizer.iterations == 4 and model.optimizer.current_learning_rate() == 0
    explorer = make_explorer(model=model)
    s = explorer.session("1" * 32)
    preview = explorer.preview_step(s, image, 7)
    o = preview["optimizer"]
    assert o["learning_rate"] == 1e-3 and o["schedule"]["class_name"] == "CosineDecay"
    assert o["iterations_before"] == 4 and o["lr_t"] == pytest.approx(1e-3 * np.sqrt(1 - 0.999 ** 5) / (1 - 0.9 ** 5))
    assert preview["loss_after"] < preview["loss"]
    before = s.model.get_weights()
    applied = explorer.apply_step(s, image, 7)
    assert applied["loss_after"] == pytest.approx(preview["loss_after"], rel=1e-5)
    assert not np.array_equal(s.model.get_weights()[0], before[0])
    assert s.model.optimizer.iterations == 5
    # the page's own rate is used and kept for the next steps; out of bounds is refused
    same = explorer.preview_step(s, image, 7, learning_rate=1e-3)["optimizer"]      # the field, unchanged
    assert same["learning_rate"] == 1e-3 and "CosineDecay" in same["learning_rate_source"]
    assert explorer.preview_step(s, image, 7, learning_rate=0.01)["optimizer"]["learning_rate"] == 0.01
    assert explorer.apply_step(s, image, 7)["optimizer"]["learning_rate"] == 0.01
    with pytest.raises(ExploreError, match="learning_rate must be in"):
        explorer.preview_step(s, image, 7, learning_rate=0.0)


def test_backward_shows_dl_dz_and_what_each_gate_let_through(explorer, image):
    b = explorer.backward(None, image, 3)
    by_name = {l["name"]: l for l in b["layers"]}
    conv = by_name["conv2d"]
    y = decode(explorer.predict(None, image, layers=True)["layers"][0]["output"])
    dy, dz = decode(conv["grad_output"]), decode(conv["grad_preactivation"])
    np.testing.assert_array_equal(dz, dy * (y > 0))               # the ReLU gate, as activations.ReLUFunction
    gate = conv["gate"]
    assert gate["units"] == y.size and gate["dark"] == int((y <= 0).sum())
    assert gate["dark_with_grad_output"] == int(((y <= 0) & (dy != 0)).sum()) > 0
    assert gate["dark_with_grad_z"] == 0
    pool = by_name["max_pooling2d"]
    assert "grad_preactivation" not in pool
    # one winner per window: at most as many inputs with a gradient as windows
    assert 0 < pool["winners"]["inputs_with_gradient"] <= pool["winners"]["windows"]
    top = b["layers"][-1]
    assert top["fused"] and decode(top["grad_preactivation"]).tolist() == decode(top["grad_output"]).tolist()
    # the weights the page shows beside these gradients are the same model's
    weights = explorer.weights(None)["layers"][0]["params"]["kernel"]
    np.testing.assert_array_equal(decode(weights), explorer.base.layers[0].params["kernel"])
    assert conv["params"]["kernel"]["grad"]["shape"] == weights["shape"]


def test_gradcheck_samples_entries_whose_gradient_is_not_zero(explorer, image):
    r = explorer.gradcheck(None, image, 5, per_tensor=3)
    for t in r["tensors"]:
        assert t["sampled"] == 3 and len(t["entries"]) == 3
        if t["tensor"] != "input":
            assert t["pool"] == t["nonzero"] and t["pool_kind"] == "non-zero gradient entries"
            assert all(e["analytic"] != 0 for e in t["entries"]), t
    dense = next(t for t in r["tensors"] if t["tensor"] == "dense/kernel")
    assert dense["nonzero"] < dense["size"]            # dead ReLU units: many zero entries, none of them sampled
