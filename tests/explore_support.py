"""Shared by the explorer's tests: a small trained model, an explorer server, HTTP helpers.

The trained model (the reference architecture, one epoch on the first 8,000
MNIST training images, seed 0: about 93% test accuracy) is made once per
test process and cached, so both test modules that need it pay once.
"""
import atexit
import functools
import http.client
import json
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np

from convnet.architectures import mnist_cnn
from convnet.saving import save_model

TRAIN_IMAGES = 8000


@functools.lru_cache(maxsize=None)
def trained_model_path():
    from convnet.datasets import load_data

    (x, y), _ = load_data(verbose=False)
    model = mnist_cnn(seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:TRAIN_IMAGES], y[:TRAIN_IMAGES], epochs=1, batch_size=32, verbose=0, seed=0)
    folder = tempfile.mkdtemp(prefix="explore-test-")
    atexit.register(shutil.rmtree, folder, True)            # removed when the test process ends
    path = Path(folder) / "model.npz"
    save_model(model, path)
    return path


@functools.lru_cache(maxsize=None)
def mnist_test():
    from convnet.datasets import load_mnist

    _, (x, y) = load_mnist(verbose=False)
    return x, y


def request(server, method, path, body=None, headers=None, raw=False):
    """``(status, parsed JSON or bytes)`` of one request on a new connection."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=60)
    hdrs = dict(headers or {})
    if body is not None and not isinstance(body, (bytes, bytearray)):
        body = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=body, headers=hdrs)
    res = conn.getresponse()
    data = res.read()
    conn.close()
    if raw:
        return res.status, data, res
    return res.status, (json.loads(data) if data else None)


def digit_pixels(index):
    x, _ = mnist_test()
    return (x[index] / 255.0).tolist()


def session_header(n=0):
    return {"X-Explorer-Session": f"{n:032x}"}


def as_png(array, invert=True, scale=10):
    """A greyscale image as PNG bytes, blown up ``scale`` times (dark ink on white when ``invert``)."""
    import io

    from PIL import Image

    a = np.asarray(array, dtype=np.float64)
    img = Image.fromarray(np.uint8(np.round(255 * ((1 - a) if invert else a))), mode="L")
    img = img.resize((a.shape[1] * scale, a.shape[0] * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def in_threads(page, n):
    """Run ``page(i)`` for ``i`` in ``range(n)``, all at once on ``n`` threads; the exceptions they raised."""
    errors = []

    def run(i):
        try:
            page(i)
        except Exception as e:          # collected: the caller asserts there are none
            errors.append(e)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


#: the model kinds every explorer route must serve: experiments.mnist's recipes and options, a resumed
#: run, and a model converted from Keras (name -> the command line's arguments, None for the conversion)
MODEL_KINDS = {
    "default": [],                                              # cosine schedule, averaged weights, augmentation
    "keras": ["--recipe", "keras"],
    "sgd-momentum": ["--optimizer", "sgd", "--momentum", "0.9"],
    "textbook": ["--backend", "numpy"],
    "resumed": ["--recipe", "keras"],                           # one epoch, then --resume for a second
    "from-keras": None,
}
_SMALL_RUN = ["--epochs", "1", "--limit", "500", "--test-limit", "200", "--no-plots", "--quiet"]


@functools.lru_cache(maxsize=None)
def _kinds_folder():
    folder = tempfile.mkdtemp(prefix="explore-kinds-")
    atexit.register(shutil.rmtree, folder, True)
    return Path(folder)


@functools.lru_cache(maxsize=None)
def model_of_kind(kind):
    """The path of a small model of ``kind`` (see MODEL_KINDS), made once per test process.

    The recipes are trained by ``experiments.mnist``'s own command line (500
    images, one epoch), so their files hold what a user's do: a schedule's
    settings, averaged weights, a checkpoint's optimizer state.
    """
    import contextlib
    import io

    from experiments import mnist

    out = _kinds_folder() / kind
    if kind == "from-keras":
        return _converted_from_keras(out)
    with contextlib.redirect_stdout(io.StringIO()):
        status = mnist.main(_SMALL_RUN + MODEL_KINDS[kind] + ["--out", str(out)])
        if status == 0 and kind == "resumed":
            status = mnist.main(_SMALL_RUN[2:] + ["--epochs", "2", "--recipe", "keras", "--resume", "--out", str(out)])
    if status != 0:
        raise RuntimeError(f"experiments.mnist failed ({status}) making the {kind!r} model")
    return out / "model.npz"


def _converted_from_keras(out):
    """A small Keras CNN with its default (Glorot) weights, converted by ``convnet.interop.from_keras``."""
    import pytest

    keras = pytest.importorskip("keras", reason="the Keras conversion needs keras (pip install -e '.[keras]')")
    from convnet.interop import from_keras

    keras.utils.set_random_seed(0)
    km = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
                           keras.layers.MaxPooling2D(2), keras.layers.Flatten(),
                           keras.layers.Dense(10, activation="softmax")])
    out.mkdir(parents=True)
    path = out / "model.npz"
    save_model(from_keras(km), path)
    return path
