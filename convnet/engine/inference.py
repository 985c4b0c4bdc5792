"""Inference (``predict``, ``evaluate``): the whole network over a few images at a time.

Training keeps every layer's output and whatever its backward needs;
inference needs only the last layer's result. So for a model made of the
textbook layers, :meth:`Sequential.infer` turns the layers into a list of
steps and runs them with one hand-off per batch: each thread takes a share
of the images and carries it through every layer, the windowed layers
(convolutions, pooling) a block of images at a time so that each block's
im2col matrix and outputs stay in the core's cache. Nothing is stored on the
layers (``output`` and ``preactivation`` keep their values from the last
:meth:`~convnet.model.Sequential.forward`, which is the call that records
them).

What each step computes is what the layer's own ``call`` and activation
compute, with these shortcuts, which the tests hold to the same numbers:

* dropout is the identity at inference, so it is left out;
* a convolution with ReLU followed by a 2x2 max-pooling in disjoint tiles
  computes only the output rows and columns the pooling reads (8 of 9 for
  the seed model's second convolution) and adds the bias and applies ReLU
  after taking each tile's maximum (:func:`kernels.bias_relu_maxpool2x2`);
  when its kernel is 4x4 with stride 1 and no padding and it has at least
  :data:`WINOGRAD_MIN_CHANNELS` input channels (the seed model's second
  convolution), it computes those outputs by Winograd F(2x2, 4x4)
  (:func:`_winograd`): fewer products, rounded differently, to within
  1e-5 of the norm of the textbook's result;
* nothing is kept for backward: the fused pooling writes no ``argmax``
  (a pooling step of its own writes it into a scratch array).

A model with any other layer or activation (one you wrote yourself) runs
layer by layer, as in training.
"""
import weakref

import numpy as np

from .. import layers
from ..activations import LinearFunction, ReLUFunction, SoftmaxFunction
from . import kernels, threads

#: the windowed layers run over blocks of images whose largest im2col matrix is at most this many bytes
BLOCK_BYTES = 1024 * 1024

_ACTIVATIONS = (ReLUFunction, SoftmaxFunction, LinearFunction)


def _activate(act, z):
    """``act.forward(z)``; ReLU through the engine's one-pass kernel, in place (``z`` is a step's own array)."""
    if type(act) is ReLUFunction:
        return kernels.relu_forward(z, z, 0, len(z))
    return act.forward(z)


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


def _winograd_fits(layer, pool):
    """Does a conv + ReLU + 2x2 pooling step go through Winograd F(2x2, 4x4) (:func:`_winograd`)?

    A 4x4 kernel, stride 1, no padding (so each tile's 5x5 window lies inside the image).
    """
    kh, kw, sh, sw, pt, pl = layer.window[:6]
    return (pool is not None and (kh, kw, sh, sw, pt, pl) == (4, 4, 1, 1, 0, 0)
            and layer.input_shape[2] >= WINOGRAD_MIN_CHANNELS)


#: layer -> (the kernel its transformed kernel was computed from, that transformed kernel)
_transformed = weakref.WeakKeyDictionary()


def _transformed_kernel(layer):
    """``U = G K G^T`` as ``(25, C, F)``; kept while the kernel's values stay the same (a plan is made per batch)."""
    K = layer.params["kernel"]
    kept = _transformed.get(layer)
    if kept is not None and kept[0].dtype == K.dtype and np.array_equal(kept[0], K):
        return kept[1]
    U = np.einsum("ik,klcf,jl->ijcf", _G, K.astype(np.float64), _G)
    U = U.reshape(25, K.shape[2], K.shape[3]).astype(K.dtype)
    _transformed[layer] = (K.copy(), U)
    return U


def _winograd(layer, pool):
    """Conv (4x4, stride 1, no padding) + ReLU + 2x2 pooling by Winograd F(2x2, 4x4).

    Each 2x2 block of the convolution's outputs that the pooling reads is
    one Winograd tile: its 5x5 input window is transformed (``B^T d B``),
    the 25 transformed positions become 25 matrix products over the
    channels (``V[p] @ U[p]``, with ``U = G K G^T`` kept while the weights
    do not change), and the output transform ends in the tile's maximum, bias and
    ReLU. 25 products where im2col needs 64 per block; the rounding is not
    im2col's, which inference does not need (``tests/test_engine_inference.py``
    holds it to the textbook forward within 1e-5 of the norm).
    """
    PH, PW = pool.output_shape[:2]
    C, F = layer.input_shape[2], layer.filters
    K, b = layer.params["kernel"], layer.params["bias"]
    U = _transformed_kernel(layer)
    AT, BT = _AT.astype(K.dtype), _BT.astype(K.dtype)

    def step(x):
        N = len(x)
        V = kernels.winograd4_tiles(np.ascontiguousarray(x), BT, PH, PW,
                                    np.empty((25, N * PH * PW, C), x.dtype), 0, N)
        out = np.empty((N, PH, PW, F), x.dtype)
        return kernels.winograd4_bias_relu_maxpool(np.matmul(V, U), AT, b, out, 0, N)
    return step, 25 * PH * PW * C


def _conv(layer, pool):
    """A convolution step, with its activation; with ``pool``, also that 2x2 pooling (ReLU only)."""
    if _winograd_fits(layer, pool):
        return _winograd(layer, pool)
    win, F = layer.window, layer.filters
    if pool is not None:                        # only the rows and columns the pooling reads
        win = win._replace(OH=2 * pool.output_shape[0], OW=2 * pool.output_shape[1])
    rows = win.OH * win.OW

    def step(x):
        N = len(x)
        K, b = layer.params["kernel"].reshape(-1, F), layer.params["bias"]
        cols = kernels.im2col_into(x, win, np.empty((N * rows, K.shape[0]), x.dtype), 0, N)
        z = cols @ K
        if pool is not None:
            out = np.empty((N,) + pool.output_shape, x.dtype)
            return kernels.bias_relu_maxpool2x2(z.reshape(N, win.OH, win.OW, F), b, out, 0, N)
        return kernels.add_bias(z, b, 0, len(z)).reshape((N,) + layer.output_shape)
    return step, rows * layer.params["kernel"][..., 0].size


def _pool(layer):
    def step(x):
        out = np.empty((len(x),) + layer.output_shape, x.dtype)
        kernels.maxpool_forward(x, layer.window, out, np.empty(out.shape, np.int32), 0, len(x))
        return out
    return step


def _dense(layer):
    return lambda x: x @ layer.params["kernel"] + layer.params["bias"]


def plan(model):
    """The model's layers as inference steps: ``(steps, windowed, per_image)``, or None.

    ``steps`` is a list of functions, each taking a batch (a block of
    images) and returning the next array; the last two are the last layer's
    math (its ``z``) and its activation. The first ``windowed`` steps are
    the convolutions and poolings, run a block of images at a time;
    ``per_image`` is the size of the largest im2col matrix of one image,
    which sets the block. None: a layer or activation has no step here.
    """
    steps, per_image, windowed = [], 1, None
    todo = model.layers
    i = 0
    while i < len(todo):
        layer, last = todo[i], i == len(todo) - 1
        kind = type(layer)
        if kind not in layers.LAYER_CLASSES.values() or type(layer.activation) not in _ACTIVATIONS:
            return None
        if kind is layers.Dropout:                 # the identity at inference
            if last:
                steps += [lambda x: x, lambda x: x]
            i += 1
            continue
        nxt = next((j for j in range(i + 1, len(todo)) if type(todo[j]) is not layers.Dropout), None)
        pool = todo[nxt] if nxt is not None else None
        if kind is layers.Conv2D:
            fusable = (type(layer.activation) is ReLUFunction and type(pool) is layers.MaxPool2D
                       and kernels.tiles_2x2(pool.window, *layer.output_shape[:2])
                       and nxt != len(todo) - 1)
            step, size = _conv(layer, pool if fusable else None)
            per_image = max(per_image, size)
            steps.append(step)
            if fusable:
                i = nxt + 1
                continue
        elif kind is layers.MaxPool2D:
            steps.append(_pool(layer))
        elif kind is layers.Flatten:
            steps.append(lambda x: x.reshape(len(x), -1))
        elif kind is layers.Dense:
            steps.append(_dense(layer))
        else:                                      # ReLU, Softmax: an activation alone (on a copy:
            steps.append(np.array)                 # ReLU works in place, and x may be the caller's)
        if kind not in (layers.Conv2D, layers.MaxPool2D) and windowed is None:
            windowed = len(steps) - 1
        act = layer.activation
        if last:
            steps.append(lambda z, act=act: act.forward(z))
        elif type(act) is not LinearFunction:
            steps.append(lambda z, act=act: _activate(act, z))
        i += 1
    return steps, windowed if windowed is not None else len(steps) - 2, per_image


class Sequential:
    """Engine version of :class:`convnet.model.Sequential`: :meth:`infer` only."""

    def __init__(self, model):
        self.model = model

    def infer(self, x):
        model = self.model
        planned = plan(model)
        if planned is None:
            return model.infer(x)
        steps, windowed, per_image = planned
        N = len(x)
        pre = np.empty((N,) + model.layers[-1].output_shape, x.dtype)
        out = np.empty_like(pre)
        block = max(1, BLOCK_BYTES // (per_image * x.itemsize))

        def share(n0, n1):                         # each thread: its images through every layer,
            for m0, m1 in threads.blocks_within(n0, n1, N):   # a fixed block at a time (same rounding
                parts = []                                       # on any thread count)
                for b0 in range(m0, m1, block):
                    a = x[b0:min(b0 + block, m1)]
                    for step in steps[:windowed]:
                        a = step(a)
                    parts.append(a)
                a = parts[0] if len(parts) == 1 else np.concatenate(parts)
                for step in steps[windowed:-1]:
                    a = step(a)
                pre[m0:m1] = a
                out[m0:m1] = steps[-1](a)
        threads.over_reduction_blocks(share, N, N * per_image)
        return pre, out
