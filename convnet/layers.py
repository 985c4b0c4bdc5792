"""The layers, in plain NumPy: one small class each, channels last (NHWC) like Keras.

Every layer has the same life cycle:

* ``build(input_shape, rng)`` fixes shapes and creates the parameters
  (``params`` dict, Keras names and layouts) and their gradients (``grads``);
* ``forward(x, training=False)`` checks the input, runs :meth:`Layer.call`
  (the forward math) and then the activation;
* ``backward(dout)`` takes dL/d(output), runs the activation's backward and
  then :meth:`Layer.backprop` (the backward math), fills ``grads`` and
  returns dL/d(input).

So for any layer the forward math is in its ``call`` and the backward math,
with the derivative stated in a comment, in its ``backprop``, a few lines
apart. What backward needs from forward goes into the layer's ``cache``
(emptied by :meth:`Layer.clear_cache`).

This is the textbook tier: it knows nothing of the engine, and it is what
runs with ``convnet.set_backend("textbook")``. The default tier,
``"engine"``, runs the same contract through :mod:`convnet.engine`
(compiled kernels, threads, cache-sized blocks): a model hands its layers to
one runner or the other (:mod:`convnet.backends`), and the test suite holds
the two to the same outputs, gradients and updates.

After each call a layer keeps ``output`` (its last activation), and after
each backward ``grad_output`` (dL/d output, arriving) and ``grad_input``
(dL/d input, leaving), so backprop can be inspected layer by layer.
"""
import numpy as np

from . import activations, initializers, rng as counter_rng
from .shapes import normalize_padding, normalize_tuple
from .windows import Window, col2im, im2col


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
        self.cache = {}
        self.output = self.grad_output = self.grad_input = self.preactivation = None

    # ----------------------------------------------------------------- shapes
    def build(self, input_shape, rng=None, initialize=True):
        """Fix the input shape (without the batch axis) and create the parameters.

        ``initialize=False`` allocates them without drawing random weights
        (for a model whose weights are loaded next).
        """
        self.input_shape = tuple(int(d) for d in input_shape)
        self.output_shape = self.compute_output_shape(self.input_shape)
        if initialize:
            self.create_params(rng if rng is not None else np.random.default_rng())
        else:
            self.params = {k: np.zeros(s, self.dtype) for k, s in self.param_shapes().items()}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.built = True
        return self.output_shape

    def compute_output_shape(self, input_shape):
        return input_shape

    def param_shapes(self):
        """``{name: shape}`` of the parameters for the built input shape (none by default)."""
        return {}

    def create_params(self, rng):
        """Trainable layers draw their initial ``self.params`` here."""

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
        self.preactivation = self.call(x, training)            # z, before the activation
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
        dz = dout if preactivation else self.activation.backward(dout, self.output)
        self.grad_input = self.backprop(dz)
        return self.grad_input

    def call(self, x, training):
        """Forward math (before the activation). Identity by default."""
        return x

    def backprop(self, dz):
        """Backward math: dL/dx from dL/dz, where z = call(x). Identity by default."""
        return dz

    def clear_cache(self):
        """Forget what the last forward pass kept for backward (inputs, windows, masks)."""
        self.cache = {}

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r}, output_shape={self.output_shape})"


class _Windowed(Layer):
    """A layer that slides a window over an ``(H, W, C)`` input: Conv2D and MaxPool2D."""

    window_size = strides = padding = None
    window_name = "window"

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"layer {self.name!r} ({type(self).__name__}): expected input shape "
                             f"(height, width, channels), got {input_shape}")
        self.window = Window.over(input_shape, self.window_size, self.strides, self.padding)
        if self.window.OH < 1 or self.window.OW < 1:
            kh, kw = self.window_size
            raise ValueError(f"layer {self.name!r} ({type(self).__name__}): input {input_shape} is smaller "
                             f"than the {kh}x{kw} {self.window_name} with padding='valid'")
        return (self.window.OH, self.window.OW, self.channels_out(input_shape))


class Conv2D(_Windowed):
    """2-D convolution (cross-correlation, as in every DL framework).

    ``z[n, oh, ow, f] = b[f] + sum_{i, j, c} x[n, oh*s + i, ow*s + j, c] * K[i, j, c, f]``,

    computed as one matrix product: :func:`~convnet.windows.im2col` copies
    every receptive field into a row of ``cols`` (N*OH*OW, kh*kw*C), and
    ``z = cols @ K + b`` with ``K`` reshaped to (kh*kw*C, F).
    """

    base_name = "conv2d"
    window_name = "kernel"

    def __init__(self, filters, kernel_size, strides=1, padding="valid", activation=None,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(activation=activation, **kwargs)
        self.filters = int(filters)
        self.kernel_size = self.window_size = normalize_tuple(kernel_size, 2, "kernel_size")
        self.strides = normalize_tuple(strides, 2, "strides")
        self.padding = normalize_padding(padding)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)

    def channels_out(self, input_shape):
        return self.filters

    def param_shapes(self):
        return {"kernel": self.kernel_size + (self.input_shape[2], self.filters), "bias": (self.filters,)}

    def create_params(self, rng):
        shapes = self.param_shapes()
        self.params = {"kernel": self.kernel_initializer(shapes["kernel"], rng, self.dtype),
                       "bias": self.bias_initializer(shapes["bias"], rng, self.dtype)}

    def call(self, x, training):
        K = self.params["kernel"].reshape(-1, self.filters)       # (kh*kw*C, F)
        cols = im2col(x, self.window)                            # (N*OH*OW, kh*kw*C)
        z = cols @ K + self.params["bias"]
        self.cache = {"cols": cols, "x_shape": x.shape}
        return z.reshape((len(x),) + self.output_shape)

    def backprop(self, dz):
        # z = cols @ K + b, so
        #   dL/dK    = cols^T @ dz       (a sum over every output position of every image)
        #   dL/db    = sum of dz over the batch, rows and columns
        #   dL/dcols = dz @ K^T, and col2im adds each window's row back onto the
        #              pixels it was copied from: that is dL/dx.
        K = self.params["kernel"].reshape(-1, self.filters)
        cols, dz = self.cache["cols"], dz.reshape(-1, self.filters)
        self.grads["kernel"] = (cols.T @ dz).reshape(self.params["kernel"].shape)
        self.grads["bias"] = dz.sum(axis=0)
        if not self.need_input_grad:
            return None
        return col2im(dz @ K.T, self.window, self.cache["x_shape"])

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding}


class MaxPool2D(_Windowed):
    """Max over each ``pool_size`` window: ``y[n, oh, ow, c] = max_{i,j} x[n, oh*s+i, ow*s+j, c]``.

    Output size floors like Keras ("valid": 25 -> 12, 9 -> 4). Windows may
    overlap (``strides < pool_size``). A tie goes to the first maximum in
    scan order (as in TensorFlow), and a NaN wins its window (the first NaN).
    """

    base_name = "max_pooling2d"
    window_name = "pool window"

    def __init__(self, pool_size=2, strides=None, padding="valid", **kwargs):
        super().__init__(**kwargs)
        self.pool_size = self.window_size = normalize_tuple(pool_size, 2, "pool_size")
        self.strides = normalize_tuple(strides, 2, "strides") if strides is not None else self.pool_size
        self.padding = normalize_padding(padding)

    def channels_out(self, input_shape):
        return input_shape[2]

    def call(self, x, training):
        N, C = len(x), x.shape[3]
        kh, kw = self.pool_size
        windows = im2col(x, self.window, fill=-np.inf).reshape(-1, kh * kw, C)   # padding never wins
        winner = windows.argmax(axis=1)                          # first maximum (or first NaN)
        self.cache = {"winner": winner, "x_shape": x.shape}
        return np.take_along_axis(windows, winner[:, None, :], axis=1).reshape((N,) + self.output_shape)

    def backprop(self, dz):
        # dy/dx is 1 for the winning pixel of each window and 0 for the others, so each
        # window's gradient goes to its winner; col2im adds the windows back onto the
        # pixels, so a pixel that wins several overlapping windows gets their sum.
        kh, kw = self.pool_size
        winner, C = self.cache["winner"], dz.shape[3]
        dwindows = np.zeros((len(winner), kh * kw, C), dtype=dz.dtype)
        np.put_along_axis(dwindows, winner[:, None, :], dz.reshape(-1, 1, C), axis=1)
        return col2im(dwindows, self.window, self.cache["x_shape"])

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides,
                "padding": self.padding}


class Dropout(Layer):
    """Inverted dropout: in training, ``y = x * keep / (1 - rate)`` with ``keep ~ Bernoulli(1 - rate)``.

    At inference it is the identity (the 1/(1-rate) scaling during training
    keeps the expected activation unchanged, so nothing is rescaled here).
    The uniforms deciding ``keep`` come from :mod:`convnet.rng`, one key per
    step from the layer's generator (seeded by the model), so both tiers
    draw the same masks. Set ``fixed_mask`` (already scaled) to reuse one
    mask, e.g. for a gradient check; ``mask`` is the last one used.
    """

    base_name = "dropout"

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= rate < 1:
            raise ValueError(f"Dropout rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.fixed_mask = self.mask = None

    def reseed(self, seed):
        """Start the layer's generator of keys from ``seed`` (unless the layer was given its own seed)."""
        if self.seed is None:
            self.rng = np.random.default_rng(seed)

    def next_key(self):
        """The key of the next draw of uniforms (one per training step)."""
        return self.rng.integers(0, 2 ** 64, dtype=np.uint64)

    def call(self, x, training):
        if not training or self.rate == 0:
            self.mask = None
            return x
        if self.fixed_mask is not None:
            self.mask = self.fixed_mask.astype(x.dtype, copy=False)
            return x * self.mask
        u = counter_rng.uniforms(self.next_key(), x.shape)      # uniform on [0, 1)
        keep = u >= self.rate                                     # probability 1 - rate
        self.mask = (keep / (1 - self.rate)).astype(x.dtype)
        return x * self.mask

    def backprop(self, dz):
        # y = x * mask  =>  dL/dx = dL/dy * mask  (identity when not training)
        return dz if self.mask is None else dz * self.mask

    def clear_cache(self):
        super().clear_cache()
        self.mask = None

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

    def param_shapes(self):
        return {"kernel": (self.input_shape[0], self.units), "bias": (self.units,)}

    def create_params(self, rng):
        shapes = self.param_shapes()
        self.params = {"kernel": self.kernel_initializer(shapes["kernel"], rng, self.dtype),
                       "bias": self.bias_initializer(shapes["bias"], rng, self.dtype)}

    def call(self, x, training):
        self.cache = {"x": x}
        return x @ self.params["kernel"] + self.params["bias"]

    def backprop(self, dz):
        # z = x W + b  =>  dL/dW = x^T dz,  dL/db = sum over the batch of dz,  dL/dx = dz W^T
        self.grads["kernel"] = self.cache["x"].T @ dz
        self.grads["bias"] = dz.sum(axis=0)
        return dz @ self.params["kernel"].T if self.need_input_grad else None

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
