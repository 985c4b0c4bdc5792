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

``docs/performance.md`` has the measurements behind each choice.
"""
import numpy as np

from .. import rng
from . import kernels, threads


class _Engine:
    """Engine object for one textbook object: ``self.layer``."""

    def __init__(self, layer):
        self.layer = layer


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

    def _blocks(self, n0, n1, rows, dtype):
        """Image ranges of at most ``COLS_BLOCK_BYTES`` of ``cols`` covering ``n0..n1``, and a scratch buffer."""
        K = self.layer.params["kernel"][..., 0].size
        per_block = max(1, self.COLS_BLOCK_BYTES // (rows * K * np.dtype(dtype).itemsize))
        return ([(b0, min(b0 + per_block, n1)) for b0 in range(n0, n1, per_block)],
                np.empty((per_block * rows, K), dtype))

    def call(self, x, training):
        layer = self.layer
        win, F = layer.window, layer.filters
        x = np.ascontiguousarray(x)
        N, rows = len(x), win.OH * win.OW                 # rows of cols (and of z) per image
        K, b = layer.params["kernel"].reshape(-1, F), layer.params["bias"]
        z = np.empty((N * rows, F), dtype=x.dtype)
        whole = N * rows * K.shape[0] * x.itemsize <= self.KEEP_COLS_BYTES
        kept = np.empty((N * rows, K.shape[0]), x.dtype) if whole else None

        def images(n0, n1):                               # each thread runs a share of the images
            blocks, scratch = self._blocks(n0, n1, rows, x.dtype)
            for b0, b1 in blocks:
                cols = kept[b0 * rows:b1 * rows] if whole else scratch[:(b1 - b0) * rows]
                kernels.im2col_into(x[b0:b1], win, cols, 0, b1 - b0)
                np.matmul(cols, K, out=z[b0 * rows:b1 * rows])
                kernels.add_bias(z, b, b0 * rows, b1 * rows)
        threads.in_parallel(images, N, z.size * K.shape[0])
        layer.cache = {"x": x, "cols": kept}
        return z.reshape((N,) + layer.output_shape)

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
    """Max and the winner's pixel index in one pass; backward routes by that index."""

    def call(self, x, training):
        layer = self.layer
        out = np.empty((len(x),) + layer.output_shape, x.dtype)
        argmax = np.empty(out.shape, np.int32)
        threads.over_images(kernels.maxpool_forward, len(x), x, layer.window, out, argmax)
        layer.cache = {"argmax": argmax}
        return out

    def backprop(self, dz):
        layer = self.layer
        dx = np.empty((len(dz),) + layer.input_shape, dtype=dz.dtype)
        threads.over_images(kernels.maxpool_backward, len(dz), dz, layer.cache["argmax"], dx)
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
    """``max(z, 0)`` and its backward as one-pass kernels shared over images."""

    def forward(self, z):
        y = np.empty(z.shape, dtype=z.dtype)
        threads.over_images(kernels.relu_forward, len(z), z, y)
        return y

    def backward(self, dout, y):
        dz = np.empty(dout.shape, dtype=dout.dtype)
        threads.over_images(kernels.relu_backward, len(dout), dout, y, dz)
        return dz
