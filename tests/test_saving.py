"""Saving and loading: exact round trips, exact resumption, atomic writes, clear errors on bad files."""
import json
import os
import zipfile

import numpy as np
import pytest

import convnet
from convnet import Sequential, layers, optimizers
from convnet.callbacks import Callback, ModelCheckpoint
from convnet.saving import ModelFileError, load_checkpoint, load_model, load_weights, save_model

pytestmark = pytest.mark.usefixtures("serial")       # many tiny training steps: one thread is faster


def small_model(seed=0, units=16):
    """A seed-model-like CNN on 10x10 inputs: fast, but every layer kind and dropout is there."""
    return Sequential([layers.Conv2D(4, 3, activation="relu"), layers.MaxPool2D(2), layers.Dropout(0.25),
                       layers.Flatten(), layers.Dense(units, activation="relu"), layers.Dropout(0.5),
                       layers.Dense(10, activation="softmax")], input_shape=(10, 10, 1), seed=seed)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(42)
    x = rng.random((96, 10, 10, 1), dtype=np.float32)
    y = rng.integers(0, 10, size=96)
    return x, y


@pytest.fixture
def trained(data):
    """A compiled model after one epoch, so the optimizer state is not trivial."""
    x, y = data
    model = small_model()
    model.compile(optimizers.Adam(2e-3))
    model.fit(x, y, epochs=1, batch_size=16, seed=7, verbose=0)
    return model


def leftovers(directory, keep):
    return sorted(set(os.listdir(directory)) - set(keep))


def rewrite(src, dst, drop=(), replace=None):
    """Copy the archive ``src`` to ``dst`` without the entries in ``drop``, with ``replace`` swapped in."""
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files if k not in drop}
    arrays.update(replace or {})
    with open(dst, "wb") as f:
        np.savez(f, **arrays)
    return dst


def json_bytes(obj):
    return np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)


# ------------------------------------------------------------ round trips
def test_round_trip_predicts_bit_for_bit(trained, data, tmp_path):
    path = trained.save(tmp_path / "model.npz")
    loaded = convnet.load_model(path)
    assert loaded.get_config() == trained.get_config()
    assert np.array_equal(loaded.predict(data[0]), trained.predict(data[0]))
    for a, b in zip(loaded.get_weights(), trained.get_weights()):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_seed_model_round_trip(tmp_path):
    from experiments.mnist import build_model
    model = build_model(seed=3)
    x = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    loaded = load_model(save_model(model, tmp_path / "seed.npz"))
    assert loaded.count_params() == 150_858
    assert loaded.optimizer is None                      # never compiled, so nothing stored
    assert np.array_equal(loaded.predict(x), model.predict(x))


def test_continued_training_is_identical(trained, data, tmp_path):
    x, y = data
    loaded = load_model(trained.save(tmp_path / "model.npz"))
    assert loaded.optimizer.get_config() == trained.optimizer.get_config()
    assert loaded.optimizer.iterations == trained.optimizer.iterations == 6
    h1 = trained.fit(x, y, epochs=3, initial_epoch=1, batch_size=16, seed=7, verbose=0)
    h2 = loaded.fit(x, y, epochs=3, initial_epoch=1, batch_size=16, seed=7, verbose=0)
    assert h1.history["loss"] == h2.history["loss"]
    for a, b in zip(trained.get_weights(), loaded.get_weights()):
        assert np.array_equal(a, b)


def test_optimizer_state_matters_for_continuation(trained, data, tmp_path):
    """Without the optimizer state the continuation differs: the round trip above is not vacuous."""
    x, y = data
    path = trained.save(tmp_path / "model.npz")
    no_state = load_model(save_model(trained, tmp_path / "weights_only.npz", include_optimizer=False))
    assert no_state.optimizer is None
    no_state.compile(optimizers.Adam(2e-3))
    with_state = load_model(path)
    with_state.fit(x, y, epochs=2, initial_epoch=1, batch_size=16, seed=7, verbose=0)
    no_state.fit(x, y, epochs=2, initial_epoch=1, batch_size=16, seed=7, verbose=0)
    assert not np.array_equal(with_state.get_weights()[0], no_state.get_weights()[0])


def test_sgd_momentum_and_float64_round_trip(data, tmp_path):
    x, y = data
    model = small_model().astype(np.float64)
    model.compile(optimizers.SGD(0.05, momentum=0.9, nesterov=True))
    model.fit(x, y, epochs=1, batch_size=32, seed=1, verbose=0)
    loaded = load_model(model.save(tmp_path / "sgd"))
    assert loaded.get_weights()[0].dtype == np.float64
    assert isinstance(loaded.optimizer, optimizers.SGD)
    assert loaded.optimizer.get_config() == {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True}
    state, restored = model.optimizer.get_state(), loaded.optimizer.get_state()
    assert state.keys() == restored.keys() and any(k.startswith("velocity/") for k in state)
    for key in state:
        assert np.array_equal(state[key], restored[key])


def test_npz_suffix_is_appended_like_numpy(trained, tmp_path):
    path = trained.save(tmp_path / "model")
    assert path == tmp_path / "model.npz" and path.is_file()
    assert os.listdir(tmp_path) == ["model.npz"]
    load_model(tmp_path / "model")                       # the name without suffix finds it too


def test_archive_needs_no_pickle(trained, tmp_path):
    path = trained.save(tmp_path / "model.npz")
    with np.load(path, allow_pickle=False) as z:
        names = set(z.files)
        assert all(z[k].dtype != object for k in z.files)
    assert {"format", "model_config", "compile_config", "weights/conv2d/kernel", "weights/dense_1/bias",
            "optimizer_state/iterations", "optimizer_state/m/conv2d/kernel"} <= names


# --------------------------------------------------------- checkpoints
def test_checkpoint_records_epoch_history_and_metadata(trained, tmp_path):
    history = {"loss": [2.5, 1.25], "accuracy": [0.1, 0.375]}
    path = save_model(trained, tmp_path / "ckpt.npz", epoch=2, history=history, metadata={"run": "a"})
    ckpt = load_checkpoint(path)
    assert (ckpt.epoch, ckpt.history, ckpt.metadata) == (2, history, {"run": "a"})
    assert load_checkpoint(trained.save(tmp_path / "plain.npz")).epoch == 0


class StopAfter(Callback):
    def __init__(self, epochs):
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs):
        if epoch + 1 == self.epochs:
            self.model.stop_training = True


def test_model_checkpoint_then_resume_equals_uninterrupted(data, tmp_path):
    """Train 3 epochs straight vs. stop after 1, reload the checkpoint, train 2 more."""
    x, y = data
    straight = small_model()
    straight.compile("adam")
    full = straight.fit(x, y, epochs=3, batch_size=16, seed=5, verbose=0)

    first = small_model()
    first.compile("adam")
    cb = ModelCheckpoint(tmp_path / "ckpt.npz", metadata={"note": "x"})
    first.fit(x, y, epochs=3, batch_size=16, seed=5, verbose=0, callbacks=[cb, StopAfter(1)])
    assert cb.epochs_completed == 1

    ckpt = load_checkpoint(tmp_path / "ckpt.npz")
    assert ckpt.epoch == 1 and ckpt.metadata == {"note": "x"} and len(ckpt.history["loss"]) == 1
    cb2 = ModelCheckpoint(tmp_path / "ckpt.npz", history=ckpt.history)
    ckpt.model.fit(x, y, epochs=3, batch_size=16, seed=5, verbose=0, initial_epoch=ckpt.epoch, callbacks=[cb2])

    final = load_checkpoint(tmp_path / "ckpt.npz")
    assert final.epoch == 3
    assert final.history["loss"] == full.history["loss"]
    assert final.history["accuracy"] == full.history["accuracy"]
    for a, b in zip(final.model.get_weights(), straight.get_weights()):
        assert np.array_equal(a, b)
    assert leftovers(tmp_path, ["ckpt.npz"]) == []


# ------------------------------------------------------------ atomicity
def test_failed_save_keeps_old_file_and_leaves_no_temp_files(trained, tmp_path, monkeypatch):
    path = trained.save(tmp_path / "model.npz")
    before = path.read_bytes()

    def interrupted_savez(f, **arrays):
        f.write(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted_savez)
    with pytest.raises(KeyboardInterrupt):
        trained.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]


def test_save_gives_normal_file_permissions(trained, tmp_path):
    mask = os.umask(0)
    os.umask(mask)
    path = trained.save(tmp_path / "model.npz")
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


# ------------------------------------------------------------ bad files
def test_other_format_is_rejected(trained, tmp_path):
    path = trained.save(tmp_path / "model.npz")
    bad = rewrite(path, tmp_path / "other.npz", replace={"format": json_bytes({"format": "keras-h5", "version": 1})})
    with pytest.raises(ModelFileError, match=r"other\.npz.*'keras-h5'.*'convnet-model'"):
        load_model(bad)


def test_other_version_is_rejected(trained, tmp_path):
    path = trained.save(tmp_path / "model.npz")
    bad = rewrite(path, tmp_path / "v2.npz", replace={"format": json_bytes({"format": "convnet-model", "version": 2})})
    with pytest.raises(ModelFileError, match=r"v2\.npz.*version 2.*reads version 1"):
        load_model(bad)


def test_plain_numpy_files_are_rejected(tmp_path):
    np.savez(tmp_path / "arrays.npz", a=np.ones(3))
    with pytest.raises(ModelFileError, match=r"arrays\.npz.*'format' is missing"):
        load_model(tmp_path / "arrays.npz")
    np.save(tmp_path / "one.npy", np.ones(3))
    with pytest.raises(ModelFileError, match="single array"):
        load_model(tmp_path / "one.npy")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_model(tmp_path / "nowhere.npz")


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.99])
def test_truncated_file_is_rejected(trained, tmp_path, fraction):
    data = trained.save(tmp_path / "model.npz").read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(ModelFileError, match=r"cut\.npz"):
        load_model(cut)


def test_corrupted_bytes_are_detected(trained, tmp_path):
    """Flip bytes inside the stored kernel: the zip CRC check catches it."""
    path = trained.save(tmp_path / "model.npz")
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("weights/dense/kernel.npy")
    data = bytearray(path.read_bytes())
    middle = info.header_offset + 200 + info.compress_size // 2
    data[middle:middle + 8] = bytes(b ^ 0xFF for b in data[middle:middle + 8])
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"flipped\.npz.*CRC"):
        load_model(bad)


@pytest.mark.parametrize("entry, message", [
    ("weights/dense/bias", r"dense/bias.*missing"),
    ("model_config", r"'model_config' is missing"),
    ("optimizer_state/iterations", r"no 'iterations'"),
])
def test_missing_entry_is_named(trained, tmp_path, entry, message):
    path = trained.save(tmp_path / "model.npz")
    bad = rewrite(path, tmp_path / "missing.npz", drop=[entry])
    with pytest.raises(ModelFileError, match=message):
        load_model(bad)


def test_corrupt_json_entry_is_named(trained, tmp_path):
    path = trained.save(tmp_path / "model.npz")
    bad = rewrite(path, tmp_path / "json.npz", replace={"model_config": np.frombuffer(b"{not json", np.uint8)})
    with pytest.raises(ModelFileError, match=r"'model_config' is not valid JSON"):
        load_model(bad)


def test_unknown_layer_class_is_named(trained, tmp_path):
    path = trained.save(tmp_path / "model.npz")
    config = trained.get_config()
    config["layers"][0]["class_name"] = "Conv3D"
    bad = rewrite(path, tmp_path / "conv3d.npz", replace={"model_config": json_bytes(config)})
    with pytest.raises(ModelFileError, match=r"conv3d\.npz.*Conv3D"):
        load_model(bad)


def test_optimizer_state_of_wrong_shape_is_rejected(trained, tmp_path):
    path = trained.save(tmp_path / "model.npz")
    bad = rewrite(path, tmp_path / "state.npz", replace={"optimizer_state/m/dense/bias": np.zeros(3, np.float32)})
    with pytest.raises(ModelFileError, match=r"optimizer state 'm/dense/bias' has shape \(3,\), expected \(16,\)"):
        load_model(bad)


# ---------------------------------------------- loading into existing models
def test_load_weights_into_matching_model(trained, data, tmp_path):
    path = trained.save(tmp_path / "model.npz")
    fresh = small_model(seed=99)
    assert not np.array_equal(fresh.predict(data[0]), trained.predict(data[0]))
    load_weights(fresh, path)
    assert np.array_equal(fresh.predict(data[0]), trained.predict(data[0]))


def test_architecture_mismatch_names_the_weight_and_changes_nothing(trained, tmp_path):
    path = trained.save(tmp_path / "model.npz")
    other = small_model(seed=1, units=32)               # dense kernel (64, 32) instead of (64, 16)
    before = other.get_weights()
    with pytest.raises(ModelFileError, match=r"model\.npz: weight dense/kernel has shape \(64, 16\).*"
                                             r"dense/kernel has shape \(64, 32\)"):
        load_weights(other, path)
    for a, b in zip(other.get_weights(), before):
        assert np.array_equal(a, b)


def test_layer_count_mismatch_is_named(trained, tmp_path):
    path = trained.save(tmp_path / "model.npz")
    deeper = Sequential([layers.Flatten(), layers.Dense(8), layers.Dense(8), layers.Dense(8), layers.Dense(10)],
                        input_shape=(10, 10, 1))
    with pytest.raises(ModelFileError, match=r"holds 6 weight arrays.*the model has 8"):
        load_weights(deeper, path)
