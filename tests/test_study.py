"""Backprop inspection: layer statistics, the kink-aware gradient check, saliency and the CLI."""
import numpy as np
import pytest

import convnet
from convnet import Sequential, callbacks, gradcheck, layers, study
from convnet.saving import save_model
from experiments import backprop


def small_mnist_model(seed=0):
    """Two conv layers on 28x28x1 like the seed model, but small enough to check quickly."""
    return Sequential([layers.Conv2D(4, 4, strides=2, activation="relu"), layers.MaxPool2D(2),
                       layers.Dropout(0.25), layers.Conv2D(6, 3, activation="relu"), layers.Flatten(),
                       layers.Dense(8, activation="relu"), layers.Dense(10, activation="softmax")],
                      input_shape=(28, 28, 1), seed=seed)


def randomise_biases(model, rng, scale=0.1):
    for layer in model.trainable_layers():
        layer.params["bias"][...] = rng.normal(0, scale, layer.params["bias"].shape)
    return model


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    return rng.random((5, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, size=5)


# ------------------------------------------------------------- statistics
def test_layer_statistics_follow_the_chain_rule(batch):
    x, y = batch
    model = randomise_biases(small_mnist_model(), np.random.default_rng(1))
    loss, rows = study.layer_statistics(model, x, y)
    assert np.isfinite(loss) and loss > 0
    assert [r["name"] for r in rows] == [l.name for l in model.layers]
    assert rows[0]["output_shape"] == (5, 13, 13, 4) and rows[-1]["output_shape"] == (5, 10)
    # what leaves a layer downwards is what arrives at the layer below
    for below, above in zip(rows, rows[1:]):
        assert below["grad_in"] == pytest.approx(above["grad_out"], rel=1e-6)
    for row, layer in zip(rows, model.layers):
        for k, g in layer.grads.items():
            assert row["param_grads"][k] == pytest.approx(float(np.linalg.norm(g)), rel=1e-6)
        assert row["mean"] == pytest.approx(float(layer.output.mean()), rel=1e-5, abs=1e-7)
    assert rows[-1]["mean"] == pytest.approx(0.1, rel=1e-5)          # softmax rows sum to 1


def test_dead_units_are_counted(batch):
    x, y = batch
    model = small_mnist_model()
    dense = model.layers[5]
    dense.params["bias"][:3] = -1e3                     # 3 of 8 units can never fire
    dense.params["bias"][3:] = 1e3                      # the other 5 always fire
    _, rows = study.layer_statistics(model, x, y)
    assert rows[5]["dead_fraction"] == pytest.approx(3 / 8)
    assert rows[5]["zero_fraction"] == pytest.approx(3 / 8)
    assert rows[4]["dead_fraction"] is None             # Flatten has no ReLU
    text = study.format_layer_statistics(rows)
    assert "dense (Dense)" in text and "38%" in text


# ------------------------------------------------------------ gradient check
def test_gradient_check_passes_for_the_real_backward(batch):
    x, y = batch
    model = randomise_biases(small_mnist_model(), np.random.default_rng(2))
    results = study.gradient_check(model, x[:2], y[:2], max_entries=4)
    assert set(results) == {"input"} | {k for k, _, _ in model.params_and_grads()}
    checked = {k: r for k, r in results.items() if r["checked"]}
    assert len(checked) >= 8                                     # nearly everything was comparable
    assert max(r["error"] for r in checked.values()) < 1e-5
    assert model.layers[0].params["kernel"].dtype == np.float32  # the model itself stays float32


def test_gradient_check_catches_a_wrong_backward(batch, monkeypatch):
    x, y = batch
    model = randomise_biases(small_mnist_model(), np.random.default_rng(2))
    original = layers.Dense.backprop

    def off_by_ten_percent(self, dz):
        dx = original(self, dz)
        self.grads["kernel"] = self.grads["kernel"] * 1.1
        return dx

    monkeypatch.setattr(layers.Dense, "backprop", off_by_ten_percent)
    with convnet.backend("textbook"):                          # the textbook Dense, patched
        results = study.gradient_check(model, x[:2], y[:2], max_entries=30)
    assert results["dense/kernel"]["error"] > 0.03
    assert results["conv2d/kernel"]["error"] < 1e-5


def test_kinks_of_an_untrained_model_are_detected_and_jitter_removes_them():
    model = small_mnist_model()                          # zero biases
    x = np.zeros((2, 28, 28, 1), np.float32)
    x[:, 8:20, 12:16] = 1.0                              # a bar on a blank background
    y = np.array([1, 7])
    plain = study.gradient_check(model, x, y, max_entries=4)
    assert plain["conv2d/bias"]["kinks"] == 4           # every bias entry moves blank windows off z = 0
    assert plain["conv2d/bias"]["checked"] == 0 and np.isnan(plain["conv2d/bias"]["error"])
    jittered = study.gradient_check(model, x, y, max_entries=4, jitter_zero_biases=True)
    assert jittered["conv2d/bias"]["checked"] > 0 and jittered["conv2d/bias"]["error"] < 1e-5
    assert not np.any(model.layers[0].params["bias"])   # the jitter happened in the copy only
    assert "conv2d/bias" in study.format_gradient_check(jittered)


# -------------------------------------------------------------------- saliency
@pytest.mark.parametrize("through", ["logit", "probability"])
def test_saliency_is_the_gradient_of_the_class_score(batch, through):
    x, _ = batch
    model = randomise_biases(small_mnist_model(), np.random.default_rng(4)).astype(np.float64)
    x = x[:2].astype(np.float64)
    target = np.array([3, 8])
    sal = study.saliency_map(model, x, target=target, through=through)
    assert sal.shape == x.shape
    last = model.layers[-1]
    for n in range(2):
        def score():
            model.forward(x)
            values = last.preactivation if through == "logit" else last.output
            return values[n, target[n]]
        pixels = [(n, 10, 12, 0), (n, 14, 14, 0), (n, 5, 20, 0)]
        flat = [np.ravel_multi_index(idx, x.shape) for idx in pixels]
        numeric = gradcheck.numerical_gradient(score, x, h=1e-6, indices=flat)
        for idx in pixels:
            assert sal[idx] == pytest.approx(numeric[idx], rel=1e-4, abs=1e-9)


def test_saliency_rejects_unknown_mode(batch):
    with pytest.raises(ValueError, match="logit"):
        study.saliency_map(small_mnist_model(), batch[0], through="softmax")


# --------------------------------------------------------- gradient records
def test_gradient_norm_recorder_records_every_step(batch):
    x, y = batch
    x, y = np.repeat(x, 4, axis=0), np.repeat(y, 4)      # 20 examples
    model = small_mnist_model()
    model.compile("adam")
    recorder = callbacks.GradientNorms()
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[recorder])
    assert set(recorder.norms) == {k for k, _, _ in model.params_and_grads()}
    assert all(len(v) == 6 for v in recorder.norms.values())           # 3 batches x 2 epochs
    assert recorder.norms["dense_1/kernel"][-1] == pytest.approx(
        float(np.linalg.norm(model.layers[-1].grads["kernel"])), rel=1e-6)


def test_recorded_history_is_found_in_the_model_file(tmp_path, batch):
    x, y = batch
    model = small_mnist_model()
    model.compile("adam")
    history = model.fit(x, y, epochs=3, batch_size=5, verbose=0, record_gradients=True)
    path = save_model(model, tmp_path / "model.npz", history=history)
    norms = backprop.recorded_grad_norms(small_mnist_model(), str(path))
    assert set(norms) == {k for k, _, _ in model.params_and_grads()}
    assert norms["conv2d/kernel"] == [e["conv2d/kernel"] for e in history.history["grad_norms"]]
    assert backprop.recorded_grad_norms(small_mnist_model(), None) is None


# ------------------------------------------------------------------ pictures
def test_plots_are_written(tmp_path, batch):
    x, y = batch
    model = small_mnist_model()
    paths = [study.plot_feature_maps(model, x[0], tmp_path / "fm.png"),
             study.plot_saliency(x[:3], study.saliency_map(model, x[:3]), y[:3], y[:3], tmp_path / "s.png"),
             study.plot_gradient_norms({"a/kernel": [1.0, 0.5, 0.2], "a/bias": [0.3, 0.2, 0.1]},
                                         tmp_path / "g.png")]
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fm.png", "g.png", "s.png"]   # no temp files left


def test_feature_maps_need_a_conv_layer(tmp_path):
    model = Sequential([layers.Flatten(), layers.Dense(3)], input_shape=(4, 4, 1), seed=0)
    with pytest.raises(ValueError, match="Conv2D"):
        study.plot_feature_maps(model, np.zeros((4, 4, 1), np.float32), tmp_path / "x.png")


# ----------------------------------------------------------------------- CLI
def test_cli_on_a_saved_model(tmp_path, capsys):
    model = randomise_biases(small_mnist_model(), np.random.default_rng(5))
    model.compile("adam")
    path = save_model(model, tmp_path / "model.npz")
    out_dir = tmp_path / "out"
    code = backprop.main(["--model", str(path), "--batch-size", "6", "--steps", "3", "--check-entries", "3",
                          "--check-examples", "2", "--out", str(out_dir)])
    out = capsys.readouterr().out
    assert code == 0
    assert f"model: {path}" in out and "UNTRAINED" not in out
    assert "batch of 6 test digits" in out
    for layer in model.layers:
        assert f"{layer.name} ({type(layer).__name__})" in out
    assert "conv2d_1/kernel" in out and "rel. error" in out
    assert "training a fresh copy for 3 steps" in out
    assert sorted(p.name for p in out_dir.iterdir()) == [".convnet-outputs", "feature_maps.png", "filters.png",
                                                         "grad_norms.png", "saliency.png"]


def test_cli_errors(tmp_path, capsys):
    assert backprop.main(["--model", str(tmp_path / "missing.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert backprop.main(["--batch-size", "0"]) == 2
    assert "--batch-size must be at least 1" in capsys.readouterr().err


def test_cli_mistakes_are_found_before_the_work(tmp_path, capsys, monkeypatch):
    """--out a file, a model without Conv2D or of other shapes, a negative seed: one line each, exit 2,
    before MNIST is even loaded."""
    from convnet import Sequential, layers as L
    monkeypatch.setattr("convnet.datasets.load_mnist", lambda *a, **k: pytest.fail("MNIST was loaded"))
    model = small_mnist_model()
    good = save_model(model, tmp_path / "model.npz")
    (tmp_path / "notes.txt").write_text("mine")
    dense = Sequential([L.Flatten(), L.Dense(10, activation="softmax")], input_shape=(28, 28, 1), seed=0)
    other = Sequential([L.Conv2D(2, 3), L.Flatten(), L.Dense(3, activation="softmax")], input_shape=(8, 8, 1))
    cases = [(["--model", str(good), "--out", str(tmp_path / "notes.txt")], "is a file, not a directory"),
             (["--model", str(good), "--out", str(tmp_path / "notes.txt" / "sub")], "is a file, not a directory"),
             (["--model", str(save_model(dense, tmp_path / "dense.npz"))], "has no Conv2D layer"),
             (["--model", str(save_model(other, tmp_path / "other.npz"))], "needs (28, 28, 1) -> (10,)"),
             (["--seed", "-1"], "--seed must be a non-negative integer")]
    (tmp_path / "pictures").mkdir()
    (tmp_path / "pictures" / "filters.png").write_text("my own picture")
    cases.append((["--model", str(good), "--out", str(tmp_path / "pictures")],
                  "filters.png exist(s) and were not written by experiments.backprop"))
    for argv, message in cases:
        assert backprop.main(argv + ["--runs-dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / "pictures" / "filters.png").read_text() == "my own picture"


def test_default_without_runs_is_an_untrained_seed_model(tmp_path):
    model, description, path = backprop.load_or_init_model(None, runs_dir=str(tmp_path))
    assert path is None and "UNTRAINED" in description
    assert model.count_params() == 150_858
