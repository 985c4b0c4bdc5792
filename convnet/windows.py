"""Sliding windows (convolution and pooling): their geometry, and im2col / col2im in NumPy.

A window of ``kh x kw`` pixels slides over an ``(H, W, C)`` image with
strides ``(sh, sw)``; output position ``(oh, ow)`` sees the input rows
``oh*sh - pt + i`` and columns ``ow*sw - pl + j`` for ``0 <= i < kh``,
``0 <= j < kw``, where ``pt``/``pl`` is the padding added at the top/left
("same" padding, as TensorFlow splits it: the odd pixel goes at the
bottom/right). :class:`Window` holds these numbers once, computed from the
layer's settings.

``im2col`` turns a convolution into one matrix product: row ``(n, oh, ow)``
of ``cols`` is the window at that output position, flattened in ``(i, j,
c)`` order, the order of a Keras kernel ``(kh, kw, C, F)`` reshaped to
``(kh*kw*C, F)``. ``col2im`` is its adjoint (its transpose): it adds every
entry of a ``cols``-shaped array back onto the pixel it was copied from.
"""
from typing import NamedTuple

import numpy as np

from .shapes import conv_output_size, pad_amounts


class Window(NamedTuple):
    """Where a sliding window reads: size, strides, top/left padding, output size."""
    kh: int
    kw: int
    sh: int
    sw: int
    pt: int
    pl: int
    OH: int
    OW: int

    @classmethod
    def over(cls, input_shape, size, strides, padding):
        """The window ``size`` sliding over an input of shape ``(H, W, C)`` (Keras's output-size rule)."""
        H, W = input_shape[0], input_shape[1]
        (kh, kw), (sh, sw) = size, strides
        return cls(kh, kw, sh, sw, pad_amounts(H, kh, sh, padding)[0], pad_amounts(W, kw, sw, padding)[0],
                   conv_output_size(H, kh, sh, padding), conv_output_size(W, kw, sw, padding))


def pad(x, win, value):
    """``x`` padded with ``value`` so that every window of ``win`` lies inside the array."""
    _, H, W, _ = x.shape
    bottom = max(0, (win.OH - 1) * win.sh + win.kh - win.pt - H)
    right = max(0, (win.OW - 1) * win.sw + win.kw - win.pl - W)
    return np.pad(x, ((0, 0), (win.pt, bottom), (win.pl, right), (0, 0)), constant_values=value)


def im2col(x, win, fill=0):
    """``cols[(n, oh, ow), (i, j, c)] = xpad[n, oh*sh + i, ow*sw + j, c]``, shape ``(N*OH*OW, kh*kw*C)``.

    One strided slice per window offset ``(i, j)``: for a fixed offset the
    pixels that all windows see form the slice ``xpad[:, i::sh, j::sw]``.
    """
    N, C = x.shape[0], x.shape[3]
    kh, kw, sh, sw, _, _, OH, OW = win
    xp = pad(x, win, fill)
    cols = np.empty((N, OH, OW, kh, kw, C), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j, :] = xp[:, i:i + sh * (OH - 1) + 1:sh, j:j + sw * (OW - 1) + 1:sw, :]
    return cols.reshape(N * OH * OW, kh * kw * C)


def col2im(dcols, win, input_shape):
    """Adjoint of :func:`im2col`: ``dx[n, h, w, c]`` = sum of the entries of ``dcols`` copied from that pixel.

    ``input_shape`` is ``(N, H, W, C)``; what fell into the padding is dropped.
    """
    N, H, W, C = input_shape
    kh, kw, sh, sw, pt, pl, OH, OW = win
    d = dcols.reshape(N, OH, OW, kh, kw, C)
    dxp = np.zeros((N, max(H + pt, (OH - 1) * sh + kh), max(W + pl, (OW - 1) * sw + kw), C), dtype=dcols.dtype)
    for i in range(kh):
        for j in range(kw):
            # within one offset the windows touch distinct pixels, so += never meets itself
            dxp[:, i:i + sh * (OH - 1) + 1:sh, j:j + sw * (OW - 1) + 1:sw, :] += d[:, :, :, i, j, :]
    return dxp[:, pt:pt + H, pl:pl + W, :]
