"""im2col and col2im as numba loops: the engine's :func:`convnet.windows.im2col` and :func:`convnet.windows.col2im`.

Validated against those two textbook functions and the naive loops of
:mod:`convnet.reference` (``tests/test_engine_im2col.py``); the layout
conventions are in :mod:`convnet.engine.jit`.
"""
import numpy as np

from .jit import _jit, _stop, _u


#: window rows shorter than this many numbers (conv1's 4) are copied through a table of offsets
SHORT_ROW = 16


@_jit
def im2col_into(x, win, cols, n0, n1):
    """``cols`` of :func:`convnet.windows.im2col` for images ``n0 <= n < n1``, written into their rows of ``cols``."""
    kh, kw, sh, sw, pt, pl, OH, OW = win
    N, H, W, C = x.shape
    rowlen = _u(kw * C)                              # one window row, contiguous in x
    xr = np.ascontiguousarray(x).reshape(N, H, W * C)
    # Short window rows (conv1's 4 numbers) make the row-by-row copy below mostly loop
    # overhead. When no window touches the padding, element k of a window's row of cols
    # is read from offsets[k] past the window's first pixel instead, all in one loop
    # (for long rows, conv2's 128 numbers, the row-by-row copy is faster).
    inside = pt == 0 and pl == 0 and (OH - 1) * sh + kh <= H and (OW - 1) * sw + kw <= W
    if rowlen < SHORT_ROW and inside:              # no window touches the padding
        offsets = np.empty(kh * kw * C, dtype=np.uint64)
        for i in range(kh):
            for k in range(rowlen):
                offsets[_u(i) * rowlen + k] = _u(i * W * C) + k
        xf = xr.reshape(-1)
        for n in range(n0, _stop(n1, N)):
            for oh in range(OH):
                for ow in range(OW):
                    row = cols[(n * OH + oh) * OW + ow]
                    start = _u(((n * H + oh * sh) * W + ow * sw) * C)   # the window's first pixel
                    for k in range(_u(offsets.size)):
                        row[k] = xf[start + offsets[k]]
        return cols
    for n in range(n0, _stop(n1, N)):
        for oh in range(OH):
            for ow in range(OW):
                row = cols[(n * OH + oh) * OW + ow]        # this window's row of cols
                h0, w0 = oh * sh - pt, ow * sw - pl
                for i in range(kh):
                    h = h0 + i
                    base = _u(i) * rowlen
                    if h < 0 or h >= H:                      # whole window row in the padding
                        for k in range(rowlen):
                            row[base + k] = 0
                    elif w0 >= 0 and w0 + kw <= W:           # whole window row inside: one copy
                        src, start = xr[n, h], _u(w0 * C)
                        for k in range(rowlen):
                            row[base + k] = src[start + k]
                    else:                                    # partly in the padding
                        for j in range(kw):
                            w = w0 + j
                            for c in range(C):
                                if 0 <= w < W:
                                    row[base + _u(j * C + c)] = xr[n, h, w * C + c]
                                else:
                                    row[base + _u(j * C + c)] = 0
    return cols


@_jit
def col2im(dcols, win, dx, n0, n1):
    """Adjoint of :func:`im2col`: fold window rows back onto the image.

    Every entry of ``dcols`` is added to the input pixel it was copied from,
    so pixels shared by overlapping windows receive the sum of their
    gradients. Padding positions are dropped. Returns ``dx`` of shape
    ``(N, H, W, C)`` (given ``dx`` and a range: images ``n0..n1`` of ``dx``
    are overwritten, the others left alone).
    """
    kh, kw, sh, sw, pt, pl, OH, OW = win
    N, H, W, C = dx.shape
    dxr = dx.reshape(N, H, W * C)
    rowlen = _u(kw * C)
    for n in range(n0, _stop(n1, N)):   # one image at a time: no two ranges share dx[n]
        dxr[n, :, :] = 0
        for oh in range(OH):
            for ow in range(OW):
                row = dcols[(n * OH + oh) * OW + ow]       # this window's row of dcols
                w0 = ow * sw - pl
                for i in range(kh):
                    h = oh * sh - pt + i
                    if h < 0 or h >= H:
                        continue
                    base, dst = _u(i) * rowlen, dxr[n, h]
                    if w0 >= 0 and w0 + kw <= W:
                        start = _u(w0 * C)
                        for k in range(rowlen):
                            dst[start + k] += row[base + k]
                    else:
                        for j in range(kw):
                            w = w0 + j
                            if 0 <= w < W:
                                for c in range(C):
                                    dst[_u(w * C + c)] += row[base + _u(j * C + c)]
    return dx
