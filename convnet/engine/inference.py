"""Inference (``predict``, ``evaluate``): the whole network over a few images at a time.

Training keeps every layer's output and whatever its backward needs;
inference needs only the last layer's result. So for a model made of the
textbook layers, :func:`plan` turns the layers into a list of steps (made
once per model by :class:`convnet.engine.model.EngineModel`) and
:func:`infer` runs them with one hand-off per batch: each thread takes a share
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
  after taking each tile's maximum (:func:`convnet.engine.fused.bias_relu_maxpool2x2`);
  when its kernel is 4x4 with stride 1 and no padding and it has at least
  :data:`WINOGRAD_MIN_CHANNELS` input channels (the seed model's second
  convolution), it computes those outputs by Winograd F(2x2, 4x4)
  (:func:`convnet.engine.winograd.step`): fewer products, rounded differently, to within
  1e-5 of the norm of the textbook's result;
* nothing is kept for backward: the fused pooling writes no ``argmax``
  (a pooling step of its own writes it into a scratch array).

A model with any other layer or activation (one you wrote yourself) runs
layer by layer, as in training.
"""
import numpy as np

from .. import layers
from ..activations import LinearFunction, ReLUFunction, SoftmaxFunction
from . import threads, winograd
from .elementwise import add_bias, relu_forward
from .fused import bias_relu_maxpool2x2
from .im2col import im2col_into
from .pooling import maxpool_forward, tiles_2x2

#: the windowed layers run over blocks of images whose largest im2col matrix is at most this many bytes
BLOCK_BYTES = 1024 * 1024

_ACTIVATIONS = (ReLUFunction, SoftmaxFunction, LinearFunction)


def _activate(act, z):
    """``act.forward(z)``; ReLU through the engine's one-pass kernel, in place (``z`` is a step's own array)."""
    if type(act) is ReLUFunction:
        return relu_forward(z, z, 0, len(z))
    return act.forward(z)


def _conv(layer, pool, transformed):
    """A convolution step, with its activation; with ``pool``, also that 2x2 pooling (ReLU only).

    ``transformed(layer)``: the layer's :class:`convnet.engine.winograd.TransformedKernel`.
    """
    if winograd.fits(layer, pool):
        return winograd.step(layer, pool, transformed(layer)) + (transformed(layer),)
    win, F = layer.window, layer.filters
    if pool is not None:                        # only the rows and columns the pooling reads
        win = win._replace(OH=2 * pool.output_shape[0], OW=2 * pool.output_shape[1])
    rows = win.OH * win.OW

    def step(x):
        N = len(x)
        K, b = layer.params["kernel"].reshape(-1, F), layer.params["bias"]
        cols = im2col_into(x, win, np.empty((N * rows, K.shape[0]), x.dtype), 0, N)
        z = cols @ K
        if pool is not None:
            out = np.empty((N,) + pool.output_shape, x.dtype)
            return bias_relu_maxpool2x2(z.reshape(N, win.OH, win.OW, F), b, out, 0, N)
        return add_bias(z, b, 0, len(z)).reshape((N,) + layer.output_shape)
    return step, rows * layer.params["kernel"][..., 0].size, None


def _pool(layer):
    def step(x):
        out = np.empty((len(x),) + layer.output_shape, x.dtype)
        maxpool_forward(x, layer.window, out, np.empty(out.shape, np.int32), 0, len(x))
        return out
    return step


def _dense(layer):
    return lambda x: x @ layer.params["kernel"] + layer.params["bias"]


def plan(model_layers, transformed):
    """The layers as inference steps: ``(steps, windowed, per_image, kernels)``, or None.

    ``steps`` is a list of functions, each taking a batch (a block of
    images) and returning the next array; the last two are the last layer's
    math (its ``z``) and its activation. The first ``windowed`` steps are
    the convolutions and poolings, run a block of images at a time;
    ``per_image`` is the size of the largest im2col matrix of one image,
    which sets the block; ``kernels``, the Winograd kernels to refresh
    before each call (:class:`convnet.engine.winograd.TransformedKernel`,
    from ``transformed(layer)``). None: a layer or activation has no step here.
    """
    steps, per_image, windowed, kernels = [], 1, None, []
    todo = model_layers
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
                       and tiles_2x2(pool.window, *layer.output_shape[:2])
                       and nxt != len(todo) - 1)
            step, size, kernel = _conv(layer, pool if fusable else None, transformed)
            if kernel is not None:
                kernels.append(kernel)
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
    return steps, windowed if windowed is not None else len(steps) - 2, per_image, kernels


def infer(planned, output_shape, x):
    """``(z, y)`` of the last layer (output ``output_shape``) for the batch ``x``: the steps of :func:`plan`,
    each thread carrying its share of the images through every step (one hand-off)."""
    steps, windowed, per_image, kernels = planned
    for kernel in kernels:
        kernel.refresh()
    N = len(x)
    pre = np.empty((N,) + output_shape, x.dtype)
    out = np.empty_like(pre)
    block = max(1, BLOCK_BYTES // (per_image * x.itemsize))

    def share(n0, n1):                             # each thread: its images through every layer,
        for m0, m1 in threads.blocks_within(n0, n1, N):   # a fixed block at a time (the same rounding
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
