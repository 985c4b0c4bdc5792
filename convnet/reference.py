"""Naive reference implementations of convolution and max-pooling.

Plain Python loops over output positions, written to be obviously right
rather than fast. They are the ground truth the tests hold the numba kernels
(:mod:`convnet.engine.kernels`) and the layers against; read them first if you want
to see what a convolution *is* before seeing how it is made fast.

All functions are channels-last (NHWC) with Keras kernel layout
``(kh, kw, C_in, C_out)``.
"""
import numpy as np

from .shapes import conv_output_size, pad_amounts


def _pad(x, kh, kw, sh, sw, padding, value=0.0):
    """Pad ``x`` as Keras/TensorFlow would for ``padding`` ("valid"/"same")."""
    N, H, W, C = x.shape
    (pt, pb), OH = pad_amounts(H, kh, sh, padding), conv_output_size(H, kh, sh, padding)
    (pl, pr), OW = pad_amounts(W, kw, sw, padding), conv_output_size(W, kw, sw, padding)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=value)
    return xp, OH, OW, pt, pl


def conv2d_forward_naive(x, kernel, bias, strides=(1, 1), padding="valid"):
    """``out[n, oh, ow, f] = bias[f] + sum_{i,j,c} xpad[n, oh*sh+i, ow*sw+j, c] * kernel[i, j, c, f]``."""
    kh, kw, C, F = kernel.shape
    sh, sw = strides
    xp, OH, OW, _, _ = _pad(x, kh, kw, sh, sw, padding)
    out = np.zeros((x.shape[0], OH, OW, F), dtype=np.result_type(x, kernel))
    for oh in range(OH):
        for ow in range(OW):
            window = xp[:, oh * sh:oh * sh + kh, ow * sw:ow * sw + kw, :]   # (N, kh, kw, C)
            out[:, oh, ow, :] = np.tensordot(window, kernel, axes=([1, 2, 3], [0, 1, 2])) + bias
    return out


def conv2d_backward_naive(dout, x, kernel, strides=(1, 1), padding="valid"):
    """Gradients of :func:`conv2d_forward_naive`: returns ``(dx, dkernel, dbias)``.

    Each output element touched one window, so it sends ``dout * kernel`` back
    to that window's pixels and ``dout * window`` to the kernel.
    """
    kh, kw, C, F = kernel.shape
    sh, sw = strides
    N, H, W, _ = x.shape
    xp, OH, OW, pt, pl = _pad(x, kh, kw, sh, sw, padding)
    dxp = np.zeros_like(xp)
    dkernel = np.zeros_like(kernel)
    for oh in range(OH):
        for ow in range(OW):
            window = xp[:, oh * sh:oh * sh + kh, ow * sw:ow * sw + kw, :]
            g = dout[:, oh, ow, :]                                          # (N, F)
            dkernel += np.tensordot(window, g, axes=([0], [0]))             # (kh, kw, C, F)
            dxp[:, oh * sh:oh * sh + kh, ow * sw:ow * sw + kw, :] += np.tensordot(g, kernel, axes=([1], [3]))
    dbias = dout.sum(axis=(0, 1, 2))
    dx = dxp[:, pt:pt + H, pl:pl + W, :]
    return dx, dkernel, dbias


def maxpool_forward_naive(x, pool_size=(2, 2), strides=None, padding="valid"):
    """``out[n, oh, ow, c] = max`` of the window; padding never wins."""
    kh, kw = pool_size
    sh, sw = strides or pool_size
    xp, OH, OW, _, _ = _pad(x, kh, kw, sh, sw, padding, value=-np.inf)
    out = np.empty((x.shape[0], OH, OW, x.shape[3]), dtype=x.dtype)
    for oh in range(OH):
        for ow in range(OW):
            out[:, oh, ow, :] = xp[:, oh * sh:oh * sh + kh, ow * sw:ow * sw + kw, :].max(axis=(1, 2))
    return out


def maxpool_backward_naive(dout, x, pool_size=(2, 2), strides=None, padding="valid"):
    """Each window's gradient goes to its first maximum in scan order (ties included)."""
    kh, kw = pool_size
    sh, sw = strides or pool_size
    N, H, W, C = x.shape
    xp, OH, OW, pt, pl = _pad(x, kh, kw, sh, sw, padding, value=-np.inf)
    dxp = np.zeros(xp.shape, dtype=dout.dtype)
    for n in range(N):
        for oh in range(OH):
            for ow in range(OW):
                for c in range(C):
                    window = xp[n, oh * sh:oh * sh + kh, ow * sw:ow * sw + kw, c]
                    i, j = np.unravel_index(np.argmax(window), window.shape)  # argmax = first max
                    dxp[n, oh * sh + i, ow * sw + j, c] += dout[n, oh, ow, c]
    return dxp[:, pt:pt + H, pl:pl + W, :]
