"""Activation functions: ``forward(z) -> y`` and ``backward(dout, y) -> dL/dz``.

They keep no state: backward gets the output ``y`` of the forward pass it
belongs to (the layer keeps it as ``layer.output``), which is all that the
derivatives of ReLU and softmax need.
"""
import numpy as np


class ReLUFunction:
    """``y = max(z, 0)``."""

    name = "relu"

    def forward(self, z):
        return np.maximum(z, 0)

    def backward(self, dout, y):
        # dy/dz = 1 where z > 0, else 0 (the kink at 0 gets slope 0); y > 0 exactly where z > 0
        return dout * (y > 0)


class SoftmaxFunction:
    """``y_i = exp(z_i - max z) / sum_j exp(z_j - max z)`` over the last axis."""

    name = "softmax"

    def forward(self, z):
        return softmax(z)

    def backward(self, dout, y):
        # dy_i/dz_j = y_i (delta_ij - y_j), so dL/dz = y * (dL/dy - sum_j dL/dy_j y_j)
        return y * (dout - np.sum(dout * y, axis=-1, keepdims=True))


class LinearFunction:
    """Identity: ``y = z``."""

    name = "linear"

    def forward(self, z):
        return z

    def backward(self, dout, y):
        # dy/dz = 1
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
