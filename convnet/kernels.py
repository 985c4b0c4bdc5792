"""Numba-compiled kernels: im2col / col2im, max-pooling, and small fused element-wise passes.

This module holds only array plumbing, no layer logic. Every kernel works on
channels-last (NHWC) arrays. The window kernels are parallelised over the
batch axis with ``prange``: each thread owns whole images, so no two threads
ever write to the same element (no races on shared accumulators). How many
threads run is set in :mod:`convnet.threads` (one by default: at batch 32 a
thread wake-up costs more than the work it would share). All kernels are
compiled with ``cache=True`` so a second run loads the machine code from
disk, once per dtype (float32 for training, float64 for gradient checks).

Conventions shared by the window kernels:

* ``x``       input batch, shape ``(N, H, W, C)``
* ``kh, kw``  window height and width, ``sh, sw`` strides
* ``pt, pl``  zero (or -inf) padding added at the top and on the left;
  the bottom/right padding is implied by the output size ``(OH, OW)``
* a window position ``(oh, ow)`` covers input rows ``oh*sh - pt + i`` and
  columns ``ow*sw - pl + j`` for ``0 <= i < kh``, ``0 <= j < kw``.

Why the loops look the way they do: in NHWC the ``kw`` pixels of one window
row are ``kw*C`` *consecutive* numbers in memory. So the kernels view an
image as ``(H, W*C)`` and move whole window rows with one unit-stride loop
(which LLVM turns into vector instructions), and keep the channel loop
innermost everywhere else for the same reason. Only windows that touch the
padding take the slower element-by-element path.

The naive loop versions in :mod:`convnet.reference` compute the same things
without any of these tricks and the tests compare the two.
"""
import numpy as np
from numba import njit, prange


# ------------------------------------------------------------------ im2col
@njit(parallel=True, cache=True)
def im2col_into(x, kh, kw, sh, sw, pt, pl, OH, OW, cols):
    """:func:`im2col` writing into a given ``cols`` buffer (reused across batches)."""
    N, H, W, C = x.shape
    rowlen = kw * C                                  # one window row, contiguous in x
    xr = np.ascontiguousarray(x).reshape(N, H, W * C)
    for n in prange(N):
        for oh in range(OH):
            for ow in range(OW):
                row = (n * OH + oh) * OW + ow
                w0 = ow * sw - pl
                for i in range(kh):
                    h = oh * sh - pt + i
                    base = i * rowlen
                    if h < 0 or h >= H:                      # whole window row in the padding
                        for k in range(rowlen):
                            cols[row, base + k] = 0
                    elif w0 >= 0 and w0 + kw <= W:           # whole window row inside: one copy
                        src = w0 * C
                        for k in range(rowlen):
                            cols[row, base + k] = xr[n, h, src + k]
                    else:                                    # partly in the padding
                        for j in range(kw):
                            w = w0 + j
                            for c in range(C):
                                if 0 <= w < W:
                                    cols[row, base + j * C + c] = xr[n, h, w * C + c]
                                else:
                                    cols[row, base + j * C + c] = 0
    return cols


@njit(cache=True)
def im2col(x, kh, kw, sh, sw, pt, pl, OH, OW):
    """Unfold every ``kh x kw`` window of ``x`` into one row of a matrix.

    Returns ``cols`` of shape ``(N*OH*OW, kh*kw*C)``. Row ``(n, oh, ow)`` holds
    the window at that output position, flattened in ``(i, j, c)`` order, the
    same order as ``kernel.reshape(kh*kw*C, F)`` for a Keras kernel
    ``(kh, kw, C, F)``. Positions that fall into the padding are zero.
    """
    N, H, W, C = x.shape
    cols = np.empty((N * OH * OW, kh * kw * C), dtype=x.dtype)
    return im2col_into(x, kh, kw, sh, sw, pt, pl, OH, OW, cols)


@njit(parallel=True, cache=True)
def col2im(dcols, N, H, W, C, kh, kw, sh, sw, pt, pl, OH, OW):
    """Adjoint of :func:`im2col`: fold window rows back onto the image.

    Every entry of ``dcols`` is added to the input pixel it was copied from,
    so pixels shared by overlapping windows receive the sum of their
    gradients. Padding positions are dropped. Returns ``dx`` of shape
    ``(N, H, W, C)``.
    """
    dx = np.zeros((N, H, W * C), dtype=dcols.dtype)
    rowlen = kw * C
    for n in prange(N):          # one image per thread: no two threads share dx[n]
        for oh in range(OH):
            for ow in range(OW):
                row = (n * OH + oh) * OW + ow
                w0 = ow * sw - pl
                for i in range(kh):
                    h = oh * sh - pt + i
                    if h < 0 or h >= H:
                        continue
                    base = i * rowlen
                    if w0 >= 0 and w0 + kw <= W:
                        dst = w0 * C
                        for k in range(rowlen):
                            dx[n, h, dst + k] += dcols[row, base + k]
                    else:
                        for j in range(kw):
                            w = w0 + j
                            if 0 <= w < W:
                                for c in range(C):
                                    dx[n, h, w * C + c] += dcols[row, base + j * C + c]
    return dx.reshape(N, H, W, C)


# ----------------------------------------------------------------- pooling
@njit(parallel=True, cache=True)
def maxpool_forward(x, kh, kw, sh, sw, pt, pl, OH, OW):
    """Max over each window, remembering where the max was.

    Returns ``(out, argmax)``: ``out`` of shape ``(N, OH, OW, C)`` and
    ``argmax`` (int32, same shape) holding the flat index ``h*W + w`` of the
    winning input pixel inside its image. Ties go to the first maximum in
    scan order (row by row, left to right), as TensorFlow does. Padding
    counts as -inf, so it never wins.

    Each window starts from its first real pixel; the other pixels are
    visited in scan order with all channels at once (a strict ``>`` keeps
    the first maximum per channel).
    """
    N, H, W, C = x.shape
    out = np.empty((N, OH, OW, C), dtype=x.dtype)
    argmax = np.empty((N, OH, OW, C), dtype=np.int32)
    for n in prange(N):
        for oh in range(OH):
            h0 = oh * sh - pt
            i0, i1 = max(0, -h0), min(kh, H - h0)            # window rows inside the image
            for ow in range(OW):
                w0 = ow * sw - pl
                j0, j1 = max(0, -w0), min(kw, W - w0)
                if i0 >= i1 or j0 >= j1:                     # window entirely in the padding
                    for c in range(C):
                        out[n, oh, ow, c] = -np.inf
                        argmax[n, oh, ow, c] = -1
                    continue
                first = (h0 + i0) * W + (w0 + j0)
                for c in range(C):
                    out[n, oh, ow, c] = x[n, h0 + i0, w0 + j0, c]
                    argmax[n, oh, ow, c] = first
                for i in range(i0, i1):
                    for j in range(j0, j1):
                        if i == i0 and j == j0:
                            continue
                        h, w = h0 + i, w0 + j
                        idx = h * W + w
                        for c in range(C):
                            v = x[n, h, w, c]
                            if v > out[n, oh, ow, c]:          # strict '>': first max wins ties
                                out[n, oh, ow, c] = v
                                argmax[n, oh, ow, c] = idx
    return out, argmax


@njit(parallel=True, cache=True)
def maxpool_backward(dout, argmax, H, W):
    """Route each window's gradient to the input pixel that won the max.

    ``dx[n, h, w, c] = sum of dout[n, oh, ow, c]`` over the windows whose
    argmax is ``(h, w)``; zero elsewhere. With overlapping windows one pixel
    may win several windows and then receives the sum.
    """
    N, OH, OW, C = dout.shape
    dx = np.zeros((N, H * W, C), dtype=dout.dtype)
    for n in prange(N):          # one image per thread: accumulation stays private
        for oh in range(OH):
            for ow in range(OW):
                for c in range(C):
                    idx = argmax[n, oh, ow, c]
                    if idx >= 0:
                        dx[n, idx, c] += dout[n, oh, ow, c]
    return dx.reshape(N, H, W, C)


# ------------------------------------------------------ element-wise passes
@njit(cache=True)
def add_bias(z, b):
    """``z[r, f] += b[f]`` in place for a 2-D ``z`` (rows are output positions, columns filters)."""
    R, F = z.shape
    for r in range(R):
        for f in range(F):
            z[r, f] += b[f]
    return z


@njit(cache=True)
def relu_forward(z):
    """``y = max(z, 0)`` in one pass (a new array; ``z`` is left as it was; NaN propagates)."""
    flat = np.ascontiguousarray(z).reshape(-1)
    y = np.empty_like(flat)
    zero = flat.dtype.type(0)
    for k in range(flat.size):
        v = flat[k]
        y[k] = zero if v <= 0 else v          # NaN stays NaN, as with np.maximum
    return y.reshape(z.shape)


@njit(cache=True)
def relu_backward(dout, y):
    """``dL/dz = dL/dy * [y > 0]`` from the ReLU's *output* ``y`` (``y > 0`` exactly where ``z > 0``)."""
    d = np.ascontiguousarray(dout).reshape(-1)
    yf = np.ascontiguousarray(y).reshape(-1)
    dz = np.empty_like(d)
    zero = d.dtype.type(0)
    for k in range(d.size):
        dz[k] = d[k] if yf[k] > 0 else zero
    return dz.reshape(dout.shape)


@njit(cache=True)
def dropout_forward(x, u, rate, scale):
    """Inverted dropout in one pass: ``mask = scale * [u >= rate]``, ``y = x * mask``.

    ``u`` holds one uniform [0, 1) number per element. Returns ``(y, mask)``.
    """
    xf = np.ascontiguousarray(x).reshape(-1)
    uf = np.ascontiguousarray(u).reshape(-1)
    y = np.empty_like(xf)
    mask = np.empty_like(xf)
    s, zero = xf.dtype.type(scale), xf.dtype.type(0)
    for k in range(xf.size):
        m = s if uf[k] >= rate else zero
        mask[k] = m
        y[k] = xf[k] * m
    return y.reshape(x.shape), mask.reshape(x.shape)


@njit(cache=True, error_model="numpy")      # numpy error model: no zero-division check, so the loop vectorises
def adam_update(param, grad, m, v, b1, b2, lr_t, eps):
    """One Adam step for one parameter array, in place, in a single pass.

    ``m = b1 m + (1 - b1) g``;  ``v = b2 v + (1 - b2) g^2``;
    ``param -= lr_t m / (sqrt(v) + eps)``  (``lr_t`` carries the bias correction).
    """
    p, g = param.reshape(-1), grad.reshape(-1)
    mf, vf = m.reshape(-1), v.reshape(-1)
    one = p.dtype.type(1)
    c1, c2 = one - b1, one - b2
    for k in range(p.size):
        gk = g[k]
        mk = b1 * mf[k] + c1 * gk
        vk = b2 * vf[k] + c2 * gk * gk
        mf[k] = mk
        vf[k] = vk
        p[k] -= lr_t * mk / (np.sqrt(vk) + eps)
