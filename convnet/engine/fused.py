"""Fused tails: a convolution's bias, ReLU and pooling in one pass over its output.

Each equals, bit for bit, the unfused kernels one after the other
(:func:`convnet.engine.elementwise.add_bias`, ``relu_forward``,
:func:`convnet.engine.pooling.maxpool_forward`), and so the textbook's
``z + b``, :meth:`convnet.activations.ReLUFunction.forward` and
:meth:`convnet.layers.MaxPool2D.call` (``tests/test_engine_fused.py``).
"""
from .jit import _jit, _stop, _u
from .pooling import _better


@_jit
def add_bias_relu(z, b, y, n0, n1):
    """``z[r] += b`` in place and ``y[r] = max(z[r], 0)``, rows ``n0 <= r < n1`` of 2-D ``z`` and ``y``, in one pass.

    The same two operations as :func:`add_bias` followed by
    :func:`relu_forward` (bit for bit), while the rows are in cache.
    """
    R, F = z.shape
    zero = z.dtype.type(0)
    for r in range(n0, _stop(n1, R)):
        zr, yr = z[r], y[r]
        for f in range(_u(F)):
            v = zr[f] + b[f]
            zr[f] = v
            yr[f] = zero if v <= 0 else v             # NaN <= 0 is False: NaN stays NaN
    return y


@_jit
def bias_relu_maxpool2x2(z, b, out, n0, n1):
    """``out = maxpool2x2(max(z + b, 0))`` for images ``n0 <= n < n1``: a convolution's inference tail in one pass.

    ``z`` is ``(N, 2*OH, 2*OW, C)`` (a convolution's output trimmed to the
    rows and columns the pooling reads), ``out`` ``(N, OH, OW, C)``. Adding
    a per-channel bias and ReLU both keep the order of values (rounding is
    monotonic too), so the maximum is taken first and the bias and ReLU are
    applied to it alone: the same numbers as :func:`add_bias_relu` followed
    by :func:`maxpool_forward`, NaN winning its window as there, with a
    quarter of the additions and no ``argmax`` written.
    """
    N, H, W, C = z.shape
    OH, OW = out.shape[1], out.shape[2]
    zr = z.reshape(N, H, W * C)
    zero = z.dtype.type(0)
    for n in range(n0, _stop(n1, N)):
        for oh in range(OH):
            top, bottom = zr[n, 2 * oh], zr[n, 2 * oh + 1]
            for ow in range(OW):
                o = out[n, oh, ow]
                left, right = _u(2 * ow * C), _u((2 * ow + 1) * C)
                for c in range(_u(C)):
                    o[c] = _relu_of_max4(top[left + c], top[right + c], bottom[left + c], bottom[right + c], b[c], zero)
    return out


@_jit
def _relu_of_max4(v0, v1, v2, v3, bias, zero):
    """``max(max(v0, v1, v2, v3) + bias, zero)``, the maximum taken in this order, the first NaN winning it.

    A pooling tile's inference tail: adding a per-channel bias and ReLU keep
    the order of values, so they are applied to the maximum alone.
    """
    best = v0
    best = v1 if _better(v1, best) else best
    best = v2 if _better(v2, best) else best
    best = v3 if _better(v3, best) else best
    v = best + bias
    return zero if v <= 0 else v      # NaN <= 0 is False: NaN stays NaN
