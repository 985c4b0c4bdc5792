"""Max-pooling forward and backward as numba loops: the engine's :class:`convnet.layers.MaxPool2D`.

Validated against :meth:`convnet.layers.MaxPool2D.call` / ``backprop`` and
:func:`convnet.reference.maxpool2d` (ties to the first maximum, the first NaN
wins), in ``tests/test_engine_pooling.py``. The ``relu`` variants also
compute the backward of the ReLU whose output was pooled
(:meth:`convnet.activations.ReLUFunction.backward`), bit for bit as the two
kernels one after the other.
"""
import numpy as np

from .jit import _jit, _stop, _u


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
