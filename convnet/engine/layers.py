"""The engine's versions of the textbook layers' math: same contract, built for speed.

Each class here drives the kernels for one textbook layer (``self.layer``):
it reads the layer's ``params``, fills its ``grads``, keeps what its own
backward needs in the layer's ``cache``, and returns what the textbook's
``call``/``backprop`` (or an activation's ``forward``/``backward``) returns;
the tests hold the results to the textbook's. How they are computed is what
differs:

* numba kernels (:mod:`convnet.engine.im2col`, :mod:`convnet.engine.pooling`,
  :mod:`convnet.engine.fused`, ...) instead of NumPy's temporaries;
* the batch shared out between threads (:mod:`convnet.engine.threads`),
  each thread doing a whole sequence (im2col, product, bias) for its images
  with one hand-off;
* the im2col matrix built a few images at a time so each block is still in
  the core's cache when the product reads it, and rebuilt in backward rather
  than kept when it is large;
* sums over the batch taken per fixed block of images and added in order,
  so the result does not depend on the number of threads.

Each of Conv2D, MaxPool2D and Dropout can also *set up* its work without
doing it (``start``, ``start_backward``: a :class:`Pass` whose ``run(n0,
n1)`` computes a range of images), and a convolution's pass can also
compute its ReLU and the pooling that reads it; the engine's plan
(:mod:`convnet.engine.plan`) decides which layers are fused that way and
runs their passes. Nothing here keeps state between calls.

``docs/performance.md`` has the measurements behind each choice.
"""
import numpy as np

from .. import rng
from . import threads
from .elementwise import add_bias, relu_backward, relu_forward, sum_rows
from .fused import add_bias_relu
from .im2col import col2im, im2col_into
from .pooling import maxpool2x2_backward, maxpool_backward, maxpool_forward, maxpool_relu_backward, tiles_2x2
from .dropout import dropout_forward


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


class Pass:
    """One layer's work on one batch, set up but not yet done: the arrays it will fill and how.

    ``run(n0, n1)`` computes images ``n0 <= n < n1`` of the outputs (and
    reads only those images of its input), so threads can run ranges of
    one pass, or of several passes one after another
    (:mod:`convnet.engine.training`). ``out`` is the array the next layer
    receives; ``size`` measures the work (see :func:`threads.in_parallel`).
    """

    def __init__(self, run, out, size):
        self.run, self.out, self.size = run, out, size


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

    def _blocks(self, n0, n1, rows, dtype, n_items=None):
        """Image ranges of at most ``COLS_BLOCK_BYTES`` of ``cols`` covering ``n0..n1``, and a scratch buffer.

        With ``n_items`` (the batch), the ranges start afresh at each of its
        :func:`threads.reduction_blocks`: BLAS may round a product's rows
        differently for another number of rows, so the ranges must not depend
        on how the batch was shared between threads.
        """
        K = self.layer.params["kernel"][..., 0].size
        per_block = max(1, self.COLS_BLOCK_BYTES // (rows * K * np.dtype(dtype).itemsize))
        spans = threads.blocks_within(n0, n1, n_items) if n_items is not None else [(n0, n1)]
        return ([(b0, min(b0 + per_block, m1)) for m0, m1 in spans for b0 in range(m0, m1, per_block)],
                np.empty((per_block * rows, K), dtype))

    def call(self, x, training):
        """``z`` of :meth:`convnet.layers.Conv2D.call`: im2col, product and bias, per block of images."""
        x = np.ascontiguousarray(x)
        z, _, _, step = self.start(x)
        threads.over_reduction_blocks(step.run, len(x), step.size)      # whole blocks: see _blocks
        return z

    def fuses(self, N, dtype):
        """Is a batch of ``N`` small enough for the ReLU (and pooling) to be fused into the pass?

        Fused, ``y`` is allocated while the previous call's ``z`` is still
        held by the layer: one more output-sized array at the peak.
        """
        return N * self.layer.window.OH * self.layer.window.OW * self.layer.filters * np.dtype(dtype).itemsize \
            <= self.FUSE_MAX_BYTES

    def start(self, x, relu=False, pool=None):
        """Set up the forward pass over ``x`` (C-contiguous): ``(z, y, pooled, Pass)``.

        With ``relu``, the pass also computes ``y = max(z, 0)`` (else ``y`` is
        None), and with ``pool`` (the engine MaxPool2D of the layer that reads
        ``y``) that pooling: ``pooled = (out, argmax)`` (else None). The
        pass's ``out`` is the last array it computes.
        """
        layer = self.layer
        win, F = layer.window, layer.filters
        N, rows = len(x), win.OH * win.OW                 # rows of cols (and of z) per image
        K, b = layer.params["kernel"].reshape(-1, F), layer.params["bias"]
        z = np.empty((N * rows, F), dtype=x.dtype)
        whole = N * rows * K.shape[0] * x.itemsize <= self.KEEP_COLS_BYTES
        kept = np.empty((N * rows, K.shape[0]), x.dtype) if whole else None
        y = np.empty_like(z) if relu else None
        y4 = y.reshape((N,) + layer.output_shape) if relu else None
        pool = pool if relu else None
        if pool is not None:
            pooled, argmax = pool.outputs(N, x.dtype)

        def images(n0, n1):                               # a share of the images
            blocks, scratch = self._blocks(n0, n1, rows, x.dtype, N)
            for b0, b1 in blocks:
                cols = kept[b0 * rows:b1 * rows] if whole else scratch[:(b1 - b0) * rows]
                im2col_into(x[b0:b1], win, cols, 0, b1 - b0)
                np.matmul(cols, K, out=z[b0 * rows:b1 * rows])
                if not relu:
                    add_bias(z, b, b0 * rows, b1 * rows)
                else:                                     # z += b and y = max(z, 0) while in cache
                    add_bias_relu(z, b, y, b0 * rows, b1 * rows)
                    if pool is not None:                  # and the next layer's pooling of y
                        maxpool_forward(y4, pool.layer.window, pooled, argmax, b0, b1)
        layer.cache = {"x": x, "cols": kept}
        z4 = out = z.reshape((N,) + layer.output_shape)
        if relu:
            out = y4
        if pool is not None:
            pool.layer.cache = {"argmax": argmax, "x": y4}
            out = pooled
        step = Pass(images, out, z.size * K.shape[0])
        return z4, y4, (pooled, argmax) if pool is not None else None, step

    def backprop(self, dz):
        """dx of :meth:`convnet.layers.Conv2D.backprop`; fills ``grads``."""
        step, finish = self.start_backward(dz)
        threads.over_reduction_blocks(step.run, len(dz), step.size)
        return finish()

    def start_backward(self, dz):
        """Set up backward for ``dz``: ``(Pass, finish)``; ``finish()`` (after the pass) sets ``grads``, returns dx.

        The math of layers.Conv2D.backprop, per fixed block of images
        (:func:`threads.reduction_blocks`): partial sums of dK and db per
        block, added in order by ``finish``, and dx per image. The pass's
        ``run(n0, n1)`` takes whole blocks.
        """
        layer = self.layer
        x, kept, win = layer.cache["x"], layer.cache["cols"], layer.window
        F = layer.filters
        K = layer.params["kernel"].reshape(-1, F)
        blocks = threads.reduction_blocks(len(x))
        dK_parts = np.empty((len(blocks),) + K.shape, dtype=dz.dtype)
        db_parts = np.empty((len(blocks), F), dtype=dz.dtype)
        dx = np.empty(x.shape, dtype=dz.dtype) if layer.need_input_grad else None

        def work(n0, n1):                                 # the blocks inside images n0..n1
            product = np.empty_like(K)
            for j, (m0, m1) in enumerate(blocks):
                if m0 < n0 or m1 > n1:
                    continue
                wb, dzb = win, dz[m0:m1]
                if kept is None:
                    # bottom/right output rows and columns whose gradient is zero everywhere in the
                    # block add nothing to any sum (a flooring pool never reads them): leave them out
                    OH, OW = _gradient_extent(dzb)
                    dzb, wb = dzb[:, :OH, :OW], win._replace(OH=OH, OW=OW)
                rows = wb.OH * wb.OW
                dz2 = np.ascontiguousarray(dzb).reshape(-1, F)
                db_parts[j] = sum_rows(dz2)
                dK_parts[j] = 0
                cols_blocks, scratch = self._blocks(m0, m1, rows, x.dtype)
                for b0, b1 in cols_blocks:
                    dzc = dz2[(b0 - m0) * rows:(b1 - m0) * rows]
                    if kept is not None:
                        cols = kept[b0 * rows:b1 * rows]
                    else:
                        cols = scratch[:(b1 - b0) * rows]
                        im2col_into(x[b0:b1], wb, cols, 0, b1 - b0)
                    dK_parts[j] += np.matmul(cols.T, dzc, out=product)                  # cols^T dz
                    if dx is not None:
                        dcols = np.matmul(dzc, K.T, out=scratch[:(b1 - b0) * rows])     # dz K^T
                        col2im(dcols, wb, dx[b0:b1], 0, b1 - b0)

        def finish():
            layer.grads["kernel"] = threads.add_in_order(dK_parts).reshape(layer.params["kernel"].shape)
            layer.grads["bias"] = threads.add_in_order(db_parts)
            return dx
        return Pass(work, dx, dz.size * K.shape[0]), finish


class MaxPool2D(_Engine):
    """Max and the winner's pixel index in one pass; backward routes by that index.

    After a Conv2D with ReLU, the pooling may be done by that layer's pass
    (:meth:`Conv2D.start`), and backward may also compute the ReLU's
    gradient (:meth:`start_backward` with ``relu``).
    """

    def outputs(self, N, dtype):
        """Fresh ``out`` and ``argmax`` arrays for a batch of ``N``."""
        out = np.empty((N,) + self.layer.output_shape, dtype)
        return out, np.empty(out.shape, np.int32)

    def call(self, x, training):
        """The output of :meth:`convnet.layers.MaxPool2D.call` (the winners kept in ``cache``)."""
        step = self.start(x)
        threads.in_parallel(step.run, len(x), step.size)
        return step.out

    def start(self, x):
        """Set up the pooling of ``x``: a :class:`Pass`."""
        layer = self.layer
        out, argmax = self.outputs(len(x), x.dtype)
        layer.cache = {"argmax": argmax, "x": x}
        return Pass(lambda n0, n1: maxpool_forward(x, layer.window, out, argmax, n0, n1), out, x.size)

    def backprop(self, dz):
        """dx of :meth:`convnet.layers.MaxPool2D.backprop`."""
        step, dx, _ = self.start_backward(dz)
        threads.in_parallel(step.run, len(dz), step.size)
        return dx

    def start_backward(self, dz, relu=False):
        """Set up backward for ``dz``: ``(Pass, dx, dzr)``.

        With ``relu`` (the pooled input is a ReLU's output ``y``), the pass
        also computes that ReLU's backward, ``dzr = dx * [y > 0]``, in the
        same loop; else ``dzr`` is None.
        """
        layer = self.layer
        dx = np.empty((len(dz),) + layer.input_shape, dtype=dz.dtype)
        x, argmax = layer.cache["x"], layer.cache["argmax"]
        dzr = np.empty_like(dx) if relu else dx                  # the ReLU's dz, if computed here
        H, W = layer.input_shape[0], layer.input_shape[1]
        if tiles_2x2(layer.window, H, W):                        # disjoint 2x2 tiles: one write per element
            def run(n0, n1):
                maxpool2x2_backward(dz, argmax, x, dx, dzr, relu, n0, n1)
        elif relu:
            def run(n0, n1):
                maxpool_relu_backward(dz, argmax, x, dx, dzr, n0, n1)
        else:
            def run(n0, n1):
                maxpool_backward(dz, argmax, dx, n0, n1)
        return Pass(run, dx if not relu else dzr, dx.size), dx, dzr if relu else None


class Dropout(_Engine):
    """Draws the stream of :mod:`convnet.rng`, builds the mask and applies it in one pass."""

    def drawn(self, training):
        """Does the layer draw a mask now (else the textbook call: identity, or a fixed mask)?"""
        layer = self.layer
        return training and layer.rate != 0 and layer.fixed_mask is None

    def call(self, x, training):
        """The output of :meth:`convnet.layers.Dropout.call` (its ``mask`` set)."""
        if not self.drawn(training):
            return self.layer.call(x, training)
        step = self.start(x)
        threads.in_parallel(step.run, len(x), step.size)
        return step.out

    def start(self, x):
        """Set up the dropout of ``x`` (a new mask: the layer's stream moves on): a :class:`Pass`."""
        layer = self.layer
        y, layer.mask = np.empty(x.shape, x.dtype), np.empty(x.shape, x.dtype)
        key, threshold, scale = layer.next_key(), np.uint64(rng.threshold(layer.rate)), 1.0 / (1.0 - layer.rate)
        mask = layer.mask
        return Pass(lambda n0, n1: dropout_forward(x, key, threshold, scale, y, mask, n0, n1), y, x.size)

    def backprop(self, dz):
        """The textbook's ``dz * mask`` (one product: not worth a hand-off)."""
        return self.layer.backprop(dz)

    def start_backward(self, dz):
        """Set up backward for ``dz`` (``dz * mask``, the textbook's product, per range): a :class:`Pass`."""
        mask = self.layer.mask
        if mask is None:                          # the last forward was not training: the identity
            return Pass(lambda n0, n1: None, dz, 0)
        dx = np.empty_like(dz)
        return Pass(lambda n0, n1: np.multiply(dz[n0:n1], mask[n0:n1], out=dx[n0:n1]), dx, dx.size)


class Dense(_Engine):
    """The two backward products side by side on two threads when the kernel is large."""

    def call(self, x, training):
        """``x @ W + b`` of :meth:`convnet.layers.Dense.call`, large products shared between threads."""
        layer = self.layer
        layer.cache = {"x": x}
        return threads.matmul(x, layer.params["kernel"]) + layer.params["bias"]

    def backprop(self, dz):
        """dx of :meth:`convnet.layers.Dense.backprop`; fills ``grads``."""
        layer = self.layer
        W, result = layer.params["kernel"], {}

        def products(k0, k1):
            for k in range(k0, k1):
                if k == 0:
                    result["kernel"] = np.matmul(layer.cache["x"].T, dz)
                elif layer.need_input_grad:
                    # dz W^T as (W dz^T)^T: BLAS is faster when the big operand is not the transposed one
                    result["input"] = np.ascontiguousarray(np.matmul(W, dz.T).T)
        threads.in_parallel(products, 2, W.size)
        layer.grads["kernel"] = result["kernel"]
        layer.grads["bias"] = dz.sum(axis=0)
        return result.get("input")


class ReLU(_Engine):
    """:class:`convnet.activations.ReLUFunction`'s ``max(z, 0)`` and backward as one-pass kernels shared over images."""

    def forward(self, z):
        y = np.empty(z.shape, dtype=z.dtype)
        threads.over_images(relu_forward, len(z), z, y)
        return y

    def backward(self, dout, y):
        dz = np.empty(dout.shape, dtype=dout.dtype)
        threads.over_images(relu_backward, len(dout), dout, y, dz)
        return dz
