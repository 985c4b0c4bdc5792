"""Saving and loading: exact round trips, exact resumption, atomic writes, clear errors on bad files."""
import functools
import io
import json
import os
import zipfile

import numpy as np
import pytest

import convnet
from convnet import Sequential, layers, optimizers
from convnet.callbacks import Callback, ModelCheckpoint
from convnet import load_checkpoint, load_model                # every format, as users load models
from convnet.saving import ModelFileError, load_weights, save_model

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
    path = save_model(trained, tmp_path / "model.npz")
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
    loaded = load_model(save_model(trained, tmp_path / "model.npz"))
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
    path = save_model(trained, tmp_path / "model.npz")
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
    loaded = load_model(save_model(model, tmp_path / "sgd"))
    assert loaded.get_weights()[0].dtype == np.float64
    assert isinstance(loaded.optimizer, optimizers.SGD)
    assert loaded.optimizer.get_config() == {"learning_rate": 0.05, "use_ema": False, "ema_momentum": 0.99,
                                             "momentum": 0.9, "nesterov": True}
    state, restored = model.optimizer.get_state(), loaded.optimizer.get_state()
    assert state.keys() == restored.keys() and any(k.startswith("velocity/") for k in state)
    for key in state:
        assert np.array_equal(state[key], restored[key])


def test_loss_settings_round_trip(data, tmp_path):
    # a model ending on logits, its loss told so: loaded without that, the loss would read logits as probabilities
    x, y = data
    model = Sequential([layers.Flatten(), layers.Dense(10)], input_shape=(10, 10, 1), seed=0)
    model.compile(optimizers.SGD(0.1), convnet.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, batch_size=32, seed=1, verbose=0)
    loaded = load_model(save_model(model, tmp_path / "logits"))
    assert loaded.loss.get_config() == {"from_logits": True}
    assert loaded.evaluate(x, y) == model.evaluate(x, y)


def test_npz_suffix_is_appended_like_numpy(trained, tmp_path):
    path = save_model(trained, tmp_path / "model")
    assert path == tmp_path / "model.npz" and path.is_file()
    assert os.listdir(tmp_path) == ["model.npz"]
    load_model(tmp_path / "model")                       # the name without suffix finds it too


def test_archive_needs_no_pickle(trained, tmp_path):
    path = save_model(trained, tmp_path / "model.npz")
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
    assert load_checkpoint(save_model(trained, tmp_path / "plain.npz")).epoch == 0


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


def ema_cosine_adam(steps):
    return optimizers.Adam(convnet.schedules.CosineDecay(3e-3, decay_steps=steps, alpha=0.1), use_ema=True,
                           ema_momentum=0.9)


def test_resume_with_schedule_average_and_augmentation_equals_uninterrupted(data, tmp_path):
    """The schedule's step, the moving average and the augmentation stream all survive a checkpoint."""
    from convnet.augment import RandomAffine
    from convnet.callbacks import SwapEMAWeights
    x, y = data
    augment = RandomAffine(10, 0.1, 1)
    val = (x[:32], y[:32])
    straight = small_model()
    straight.compile(ema_cosine_adam(18))
    full = straight.fit(x, y, epochs=3, batch_size=16, seed=5, verbose=0, augment=augment, validation_data=val,
                        callbacks=[SwapEMAWeights()])

    first = small_model()
    first.compile(ema_cosine_adam(18))
    cb = ModelCheckpoint(tmp_path / "ckpt.npz")
    first.fit(x, y, epochs=3, batch_size=16, seed=5, verbose=0, augment=augment, validation_data=val,
              callbacks=[SwapEMAWeights(), cb, StopAfter(1)])
    ckpt = load_checkpoint(tmp_path / "ckpt.npz")
    opt = ckpt.model.optimizer
    assert opt.use_ema and opt.iterations == 6 and set(opt.slots) == {"m", "v", "average"}
    assert opt.learning_rate.get_config() == straight.optimizer.learning_rate.get_config()
    again = ckpt.model.fit(x, y, epochs=3, batch_size=16, seed=5, verbose=0, augment=augment, validation_data=val,
                           initial_epoch=ckpt.epoch, callbacks=[SwapEMAWeights()])
    assert again.history["val_loss"] == full.history["val_loss"][1:]
    for a, b in zip(ckpt.model.get_weights(), straight.get_weights()):
        assert np.array_equal(a, b)
    # fit ended with the averages in place of the weights, and the last val_loss measured them
    for w, (key, _, _) in zip(straight.get_weights(), straight.params_and_grads()):
        assert np.array_equal(w, straight.optimizer.slots["average"][key])
    assert straight.evaluate(*val)[0] == full.history["val_loss"][-1]


def test_swap_ema_weights_during_validation_leaves_training_unchanged(data):
    """Validating on the averages changes what val_* reports, not the training itself."""
    from convnet.callbacks import SwapEMAWeights
    x, y = data
    runs = []
    for callbacks in ([], [SwapEMAWeights()]):
        model = small_model()
        model.compile(ema_cosine_adam(12))
        h = model.fit(x, y, epochs=2, batch_size=16, seed=3, verbose=0, validation_data=(x[:32], y[:32]),
                      callbacks=callbacks)
        runs.append((h.history, model.get_weights()))
    (plain, w_plain), (swapped, w_swapped) = runs
    assert plain["loss"] == swapped["loss"] and plain["val_loss"] != swapped["val_loss"]
    assert all(np.array_equal(a, b) for a, b in zip(w_plain, w_swapped))


# ------------------------------------------------------------ atomicity
def test_failed_save_keeps_old_file_and_leaves_no_temp_files(trained, tmp_path, monkeypatch):
    path = save_model(trained, tmp_path / "model.npz")
    before = path.read_bytes()

    def interrupted_savez(f, **arrays):
        f.write(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted_savez)
    with pytest.raises(KeyboardInterrupt):
        save_model(trained, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]


def test_save_gives_normal_file_permissions(trained, tmp_path):
    mask = os.umask(0)
    os.umask(mask)
    path = save_model(trained, tmp_path / "model.npz")
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


# ------------------------------------------------------------ bad files
def test_other_format_is_rejected(trained, tmp_path):
    path = save_model(trained, tmp_path / "model.npz")
    bad = rewrite(path, tmp_path / "other.npz", replace={"format": json_bytes({"format": "keras-h5", "version": 1})})
    with pytest.raises(ModelFileError, match=r"other\.npz.*'keras-h5'.*'convnet-model'"):
        load_model(bad)


def test_other_version_is_rejected(trained, tmp_path):
    path = save_model(trained, tmp_path / "model.npz")
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
    data = save_model(trained, tmp_path / "model.npz").read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(ModelFileError, match=r"cut\.npz"):
        load_model(cut)


def test_corrupted_bytes_are_detected(trained, tmp_path):
    """Flip bytes inside the stored kernel: the zip CRC check catches it."""
    path = save_model(trained, tmp_path / "model.npz")
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
    path = save_model(trained, tmp_path / "model.npz")
    bad = rewrite(path, tmp_path / "missing.npz", drop=[entry])
    with pytest.raises(ModelFileError, match=message):
        load_model(bad)


def test_corrupt_json_entry_is_named(trained, tmp_path):
    path = save_model(trained, tmp_path / "model.npz")
    bad = rewrite(path, tmp_path / "json.npz", replace={"model_config": np.frombuffer(b"{not json", np.uint8)})
    with pytest.raises(ModelFileError, match=r"'model_config' is not valid JSON"):
        load_model(bad)


def test_unknown_layer_class_is_named(trained, tmp_path):
    path = save_model(trained, tmp_path / "model.npz")
    config = trained.get_config()
    config["layers"][0]["class_name"] = "Conv3D"
    bad = rewrite(path, tmp_path / "conv3d.npz", replace={"model_config": json_bytes(config)})
    with pytest.raises(ModelFileError, match=r"conv3d\.npz.*Conv3D"):
        load_model(bad)


def test_optimizer_state_of_wrong_shape_is_rejected(trained, tmp_path):
    path = save_model(trained, tmp_path / "model.npz")
    bad = rewrite(path, tmp_path / "state.npz", replace={"optimizer_state/m/dense/bias": np.zeros(3, np.float32)})
    with pytest.raises(ModelFileError, match=r"optimizer state 'm/dense/bias' has shape \(3,\), expected \(16,\)"):
        load_model(bad)


# ---------------------------------------------- loading into existing models
def test_load_weights_into_matching_model(trained, data, tmp_path):
    path = save_model(trained, tmp_path / "model.npz")
    fresh = small_model(seed=99)
    assert not np.array_equal(fresh.predict(data[0]), trained.predict(data[0]))
    load_weights(fresh, path)
    assert np.array_equal(fresh.predict(data[0]), trained.predict(data[0]))


def test_architecture_mismatch_names_the_weight_and_changes_nothing(trained, tmp_path):
    path = save_model(trained, tmp_path / "model.npz")
    other = small_model(seed=1, units=32)               # dense kernel (64, 32) instead of (64, 16)
    before = other.get_weights()
    with pytest.raises(ModelFileError, match=r"model\.npz: weight dense/kernel has shape \(64, 16\).*"
                                             r"dense/kernel has shape \(64, 32\)"):
        load_weights(other, path)
    for a, b in zip(other.get_weights(), before):
        assert np.array_equal(a, b)


def test_layer_count_mismatch_is_named(trained, tmp_path):
    path = save_model(trained, tmp_path / "model.npz")
    deeper = Sequential([layers.Flatten(), layers.Dense(8), layers.Dense(8), layers.Dense(8), layers.Dense(10)],
                        input_shape=(10, 10, 1))
    with pytest.raises(ModelFileError, match=r"holds 6 weight arrays.*the model has 8"):
        load_weights(deeper, path)


# ------------------------------------------------------------ hostile files
def write_zip(path, entries, compression=zipfile.ZIP_STORED):
    """An archive with exactly ``entries`` (name -> array or raw bytes), as np.savez lays them out."""
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, value in entries.items():
            if isinstance(value, np.ndarray):
                with z.open(name + ".npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, value, allow_pickle=False)
            else:
                z.writestr(name, value)
    return path


def entries_of(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def test_config_asking_for_a_huge_layer_is_rejected_before_building(trained, tmp_path, monkeypatch):
    """A Dense of 300,000 units would take 77 MB (and 3e5 units x 3e5 inputs far more); the file stores 2,714."""
    monkeypatch.setattr(layers.Layer, "build", lambda *a, **k: pytest.fail("a layer was built"))
    entries = entries_of(save_model(trained, tmp_path / "model.npz"))
    config = trained.get_config()
    config["layers"][4]["config"]["units"] = 300_000
    entries["model_config"] = json_bytes(config)
    bad = write_zip(tmp_path / "huge.npz", entries)
    # refused from the config alone, by the weight limit every model file shares (convnet.limits)
    with pytest.raises(ModelFileError, match=r"huge\.npz: the weights up to layer 'dense' would take 78,000,160 "
                                             r"bytes as float32; at most 16,777,216"):
        load_model(bad)
    config["layers"][4]["config"]["units"] = 100          # within the limits: the stored shapes must agree
    entries["model_config"] = json_bytes(config)
    with pytest.raises(ModelFileError, match=r"weight dense/kernel has shape \(64, 16\), but the "
                                             r"model's dense/kernel has shape \(64, 100\)"):
        load_model(write_zip(tmp_path / "other.npz", entries))


def test_loading_draws_no_random_weights(trained, tmp_path, monkeypatch):
    from convnet import initializers
    path = save_model(trained, tmp_path / "model.npz")

    def no_random(*args, **kwargs):
        raise AssertionError("glorot_uniform was called while loading")

    monkeypatch.setitem(initializers.INITIALIZERS, "glorot_uniform", no_random)   # what layers look up
    loaded = load_model(path)
    assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), trained.get_weights()))
    assert loaded.layers[0].kernel_initializer is no_random     # restored after the build, for later builds


@pytest.mark.parametrize("dtype", [np.float16, np.longdouble, np.int32, np.complex64, ">f4"])
def test_weight_dtypes_are_converted_or_rejected(trained, tmp_path, dtype):
    entries = entries_of(save_model(trained, tmp_path / "model.npz"))
    entries["weights/dense/kernel"] = entries["weights/dense/kernel"].astype(dtype)
    path = write_zip(tmp_path / "dtype.npz", entries)
    if np.dtype(dtype) in (np.dtype(np.float16), np.dtype(">f4")):
        loaded = load_model(path)
        kernel = loaded.layers[4].params["kernel"]
        assert kernel.dtype == np.float32
        assert np.array_equal(kernel, entries["weights/dense/kernel"].astype(np.float32))
    else:
        with pytest.raises(ModelFileError, match=r"dtype\.npz: weight dense/kernel has dtype .*expected float32 "
                                                 r"or float64"):
            load_model(path)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_rejected(trained, tmp_path, value):
    entries = entries_of(save_model(trained, tmp_path / "model.npz"))
    entries["weights/dense_1/bias"] = entries["weights/dense_1/bias"].copy()
    entries["weights/dense_1/bias"][3] = value
    with pytest.raises(ModelFileError, match=r"weight dense_1/bias holds NaN or infinite values"):
        load_model(write_zip(tmp_path / "nan.npz", entries))


def test_unused_entries_are_never_read(trained, tmp_path, monkeypatch):
    entries = entries_of(save_model(trained, tmp_path / "model.npz"))
    path = write_zip(tmp_path / "extra.npz", {**entries, "junk": np.zeros(10, np.uint8)}, zipfile.ZIP_DEFLATED)
    opened = []
    original = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, name, *a, **k: opened.append(
        getattr(name, "filename", name)) or original(self, name, *a, **k))
    load_model(path)
    assert opened and "junk.npy" not in opened


@pytest.mark.parametrize("entry, shape, message", [
    ("model_config", (10 ** 12,), r"'model_config' is 1,000,000,000,000 bytes of JSON, expected at most"),
    ("weights/dense/kernel", (10 ** 6, 10 ** 6), r"more than 16,777,216 bytes"),
])
def test_sizes_in_headers_are_checked_before_reading(trained, tmp_path, entry, shape, message):
    """An .npy header claiming a huge array (the data is not even there) is rejected from the header alone."""
    entries = entries_of(save_model(trained, tmp_path / "model.npz"))
    path = write_zip(tmp_path / "claims.npz", {k: v for k, v in entries.items() if k != entry})
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1" if entry == "model_config" else "<f4",
                                                  "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "a") as z:
        z.writestr(entry + ".npy", header.getvalue() + b"\0" * 64)
    with pytest.raises(ModelFileError, match=message):
        load_model(path)


def test_entry_bigger_than_its_array_is_rejected(trained, tmp_path):
    entries = entries_of(save_model(trained, tmp_path / "model.npz"))
    path = write_zip(tmp_path / "padded.npz", {k: v for k, v in entries.items() if k != "format"})
    header = io.BytesIO()
    np.lib.format.write_array(header, entries["format"])
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as z:
        z.writestr("format.npy", header.getvalue() + b"\0" * 10 ** 6)
    with pytest.raises(ModelFileError, match=r"entry 'format' is 1,0\d\d,\d\d\d bytes, expected at most"):
        load_model(path)


def test_huge_zip_directory_is_rejected(trained, tmp_path):
    entries = entries_of(save_model(trained, tmp_path / "model.npz"))
    path = write_zip(tmp_path / "many.npz", entries)
    with zipfile.ZipFile(path, "a") as z:
        for i in range(12_000):
            z.writestr(f"junk/{i:06d}-{'x' * 40}", b"")
    with pytest.raises(ModelFileError, match=r"zip directory is [\d,]+ bytes"):
        load_model(path)


@pytest.mark.parametrize("change, message", [
    (lambda c: c["layers"][2]["config"].update(rate=1.5), r"layer 2 \(Dropout\) cannot be made"),
    (lambda c: c["layers"][0]["config"].update(filters="many"), r"layer 0 \(Conv2D\) cannot be made"),
    (lambda c: c["layers"][0]["config"].update(kernel_size=[3, 3, 3]), r"layer 0 \(Conv2D\) cannot be made"),
    (lambda c: c["layers"][0]["config"].update(filters=10 ** 7), r"layer 'conv2d' would output \(8, 8, 10000000\)"),
    (lambda c: c["layers"][1]["config"].update(pool_size=[3000, 3000], strides=[1, 1], padding="same"),
     r"layer 'max_pooling2d' slides a \(3000, 3000\) window over \(8, 8, 4\), more than 4,194,304"),
    (lambda c: c["layers"][0]["config"].update(evil=1), r"layer 0 \(Conv2D\) has unknown arguments \['evil'\]"),
    (lambda c: c["layers"][0]["config"].update(name=["x"]), r"layer 0 \(Conv2D\) has a bad name"),
    (lambda c: c["layers"][0]["config"].update(activation={"a": 1}), r"layer 0 \(Conv2D\) cannot be made"),
    (lambda c: c["layers"][0]["config"].update(input_shape=[10 ** 6, 10 ** 6, 1]), r"unknown arguments"),
    (lambda c: c.update(input_shape=[10 ** 4, 10 ** 4, 1]), r"input_shape .* at most 1,048,576 values"),
    (lambda c: c.update(input_shape=[10, -10, 1]), r"input_shape"),
    (lambda c: c.update(input_shape="10x10"), r"input_shape"),
    (lambda c: c.update(seed=-1), r"seed should be a non-negative integer"),
    (lambda c: c.update(layers=[]), r"has 0 layers"),
    (lambda c: c.update(layers=c["layers"] * 100), r"has 700 layers, expected 1 to 256"),
    (lambda c: c.update(layers={"a": 1}), r"list of layers"),
    (lambda c: c["layers"].__setitem__(0, "Conv2D"), r"layer 0 of the stored architecture should be an object"),
    (lambda c: c["layers"].insert(4, {"class_name": "Dense", "config": {"units": 3}}),
     r"holds 6 weight arrays.*has 8|cannot be rebuilt|more parameters"),
])
def test_bad_config_values_are_named(trained, tmp_path, change, message):
    entries = entries_of(save_model(trained, tmp_path / "model.npz"))
    config = trained.get_config()
    change(config)
    entries["model_config"] = json_bytes(config)
    with pytest.raises(ModelFileError, match=r"config\.npz: .*" + message):
        load_model(write_zip(tmp_path / "config.npz", entries))


@pytest.mark.parametrize("training, message", [
    ({"epoch": "3"}, r"'epoch' in entry 'training' should be an integer"),
    ({"epoch": -1}, r"'epoch'"),
    ({"epoch": True}, r"'epoch'"),
    ({"epoch": 1, "history": [1, 2]}, r"'history'.*should map metric names to lists"),
    ({"epoch": 1, "history": {"loss": 0.5}}, r"'history'"),
    ({"epoch": 1, "metadata": "args"}, r"'metadata'.*should be a JSON object"),
    ([1, 2], r"entry 'training' should be a JSON object"),
])
def test_bad_training_entry_is_named(trained, tmp_path, training, message):
    entries = entries_of(save_model(trained, tmp_path / "model.npz", epoch=1))
    entries["training"] = json_bytes(training)
    with pytest.raises(ModelFileError, match=r"training\.npz: " + message):
        load_checkpoint(write_zip(tmp_path / "training.npz", entries))


@pytest.mark.parametrize("change, message", [
    (lambda c: c["optimizer"]["config"].update(learning_rate=-1.0), r"learning_rate should be positive"),
    (lambda c: c["optimizer"]["config"].update(learning_rate="fast"), r"should be a finite number"),
    (lambda c: c["optimizer"]["config"].update(beta_1=1e400), r"not valid JSON|finite number"),
    (lambda c: c["optimizer"]["config"].update(shell="rm -rf"), r"Adam has no argument 'shell'"),
    # the constructor's own ranges: a beta of 1 divides by zero in the step size, 2.5 diverges
    (lambda c: c["optimizer"]["config"].update(beta_1=1.0), r"beta_1 must be in \[0, 1\), got 1.0"),
    (lambda c: c["optimizer"]["config"].update(beta_2=2.5), r"beta_2 must be in \[0, 1\), got 2.5"),
    (lambda c: c["optimizer"]["config"].update(epsilon=0.0), r"epsilon must be a positive finite number"),
    (lambda c: c["optimizer"]["config"].update(ema_momentum=1.0), r"ema_momentum must be in \[0, 1\)"),
    (lambda c: c["optimizer"].update(config=[1]), r"config should be an object"),
    (lambda c: c["loss"].update(class_name="os.system"), r"unknown loss class"),
    (lambda c: c.update(metrics=["accuracy"] * 100), r"metrics should be a short list"),
    (lambda c: c.update(metrics=["auc"]), r"unknown metrics"),
])
def test_bad_compile_config_is_named(trained, tmp_path, change, message):
    entries = entries_of(save_model(trained, tmp_path / "model.npz"))
    config = json.loads(entries["compile_config"].tobytes())
    change(config)
    entries["compile_config"] = np.frombuffer(json.dumps(config).replace("Infinity", "1e400").encode(), np.uint8)
    with pytest.raises(ModelFileError, match=r"compile\.npz: the stored compile settings are invalid: .*" + message):
        load_model(write_zip(tmp_path / "compile.npz", entries))


def test_nan_in_json_is_rejected(trained, tmp_path):
    entries = entries_of(save_model(trained, tmp_path / "model.npz"))
    entries["compile_config"] = np.frombuffer(
        entries["compile_config"].tobytes().replace(b'"learning_rate": 0.002', b'"learning_rate": NaN'), np.uint8)
    with pytest.raises(ModelFileError, match=r"'compile_config' is not valid JSON: .*NaN is not allowed"):
        load_model(write_zip(tmp_path / "nan.npz", entries))


@pytest.mark.parametrize("entry, value, message", [
    ("optimizer_state/iterations", np.int64(-5), r"'iterations' is -5"),
    ("optimizer_state/iterations", np.float64(3.0), r"'iterations' has dtype float64"),
    ("optimizer_state/m/dense/bias", np.full(16, np.nan, np.float32), r"'m/dense/bias' holds NaN"),
    ("optimizer_state/m/dense/bias", np.zeros(16, np.int8), r"'m/dense/bias' has dtype int8"),
])
def test_bad_optimizer_state_is_named(trained, tmp_path, entry, value, message):
    entries = entries_of(save_model(trained, tmp_path / "model.npz"))
    entries[entry] = np.asarray(value)
    with pytest.raises(ModelFileError, match=r"state\.npz: .*" + message):
        load_model(write_zip(tmp_path / "state.npz", entries))


def test_more_than_three_state_arrays_for_a_parameter_are_rejected(trained, tmp_path):
    entries = entries_of(save_model(trained, tmp_path / "model.npz"))            # Adam: m and v
    entries["optimizer_state/average/dense/bias"] = np.zeros(16, np.float32)
    load_model(write_zip(tmp_path / "three.npz", entries))                  # + use_ema's average: fine
    entries["optimizer_state/w/dense/bias"] = np.zeros(16, np.float32)
    with pytest.raises(ModelFileError, match=r"four\.npz: the optimizer state holds more than three arrays "
                                             r"for dense/bias"):
        load_model(write_zip(tmp_path / "four.npz", entries))


def test_directory_is_named(tmp_path):
    (tmp_path / "checkpoint.npz").mkdir()
    with pytest.raises(ModelFileError, match=r"checkpoint\.npz: is a directory, expected a model file"):
        load_checkpoint(tmp_path / "checkpoint.npz")


def test_fortran_order_and_object_arrays_are_rejected(trained, tmp_path):
    entries = entries_of(save_model(trained, tmp_path / "model.npz"))
    entries["weights/dense/kernel"] = np.asfortranarray(entries["weights/dense/kernel"])
    with pytest.raises(ModelFileError, match=r"'weights/dense/kernel' has an unsupported layout"):
        load_model(write_zip(tmp_path / "fortran.npz", entries))


def test_save_refuses_what_load_would_refuse(tmp_path):
    big = Sequential([layers.Flatten(), layers.Dense(5000)], input_shape=(1000,))
    with pytest.raises(ValueError, match=r"weights take 20,020,000 bytes; .* at most 16,777,216"):
        save_model(big, tmp_path / "big.npz")
    assert not (tmp_path / "big.npz").exists()


# ------------------------------------------------ memory: bombs, each loaded in its own process
LOAD_AND_MEASURE = """
import resource, sys
from convnet.saving import ModelFileError, load_checkpoint
try:
    load_checkpoint(sys.argv[1])
    outcome = "loaded"
except ModelFileError as e:
    outcome = "ModelFileError"
try:    # this process's own peak (Linux): ru_maxrss would also count the parent's pages before exec
    peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
except OSError:
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(outcome, peak_kb // 1024)
"""


def peak_rss_of_loading(path):
    """``(outcome, peak RSS in MB)`` of loading ``path`` in a fresh process (measured, not limited:
    an address-space limit would break numba and OpenBLAS)."""
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-c", LOAD_AND_MEASURE, str(path)], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), timeout=120)
    assert result.returncode == 0, result.stderr
    outcome, mb = result.stdout.split()
    return outcome, int(mb)


def zeros_entry(z, name, nbytes, header=b""):
    """A deflated entry of ``header`` followed by ``nbytes`` zero bytes (about 1/1000 of that on disk)."""
    with z.open(name, "w", force_zip64=True) as f:
        f.write(header)
        chunk = bytes(2 ** 22)
        for _ in range(nbytes // len(chunk)):
            f.write(chunk)


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bombs")
    model = Sequential([layers.Flatten(), layers.Dense(8), layers.Dense(10, activation="softmax")],
                       input_shape=(64,), seed=0)
    model.compile("adam")
    base = entries_of(save_model(model, d / "model.npz", epoch=1))
    files = {}
    # 1. a config asking for a Dense of 10^8 units (400 GB of weights) over 2.6 KB of stored ones
    config = model.get_config()
    config["layers"][1]["config"]["units"] = 10 ** 8
    files["huge layer"] = write_zip(d / "huge_layer.npz", {**base, "model_config": json_bytes(config)})
    # 2. an unused entry of 512 MiB of zeros, 2.3 MB compressed
    path = write_zip(d / "unused.npz", base, zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        zeros_entry(z, "junk.npy", 2 ** 29)
    files["unused entry"] = path
    # 3. the 'training' entry: a valid .npy header for 512 MiB of JSON bytes, and the bytes
    path = write_zip(d / "json.npz", {k: v for k, v in base.items() if k != "training"}, zipfile.ZIP_DEFLATED)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (2 ** 29,)})
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        zeros_entry(z, "training.npy", 2 ** 29, header.getvalue())
    files["json entry"] = path
    # 4. the largest model convnet loads: 16 MiB of zero float64 weights and Adam's two slots, 50 KB on disk
    big = Sequential([layers.Flatten(), layers.Dense(2000)], input_shape=(1024,), seed=0)
    weights = {"weights/dense/kernel": np.zeros((1024, 2000), np.float64),
               "weights/dense/bias": np.zeros(2000, np.float64)}
    state = {f"optimizer_state/{slot}/{k[len('weights/'):]}": v for slot in ("m", "v") for k, v in weights.items()}
    files["largest model"] = write_zip(d / "largest.npz", {
        "format": json_bytes({"format": "convnet-model", "version": 1,
                              "weight_names": ["dense/kernel", "dense/bias"]}),
        "model_config": json_bytes(big.get_config()), **weights,
        "compile_config": base["compile_config"], "optimizer_state/iterations": np.asarray(5, np.int64), **state},
        zipfile.ZIP_DEFLATED)
    return files


@pytest.mark.parametrize("bomb, outcome", [("huge layer", "ModelFileError"), ("unused entry", "loaded"),
                                           ("json entry", "ModelFileError"), ("largest model", "loaded")])
def test_no_model_file_makes_loading_use_more_than_400_mb(bombs, bomb, outcome):
    assert os.path.getsize(bombs[bomb]) < 3 * 2 ** 20
    found, peak_mb = peak_rss_of_loading(bombs[bomb])
    assert found == outcome
    assert peak_mb < 400, f"loading {bomb} peaked at {peak_mb} MB"


# ------------------------------------------------ fuzzing: whatever the bytes, only ModelFileError
from hypothesis import HealthCheck, given, settings, strategies as st   # noqa: E402

FUZZ = settings(max_examples=250, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@functools.lru_cache(maxsize=None)
def valid_file_bytes(compressed=False):
    """A small complete checkpoint (conv, pool, dropout, dense, Adam state, training entry) as bytes."""
    import tempfile
    model = Sequential([layers.Conv2D(2, 3, activation="relu"), layers.MaxPool2D(2), layers.Dropout(0.5),
                        layers.Flatten(), layers.Dense(3, activation="softmax")], input_shape=(6, 6, 1), seed=0)
    model.compile("adam")
    x = np.random.default_rng(0).random((8, 6, 6, 1), dtype=np.float32)
    with convnet.backend("numpy"):                           # (no kernel to compile for two steps)
        model.fit(x, np.arange(8) % 3, epochs=1, batch_size=4, verbose=0)
    with tempfile.TemporaryDirectory() as d:
        path = save_model(model, os.path.join(d, "m.npz"), epoch=1, history={"loss": [1.0]},
                          metadata={"args": {"seed": 0}})
        if compressed:
            with np.load(path) as z:
                entries = {k: z[k] for k in z.files}
            path = write_zip(os.path.join(d, "c.npz"), entries, zipfile.ZIP_DEFLATED)
        return open(path, "rb").read()


def load_bytes(data, tmp):
    """Load ``data`` as a model file: it must load or raise ModelFileError, nothing else, quickly."""
    path = os.path.join(tmp, "fuzz.npz")
    with open(path, "wb") as f:
        f.write(data)
    try:
        load_checkpoint(path)
    except ModelFileError as e:
        assert "fuzz.npz" in str(e)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("fuzz"))


@FUZZ
@given(data=st.binary(max_size=4096))
def test_fuzz_random_bytes(fuzz_dir, data):
    load_bytes(data, fuzz_dir)


@FUZZ
@given(compressed=st.booleans(), cut=st.floats(0, 1), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 7)),
                                                                     max_size=8))
def test_fuzz_truncated_and_flipped_files(fuzz_dir, compressed, cut, flips):
    data = bytearray(valid_file_bytes(compressed))
    for where, bit in flips:
        data[min(int(where * len(data)), len(data) - 1)] ^= 1 << bit
    load_bytes(bytes(data[:max(1, int(cut * len(data))) if cut < 1 else len(data)]), fuzz_dir)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=False)
                           | st.text(max_size=8) | st.sampled_from(["relu", "softmax", "same", "valid", "Dense"]),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=4), max_leaves=8)


def json_paths(obj, prefix=()):
    """Every position in a JSON tree, as a tuple of keys/indices."""
    yield prefix
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        yield from json_paths(v, prefix + (k,))


def replaced(obj, path, value):
    if not path:
        return value
    obj = json.loads(json.dumps(obj))
    target = obj
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = value
    return obj


@FUZZ
@given(entry=st.sampled_from(["model_config", "format", "compile_config", "training"]), choice=st.data())
def test_fuzz_json_values(fuzz_dir, entry, choice):
    """Replace any one value (or key's value) of a JSON entry by any JSON value."""
    with np.load(io.BytesIO(valid_file_bytes())) as z:
        entries = {k: z[k] for k in z.files}
    config = json.loads(entries[entry].tobytes())
    path = choice.draw(st.sampled_from(list(json_paths(config))))
    config = replaced(config, path, choice.draw(JSON_VALUES))
    entries[entry] = json_bytes(config)
    buffer = io.BytesIO()
    np.savez(buffer, **entries)
    load_bytes(buffer.getvalue(), fuzz_dir)


@FUZZ
@given(choice=st.data())
def test_fuzz_archive_entries(fuzz_dir, choice):
    """Drop, duplicate under another entry's name, or replace entries by arrays of other shapes and dtypes."""
    with np.load(io.BytesIO(valid_file_bytes())) as z:
        entries = {k: z[k] for k in z.files}
    names = sorted(entries)
    for _ in range(choice.draw(st.integers(1, 3))):
        name = choice.draw(st.sampled_from(names))
        action = choice.draw(st.sampled_from(["drop", "copy", "array", "scalar"]))
        if action == "drop":
            entries.pop(name, None)
        elif action == "copy":
            entries[name] = entries.get(choice.draw(st.sampled_from(names)), np.zeros(1))
        elif action == "array":
            shape = tuple(choice.draw(st.lists(st.integers(0, 5), max_size=3)))
            dtype = choice.draw(st.sampled_from(["u1", "f2", "f4", "f8", "i8", "c8", "?", "U3", "V4"]))
            entries[name] = np.ones(shape, dtype)
        else:
            entries[name] = np.asarray(choice.draw(st.integers(-2 ** 63, 2 ** 63 - 1)))
    buffer = io.BytesIO()
    np.savez(buffer, **entries)
    load_bytes(buffer.getvalue(), fuzz_dir)


# ------------------------------------------------------------ ModelCheckpoint: mistakes found before epoch 1
def test_model_checkpoint_refuses_unusable_paths_before_training(data, tmp_path):
    x, y = data
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "dir.npz").mkdir()
    cases = [(tmp_path / "dir.npz", IsADirectoryError, "is a directory, expected a file name"),
             (tmp_path / "notes.txt" / "ckpt.npz", NotADirectoryError, "is a file, not a directory")]
    for path, error, message in cases:
        model = small_model()
        model.compile("adam")
        with pytest.raises(error, match=message):
            model.fit(x, y, epochs=1, verbose=0, callbacks=[ModelCheckpoint(path)])
        assert model.optimizer.iterations == 0                  # not a single step was spent
    with pytest.raises(TypeError, match="not JSON serialisable"):
        ModelCheckpoint(tmp_path / "c.npz", metadata={"model": object()})
    assert (tmp_path / "notes.txt").read_text() == "mine"


@FUZZ
@given(choice=st.data())
def test_fuzz_npy_header_fields(fuzz_dir, choice):
    """Any entry's .npy header claiming another shape, dtype or order (the data left as it was)."""
    with np.load(io.BytesIO(valid_file_bytes())) as z:
        entries = {k: z[k] for k in z.files}
    name = choice.draw(st.sampled_from(sorted(entries)))
    shape = tuple(choice.draw(st.lists(st.integers(-3, 2 ** 62), max_size=4)))
    descr = choice.draw(st.sampled_from(["<f4", ">f8", "<f2", "|u1", "<i8", "|b1", "<U3", "|O", "<c8", "|V4",
                                         "<f16", "<M8[s]", "(2,)<f4"]))
    header = {"descr": descr, "fortran_order": choice.draw(st.booleans()), "shape": shape}
    head = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(head, header)
    except ValueError:                               # numpy will not even write it: a hand-made one then
        text = repr(header).encode("latin1")
        head = io.BytesIO(b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text)
    data = np.ascontiguousarray(entries[name]).tobytes()
    buffer = io.BytesIO()
    np.savez(buffer, **{k: v for k, v in entries.items() if k != name})
    with zipfile.ZipFile(buffer, "a") as z:
        z.writestr(name + ".npy", head.getvalue() + data)
    load_bytes(buffer.getvalue(), fuzz_dir)


def test_a_fifo_or_a_device_is_named_not_read(tmp_path):
    os.mkfifo(tmp_path / "fifo.npz")                  # reading it would block for ever
    with pytest.raises(ModelFileError, match=r"fifo\.npz is a FIFO \(named pipe\), not a regular file"):
        load_model(tmp_path / "fifo.npz")
    with pytest.raises(ModelFileError, match=r"/dev/zero is a device, not a regular file"):
        load_model("/dev/zero")
    with pytest.raises(FileNotFoundError, match="no model file at"):
        load_model(tmp_path / "missing.npz")


# ------------------------------------------------------------------------ files of other formats
def keras_zip(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("metadata.json", "{}")
        z.writestr("config.json", "{}")
        z.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n")
    return path


@pytest.mark.parametrize("name, make, what", [
    ("model.keras", keras_zip, r"a Keras \.keras file"),
    ("model.npz", keras_zip, r"a Keras \.keras file"),             # told by content, not by the suffix
    ("model.h5", lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100)), r"a Keras HDF5 \(\.h5\) file"),
])
def test_a_keras_file_without_keras_says_what_it_is_and_how_to_bring_it_in(name, make, what, tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "keras", None)              # as if Keras were not installed
    make(tmp_path / name)
    with pytest.raises(ModelFileError, match=rf"{name}: is {what}.*pip install tensorflow-cpu.*"
                                             rf"convnet.interop.from_keras\(keras.saving.load_model"):
        load_model(tmp_path / name)


def test_a_convnet_archive_is_not_taken_for_a_keras_file(trained, tmp_path):
    path = save_model(trained, tmp_path / "model.npz")
    with zipfile.ZipFile(path, "a") as z:            # even with Keras's entry names beside convnet's own
        z.writestr("config.json", "{}")
        z.writestr("model.weights.h5", b"")
    assert load_model(path).count_params() == trained.count_params()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=st.sampled_from([b"", b"\x08", b"PK\x03\x04", b"\x89HDF\r\n\x1a\n", b"\x93NUMPY"]),
       rest=st.binary(max_size=300), suffix=st.sampled_from([".npz", ".onnx", ".keras", ".h5", ".bin"]))
def test_any_bytes_in_any_format_give_a_model_file_error(start, rest, suffix, tmp_path):
    """Whatever format the first bytes suggest (ONNX, zip, HDF5, .npy), junk gets ModelFileError."""
    path = tmp_path / f"junk{suffix}"
    path.write_bytes(start + rest)
    with pytest.raises(ModelFileError, match="junk"):
        load_model(path)


def test_the_npz_reader_names_another_format_and_the_function_that_reads_it(tmp_path):
    from convnet import saving
    path = tmp_path / "model.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(ModelFileError, match=r"model\.h5: is a Keras HDF5 \(\.h5\) file, not a convnet \.npz model; "
                                             r"convnet\.load_model reads it"):
        saving.load_model(path)
