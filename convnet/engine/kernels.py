"""Numba-compiled kernels: im2col / col2im, max-pooling, and small fused element-wise passes.

The engine's loops: each computes what a few lines of the textbook tier
compute (:mod:`convnet.windows`, :mod:`convnet.layers`, :mod:`convnet.rng`,
:mod:`convnet.optimizers`) and the tests hold it to them. This module holds
only array plumbing, no layer logic; ``docs/performance.md`` has the
measurements behind the choices below. Every kernel works on
channels-last (NHWC) arrays. All kernels are compiled with ``cache=True``
(a second run loads the machine code from disk, once per dtype: float32 for
training, float64 for gradient checks) and ``nogil=True``: they release
Python's global interpreter lock, so two threads can run one kernel at the
same time on different images.

**Ranges of images.** Called with their documented arguments, the kernels
allocate their result and process the whole batch. Each one also accepts,
at the end, the output array(s) to write into and a range ``n0 <= n < n1``
along the first (batch) axis (``n1 = -1``: to the end); then it writes only
those images of the given outputs. Images never share an output element, so
two threads running one kernel on two ranges of a batch cannot race, and
every element is computed by the same loop whatever the split: the result
is bit-for-bit that of one call over the whole batch.
:func:`convnet.engine.threads.over_images` does the splitting. Hot code passes the
range even for the whole batch (``0, N``): numba compiles a separate
specialisation when the optional arguments are left out, whose loops did
not vectorise.

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

**Unsigned indices.** Inner loops index with ``np.uint64`` values (``_u``):
numba lets a signed index be negative (counting from the end), and the check
for that on every access stopped LLVM from vectorising the loops (it emitted
gather instructions instead). An unsigned index cannot be negative; the
values are the same (the same copies and additions in the same order).

The naive loop versions in :mod:`convnet.reference` compute the same things
without any of these tricks and the tests compare the two.
"""
import numpy as np
from numba import njit

from .. import rng

_jit = njit(cache=True, nogil=True)
_u = np.uint64      # an index that cannot be negative (see "Unsigned indices" above)


@_jit
def _rows(a):
    """A contiguous ``a`` seen as ``(a.shape[0], everything else)`` (a view when ``a`` is contiguous)."""
    N = a.shape[0]
    return np.ascontiguousarray(a).reshape(N, a.size // N if N > 0 else 0)


@_jit
def _stop(n1, N):
    """End of an image range: ``n1``, or ``N`` when ``n1`` is negative (meaning "to the end")."""
    return N if n1 < 0 else min(n1, N)


# ------------------------------------------------------------------ im2col
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


# ----------------------------------------------------------------- pooling
@_jit
def maxpool_forward(x, win, out, argmax, n0, n1):
    """Max over each window, remembering where the max was.

    Returns ``(out, argmax)``: ``out`` of shape ``(N, OH, OW, C)`` and
    ``argmax`` (int32, same shape) holding the flat index ``h*W + w`` of the
    winning input pixel inside its image. Ties go to the first maximum in
    scan order (row by row, left to right), as TensorFlow does; a NaN wins
    its window (the first NaN, if several), as with ``np.max``. Padding
    counts as -inf, so it never wins.

    Each window starts from its first real pixel; the other pixels are
    visited in scan order with all channels at once. A pixel replaces the
    current best when it is larger (strict ``>`` keeps the first maximum) or
    when it is NaN and the best is not NaN yet. The seed model's 2x2 pools
    (disjoint tiles, :func:`tiles_2x2`) take :func:`_maxpool2x2_forward`,
    the same comparisons in the same order, written so that they vectorise.
    """
    kh, kw, sh, sw, pt, pl, OH, OW = win
    N, H, W, C = x.shape
    if tiles_2x2(win, H, W):
        return _maxpool2x2_forward(x, out, argmax, n0, n1)
    for n in range(n0, _stop(n1, N)):
        for oh in range(OH):
            h0 = oh * sh - pt
            i0, i1 = max(0, -h0), min(kh, H - h0)            # window rows inside the image
            for ow in range(OW):
                w0 = ow * sw - pl
                j0, j1 = max(0, -w0), min(kw, W - w0)
                o, a = out[n, oh, ow], argmax[n, oh, ow]     # this window's C outputs
                if i0 >= i1 or j0 >= j1:                     # window entirely in the padding
                    for c in range(_u(C)):
                        o[c] = -np.inf
                        a[c] = -1
                    continue
                first, p = (h0 + i0) * W + (w0 + j0), x[n, h0 + i0, w0 + j0]
                for c in range(_u(C)):
                    o[c] = p[c]
                    a[c] = first
                for i in range(i0, i1):
                    for j in range(j0, j1):
                        if i == i0 and j == j0:
                            continue
                        h, w = h0 + i, w0 + j
                        idx, p = h * W + w, x[n, h, w]
                        for c in range(_u(C)):
                            v, best = p[c], o[c]
                            if v > best or (v != v and best == best):   # larger, or the first NaN
                                o[c] = v
                                a[c] = idx
    return out, argmax


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


# ---------------------------------------------------- Winograd F(2x2, 4x4)
@_jit
def winograd4_tiles(x, BT, PH, PW, V, n0, n1):
    """Input transform of Winograd F(2x2, 4x4): ``V[5i + j, tile] = (B^T d B)[i, j]`` over the channels.

    ``d`` is the 5x5 window at rows ``2t..2t+4``, columns ``2s..2s+4`` of
    image ``n`` (all channels): the input of the 2x2 block of a 4x4
    convolution's outputs at ``(2t, 2s)``, ``t < PH``, ``s < PW``. Tile
    ``n * PH * PW + t * PW + s`` of ``V`` (shape ``(25, N * PH * PW, C)``);
    ``x`` is C-contiguous ``(N, H, W, C)``, ``BT`` is ``B^T`` (5x5). Rows
    first, over whole image rows at once (a five-term sum per element), then
    columns per tile.
    """
    N, H, W, C = x.shape
    T = PH * PW
    xf = x.reshape(N, H, W * C)
    R = np.empty((5, W * C), x.dtype)
    L = _u(W * C)
    for n in range(n0, _stop(n1, N)):
        for t in range(PH):
            x0, x1, x2, x3, x4 = xf[n, 2 * t], xf[n, 2 * t + 1], xf[n, 2 * t + 2], xf[n, 2 * t + 3], xf[n, 2 * t + 4]
            for i in range(5):                       # R_i = sum_k B^T[i, k] x_k (image rows 2t..2t+4)
                b0, b1, b2, b3, b4 = BT[i, 0], BT[i, 1], BT[i, 2], BT[i, 3], BT[i, 4]
                r = R[i]
                for e in range(L):
                    r[e] = b0 * x0[e] + b1 * x1[e] + b2 * x2[e] + b3 * x3[e] + b4 * x4[e]
            col = n * T + t * PW
            for j in range(5):                       # V[5i + j] = sum_k B^T[j, k] R_i[columns 2s + k]
                b0, b1, b2, b3, b4 = BT[j, 0], BT[j, 1], BT[j, 2], BT[j, 3], BT[j, 4]
                for i in range(5):
                    r, v = R[i], V[5 * i + j]
                    for s in range(PW):
                        c0, o = _u(2 * s * C), v[col + s]
                        for c in range(_u(C)):
                            o[c] = (b0 * r[c0 + c] + b1 * r[c0 + _u(C) + c] + b2 * r[c0 + _u(2 * C) + c]
                                    + b3 * r[c0 + _u(3 * C) + c] + b4 * r[c0 + _u(4 * C) + c])
    return V


@_jit
def winograd4_bias_relu_maxpool(M, AT, b, out, n0, n1):
    """Output transform of Winograd F(2x2, 4x4), then the 2x2 pooling's maximum, bias and ReLU.

    ``M`` ``(25, tiles, F)`` holds the transformed products (tiles laid out
    as by :func:`winograd4_tiles`); each tile's outputs ``A^T m A`` are the
    2x2 block of the convolution at ``(2t, 2s)``, which is exactly the
    pooling window ``(t, s)``: ``out[n, t, s] = max(max(block) + b, 0)``,
    the maximum taken in the same order and with the same NaN rule as
    :func:`bias_relu_maxpool2x2`. ``AT`` is ``A^T`` (2x5).
    """
    N, PH, PW, F = out.shape
    T = PH * PW
    L = _u(PW * F)
    Mf = M.reshape(25, M.shape[1] * F)
    tmp = np.empty((2, 5, PW * F), M.dtype)
    y = np.empty((4, PW * F), M.dtype)
    zero = M.dtype.type(0)
    for n in range(n0, _stop(n1, N)):
        for t in range(PH):
            start = _u((n * T + t * PW) * F)
            for p in range(2):                       # tmp[p, j] = sum_i A^T[p, i] m[i, j] (a row of tiles)
                a0, a1, a2, a3, a4 = AT[p, 0], AT[p, 1], AT[p, 2], AT[p, 3], AT[p, 4]
                for j in range(5):
                    m0, m1, m2, m3, m4 = Mf[j], Mf[5 + j], Mf[10 + j], Mf[15 + j], Mf[20 + j]
                    o = tmp[p, j]
                    for e in range(L):
                        k = start + e
                        o[e] = a0 * m0[k] + a1 * m1[k] + a2 * m2[k] + a3 * m3[k] + a4 * m4[k]
            for p in range(2):                       # y[2p + q] = sum_j tmp[p, j] A^T[q, j]
                for q in range(2):
                    a0, a1, a2, a3, a4 = AT[q, 0], AT[q, 1], AT[q, 2], AT[q, 3], AT[q, 4]
                    yo = y[2 * p + q]
                    t0, t1, t2, t3, t4 = tmp[p, 0], tmp[p, 1], tmp[p, 2], tmp[p, 3], tmp[p, 4]
                    for e in range(L):
                        yo[e] = a0 * t0[e] + a1 * t1[e] + a2 * t2[e] + a3 * t3[e] + a4 * t4[e]
            o = out[n, t].reshape(L)
            for e in range(L):
                o[e] = _relu_of_max4(y[0, e], y[1, e], y[2, e], y[3, e], b[e % _u(F)], zero)
    return out


@_jit
def tiles_2x2(win, H, W):
    """True when the windows are 2x2 with stride 2 and no padding: disjoint tiles inside an ``H x W`` image."""
    kh, kw, sh, sw, pt, pl, OH, OW = win
    return kh == 2 and kw == 2 and sh == 2 and sw == 2 and pt == 0 and pl == 0 and 2 * OH <= H and 2 * OW <= W


@_jit
def _better(v, best):
    """Does ``v`` replace ``best`` as a window's maximum: larger, or the first NaN (no branch, so loops vectorise)."""
    return (v > best) | ((v != v) & (best == best))


@_jit
def _maxpool2x2_forward(x, out, argmax, n0, n1):
    """:func:`maxpool_forward` for 2x2 tiles: the four pixels compared in scan order, channel by channel.

    Each channel's best value and index are kept in registers and written
    once (the general loop reads them back from ``out`` for every pixel,
    which stops LLVM from vectorising over the channels): 2.3x faster for
    the seed model's first pooling, same results.
    """
    N, H, W, C = x.shape
    OH, OW = out.shape[1], out.shape[2]
    xr = x.reshape(N, H, W * C)
    for n in range(n0, _stop(n1, N)):
        for oh in range(OH):
            top, bottom = xr[n, 2 * oh], xr[n, 2 * oh + 1]
            for ow in range(OW):
                o, a = out[n, oh, ow], argmax[n, oh, ow]
                i00 = np.int32(2 * oh * W + 2 * ow)
                i01, i10, i11 = i00 + np.int32(1), i00 + np.int32(W), i00 + np.int32(W + 1)
                left, right = _u(2 * ow * C), _u((2 * ow + 1) * C)
                for c in range(_u(C)):
                    best, idx = top[left + c], i00
                    v = top[right + c]
                    take = _better(v, best)
                    best, idx = (v, i01) if take else (best, idx)
                    v = bottom[left + c]
                    take = _better(v, best)
                    best, idx = (v, i10) if take else (best, idx)
                    v = bottom[right + c]
                    take = _better(v, best)
                    best, idx = (v, i11) if take else (best, idx)
                    o[c] = best
                    a[c] = idx
    return out, argmax


@_jit
def maxpool2x2_backward(dout, argmax, y, dx, dz, relu, n0, n1):
    """:func:`maxpool_backward` for 2x2 tiles (see :func:`tiles_2x2`); with ``relu``, also the ReLU's ``dz``.

    Every pixel belongs to at most one window, so each element of ``dx`` is
    written once: ``0 + d`` at the window's winner (the same sum as the
    general kernel's, -0.0 included), ``0`` elsewhere and on the rows and
    columns no window covers. With ``relu``, ``dz = dx * [y > 0]`` (as
    :func:`relu_backward`, ``y`` being the ReLU's output) in the same pass;
    otherwise ``y`` and ``dz`` are not touched.
    """
    N, OH, OW, C = dout.shape
    H, W = dx.shape[1], dx.shape[2]
    dxr, yr, dzr = dx.reshape(N, H, W * C), y.reshape(N, H, W * C), dz.reshape(N, H, W * C)
    zero = dx.dtype.type(0)
    covered = _u(2 * OW * C)
    for n in range(n0, _stop(n1, N)):
        for h in range(2 * OH):
            oh = h // 2
            r, ry, rz = dxr[n, h], yr[n, h], dzr[n, h]
            for ow in range(OW):
                d, a = dout[n, oh, ow], argmax[n, oh, ow]
                i0 = np.int32(h * W + 2 * ow)
                i1 = i0 + np.int32(1)
                left, right = _u(2 * ow * C), _u((2 * ow + 1) * C)
                for c in range(_u(C)):
                    g = zero + d[c]
                    r[left + c] = g if a[c] == i0 else zero
                    r[right + c] = g if a[c] == i1 else zero
                if relu:
                    for c in range(_u(C)):
                        rz[left + c] = r[left + c] if ry[left + c] > 0 else zero
                        rz[right + c] = r[right + c] if ry[right + c] > 0 else zero
            for k in range(covered, _u(W * C)):             # columns no window covers
                r[k] = zero
                if relu:
                    rz[k] = zero
        for h in range(2 * OH, H):                          # rows no window covers
            dxr[n, h, :] = zero
            if relu:
                dzr[n, h, :] = zero
    return dx


@_jit
def _route_to_winners(dout, argmax, dxr, n):
    """Image ``n`` of :func:`maxpool_backward`: ``dxr[n]`` (pixels x channels) zeroed, then each window's gradient added onto its winner."""
    OH, OW, C = dout.shape[1], dout.shape[2], dout.shape[3]
    dxr[n, :, :] = 0
    for oh in range(OH):
        for ow in range(OW):
            d, a = dout[n, oh, ow], argmax[n, oh, ow]
            for c in range(_u(C)):
                idx = a[c]
                if idx >= 0:
                    dxr[n, idx, c] += d[c]


@_jit
def maxpool_backward(dout, argmax, dx, n0, n1):
    """Route each window's gradient to the input pixel that won the max.

    ``dx[n, h, w, c] = sum of dout[n, oh, ow, c]`` over the windows whose
    argmax is ``(h, w)``; zero elsewhere. With overlapping windows one pixel
    may win several windows and then receives the sum.
    """
    N, H, W, C = dx.shape
    dxr = dx.reshape(N, H * W, C)
    for n in range(n0, _stop(n1, N)):   # one image at a time: accumulation stays private
        _route_to_winners(dout, argmax, dxr, n)
    return dx


@_jit
def maxpool_relu_backward(dout, argmax, y, dx, dz, n0, n1):
    """:func:`maxpool_backward` into ``dx``, then the ReLU's backward ``dz = dx * [y > 0]``, image by image.

    ``y`` is the ReLU's output (the pooling's input). Bit for bit the two
    kernels one after the other, but each image's ``dx`` is still in cache
    when its ``dz`` is computed.
    """
    N, H, W, C = dx.shape
    dxr = dx.reshape(N, H * W, C)
    L = H * W * C
    dxf, yf, dzf = dx.reshape(N, L), y.reshape(N, L), dz.reshape(N, L)
    zero = dx.dtype.type(0)
    for n in range(n0, _stop(n1, N)):
        _route_to_winners(dout, argmax, dxr, n)
        dn, yn, dzn = dxf[n], yf[n], dzf[n]
        for k in range(_u(L)):
            dzn[k] = dn[k] if yn[k] > 0 else zero
    return dz


# ------------------------------------------------------ element-wise passes
# These see their arrays as (rows, rest): a range n0 <= n < n1 is a range of rows.

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


# Dropout draws the counter-based stream of convnet.rng (same constants, same numbers):
# element e of a call with key k is kept when the top 24 bits of
# splitmix64(k + (e + 1) * GOLDEN) reach the threshold.
_GOLDEN, _MIX1, _MIX2 = rng.GOLDEN, rng.MIX1, rng.MIX2
_S27, _S30, _S31 = np.uint64(27), np.uint64(30), np.uint64(31)
_SHIFT_TOP = np.uint64(64 - rng.BITS)


@_jit
def _splitmix64(z):
    """SplitMix64's output function (a bijective mix of the 64 bits of ``z``)."""
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@_jit
def dropout_forward(x, key, threshold, scale, y=None, mask=None, n0=0, n1=-1):
    """Inverted dropout in one pass, drawing its own random bits.

    Element ``e`` (flat index over the whole batch) gets the 24 bits ``r``
    that :func:`convnet.rng.uniforms` turns into ``u = r / 2**24``, and is
    kept when ``r >= threshold`` (``= convnet.rng.threshold(rate)``, so that
    this is ``u >= rate``): ``mask = scale * [kept]``, ``y = x * mask``.
    Returns ``(y, mask)``.
    """
    if y is None:
        y = np.empty(x.shape, dtype=x.dtype)
    if mask is None:
        mask = np.empty(x.shape, dtype=x.dtype)
    N = x.shape[0]
    xf, yf, mf = _rows(x), _rows(y), _rows(mask)
    L = xf.shape[1]
    s, zero = xf.dtype.type(scale), xf.dtype.type(0)
    t = np.uint64(threshold)
    for n in range(n0, _stop(n1, N)):
        start = _u(key) + _u(n * L) * _GOLDEN       # counter of element (n, 0), minus one step
        xn, yn, mn = xf[n], yf[n], mf[n]
        for k in range(_u(L)):
            r = _splitmix64(start + (k + _u(1)) * _GOLDEN) >> _SHIFT_TOP
            m = s if r >= t else zero
            mn[k] = m
            yn[k] = xn[k] * m
    return y, mask


@njit(cache=True, nogil=True, error_model="numpy")   # numpy error model: no zero-division check, so it vectorises
def adam_update(param, grad, m, v, b1, b2, lr_t, eps, n0=0, n1=-1):
    """One Adam step for one parameter array, in place, in a single pass.

    ``m = b1 m + (1 - b1) g``;  ``v = b2 v + (1 - b2) g^2``;
    ``param -= lr_t m / (sqrt(v) + eps)``  (``lr_t`` carries the bias correction).
    The arrays are seen flat; a range ``n0 <= k < n1`` updates those elements only.
    """
    stop = _stop(n1, param.size)
    p, g = param.reshape(-1)[n0:stop], grad.reshape(-1)[n0:stop]      # the range, as views
    mf, vf = m.reshape(-1)[n0:stop], v.reshape(-1)[n0:stop]
    one = p.dtype.type(1)
    c1, c2 = one - b1, one - b2
    for k in range(_u(p.size)):         # from 0 over the views: the loop vectorises
        gk = g[k]
        mk = b1 * mf[k] + c1 * gk
        vk = b2 * vf[k] + c2 * gk * gk
        mf[k] = mk
        vf[k] = vk
        p[k] -= lr_t * mk / (np.sqrt(vk) + eps)


# ------------------------------------------------------------ augmentation
@_jit
def affine_bilinear(images, cos, sin, shift, out, n0, n1):
    """:func:`convnet.augment.affine` for images ``n0 <= n < n1``, given each image's ``cos``, ``sin`` (already divided by its zoom) and ``shift``.

    The same float64 coordinates and float32 (the images' dtype) blend as
    the NumPy version, operation for operation, so the results are the same
    bits; a neighbour outside the image is 0, as in its zero-padded copy.
    """
    N, H, W, C = images.shape
    cy, cx = (H - 1) / 2.0, (W - 1) / 2.0
    one = images.dtype.type(1)
    zero = images.dtype.type(0)
    for n in range(n0, _stop(n1, N)):
        c, s = cos[n], sin[n]
        for i in range(H):
            ty = i - cy - shift[n, 0]
            for j in range(W):
                tx = j - cx - shift[n, 1]
                sy = min(max(cy + c * ty + s * tx + 1.0, 0.0), H + 1.0)    # in the padded image
                sx = min(max(cx - s * ty + c * tx + 1.0, 0.0), W + 1.0)
                y0, x0 = int(sy), int(sx)
                fy, fx = images.dtype.type(sy - y0), images.dtype.type(sx - x0)
                for k in range(C):
                    p00 = images[n, y0 - 1, x0 - 1, k] if 1 <= y0 <= H and 1 <= x0 <= W else zero
                    p01 = images[n, y0 - 1, x0, k] if 1 <= y0 <= H and 0 <= x0 < W else zero
                    p10 = images[n, y0, x0 - 1, k] if 0 <= y0 < H and 1 <= x0 <= W else zero
                    p11 = images[n, y0, x0, k] if 0 <= y0 < H and 0 <= x0 < W else zero
                    top = p00 * (one - fx) + p01 * fx
                    bottom = p10 * (one - fx) + p11 * fx
                    out[n, i, j, k] = top * (one - fy) + bottom * fy
    return out
