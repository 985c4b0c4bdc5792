"""Activation functions as tiny layers with a forward and a backward.

Each keeps what its backward needs from the last forward call.
"""
import numpy as np

from . import kernels, threads


class ReLUFunction:
    """``y = max(x, 0)``;  dL/dx = dL/dy * [x > 0]  (the kink at 0 gets slope 0)."""

    name = "relu"

    def forward(self, x):
        self.y = np.empty(np.shape(x), dtype=x.dtype)
        threads.over_images(kernels.relu_forward, len(x), x, self.y)     # y = max(x, 0)
        return self.y

    def backward(self, dout):
        # y > 0 exactly where x > 0, so the output is all backward needs
        dx = np.empty(np.shape(dout), dtype=dout.dtype)
        threads.over_images(kernels.relu_backward, len(dout), dout, self.y, dx)   # dx = dout * [y > 0]
        return dx

    @property
    def mask(self):
        """``x > 0`` for the last forward input (where the gradient passes)."""
        return self.y > 0


class SoftmaxFunction:
    """``y_i = exp(x_i - max x) / sum_j exp(x_j - max x)`` over the last axis.

    Jacobian dy_i/dx_j = y_i (delta_ij - y_j), so the vector-Jacobian product is
    dL/dx = y * (dL/dy - sum_j dL/dy_j * y_j).
    """

    name = "softmax"

    def forward(self, x):
        self.y = softmax(x)
        return self.y

    def backward(self, dout):
        y = self.y
        return y * (dout - np.sum(dout * y, axis=-1, keepdims=True))


class LinearFunction:
    """Identity: y = x, dL/dx = dL/dy."""

    name = "linear"

    def forward(self, x):
        return x

    def backward(self, dout):
        return dout


def softmax(x):
    """Numerically stable softmax over the last axis (subtract the row max first)."""
    z = x - np.max(x, axis=-1, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=-1, keepdims=True)


def log_softmax(x):
    """Stable ``log softmax``: ``z - log sum exp z`` with ``z = x - max x``; never log(0)."""
    z = x - np.max(x, axis=-1, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


ACTIVATIONS = {None: LinearFunction, "linear": LinearFunction, "relu": ReLUFunction, "softmax": SoftmaxFunction}


def get(name):
    """Make a fresh activation object from its Keras name (None means linear)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of None, 'relu', 'softmax'") from None
