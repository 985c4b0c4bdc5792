"""The engine's versions of the textbook layers: same contract, built for speed.

Each class here wraps one textbook object (``self.layer``) and provides the
methods the layer's ``forward``/``backward`` call (``call``/``backprop``, or
an activation's ``forward``/``backward``), reading the layer's ``params``,
filling its ``grads`` and keeping what backward needs in the layer's
``cache``. The results are those of the textbook methods (the tests hold
them to it); how they are computed is what differs:

* numba kernels (:mod:`convnet.engine.kernels`) instead of NumPy's
  temporaries: im2col/col2im, pooling, bias, ReLU and dropout in one pass;
* the batch shared out between threads (:mod:`convnet.engine.threads`),
  each thread doing a whole sequence (im2col, product, bias) for its images
  with one hand-off;
* the im2col matrix built a few images at a time so each block is still in
  the core's cache when the product reads it, and rebuilt in backward rather
  than kept when it is large;
* sums over the batch taken per fixed block of images and added in order,
  so the result does not depend on the number of threads.

Fusion across layers (each layer's ``output``, ``preactivation`` and
``grad_input`` are still computed and kept, so every one can be inspected):

* a Conv2D whose activation is ReLU applies bias and ReLU in one pass over
  each block of its output while the block is in cache, and hands ``y`` to
  its activation's engine object, which returns it instead of recomputing;
* a MaxPool2D that reads such a ReLU's output links itself to that Conv2D
  on its first call; from then on the Conv2D also pools each block of
  images right after its ReLU, and in backward the pooling computes the
  ReLU's ``dz`` in the same pass as its own ``dx``.

Each hand-over is checked by identity (the very array the next method
receives), so a layer used any other way computes everything itself.

``docs/performance.md`` has the measurements behind each choice.
"""
import weakref

import numpy as np

from .. import backends, rng
from ..activations import ReLUFunction
from . import kernels, threads


class _Engine:
    """Engine object for one textbook object: ``self.layer``."""

    def __init__(self, layer):
        self.layer = layer


#: (weak reference to the last ReLU output a Conv2D computed, that Conv2D's engine object):
#: how a MaxPool2D finds out that its input comes from a fusable Conv2D + ReLU
_last_relu_output = (None, None)


def _taken(holder, name, *inputs):
    """The results stashed at ``holder.<name>`` for exactly these input arrays (by identity), or None.

    The stash is emptied either way: it serves one call.
    """
    stash = getattr(holder, name)
    setattr(holder, name, None)
    if stash is None or len(stash) <= len(inputs) or any(a is not b for a, b in zip(stash, inputs)):
        return None
    return stash[len(inputs):]


def _gradient_extent(dz):
    """``(rows, columns)`` of the output grid ``dz[:, :rows, :columns]`` that holds every nonzero of ``dz``."""
    OH, OW = dz.shape[1], dz.shape[2]
    while OH > 1 and not dz[:, OH - 1, :OW].any():
        OH -= 1
    while OW > 1 and not dz[:, :OH, OW - 1].any():
        OW -= 1
    return OH, OW


class Conv2D(_Engine):
    """im2col + product + bias per block of images, threads over images."""

    #: the im2col matrix is built a few images at a time, at most this many bytes per block
    COLS_BLOCK_BYTES = 768 * 1024
    #: a whole im2col matrix up to this size is kept from forward for backward; a larger one
    #: is rebuilt block by block in backward (cheaper than reading it back from memory)
    KEEP_COLS_BYTES = 2 * 1024 * 1024
    #: the output is fused with ReLU and pooling up to this size: fused, ``y`` is allocated while the
    #: previous call's ``z`` is still held by the layer, one more output-sized array at the peak
    #: (80 MB for conv1 at batch 1000), where the saved hand-offs no longer matter
    FUSE_MAX_BYTES = 32 * 1024 * 1024

    def _blocks(self, n0, n1, rows, dtype):
        """Image ranges of at most ``COLS_BLOCK_BYTES`` of ``cols`` covering ``n0..n1``, and a scratch buffer."""
        K = self.layer.params["kernel"][..., 0].size
        per_block = max(1, self.COLS_BLOCK_BYTES // (rows * K * np.dtype(dtype).itemsize))
        return ([(b0, min(b0 + per_block, n1)) for b0 in range(n0, n1, per_block)],
                np.empty((per_block * rows, K), dtype))

    def __init__(self, layer):
        super().__init__(layer)
        #: the engine MaxPool2D that reads this layer's ReLU output (linked by the pool itself)
        self.pool = None

    def relu(self):
        """The engine object of this layer's activation when that is the engine's ReLU, else None."""
        if type(self.layer.activation) is not ReLUFunction:
            return None
        act = backends.implementation(self.layer.activation)
        return act if isinstance(act, ReLU) else None

    def call(self, x, training):
        global _last_relu_output
        layer = self.layer
        win, F = layer.window, layer.filters
        x = np.ascontiguousarray(x)
        N, rows = len(x), win.OH * win.OW                 # rows of cols (and of z) per image
        K, b = layer.params["kernel"].reshape(-1, F), layer.params["bias"]
        z = np.empty((N * rows, F), dtype=x.dtype)
        whole = N * rows * K.shape[0] * x.itemsize <= self.KEEP_COLS_BYTES
        kept = np.empty((N * rows, K.shape[0]), x.dtype) if whole else None
        relu = self.relu() if z.nbytes <= self.FUSE_MAX_BYTES else None
        if self.pool is not None and self.pool.computed is not None:
            self.pool = None                  # its last pooling was never asked for: stop pooling for it
        y = np.empty_like(z) if relu is not None else None
        y4 = y.reshape((N,) + layer.output_shape) if relu is not None else None
        pool = self.pool if relu is not None else None
        if pool is not None:
            pooled, argmax = pool.outputs(N, x.dtype)

        def images(n0, n1):                               # each thread runs a share of the images
            blocks, scratch = self._blocks(n0, n1, rows, x.dtype)
            for b0, b1 in blocks:
                cols = kept[b0 * rows:b1 * rows] if whole else scratch[:(b1 - b0) * rows]
                kernels.im2col_into(x[b0:b1], win, cols, 0, b1 - b0)
                np.matmul(cols, K, out=z[b0 * rows:b1 * rows])
                if relu is None:
                    kernels.add_bias(z, b, b0 * rows, b1 * rows)
                else:                                     # z += b and y = max(z, 0) while in cache
                    kernels.add_bias_relu(z, b, y, b0 * rows, b1 * rows)
                    if pool is not None:                  # and the next layer's pooling of y
                        kernels.maxpool_forward(y4, pool.layer.window, pooled, argmax, b0, b1)
        threads.in_parallel(images, N, z.size * K.shape[0])
        layer.cache = {"x": x, "cols": kept}
        z = z.reshape((N,) + layer.output_shape)
        if relu is not None:
            relu.computed = (z, y4)
            _last_relu_output = (weakref.ref(y4), self)
            if pool is not None:
                pool.computed = (y4, pooled, argmax)
        return z

    def backprop(self, dz):
        # The math of layers.Conv2D.backprop; here per block of images: partial sums of
        # dK and db per fixed block (added in order), dx per image.
        layer = self.layer
        x, kept, win = layer.cache["x"], layer.cache["cols"], layer.window
        F = layer.filters
        if kept is None:
            # bottom/right output rows and columns whose gradient is zero everywhere add
            # nothing to any sum (a flooring pool never reads them): leave them out
            OH, OW = _gradient_extent(dz)
            dz = np.ascontiguousarray(dz[:, :OH, :OW])
            win = win._replace(OH=OH, OW=OW)
        rows = win.OH * win.OW
        dz2 = dz.reshape(-1, F)
        K = layer.params["kernel"].reshape(-1, F)
        blocks = threads.reduction_blocks(len(x))
        dK_parts = np.empty((len(blocks),) + K.shape, dtype=dz2.dtype)
        db_parts = np.empty((len(blocks), F), dtype=dz2.dtype)
        dx = np.empty(x.shape, dtype=dz2.dtype) if layer.need_input_grad else None

        def work(j0, j1):                                 # each thread runs a share of the blocks
            product = np.empty_like(K)
            for j in range(j0, j1):
                n0, n1 = blocks[j]
                db_parts[j] = kernels.sum_rows(dz2[n0 * rows:n1 * rows])
                dK_parts[j] = 0
                cols_blocks, scratch = self._blocks(n0, n1, rows, x.dtype)
                for b0, b1 in cols_blocks:
                    dzb = dz2[b0 * rows:b1 * rows]
                    if kept is not None:
                        cols = kept[b0 * rows:b1 * rows]
                    else:
                        cols = scratch[:(b1 - b0) * rows]
                        kernels.im2col_into(x[b0:b1], win, cols, 0, b1 - b0)
                    dK_parts[j] += np.matmul(cols.T, dzb, out=product)                  # cols^T dz
                    if dx is not None:
                        dcols = np.matmul(dzb, K.T, out=scratch[:(b1 - b0) * rows])     # dz K^T
                        kernels.col2im(dcols, win, dx[b0:b1], 0, b1 - b0)
        threads.in_parallel(work, len(blocks), dz2.size * K.shape[0])
        layer.grads["kernel"] = threads.add_in_order(dK_parts).reshape(layer.params["kernel"].shape)
        layer.grads["bias"] = threads.add_in_order(db_parts)
        return dx


class MaxPool2D(_Engine):
    """Max and the winner's pixel index in one pass; backward routes by that index.

    After a Conv2D with ReLU, the pooling is done by that layer's forward
    (see the module's docstring), and backward also computes the ReLU's
    gradient.
    """

    def __init__(self, layer):
        super().__init__(layer)
        self.computed = None          # (input, out, argmax) from the linked Conv2D's forward
        self.producer = None          # that Conv2D's engine object

    def outputs(self, N, dtype):
        """Fresh ``out`` and ``argmax`` arrays for a batch of ``N``."""
        out = np.empty((N,) + self.layer.output_shape, dtype)
        return out, np.empty(out.shape, np.int32)

    def call(self, x, training):
        layer = self.layer
        done = _taken(self, "computed", x)
        if done is not None:
            out, argmax = done
        else:
            out, argmax = self.outputs(len(x), x.dtype)
            threads.over_images(kernels.maxpool_forward, len(x), x, layer.window, out, argmax)
            last, conv = _last_relu_output
            if last is not None and last() is x:   # x is a Conv2D's ReLU output: pool inside it next time
                conv.pool, self.producer = self, conv
        layer.cache = {"argmax": argmax, "x": x}
        return out

    def backprop(self, dz):
        layer = self.layer
        dx = np.empty((len(dz),) + layer.input_shape, dtype=dz.dtype)
        x, argmax = layer.cache["x"], layer.cache["argmax"]
        relu = self.producer.relu() if self.producer is not None else None
        if relu is not None and self.producer.layer.output is not x:
            relu = None
        dzr = np.empty_like(dx) if relu is not None else dx      # the ReLU's dz, if computed here
        H, W = layer.input_shape[0], layer.input_shape[1]
        if kernels.tiles_2x2(layer.window, H, W):                # disjoint 2x2 tiles: one write per element
            threads.over_images(kernels.maxpool2x2_backward, len(dz), dz, argmax, x, dx, dzr, relu is not None)
        elif relu is not None:
            threads.over_images(kernels.maxpool_relu_backward, len(dz), dz, argmax, x, dx, dzr)
        else:
            threads.over_images(kernels.maxpool_backward, len(dz), dz, argmax, dx)
        if relu is not None:                  # the ReLU's backward (dz = dx * [y > 0], y = x), handed to it
            relu.computed_backward = (dx, x, dzr)
        return dx


class Dropout(_Engine):
    """Draws the stream of :mod:`convnet.rng`, builds the mask and applies it in one pass."""

    def call(self, x, training):
        layer = self.layer
        if not training or layer.rate == 0 or layer.fixed_mask is not None:
            return layer.call(x, training)
        y, layer.mask = np.empty(x.shape, x.dtype), np.empty(x.shape, x.dtype)
        threads.over_images(kernels.dropout_forward, len(x), x, layer.next_key(),
                            np.uint64(rng.threshold(layer.rate)), 1.0 / (1.0 - layer.rate), y, layer.mask)
        return y

    def backprop(self, dz):
        return self.layer.backprop(dz)


class Dense(_Engine):
    """The two backward products side by side on two threads when the kernel is large."""

    def call(self, x, training):
        layer = self.layer
        layer.cache = {"x": x}
        return threads.matmul(x, layer.params["kernel"]) + layer.params["bias"]

    def backprop(self, dz):
        layer = self.layer
        W, result = layer.params["kernel"], {}

        def products(k0, k1):
            for k in range(k0, k1):
                if k == 0:
                    result["kernel"] = layer.cache["x"].T @ dz
                elif layer.need_input_grad:
                    # dz W^T as (W dz^T)^T: BLAS is faster when the big operand is not the transposed one
                    result["input"] = np.ascontiguousarray((W @ dz.T).T)
        threads.in_parallel(products, 2, W.size)
        layer.grads["kernel"] = result["kernel"]
        layer.grads["bias"] = dz.sum(axis=0)
        return result.get("input")


class ReLU(_Engine):
    """``max(z, 0)`` and its backward as one-pass kernels shared over images.

    Either result may have been computed already by a neighbouring layer's
    fused pass (a Conv2D's forward, a MaxPool2D's backward), for exactly the
    arrays this method now receives; then it is returned as it is.
    """

    def __init__(self, layer):
        super().__init__(layer)
        self.computed = None              # (z, y) from a Conv2D's forward
        self.computed_backward = None     # (dout, y, dz) from a MaxPool2D's backward

    def forward(self, z):
        done = _taken(self, "computed", z)
        if done is not None:
            return done[0]
        y = np.empty(z.shape, dtype=z.dtype)
        threads.over_images(kernels.relu_forward, len(z), z, y)
        return y

    def backward(self, dout, y):
        done = _taken(self, "computed_backward", dout, y)
        if done is not None:
            return done[0]
        dz = np.empty(dout.shape, dtype=dout.dtype)
        threads.over_images(kernels.relu_backward, len(dout), dout, y, dz)
        return dz
