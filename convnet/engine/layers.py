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

Each of Conv2D, MaxPool2D and Dropout can also *set up* its work without
doing it (``start``, ``start_backward``: a :class:`Pass` whose ``run(n0,
n1)`` computes a range of images), so that a training step can run several
layers' passes in one hand-off (:mod:`convnet.engine.training`); the
layer's next call then returns what the pass computed (``pending``).

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
        #: results of passes already run (:mod:`convnet.engine.training`) for the next call/backprop
        self.pending = self.pending_backward = None


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
        self.y = None       # a convolution's ReLU output, when its pass computes it


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
        done = _taken(self, "pending", x)
        if done is not None:
            return done[0]
        if self.pool is not None and self.pool.computed is not None:
            self.pool = None                  # its last pooling was never asked for: stop pooling for it
        x = np.ascontiguousarray(x)
        z, step = self.start(x, self.pool)
        threads.over_reduction_blocks(step.run, len(x), step.size)
        if step.y is not None:
            _last_relu_output = (weakref.ref(step.y), self)
        return z

    def start(self, x, pool=None):
        """Set up the forward pass over ``x`` (C-contiguous): ``(z, Pass)``.

        With the engine's ReLU as activation (and ``z`` not too large), the
        pass also computes ``y = max(z, 0)``, and with ``pool`` (a MaxPool2D
        reading ``y``) that pooling; both are handed to those objects for
        their next call. The pass's ``out`` is the last array it computes.
        """
        layer = self.layer
        win, F = layer.window, layer.filters
        N, rows = len(x), win.OH * win.OW                 # rows of cols (and of z) per image
        K, b = layer.params["kernel"].reshape(-1, F), layer.params["bias"]
        z = np.empty((N * rows, F), dtype=x.dtype)
        whole = N * rows * K.shape[0] * x.itemsize <= self.KEEP_COLS_BYTES
        kept = np.empty((N * rows, K.shape[0]), x.dtype) if whole else None
        relu = self.relu() if z.nbytes <= self.FUSE_MAX_BYTES else None
        y = np.empty_like(z) if relu is not None else None
        y4 = y.reshape((N,) + layer.output_shape) if relu is not None else None
        pool = pool if relu is not None else None
        if pool is not None:
            pooled, argmax = pool.outputs(N, x.dtype)

        def images(n0, n1):                               # a share of the images
            blocks, scratch = self._blocks(n0, n1, rows, x.dtype, N)
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
        layer.cache = {"x": x, "cols": kept}
        z4 = out = z.reshape((N,) + layer.output_shape)
        if relu is not None:
            relu.computed, out = (z4, y4), y4
            if pool is not None:
                pool.computed = (y4, pooled, argmax)
                pool.producer, out = self, pooled
        step = Pass(images, out, z.size * K.shape[0])
        step.y = y4
        return z4, step

    def backprop(self, dz):
        done = _taken(self, "pending_backward", dz)
        if done is None:
            step, finish = self.start_backward(dz)
            threads.over_reduction_blocks(step.run, len(dz), step.size)
        else:
            finish = done[0]
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
                db_parts[j] = kernels.sum_rows(dz2)
                dK_parts[j] = 0
                cols_blocks, scratch = self._blocks(m0, m1, rows, x.dtype)
                for b0, b1 in cols_blocks:
                    dzc = dz2[(b0 - m0) * rows:(b1 - m0) * rows]
                    if kept is not None:
                        cols = kept[b0 * rows:b1 * rows]
                    else:
                        cols = scratch[:(b1 - b0) * rows]
                        kernels.im2col_into(x[b0:b1], wb, cols, 0, b1 - b0)
                    dK_parts[j] += np.matmul(cols.T, dzc, out=product)                  # cols^T dz
                    if dx is not None:
                        dcols = np.matmul(dzc, K.T, out=scratch[:(b1 - b0) * rows])     # dz K^T
                        kernels.col2im(dcols, wb, dx[b0:b1], 0, b1 - b0)

        def finish():
            layer.grads["kernel"] = threads.add_in_order(dK_parts).reshape(layer.params["kernel"].shape)
            layer.grads["bias"] = threads.add_in_order(db_parts)
            return dx
        return Pass(work, dx, dz.size * K.shape[0]), finish


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
            layer.cache = {"argmax": argmax, "x": x}
            return out
        done = _taken(self, "pending", x)
        if done is not None:
            return done[0]
        step = self.start(x)
        threads.in_parallel(step.run, len(x), step.size)
        last, conv = _last_relu_output
        if last is not None and last() is x:   # x is a Conv2D's ReLU output: pool inside it next time
            conv.pool, self.producer = self, conv
        return step.out

    def start(self, x):
        """Set up the pooling of ``x``: a :class:`Pass`."""
        layer = self.layer
        out, argmax = self.outputs(len(x), x.dtype)
        layer.cache = {"argmax": argmax, "x": x}
        return Pass(lambda n0, n1: kernels.maxpool_forward(x, layer.window, out, argmax, n0, n1), out, x.size)

    def backprop(self, dz):
        done = _taken(self, "pending_backward", dz)
        if done is not None:
            return done[0]
        step = self.start_backward(dz)
        threads.in_parallel(step.run, len(dz), step.size)
        return step.out

    def start_backward(self, dz):
        """Set up backward for ``dz``: a :class:`Pass` whose ``out`` is dx (and the ReLU's dz, handed to it)."""
        layer = self.layer
        dx = np.empty((len(dz),) + layer.input_shape, dtype=dz.dtype)
        x, argmax = layer.cache["x"], layer.cache["argmax"]
        relu = self.producer.relu() if self.producer is not None else None
        if relu is not None and self.producer.layer.output is not x:
            relu = None
        dzr = np.empty_like(dx) if relu is not None else dx      # the ReLU's dz, if computed here
        H, W = layer.input_shape[0], layer.input_shape[1]
        if kernels.tiles_2x2(layer.window, H, W):                # disjoint 2x2 tiles: one write per element
            def run(n0, n1):
                kernels.maxpool2x2_backward(dz, argmax, x, dx, dzr, relu is not None, n0, n1)
        elif relu is not None:
            def run(n0, n1):
                kernels.maxpool_relu_backward(dz, argmax, x, dx, dzr, n0, n1)
        else:
            def run(n0, n1):
                kernels.maxpool_backward(dz, argmax, dx, n0, n1)
        if relu is not None:                  # the ReLU's backward (dz = dx * [y > 0], y = x), handed to it
            relu.computed_backward = (dx, x, dzr)
        return Pass(run, dx, dx.size)


class Dropout(_Engine):
    """Draws the stream of :mod:`convnet.rng`, builds the mask and applies it in one pass."""

    def drawn(self, training):
        """Does the layer draw a mask now (else the textbook call: identity, or a fixed mask)?"""
        layer = self.layer
        return training and layer.rate != 0 and layer.fixed_mask is None

    def call(self, x, training):
        done = _taken(self, "pending", x)
        if done is not None:
            return done[0]
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
        return Pass(lambda n0, n1: kernels.dropout_forward(x, key, threshold, scale, y, mask, n0, n1), y, x.size)

    def backprop(self, dz):
        done = _taken(self, "pending_backward", dz)
        if done is not None:
            return done[0]
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
        layer = self.layer
        layer.cache = {"x": x}
        return threads.matmul(x, layer.params["kernel"]) + layer.params["bias"]

    def backprop(self, dz):
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
