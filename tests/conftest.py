"""Shared fixtures for the core-library tests.

Every test draws its random numbers from a fixed seed, so a failure is
reproducible. The helpers here build inputs that keep gradient checks valid
(no ReLU kinks or max-pool ties within reach of the finite-difference step)
and the seed model of the project.
"""
import contextlib

import numba
from hypothesis import settings
from hypothesis import strategies as st

# The same examples on every run, so the suite is deterministic: a failure found by a fuzzing test
# is reproduced by running it again, and CI cannot fail on an example drawn only that once.
settings.register_profile("convnet", derandomize=True, database=None)
settings.load_profile("convnet")
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import convnet
from convnet import Sequential, layers
from convnet.architectures import mnist_cnn


@pytest.fixture(params=convnet.backends.TIERS)
def each_backend(request):
    """Run the test once on each tier (the textbook and the engine)."""
    with convnet.backend(request.param):
        yield request.param


@contextlib.contextmanager
def one_thread():
    """numba and BLAS on one thread inside the block (see :func:`serial`)."""
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        numba.set_num_threads(previous)


@pytest.fixture
def serial():
    """Run numba kernels and BLAS on one thread for the duration of a test.

    Tests that call a model hundreds of times on tiny batches (gradient checks,
    training loops) are dominated by thread start-up and waiting when the
    machine is busy: on 2 loaded cores a seed-model forward pass on 2 images
    takes ~50 ms with 2 threads and ~0.6 ms with one. Results do not depend
    on the thread count; the kernel tests (test_kernels.py) keep the default
    threads so that races between threads would still show up there.
    """
    with one_thread():
        yield


@pytest.fixture
def rng():
    """A fresh generator with a fixed seed for each test."""
    return np.random.default_rng(1234)


def spaced_values(shape, rng, spacing=0.05, dtype=np.float64):
    """An array of distinct values, pairwise at least ``spacing`` apart, in shuffled order.

    Centred on zero and never exactly zero, so there are no max-pool ties,
    no near-ties and no value close to the ReLU kink: a central difference
    with step h << spacing never crosses a kink.
    """
    n = int(np.prod(shape))
    values = (np.arange(n) + 0.5 - n // 2) * spacing         # ..., -0.5s, 0.5s, 1.5s, ...: none is 0
    return rng.permutation(values).reshape(shape).astype(dtype)


def seed_model(seed=0):
    """The project's seed model (150,858 parameters)."""
    return mnist_cnn(seed)


def small_convnet(seed=0, dropout=True):
    """A small conv net on 8x8x1 images (fast enough for training-loop tests)."""
    stack = [layers.Conv2D(4, 3, activation="relu"), layers.MaxPool2D(2)]
    if dropout:
        stack.append(layers.Dropout(0.25))
    stack += [layers.Flatten(), layers.Dense(16, activation="relu"), layers.Dense(3, activation="softmax")]
    return Sequential(stack, input_shape=(8, 8, 1), seed=seed)


@pytest.fixture
def spaced():
    """:func:`spaced_values` as a fixture: ``spaced(shape, rng, spacing=0.05)``."""
    return spaced_values


@pytest.fixture
def make_seed_model():
    """:func:`seed_model` as a fixture: ``make_seed_model(seed=0)``."""
    return seed_model


@pytest.fixture
def make_small_convnet():
    """:func:`small_convnet` as a fixture: ``make_small_convnet(seed=0, dropout=True)``."""
    return small_convnet


class on_tier:
    """``layer`` run by the tier in use (a one-layer runner, as a model runs it), with the layer's method names.

    ``layer.forward`` is always the textbook's; this is how a test puts one
    layer through the engine too.
    """

    def __init__(self, layer):
        self.layer, self.run = layer, convnet.backends.runner([layer])

    def forward(self, x, training=False):
        return self.run.forward(x, training=training)

    __call__ = forward

    def backward(self, dout):
        return self.run.backward(dout)


def with_random_biases(model, seed=0):
    """Nonzero biases, so that a bias in the wrong place shows (the ONNX tests)."""
    rng = np.random.default_rng(seed)
    model.set_weights([w if w.ndim > 1 else rng.normal(0, 0.1, w.shape).astype(w.dtype) for w in model.get_weights()])
    return model


@pytest.fixture(scope="session")
def mnist_small():
    """The first 2,000 training images and all 10,000 test images, preprocessed: ``(x, y, x_test, y_test)``."""
    from convnet.datasets import load_mnist, preprocess
    (x_train, y_train), (x_test, y_test) = load_mnist()
    return preprocess(x_train[:2000]), y_train[:2000], preprocess(x_test), y_test


def damaged_copy(data, path, tmp_path):
    """A copy of the file at ``path`` with 1-4 bytes changed and maybe cut short, drawn by hypothesis's ``data``."""
    content = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(content) - 1))
        content[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        content = content[:data.draw(st.integers(0, len(content)))]
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(bytes(content))
    return damaged
