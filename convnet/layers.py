"""The layers: one small class each, channels last (NHWC) like Keras.

Every layer has the same life cycle:

* ``build(input_shape, rng)`` fixes shapes and creates the parameters
  (``params`` dict, Keras names and layouts) and their gradients (``grads``);
* ``forward(x, training=False)`` checks the input, runs :meth:`Layer.call`
  (the forward math) and then the activation, and remembers what backward
  needs;
* ``backward(dout)`` takes dL/d(output), runs the activation's backward and
  then :meth:`Layer.backprop` (the backward math), fills ``grads`` and
  returns dL/d(input).

So for any layer, the forward math is in its ``call`` and the backward math
(with the derivative stated in a comment) in its ``backprop``, a few lines
apart. Heavy loops live in :mod:`convnet.kernels` (numba), and a naive loop
version of conv and pool lives in :mod:`convnet.reference`. The layers run
kernels through ``threads.over_images(kernel, N, *args)``, which is simply
``kernel(*args)`` shared out over ranges of the batch's images (see
:mod:`convnet.threads`), and large products through ``threads.matmul(a, b)``,
which is ``a @ b``.

After each call a layer keeps ``output`` (its last activation), and after
each backward ``grad_output`` (dL/d output, arriving) and ``grad_input``
(dL/d input, leaving), so backprop can be inspected layer by layer.
"""
import numpy as np

from . import activations, initializers, kernels, threads
from .utils import conv_output_size, normalize_padding, normalize_tuple, pad_amounts


class Layer:
    """Base class: shape checks, activation, bookkeeping. Subclasses supply the math."""

    #: Keras-style base name used for automatic names ("conv2d", "conv2d_1", ...).
    base_name = "layer"

    def __init__(self, activation=None, input_shape=None, name=None):
        self.activation_name = activation
        self.activation = activations.get(activation)
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.output_shape = None
        self.name = name
        self.dtype = np.float32
        self.params = {}
        self.grads = {}
        self.built = False
        #: set to False to skip dL/dx (the first layer of a network needs none)
        self.need_input_grad = True
        self.output = self.grad_output = self.grad_input = None

    # ----------------------------------------------------------------- shapes
    def build(self, input_shape, rng=None):
        """Fix the input shape (without the batch axis), create parameters."""
        self.input_shape = tuple(int(d) for d in input_shape)
        self.output_shape = self.compute_output_shape(self.input_shape)
        self.create_params(rng if rng is not None else np.random.default_rng())
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.built = True
        return self.output_shape

    def compute_output_shape(self, input_shape):
        return input_shape

    def create_params(self, rng):
        """Trainable layers create ``self.params`` here."""

    def count_params(self):
        return int(sum(p.size for p in self.params.values()))

    def astype(self, dtype):
        """Cast parameters (and the dtype inputs are cast to), e.g. float64 for gradient checks."""
        self.dtype = np.dtype(dtype).type
        self.params = {k: v.astype(dtype) for k, v in self.params.items()}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        return self

    def get_config(self):
        """Constructor arguments, enough to rebuild the layer (used by save/load)."""
        config = {"name": self.name}
        if self.activation_name is not None:
            config["activation"] = self.activation_name
        return config

    # ---------------------------------------------------------------- checks
    def _check_input(self, x):
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(
                f"layer {self.name!r} ({type(self).__name__}): received input of dtype {x.dtype}, "
                f"expected a floating-point array (float32); scale integer images to [0, 1] first")
        if not self.built:
            self.build(x.shape[1:])
        if x.shape[1:] != self.input_shape:
            raise ValueError(
                f"layer {self.name!r} ({type(self).__name__}): received input of shape {x.shape}, "
                f"expected (batch, {', '.join(map(str, self.input_shape))})")
        return x if x.dtype == self.dtype else x.astype(self.dtype)

    def _check_grad(self, dout):
        dout = np.asarray(dout)
        if self.output is None:
            raise ValueError(f"layer {self.name!r}: backward() called before forward()")
        if dout.shape != self.output.shape:
            raise ValueError(
                f"layer {self.name!r} ({type(self).__name__}): received gradient of shape {dout.shape}, "
                f"expected {self.output.shape} (the shape of its last output)")
        return dout if dout.dtype == self.dtype else dout.astype(self.dtype)

    # ------------------------------------------------------- forward/backward
    def forward(self, x, training=False):
        """Output of the layer for the batch ``x`` (shape ``(N, *input_shape)``)."""
        x = self._check_input(x)
        with threads.limited():                                # BLAS on one thread (convnet.threads)
            self.preactivation = self.call(x, training)        # z, before the activation
            self.output = self.activation.forward(self.preactivation)
        return self.output

    __call__ = forward

    def backward(self, dout, preactivation=False):
        """dL/d(input) from dL/d(output); fills ``self.grads``.

        With ``preactivation=True``, ``dout`` is already dL/dz for the value
        ``z`` *before* the activation (the loss uses this for the fused
        softmax + cross-entropy gradient).
        """
        self.grad_output = dout = self._check_grad(dout)
        with threads.limited():                                # BLAS on one thread (convnet.threads)
            dz = dout if preactivation else self.activation.backward(dout)
            self.grad_input = self.backprop(dz)
        return self.grad_input

    def call(self, x, training):
        """Forward math (before the activation). Identity by default."""
        return x

    def backprop(self, dz):
        """Backward math: dL/dx from dL/dz, where z = call(x). Identity by default."""
        return dz

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r}, output_shape={self.output_shape})"


def _window_output_size(layer, input_shape, window, strides, what):
    """(OH, OW) of a ``window`` sliding over an (H, W, C) input, as Keras computes it; errors name the layer."""
    if len(input_shape) != 3:
        raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}): expected input shape "
                         f"(height, width, channels), got {input_shape}")
    (kh, kw), (sh, sw) = window, strides
    OH = conv_output_size(input_shape[0], kh, sh, layer.padding)
    OW = conv_output_size(input_shape[1], kw, sw, layer.padding)
    if OH < 1 or OW < 1:
        raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}): input {input_shape} is smaller than "
                         f"the {kh}x{kw} {what}")
    return OH, OW


def _window_geometry(layer, window):
    """``kh, kw, sh, sw, pt, pl, OH, OW``: what the kernels need to slide ``window`` over a built layer's input."""
    H, W, _ = layer.input_shape
    OH, OW, _ = layer.output_shape
    (kh, kw), (sh, sw) = window, layer.strides
    pt = pad_amounts(H, kh, sh, layer.padding)[0]
    pl = pad_amounts(W, kw, sw, layer.padding)[0]
    return kh, kw, sh, sw, pt, pl, OH, OW


def _gradient_extent(dz):
    """``(rows, columns)`` of the output grid ``dz[:, :rows, :columns]`` that holds every nonzero of ``dz``."""
    OH, OW = dz.shape[1], dz.shape[2]
    while OH > 1 and not dz[:, OH - 1, :OW].any():
        OH -= 1
    while OW > 1 and not dz[:, :OH, OW - 1].any():
        OW -= 1
    return OH, OW


class Conv2D(Layer):
    """2-D convolution (cross-correlation, as in every DL framework).

    ``z[n, oh, ow, f] = b[f] + sum_{i, j, c} x[n, oh*s + i, ow*s + j, c] * K[i, j, c, f]``

    computed as one matrix product: ``im2col`` copies every receptive field
    into a row of ``cols`` (N*OH*OW, kh*kw*C), then ``z = cols @ K2 + b`` with
    ``K2 = K.reshape(kh*kw*C, F)``. (The rows of ``cols`` are built and
    multiplied a few images at a time, so that they are still in the
    processor's cache when the product reads them.)
    """

    base_name = "conv2d"

    def __init__(self, filters, kernel_size, strides=1, padding="valid", activation=None,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(activation=activation, **kwargs)
        self.filters = int(filters)
        self.kernel_size = normalize_tuple(kernel_size, 2, "kernel_size")
        self.strides = normalize_tuple(strides, 2, "strides")
        self.padding = normalize_padding(padding)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)

    def compute_output_shape(self, input_shape):
        OH, OW = _window_output_size(self, input_shape, self.kernel_size, self.strides, "kernel with padding='valid'")
        return (OH, OW, self.filters)

    def create_params(self, rng):
        kh, kw = self.kernel_size
        shape = (kh, kw, self.input_shape[2], self.filters)
        self.params = {"kernel": self.kernel_initializer(shape, rng, self.dtype),
                       "bias": self.bias_initializer((self.filters,), rng, self.dtype)}

    def _geometry(self):
        return _window_geometry(self, self.kernel_size)

    #: the im2col matrix is built a few images at a time, at most this many bytes per block,
    #: so that each block is still in the core's cache when the product reads it
    COLS_BLOCK_BYTES = 768 * 1024
    #: a whole im2col matrix up to this size is kept from forward for backward (conv1's 1.3 MB:
    #: its rows of 4 numbers are slow to copy); a larger one is rebuilt block by block in
    #: backward (conv2's 5.3 MB would come back from memory, slower than rebuilding it)
    KEEP_COLS_BYTES = 2 * 1024 * 1024

    def _cols_blocks(self, n0, n1, rows, dtype):
        """Image ranges of at most ``COLS_BLOCK_BYTES`` of ``cols`` covering ``n0..n1``, and a scratch buffer."""
        kh, kw = self.kernel_size
        K = kh * kw * self.input_shape[2]
        per_block = max(1, self.COLS_BLOCK_BYTES // (rows * K * np.dtype(dtype).itemsize))
        starts = range(n0, n1, per_block)
        return [(b0, min(b0 + per_block, n1)) for b0 in starts], np.empty((per_block * rows, K), dtype)

    def call(self, x, training):
        kh, kw, sh, sw, pt, pl, OH, OW = self._geometry()
        x = np.ascontiguousarray(x)
        N, rows = x.shape[0], OH * OW                   # rows of cols (and of z) per image
        K2, b = self.params["kernel"].reshape(-1, self.filters), self.params["bias"]
        z = np.empty((N * rows, self.filters), dtype=x.dtype)
        K = K2.shape[0]
        whole = N * rows * K * x.itemsize <= self.KEEP_COLS_BYTES
        self.cols = np.empty((N * rows, K), x.dtype) if whole else None   # kept for backward

        def images(n0, n1):                             # images n0..n1 (each thread runs a share)
            blocks, scratch = self._cols_blocks(n0, n1, rows, x.dtype)
            for b0, b1 in blocks:                       # a few images at a time:
                cols = self.cols[b0 * rows:b1 * rows] if whole else scratch[:(b1 - b0) * rows]
                kernels.im2col_into(x[b0:b1], kh, kw, sh, sw, pt, pl, OH, OW, cols, 0, b1 - b0)   # their cols
                np.matmul(cols, K2, out=z[b0 * rows:b1 * rows])                      # z = cols @ K2
                kernels.add_bias(z, b, b0 * rows, b1 * rows)                         #     + b
        threads.in_parallel(images, N, z.size * K2.shape[0])
        self.x = x                                      # backward rebuilds cols from it (unless kept)
        return z.reshape(N, OH, OW, self.filters)

    def backprop(self, dz):
        # z = cols @ K2 + b, so
        #   dL/dK2   = cols^T @ dz          (sum over every output position)
        #   dL/db    = sum of dz over batch, rows and columns
        #   dL/dcols = dz @ K2^T, and col2im adds each window row back onto
        #              the pixels it was copied from: that is dL/dx.
        # cols is the matrix kept from call when it was small (KEEP_COLS_BYTES), else it is
        # rebuilt a few images at a time (cheaper than keeping it: it would come back from
        # memory). The sums over the batch are taken per fixed block of images
        # (threads.reduction_blocks, and within a block in the fixed order of the cols blocks)
        # and then added in order, so a thread does all the work of its own images in one go
        # and the result does not depend on how many threads share it.
        kh, kw, sh, sw, pt, pl, OH, OW = self._geometry()
        x = self.x
        N, H, W, C = x.shape
        if self.cols is None:
            # Output rows/columns at the bottom/right whose gradient is zero everywhere add
            # nothing to any sum above, so they are left out (their windows are not even
            # rebuilt). A 'valid' pooling that floors does this: the seed model's second
            # pooling reads 8 of conv2's 9 rows and columns, so 17 of 81 positions drop out.
            OH, OW = _gradient_extent(dz)
            dz = np.ascontiguousarray(dz[:, :OH, :OW])
        rows = OH * OW
        dz2 = dz.reshape(-1, self.filters)
        K2 = self.params["kernel"].reshape(-1, self.filters)
        blocks = threads.reduction_blocks(N)
        dK2_parts = np.empty((len(blocks),) + K2.shape, dtype=dz2.dtype)
        db_parts = np.empty((len(blocks), self.filters), dtype=dz2.dtype)
        dx = np.empty(x.shape, dtype=dz2.dtype) if self.need_input_grad else None

        def work(j0, j1):                               # blocks j0..j1 (each thread runs a share)
            product = np.empty_like(K2)
            for j in range(j0, j1):
                n0, n1 = blocks[j]
                db_parts[j] = kernels.sum_rows(dz2[n0 * rows:n1 * rows])          # block's sum of dz
                dK2_parts[j] = 0
                cols_blocks, scratch = self._cols_blocks(n0, n1, rows, x.dtype)
                for b0, b1 in cols_blocks:
                    dzb = dz2[b0 * rows:b1 * rows]
                    if self.cols is not None:                                    # kept from forward
                        cols = self.cols[b0 * rows:b1 * rows]
                    else:                                                        # rebuilt
                        cols = scratch[:(b1 - b0) * rows]
                        kernels.im2col_into(x[b0:b1], kh, kw, sh, sw, pt, pl, OH, OW, cols, 0, b1 - b0)
                    dK2_parts[j] += np.matmul(cols.T, dzb, out=product)           # cols^T @ dz
                    if dx is not None:
                        dcols = np.matmul(dzb, K2.T, out=scratch[:(b1 - b0) * rows])   # dL/dcols
                        kernels.col2im(dcols, b1 - b0, H, W, C, kh, kw, sh, sw, pt, pl, OH, OW, dx[b0:b1],
                                       0, b1 - b0)
        threads.in_parallel(work, len(blocks), dz2.size * K2.shape[0])
        self.grads["kernel"] = threads.add_in_order(dK2_parts).reshape(self.params["kernel"].shape)
        self.grads["bias"] = threads.add_in_order(db_parts)
        return dx

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding}


class MaxPool2D(Layer):
    """Max over each ``pool_size`` window: ``y[n, oh, ow, c] = max_{i,j} x[n, oh*s+i, ow*s+j, c]``.

    Output size floors like Keras ("valid": 25 -> 12, 9 -> 4). Windows may
    overlap (``strides < pool_size``).
    """

    base_name = "max_pooling2d"

    def __init__(self, pool_size=2, strides=None, padding="valid", **kwargs):
        super().__init__(**kwargs)
        self.pool_size = normalize_tuple(pool_size, 2, "pool_size")
        self.strides = normalize_tuple(strides, 2, "strides") if strides is not None else self.pool_size
        self.padding = normalize_padding(padding)

    def compute_output_shape(self, input_shape):
        OH, OW = _window_output_size(self, input_shape, self.pool_size, self.strides, "pool window")
        return (OH, OW, input_shape[2])

    def call(self, x, training):
        kh, kw, sh, sw, pt, pl, OH, OW = _window_geometry(self, self.pool_size)
        N, C = x.shape[0], x.shape[3]
        out, self.argmax = np.empty((N, OH, OW, C), x.dtype), np.empty((N, OH, OW, C), np.int32)
        threads.over_images(kernels.maxpool_forward, N, x, kh, kw, sh, sw, pt, pl, OH, OW, out, self.argmax)
        return out

    def backprop(self, dz):
        # dy/dx is 1 for the (first) maximum of each window and 0 elsewhere,
        # so each window's gradient goes to the pixel recorded in argmax;
        # a pixel that wins several overlapping windows gets their sum.
        H, W, C = self.input_shape
        dx = np.empty((len(dz), H, W, C), dtype=dz.dtype)
        threads.over_images(kernels.maxpool_backward, len(dz), dz, self.argmax, H, W, dx)
        return dx

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides,
                "padding": self.padding}


class Dropout(Layer):
    """Inverted dropout: in training, ``y = x * m / (1 - rate)`` with ``m ~ Bernoulli(1 - rate)``.

    At inference it is the identity (the 1/(1-rate) scaling during training
    keeps the expected activation unchanged, so nothing is rescaled here).
    Set ``fixed_mask`` (already scaled) to reuse one mask, e.g. for a
    gradient check.
    """

    base_name = "dropout"

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= rate < 1:
            raise ValueError(f"Dropout rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.fixed_mask = None

    def call(self, x, training):
        if not training or self.rate == 0:
            self.mask = None
            return x
        if self.fixed_mask is not None:
            self.mask = self.fixed_mask.astype(x.dtype, copy=False)
            return x * self.mask
        # keep an element when its 24 random bits r (uniform on 0..2^24-1) are >= rate * 2^24,
        # i.e. with probability 1 - rate; one fused pass draws r, builds mask = [kept] / (1 - rate)
        # and y = x * mask. The bits are element e's output of a counter-based generator whose
        # key is drawn from self.rng (see kernels.dropout_forward).
        key = self.rng.integers(0, 2 ** 64, dtype=np.uint64)
        threshold = np.uint64(round(self.rate * 2 ** kernels.DROPOUT_BITS))
        y, self.mask = np.empty(x.shape, x.dtype), np.empty(x.shape, x.dtype)
        threads.over_images(kernels.dropout_forward, len(x), x, key, threshold,
                            1.0 / (1.0 - self.rate), y, self.mask)
        return y

    def backprop(self, dz):
        # y = x * mask  =>  dL/dx = dL/dy * mask  (identity when not training)
        return dz if self.mask is None else dz * self.mask

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


class Flatten(Layer):
    """``(N, H, W, C) -> (N, H*W*C)`` in row-major (NHWC) order, like Keras; backward reshapes back."""

    base_name = "flatten"

    def compute_output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)

    def call(self, x, training):
        return x.reshape(x.shape[0], -1)

    def backprop(self, dz):
        # a reshape moves no values: dL/dx is dL/dy reshaped back
        return dz.reshape((dz.shape[0],) + self.input_shape)


class Dense(Layer):
    """Fully connected: ``z = x @ W + b`` with ``W`` of shape (in, out)."""

    base_name = "dense"

    def __init__(self, units, activation=None, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(activation=activation, **kwargs)
        self.units = int(units)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(f"layer {self.name!r} (Dense): expected a flat input (features,), got "
                             f"{input_shape}; put a Flatten layer before it")
        return (self.units,)

    def create_params(self, rng):
        self.params = {"kernel": self.kernel_initializer((self.input_shape[0], self.units), rng, self.dtype),
                       "bias": self.bias_initializer((self.units,), rng, self.dtype)}

    def call(self, x, training):
        self.x = x
        return threads.matmul(x, self.params["kernel"]) + self.params["bias"]      # x @ W + b

    def backprop(self, dz):
        # z = x W + b  =>  dL/dW = x^T dz,  dL/db = sum_n dz,  dL/dx = dz W^T
        W, result = self.params["kernel"], {}

        def products(k0, k1):                           # two independent products, one per thread
            for k in range(k0, k1):
                if k == 0:
                    result["kernel"] = self.x.T @ dz                       # dL/dW
                elif self.need_input_grad:
                    # dL/dx = dz W^T, computed as (W dz^T)^T: BLAS is faster when the
                    # big operand W is not the transposed one (32x512 from 512x256: 93 vs 143 us)
                    result["input"] = np.ascontiguousarray((W @ dz.T).T)
        threads.in_parallel(products, 2, W.size)          # (split only when W is large: dense, not dense_1)
        self.grads["kernel"] = result["kernel"]
        self.grads["bias"] = dz.sum(axis=0)
        return result.get("input")

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class ReLU(Layer):
    """Standalone ReLU layer, ``y = max(x, 0)`` (see :class:`activations.ReLUFunction`)."""

    base_name = "re_lu"

    def __init__(self, **kwargs):
        super().__init__(activation="relu", **kwargs)

    def get_config(self):
        return {"name": self.name}


class Softmax(Layer):
    """Standalone softmax over the last axis (see :class:`activations.SoftmaxFunction`)."""

    base_name = "softmax"

    def __init__(self, **kwargs):
        super().__init__(activation="softmax", **kwargs)

    def get_config(self):
        return {"name": self.name}


#: Keras-compatible aliases
MaxPooling2D = MaxPool2D

LAYER_CLASSES = {cls.__name__: cls for cls in (Conv2D, MaxPool2D, Dropout, Flatten, Dense, ReLU, Softmax)}
