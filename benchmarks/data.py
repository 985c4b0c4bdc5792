"""The data the step, epoch and inference rows run on: MNIST, or random data of its shape.

MNIST comes from :func:`convnet.datasets.load_mnist` (which reads the
verified cache in ``~/.cache/convnet/mnist`` or fetches it). If that is not
possible the benchmark still runs, on random images and labels of exactly
MNIST's shapes and dtypes; the time per step does not depend on pixel
values, but the figures then carry a note saying so.
"""
import numpy as np

#: the batch sizes every library uses: training, and inference (predict)
BATCH_SIZE = 32
PREDICT_BATCH = 1000

TRAIN_SHAPE = (60_000, 28, 28, 1)
TEST_SHAPE = (10_000, 28, 28, 1)


class Data:
    """Preprocessed float32 images in [0, 1] (N, 28, 28, 1), int64 labels, and where they came from."""

    def __init__(self, x_train, y_train, x_test, y_test, source, note=None):
        self.x_train, self.y_train = x_train, y_train
        self.x_test, self.y_test = x_test, y_test
        self.source = source
        self.note = note


def random_data(seed=0, note=None):
    """Uniform images and labels of MNIST's shapes (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    return Data(rng.random(TRAIN_SHAPE, dtype=np.float32), rng.integers(0, 10, TRAIN_SHAPE[0]),
                rng.random(TEST_SHAPE, dtype=np.float32), rng.integers(0, 10, TEST_SHAPE[0]),
                source="random", note=note or "random data of MNIST's shape (asked for with --data random)")


def load_data(kind="mnist"):
    """``kind="mnist"``: real MNIST, falling back to random data with a note; ``"random"``: random data."""
    if kind == "random":
        return random_data()
    if kind != "mnist":
        raise ValueError(f"unknown data kind {kind!r}; expected 'mnist' or 'random'")
    try:
        from convnet.datasets import load_mnist, preprocess

        (x_train, y_train), (x_test, y_test) = load_mnist(verbose=False)
    except Exception as err:                  # no cache and no way to fetch: say so, keep going
        return random_data(note=f"MNIST could not be loaded ({type(err).__name__}: {err}); "
                                f"timed on random data of MNIST's shape instead")
    x_train = preprocess(x_train)             # rebinding lets the uint8 original go before the next one
    x_test = preprocess(x_test)
    return Data(x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64), source="mnist")
