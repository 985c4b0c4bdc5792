"""Sliding windows, in both tiers, against the naive loop references in :mod:`convnet.reference`.

im2col/col2im are tested in the textbook's NumPy form (:mod:`convnet.windows`)
and as the engine's numba kernels (:mod:`convnet.engine.kernels`), and
convolution and pooling through the layers on both tiers, on random
float32 inputs, for several geometries: stride 1 and 2, "valid" and "same"
padding, non-square windows, overlapping pools. The max-pool tie rule (first
maximum in row-major scan order, as TensorFlow) and NaN rule (the first NaN
wins) are pinned down with small hand-computed examples.
"""
import numpy as np
import pytest

import convnet
from convnet import layers, reference, windows
from convnet.engine import kernels
from convnet.windows import Window
from conftest import on_tier

TOL = 1e-5

# (N, H, W, C, filters, kernel_size, strides, padding)
CONV_GEOMETRIES = [
    (2, 7, 7, 1, 2, (3, 3), (1, 1), "valid"),
    (2, 8, 7, 3, 4, (2, 3), (2, 2), "same"),
    (3, 9, 9, 2, 3, (4, 4), (2, 2), "valid"),
    (2, 6, 6, 3, 5, (3, 3), (1, 1), "same"),
    (1, 7, 6, 2, 3, (4, 2), (2, 1), "same"),
    (2, 5, 5, 4, 2, (1, 1), (1, 1), "valid"),
    (2, 28, 28, 1, 8, (4, 4), (1, 1), "valid"),
]

# (N, H, W, C, pool_size, strides, padding)
POOL_GEOMETRIES = [
    (2, 4, 4, 3, (2, 2), (2, 2), "valid"),
    (2, 25, 25, 2, (2, 2), (2, 2), "valid"),     # floors to 12
    (2, 9, 9, 3, (2, 2), (2, 2), "valid"),       # floors to 4
    (2, 7, 7, 2, (3, 3), (1, 1), "valid"),       # overlapping
    (2, 7, 8, 2, (3, 3), (2, 2), "same"),        # overlapping + padding
    (1, 5, 5, 3, (2, 2), (2, 2), "same"),        # odd size, padding at the bottom/right
    (2, 6, 7, 2, (2, 3), (1, 2), "same"),        # non-square window and strides
]


def geometry(H, W, kh, kw, sh, sw, padding):
    """(pt, pl, OH, OW) exactly as the layers compute them."""
    win = Window.over((H, W), (kh, kw), (sh, sw), padding)
    return win.pt, win.pl, win.OH, win.OW


def engine_im2col(x, win):
    cols = np.empty((len(x) * win.OH * win.OW, win.kh * win.kw * x.shape[3]), x.dtype)
    return kernels.im2col_into(x, win, cols, 0, len(x))


def engine_col2im(dcols, win, input_shape):
    return kernels.col2im(dcols, win, np.empty(input_shape, dcols.dtype), 0, input_shape[0])


def engine_maxpool_forward(x, win):
    out = np.empty((len(x), win.OH, win.OW, x.shape[3]), x.dtype)
    return kernels.maxpool_forward(x, win, out, np.empty(out.shape, np.int32), 0, len(x))


def engine_maxpool_backward(dout, argmax, H, W):
    dx = np.empty((len(dout), H, W, dout.shape[3]), dout.dtype)
    return kernels.maxpool_backward(dout, argmax, dx, 0, len(dout))


#: im2col and col2im of each tier
WINDOW_FUNCTIONS = {"textbook": (windows.im2col, windows.col2im), "engine": (engine_im2col, engine_col2im)}


@pytest.fixture(params=sorted(WINDOW_FUNCTIONS))
def window_functions(request):
    return WINDOW_FUNCTIONS[request.param]


def rand32(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def built(layer, input_shape, seed=0):
    layer.build(input_shape, np.random.default_rng(seed))
    return layer


def tiered(layer, input_shape, seed=0):
    """``built(layer)``, and the layer run by the tier in use: ``(layer, runner)``."""
    layer = built(layer, input_shape, seed)
    return layer, on_tier(layer)


# ------------------------------------------------------------------ im2col / col2im
def naive_im2col(x, kh, kw, sh, sw, pt, pl, OH, OW):
    """Windows of the zero-padded image, one row each, flattened in (i, j, c) order."""
    N, H, W, C = x.shape
    xp = np.pad(x, ((0, 0), (pt, kh + OH * sh), (pl, kw + OW * sw), (0, 0)))   # generous bottom/right pad
    rows = [xp[n, oh * sh:oh * sh + kh, ow * sw:ow * sw + kw, :].reshape(-1)
            for n in range(N) for oh in range(OH) for ow in range(OW)]
    return np.array(rows)


@pytest.mark.parametrize("N,H,W,C,F,ks,st,padding", CONV_GEOMETRIES)
def test_im2col_rows_are_the_padded_windows(rng, window_functions, N, H, W, C, F, ks, st, padding):
    im2col, _ = window_functions
    x = rand32(rng, (N, H, W, C))
    (kh, kw), (sh, sw) = ks, st
    pt, pl, OH, OW = geometry(H, W, kh, kw, sh, sw, padding)
    cols = im2col(x, Window(kh, kw, sh, sw, pt, pl, OH, OW))
    assert cols.shape == (N * OH * OW, kh * kw * C)
    assert cols.dtype == np.float32
    np.testing.assert_array_equal(cols, naive_im2col(x, kh, kw, sh, sw, pt, pl, OH, OW))


@pytest.mark.parametrize("N,H,W,C,F,ks,st,padding", CONV_GEOMETRIES)
def test_im2col_times_reshaped_kernel_is_the_naive_convolution(rng, window_functions, N, H, W, C, F, ks, st,
                                                              padding):
    """The documented row order matches ``kernel.reshape(kh*kw*C, F)`` for a Keras kernel."""
    im2col, _ = window_functions
    x, kernel = rand32(rng, (N, H, W, C)), rand32(rng, ks + (C, F))
    (kh, kw), (sh, sw) = ks, st
    pt, pl, OH, OW = geometry(H, W, kh, kw, sh, sw, padding)
    z = im2col(x, Window(kh, kw, sh, sw, pt, pl, OH, OW)) @ kernel.reshape(-1, F)
    expected = reference.conv2d_forward_naive(x, kernel, np.zeros(F, np.float32), st, padding)
    np.testing.assert_allclose(z.reshape(N, OH, OW, F), expected, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("N,H,W,C,F,ks,st,padding", CONV_GEOMETRIES)
def test_col2im_is_the_adjoint_of_im2col(rng, window_functions, N, H, W, C, F, ks, st, padding):
    """<im2col(x), D> == <x, col2im(D)> for all x, D: col2im sums overlapping windows, drops padding."""
    im2col, col2im = window_functions
    x64 = rng.standard_normal((N, H, W, C))
    (kh, kw), (sh, sw) = ks, st
    win = Window(kh, kw, sh, sw, *geometry(H, W, kh, kw, sh, sw, padding))
    D = rng.standard_normal((N * win.OH * win.OW, kh * kw * C))
    lhs = np.sum(im2col(x64, win) * D)
    dx = col2im(D, win, (N, H, W, C))
    assert dx.shape == (N, H, W, C)
    np.testing.assert_allclose(np.sum(x64 * dx), lhs, rtol=1e-10)


def test_col2im_adds_overlapping_windows(window_functions):
    """3x3 image, 2x2 windows, stride 1: the centre pixel lies in all four windows."""
    dcols = np.ones((4, 4))
    dx = window_functions[1](dcols, Window(2, 2, 1, 1, 0, 0, 2, 2), (1, 3, 3, 1))
    np.testing.assert_array_equal(dx[0, :, :, 0], [[1, 2, 1], [2, 4, 2], [1, 2, 1]])


# --------------------------------------------------------------- Conv2D vs reference
@pytest.mark.parametrize("N,H,W,C,F,ks,st,padding", CONV_GEOMETRIES)
def test_conv2d_layer_matches_naive_reference(rng, N, H, W, C, F, ks, st, padding, each_backend):
    layer, run = tiered(layers.Conv2D(F, ks, strides=st, padding=padding, name="conv"), (H, W, C))
    layer.params["bias"][:] = rand32(rng, (F,))
    x = rand32(rng, (N, H, W, C))
    out = run.forward(x)
    assert out.dtype == np.float32
    expected = reference.conv2d_forward_naive(x, layer.params["kernel"], layer.params["bias"], st, padding)
    np.testing.assert_allclose(out, expected, atol=TOL, rtol=TOL)

    dout = rand32(rng, out.shape)
    dx = run.backward(dout)
    dx_ref, dk_ref, db_ref = reference.conv2d_backward_naive(dout, x, layer.params["kernel"], st, padding)
    np.testing.assert_allclose(dx, dx_ref, atol=TOL, rtol=TOL)
    np.testing.assert_allclose(layer.grads["kernel"], dk_ref, atol=TOL * 10, rtol=TOL)
    np.testing.assert_allclose(layer.grads["bias"], db_ref, atol=TOL * 10, rtol=TOL)


def test_conv2d_relu_matches_reference_followed_by_relu(rng, each_backend):
    layer, run = tiered(layers.Conv2D(3, 3, padding="same", activation="relu"), (6, 6, 2))
    x = rand32(rng, (2, 6, 6, 2))
    z = reference.conv2d_forward_naive(x, layer.params["kernel"], layer.params["bias"], (1, 1), "same")
    np.testing.assert_allclose(run.forward(x), np.maximum(z, 0), atol=TOL)
    dout = rand32(rng, z.shape)
    dx_ref, dk_ref, _ = reference.conv2d_backward_naive(dout * (z > 0), x, layer.params["kernel"], (1, 1), "same")
    np.testing.assert_allclose(run.backward(dout), dx_ref, atol=TOL)
    np.testing.assert_allclose(layer.grads["kernel"], dk_ref, atol=TOL * 10)


# ------------------------------------------------------------- max-pool vs reference
@pytest.mark.parametrize("N,H,W,C,pool,st,padding", POOL_GEOMETRIES)
def test_maxpool_kernels_match_naive_reference(rng, N, H, W, C, pool, st, padding):
    x = rand32(rng, (N, H, W, C))
    (kh, kw), (sh, sw) = pool, st
    pt, pl, OH, OW = geometry(H, W, kh, kw, sh, sw, padding)
    out, argmax = engine_maxpool_forward(x, Window(kh, kw, sh, sw, pt, pl, OH, OW))
    np.testing.assert_array_equal(out, reference.maxpool_forward_naive(x, pool, st, padding))
    # argmax is documented as the flat index h*W + w of the winner within its image
    flat = x.transpose(0, 3, 1, 2).reshape(N, C, H * W)
    winners = np.take_along_axis(flat, argmax.transpose(0, 3, 1, 2).reshape(N, C, -1).astype(np.int64), axis=2)
    np.testing.assert_array_equal(winners.reshape(N, C, OH, OW).transpose(0, 2, 3, 1), out)

    dout = rand32(rng, out.shape)
    dx = engine_maxpool_backward(dout, argmax, H, W)
    np.testing.assert_allclose(dx, reference.maxpool_backward_naive(dout, x, pool, st, padding), atol=TOL)


@pytest.mark.parametrize("N,H,W,C,pool,st,padding", POOL_GEOMETRIES)
def test_maxpool_layer_matches_naive_reference_with_many_ties(rng, N, H, W, C, pool, st, padding, each_backend):
    """Small integers make ties in most windows: layer and reference must pick the same winners."""
    layer, run = tiered(layers.MaxPool2D(pool, strides=st, padding=padding), (H, W, C))
    x = rng.integers(-2, 3, size=(N, H, W, C)).astype(np.float32)
    out = run.forward(x)
    np.testing.assert_array_equal(out, reference.maxpool_forward_naive(x, pool, st, padding))
    dout = rand32(rng, out.shape)
    np.testing.assert_allclose(run.backward(dout), reference.maxpool_backward_naive(dout, x, pool, st, padding),
                               atol=TOL)


# ------------------------------------------------------------------- max-pool ties
def pool_dx(x2d, dout2d, pool, strides, padding="valid"):
    """Forward + backward of a MaxPool2D on one single-channel image; returns (out, dx) as 2-D arrays."""
    x = np.asarray(x2d, dtype=np.float32)[None, :, :, None]
    layer, run = tiered(layers.MaxPool2D(pool, strides=strides, padding=padding), x.shape[1:])
    out = run.forward(x)
    dx = run.backward(np.asarray(dout2d, dtype=np.float32)[None, :, :, None])
    return out[0, :, :, 0], dx[0, :, :, 0]


def test_tie_in_one_window_goes_to_first_max_in_row_major_order(each_backend):
    # maxima 2 at (0, 1) and (1, 0): row-major scan meets (0, 1) first
    out, dx = pool_dx([[1, 2], [2, 0]], [[5]], 2, 2)
    np.testing.assert_array_equal(out, [[2]])
    np.testing.assert_array_equal(dx, [[0, 5], [0, 0]])
    # all four equal: the top-left one wins
    _, dx = pool_dx([[3, 3], [3, 3]], [[1]], 2, 2)
    np.testing.assert_array_equal(dx, [[1, 0], [0, 0]])


TIE_X = [[0, 4, 4],
         [4, 4, 1],
         [2, 3, 4]]
TIE_DOUT = [[1, 10],
            [100, 1000]]
# 2x2 windows, stride 1 (overlapping). Winners, first max in row-major order:
#   window (0,0) = {0, 4, 4, 4} -> (0,1);  window (0,1) = {4, 4, 4, 1} -> (0,1)
#   window (1,0) = {4, 4, 2, 3} -> (1,0);  window (1,1) = {4, 1, 3, 4} -> (1,1)
# (0,1) wins two windows and receives 1 + 10.
TIE_DX = [[0, 11, 0],
          [100, 1000, 0],
          [0, 0, 0]]


def test_overlapping_windows_with_ties_route_to_first_max_and_accumulate(each_backend):
    out, dx = pool_dx(TIE_X, TIE_DOUT, 2, 1)
    np.testing.assert_array_equal(out, [[4, 4], [4, 4]])
    np.testing.assert_array_equal(dx, TIE_DX)


def test_tie_example_catches_routing_to_the_last_max(monkeypatch):
    """The example above tells first-max from last-max routing (a plausible kernel bug)."""
    def last_max_backprop(self, dz):
        x = self._x
        dx = np.zeros_like(x)
        for oh in range(dz.shape[1]):
            for ow in range(dz.shape[2]):
                window = x[0, oh:oh + 2, ow:ow + 2, 0].reshape(-1)
                k = len(window) - 1 - int(np.argmax(window[::-1]))     # last maximum
                dx[0, oh + k // 2, ow + k % 2, 0] += dz[0, oh, ow, 0]
        return dx

    original_call = layers.MaxPool2D.call

    def remembering_call(self, x, training):
        self._x = x
        return original_call(self, x, training)

    monkeypatch.setattr(layers.MaxPool2D, "call", remembering_call)
    monkeypatch.setattr(layers.MaxPool2D, "backprop", last_max_backprop)
    with convnet.backend("textbook"):                     # the textbook layer, patched
        _, dx = pool_dx(TIE_X, TIE_DOUT, 2, 1)
    np.testing.assert_array_equal(dx, [[0, 0, 0], [0, 111, 0], [0, 0, 1000]])   # what the wrong rule gives
    assert not np.array_equal(dx, TIE_DX)


def test_overlapping_3x3_pool_accumulates_into_shared_pixel(each_backend):
    # one large value in the middle of a 4x4 image wins every 3x3 window (stride 1)
    x = np.arange(16, dtype=np.float32).reshape(4, 4) / 100
    x[1, 2] = 9.0
    out, dx = pool_dx(x, [[1, 2], [3, 4]], 3, 1)
    np.testing.assert_array_equal(out, np.full((2, 2), 9.0, np.float32))
    expected = np.zeros((4, 4), np.float32)
    expected[1, 2] = 1 + 2 + 3 + 4
    np.testing.assert_array_equal(dx, expected)


def test_same_padding_never_wins_even_against_negative_values(each_backend):
    # 3x3 image, 2x2 pool, stride 2, "same": output 2x2, one row/column of padding at the bottom/right
    x = -np.arange(1, 10, dtype=np.float32).reshape(3, 3)
    out, dx = pool_dx(x, [[1, 2], [3, 4]], 2, 2, padding="same")
    np.testing.assert_array_equal(out, [[-1, -3], [-7, -9]])
    np.testing.assert_array_equal(dx, [[1, 0, 2], [0, 0, 0], [3, 0, 4]])


def test_maxpool_forward_kernel_reports_first_max_index():
    x = np.array([[1, 2], [2, 0]], dtype=np.float32)[None, :, :, None]
    out, argmax = engine_maxpool_forward(x, Window(2, 2, 2, 2, 0, 0, 1, 1))
    assert out[0, 0, 0, 0] == 2
    assert argmax[0, 0, 0, 0] == 1          # flat index h*W + w of (0, 1)
    dx = engine_maxpool_backward(np.full((1, 1, 1, 1), 3.0, np.float32), argmax, 2, 2)
    np.testing.assert_array_equal(dx[0, :, :, 0], [[0, 3], [0, 0]])


def test_maxpool_window_with_nan_gives_nan_like_the_reference():
    x = np.array([[1, np.nan], [2, 0]], dtype=np.float32)[None, :, :, None]
    out, _ = engine_maxpool_forward(x, Window(2, 2, 2, 2, 0, 0, 1, 1))
    np.testing.assert_array_equal(out, reference.maxpool_forward_naive(x))     # [[[[nan]]]]


def test_nan_gradient_goes_to_the_first_nan_of_its_window(each_backend):
    """Two NaNs in one window: the first in scan order wins and gets the gradient (np.argmax's rule)."""
    out, dx = pool_dx([[1, np.nan], [np.nan, 0]], [[5]], 2, 2)
    assert np.isnan(out[0, 0])
    np.testing.assert_array_equal(dx, [[0, 5], [0, 0]])
