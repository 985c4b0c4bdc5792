"""Numba-compiled kernels: im2col / col2im and max-pooling, forward and backward.

This module holds only array plumbing, no layer logic. Every kernel works on
channels-last (NHWC) arrays and is parallelised over the batch axis with
``prange``: each thread owns whole images, so no two threads ever write to the
same element (no races on shared accumulators). All kernels are compiled with
``cache=True`` so a second run loads the machine code from disk.

Conventions shared by all kernels:

* ``x``       input batch, shape ``(N, H, W, C)``
* ``kh, kw``  window height and width, ``sh, sw`` strides
* ``pt, pl``  zero (or -inf) padding added at the top and on the left;
  the bottom/right padding is implied by the output size ``(OH, OW)``
* a window position ``(oh, ow)`` covers input rows ``oh*sh - pt + i`` and
  columns ``ow*sw - pl + j`` for ``0 <= i < kh``, ``0 <= j < kw``.

The naive loop versions in :mod:`convnet.reference` compute the same things
without any of these tricks and the tests compare the two.
"""
import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def im2col(x, kh, kw, sh, sw, pt, pl, OH, OW):
    """Unfold every ``kh x kw`` window of ``x`` into one row of a matrix.

    Returns ``cols`` of shape ``(N*OH*OW, kh*kw*C)``. Row ``(n, oh, ow)`` holds
    the window at that output position, flattened in ``(i, j, c)`` order, the
    same order as ``kernel.reshape(kh*kw*C, F)`` for a Keras kernel
    ``(kh, kw, C, F)``. Positions that fall into the padding are zero.
    """
    N, H, W, C = x.shape
    K = kh * kw * C
    cols = np.empty((N * OH * OW, K), dtype=x.dtype)
    for n in prange(N):
        for oh in range(OH):
            for ow in range(OW):
                row = (n * OH + oh) * OW + ow
                k = 0
                for i in range(kh):
                    h = oh * sh - pt + i
                    for j in range(kw):
                        w = ow * sw - pl + j
                        if 0 <= h < H and 0 <= w < W:
                            for c in range(C):
                                cols[row, k + c] = x[n, h, w, c]
                        else:
                            for c in range(C):
                                cols[row, k + c] = 0
                        k += C
    return cols


@njit(parallel=True, cache=True)
def col2im(dcols, N, H, W, C, kh, kw, sh, sw, pt, pl, OH, OW):
    """Adjoint of :func:`im2col`: fold window rows back onto the image.

    Every entry of ``dcols`` is added to the input pixel it was copied from,
    so pixels shared by overlapping windows receive the sum of their
    gradients. Padding positions are dropped. Returns ``dx`` of shape
    ``(N, H, W, C)``.
    """
    dx = np.zeros((N, H, W, C), dtype=dcols.dtype)
    for n in prange(N):          # one image per thread: no two threads share dx[n]
        for oh in range(OH):
            for ow in range(OW):
                row = (n * OH + oh) * OW + ow
                k = 0
                for i in range(kh):
                    h = oh * sh - pt + i
                    for j in range(kw):
                        w = ow * sw - pl + j
                        if 0 <= h < H and 0 <= w < W:
                            for c in range(C):
                                dx[n, h, w, c] += dcols[row, k + c]
                        k += C
    return dx


@njit(parallel=True, cache=True)
def maxpool_forward(x, kh, kw, sh, sw, pt, pl, OH, OW):
    """Max over each window, remembering where the max was.

    Returns ``(out, argmax)``: ``out`` of shape ``(N, OH, OW, C)`` and
    ``argmax`` (int32, same shape) holding the flat index ``h*W + w`` of the
    winning input pixel inside its image. Ties go to the first maximum in
    scan order (row by row, left to right), as TensorFlow does. Padding
    counts as -inf, so it never wins.
    """
    N, H, W, C = x.shape
    out = np.empty((N, OH, OW, C), dtype=x.dtype)
    argmax = np.empty((N, OH, OW, C), dtype=np.int32)
    for n in prange(N):
        for oh in range(OH):
            for ow in range(OW):
                for c in range(C):
                    best = -np.inf
                    best_idx = -1
                    for i in range(kh):
                        h = oh * sh - pt + i
                        if h < 0 or h >= H:
                            continue
                        for j in range(kw):
                            w = ow * sw - pl + j
                            if w < 0 or w >= W:
                                continue
                            v = x[n, h, w, c]
                            if v > best or best_idx < 0:   # strict '>': first max wins ties
                                best = v
                                best_idx = h * W + w
                    out[n, oh, ow, c] = best
                    argmax[n, oh, ow, c] = best_idx
    return out, argmax


@njit(parallel=True, cache=True)
def maxpool_backward(dout, argmax, H, W):
    """Route each window's gradient to the input pixel that won the max.

    ``dx[n, h, w, c] = sum of dout[n, oh, ow, c]`` over the windows whose
    argmax is ``(h, w)``; zero elsewhere. With overlapping windows one pixel
    may win several windows and then receives the sum.
    """
    N, OH, OW, C = dout.shape
    dx = np.zeros((N, H, W, C), dtype=dout.dtype)
    for n in prange(N):          # one image per thread: accumulation stays private
        for oh in range(OH):
            for ow in range(OW):
                for c in range(C):
                    idx = argmax[n, oh, ow, c]
                    dx[n, idx // W, idx % W, c] += dout[n, oh, ow, c]
    return dx
