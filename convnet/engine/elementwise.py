"""Element-wise passes: bias, ReLU and its backward, and a column sum, as one-pass numba loops.

Validated against the textbook's ``z + b`` (:meth:`convnet.layers.Conv2D.call`),
:class:`convnet.activations.ReLUFunction` and ``dz.sum(axis=0)``
(:meth:`convnet.layers.Conv2D.backprop`), in ``tests/test_engine_elementwise.py``.
These see their arrays as (rows, rest): a range ``n0 <= n < n1`` is a range of rows.
"""
import numpy as np

from .jit import _jit, _rows, _stop, _u


@_jit
def add_bias(z, b, n0=0, n1=-1):
    """``z[r, f] += b[f]`` in place for a 2-D ``z`` (rows are output positions, columns filters)."""
    R, F = z.shape
    for r in range(n0, _stop(n1, R)):
        row = z[r]
        for f in range(_u(F)):
            row[f] += b[f]
    return z


@_jit
def sum_rows(z):
    """``z.sum(axis=0)`` for a 2-D ``z``: the rows added one after another, in ``z``'s dtype.

    NumPy's reduction down the columns of a tall ``(20000, 32)`` float32
    matrix (a convolution's bias gradient) is mostly loop overhead for
    32-element rows; this single pass is much faster.
    NumPy adds the rows in the same order for a C-contiguous matrix, so the
    results are bit-for-bit the same (tested for the seed model's shapes).
    """
    R, F = z.shape
    acc = np.zeros(F, dtype=z.dtype)
    for r in range(R):
        row = z[r]
        for f in range(_u(F)):
            acc[f] += row[f]
    return acc


@_jit
def relu_forward(z, y=None, n0=0, n1=-1):
    """``y = max(z, 0)`` in one pass (a new array unless ``y`` is given; ``z`` is left as it was).

    NaN propagates, as with ``np.maximum``.
    """
    if y is None:
        y = np.empty(z.shape, dtype=z.dtype)
    N = z.shape[0]
    zf, yf = _rows(z), _rows(y)
    zero = zf.dtype.type(0)
    for n in range(n0, _stop(n1, N)):
        zn, yn = zf[n], yf[n]
        for k in range(_u(zf.shape[1])):
            v = zn[k]
            yn[k] = zero if v <= 0 else v             # NaN <= 0 is False: NaN stays NaN
    return y


@_jit
def relu_backward(dout, y, dz=None, n0=0, n1=-1):
    """``dL/dz = dL/dy * [y > 0]`` from the ReLU's *output* ``y`` (``y > 0`` exactly where ``z > 0``)."""
    if dz is None:
        dz = np.empty(dout.shape, dtype=dout.dtype)
    N = dout.shape[0]
    d, yf, dzf = _rows(dout), _rows(y), _rows(dz)
    zero = d.dtype.type(0)
    for n in range(n0, _stop(n1, N)):
        dn, yn, dzn = d[n], yf[n], dzf[n]
        for k in range(_u(d.shape[1])):
            dzn[k] = dn[k] if yn[k] > 0 else zero
    return dz
