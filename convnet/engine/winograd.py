"""Winograd F(2x2, 4x4): a 4x4 convolution + ReLU + 2x2 pooling for inference, in fewer products.

The engine's inference of :meth:`convnet.layers.Conv2D.call` followed by
ReLU and :meth:`convnet.layers.MaxPool2D.call`, validated against the
textbook forward within 1e-5 of the norm (the rounding is not im2col's;
``tests/test_engine_winograd.py``). Used by :mod:`convnet.engine.inference`.
"""
import numpy as np

from .fused import _relu_of_max4
from .jit import _jit, _stop, _u


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


def _winograd_matrices():
    """``A^T`` (2x5), ``G`` (5x4), ``B^T`` (5x5) of Winograd F(2, 4), from the points 0, 1, -1, -2 and infinity.

    Two outputs of a 4-tap correlation, ``y_i = sum_k d[i + k] g[k]``, are
    ``A^T ((G g) * (B^T d))``: ``G`` and ``A^T`` evaluate the filter and the
    output polynomial at the points (Vandermonde rows; infinity keeps the
    leading coefficient), ``B^T`` is the inverse-transpose of the 5x5
    Vandermonde matrix. In 2-D, ``Y = A^T [(G g G^T) * (B^T d B)] A``.
    Of the point sets tried, this one gave the smallest float32 error.
    """
    points = (0.0, 1.0, -1.0, -2.0)
    vander = np.array([[p ** k for k in range(5)] for p in points] + [[0, 0, 0, 0, 1]], np.float64)
    G = np.array([[p ** k for k in range(4)] for p in points] + [[0, 0, 0, 1]], np.float64)
    AT = np.array([[1, 1, 1, 1, 0], [0, 1, -1, -2, 1]], np.float64)
    return AT, G, np.linalg.inv(vander).T


_AT, _G, _BT = _winograd_matrices()


#: convolutions with fewer input channels keep im2col: Winograd's products then have too short an inner dimension
WINOGRAD_MIN_CHANNELS = 8


def fits(layer, pool):
    """Does a conv + ReLU + 2x2 pooling step go through Winograd F(2x2, 4x4) (:func:`step`)?

    A 4x4 kernel, stride 1, no padding (so each tile's 5x5 window lies inside the image).
    """
    kh, kw, sh, sw, pt, pl = layer.window[:6]
    return (pool is not None and (kh, kw, sh, sw, pt, pl) == (4, 4, 1, 1, 0, 0)
            and layer.input_shape[2] >= WINOGRAD_MIN_CHANNELS)


class TransformedKernel:
    """``U = G K G^T`` of one layer's kernel as ``(25, C, F)``, kept while the kernel's values stay the same.

    The optimizer changes the kernel in place between batches, so each
    :meth:`refresh` (once per inference call) compares the kernel with the
    copy ``U`` was computed from.
    """

    def __init__(self, layer):
        self.layer = layer
        self.kept = None            # (the kernel U was computed from, U)

    def refresh(self):
        """``U`` for the kernel's current values (computed again only when they changed)."""
        K = self.layer.params["kernel"]
        kept = self.kept
        if kept is not None and kept[0].dtype == K.dtype and np.array_equal(kept[0], K):
            return kept[1]
        U = np.einsum("ik,klcf,jl->ijcf", _G, K.astype(np.float64), _G)
        U = U.reshape(25, K.shape[2], K.shape[3]).astype(K.dtype)
        self.kept = (K.copy(), U)
        return U

    @property
    def U(self):
        """The last refreshed ``U``."""
        return self.kept[1]


def step(layer, pool, transformed):
    """Conv (4x4, stride 1, no padding) + ReLU + 2x2 pooling by Winograd F(2x2, 4x4).

    Each 2x2 block of the convolution's outputs that the pooling reads is
    one Winograd tile: its 5x5 input window is transformed (``B^T d B``),
    the 25 transformed positions become 25 matrix products over the
    channels (``V[p] @ U[p]``, with ``U = G K G^T`` kept while the weights
    do not change: ``transformed``, a :class:`TransformedKernel` refreshed
    before each inference call), and the output transform ends in the tile's maximum, bias and
    ReLU. 25 products where im2col needs 64 per block; the rounding is not
    im2col's, which inference does not need (``tests/test_engine_winograd.py``
    holds it to the textbook forward within 1e-5 of the norm).
    """
    PH, PW = pool.output_shape[:2]
    C, F = layer.input_shape[2], layer.filters
    dtype = layer.params["kernel"].dtype
    AT, BT = _AT.astype(dtype), _BT.astype(dtype)

    def step(x):
        N = len(x)
        V = winograd4_tiles(np.ascontiguousarray(x), BT, PH, PW, np.empty((25, N * PH * PW, C), x.dtype), 0, N)
        out = np.empty((N, PH, PW, F), x.dtype)
        return winograd4_bias_relu_maxpool(np.matmul(V, transformed.U), AT, layer.params["bias"], out, 0, N)
    return step, 25 * PH * PW * C
