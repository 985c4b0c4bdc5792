"""convnet's side of every case, on either tier: "numba" (the engine) or "numpy" (the textbook), the names the reports use.

Every ``make_*`` function returns a callable with no argument that does the
work once and returns its result; :meth:`Backend.outputs` calls it and returns a
list of arrays for the agreement checks. The other libraries' modules
(:mod:`benchmarks.tf_impl`, :mod:`benchmarks.torch_impl`) have the same
functions, so a case is written once for all of them.

Kernel rows go through the layers' public ``forward``/``backward`` (the
code a model runs), each on its own layer object, so that one row's state
never leaks into another's. Layers are built without activation: the rows
time the convolution, pooling or matrix product alone.
"""
import numpy as np

import convnet
from convnet import layers, optimizers
from convnet.architectures import mnist_cnn

from .data import BATCH_SIZE, PREDICT_BATCH  # noqa: F401  (shared with the other libraries' modules)


def seed_model(seed=0):
    """The seed model (150,858 parameters), compiled with Adam and sparse cross-entropy."""
    model = mnist_cnn(seed)
    model.compile(optimizer=optimizers.Adam(learning_rate=1e-3, epsilon=1e-7),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class Backend:
    """convnet on one of its backends: ``"numba"`` (reported as "convnet") or ``"numpy"``."""

    def __init__(self, backend="numba"):
        self.backend = backend
        self.name = "numpy" if backend == "numpy" else "convnet"

    def _mode(self):
        return convnet.backend(self.backend)

    def _wrap(self, fn):
        """Run ``fn`` on this backend with the thread pools a model-level call sets up.

        A runner's methods enter the pools' setting once per call
        (:class:`convnet.cpu.limited`); it is entered here too, so that a
        layer timed alone runs as inside a step, or BLAS's threads run inside the engine's. Each
        call also starts with convnet's threads splitting work, as in a fresh
        process: TensorFlow's pools, spinning in this same process after its
        own repeats, can make the engine fall back to one thread for a while
        (:func:`convnet.engine.threads.forget_busy_spell`), which would
        otherwise carry over into the next timed calls.
        """
        from convnet.engine import threads

        def on_backend():
            threads.forget_busy_spell()
            with convnet.backend(self.backend), convnet.cpu.limited():
                return fn()
        return on_backend

    @staticmethod
    def outputs(fn):
        """Call ``fn`` once; its result as a list of NumPy arrays (for the agreement checks)."""
        result = fn()
        return [np.asarray(r) for r in (result if isinstance(result, (list, tuple)) else [result])]

    # ------------------------------------------------------------- layers
    def _built(self, layer, x, params):
        """``(layer, runner)``: the layer built with ``params``, and what runs it on this backend (as a model would)."""
        layer.build(x.shape[1:], np.random.default_rng(0))
        for key, value in params.items():
            np.copyto(layer.params[key], value)
        with self._mode():
            return layer, convnet.backends.runner([layer])

    def make_conv_forward(self, x, kernel, bias):
        _, run = self._built(layers.Conv2D(kernel.shape[3], kernel.shape[:2]), x, {"kernel": kernel, "bias": bias})
        return self._wrap(lambda: run.forward(x))

    def _conv_after_forward(self, x, kernel, bias):
        layer, run = self._built(layers.Conv2D(kernel.shape[3], kernel.shape[:2]), x,
                                 {"kernel": kernel, "bias": bias})
        with self._mode():
            run.forward(x)                         # backward needs the forward's im2col matrix
        return layer, run

    def make_conv_backward_kernel(self, x, kernel, bias, dz):
        layer, run = self._conv_after_forward(x, kernel, bias)

        def backward_kernel():
            run.backward(dz, input_grad=False)
            return [layer.grads["kernel"], layer.grads["bias"]]
        return self._wrap(backward_kernel)

    def make_conv_backward(self, x, kernel, bias, dz):
        layer, run = self._conv_after_forward(x, kernel, bias)

        def backward_all():
            dx = run.backward(dz)
            return [dx, layer.grads["kernel"], layer.grads["bias"]]
        return self._wrap(backward_all)

    def make_pool_forward(self, x, size):
        _, run = self._built(layers.MaxPool2D(size), x, {})
        return self._wrap(lambda: run.forward(x))

    def make_pool_backward(self, x, size, dz):
        _, run = self._built(layers.MaxPool2D(size), x, {})
        with self._mode():
            run.forward(x)                         # backward needs the forward's argmax
        return self._wrap(lambda: run.backward(dz))

    def make_dense_forward(self, x, kernel, bias):
        _, run = self._built(layers.Dense(kernel.shape[1]), x, {"kernel": kernel, "bias": bias})
        return self._wrap(lambda: run.forward(x))

    def make_dense_backward(self, x, kernel, bias, dz):
        layer, run = self._built(layers.Dense(kernel.shape[1]), x, {"kernel": kernel, "bias": bias})
        with self._mode():
            run.forward(x)

        def backward_all():
            dx = run.backward(dz)
            return [dx, layer.grads["kernel"], layer.grads["bias"]]
        return self._wrap(backward_all)

    # -------------------------------------------------------------- model
    def make_model(self, weights):
        return Model(self, weights)


class Model:
    """The seed model with given initial weights, seen through the four things the suite times or checks."""

    def __init__(self, backend, weights):
        self.backend = backend
        self.model = seed_model()
        self.model.set_weights(weights)

    def weights(self):
        return self.model.get_weights()

    def make_train_step(self, x, y):
        """One ``train_step``: forward (dropout on), loss, backward, Adam update."""
        return self.backend._wrap(lambda: self.model.train_step(x, y))

    def make_fit(self, x, y, batch_size=BATCH_SIZE):
        """One epoch of ``fit`` over ``x`` (shuffled, batch 32 unless told, silent)."""
        return self.backend._wrap(
            lambda: self.model.fit(x, y, epochs=1, batch_size=batch_size, shuffle=True, seed=0, verbose=0))

    def make_predict(self, x):
        return self.backend._wrap(lambda: self.model.predict(x, batch_size=PREDICT_BATCH))

    def make_evaluate(self, x, y, batch_size):
        """``evaluate`` (loss and accuracy) over ``x``, ``batch_size`` images at a time."""
        return self.backend._wrap(lambda: self.model.evaluate(x, y, batch_size=batch_size))

    def gradients(self, x, y):
        """Loss and its gradient for every parameter (Keras order), dropout off."""
        with self.backend._mode():
            out = self.model.forward(x, training=False)
            loss, dout, pre = self.model.compute_loss(y, out)
            self.model.backward(dout, preactivation=pre, input_grad=False)
        return [np.float32(loss)] + [g.copy() for _, _, g in self.model.params_and_grads()]
