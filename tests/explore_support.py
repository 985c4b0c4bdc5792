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
