"""``Sequential``: a stack of layers with Keras's public interface.

Forward runs the layers in order, backward runs them in reverse, each layer
turning dL/d(its output) into dL/d(its input). ``fit`` is the usual loop:
shuffle, cut into batches, and for each batch forward -> loss -> backward ->
optimizer step.

The model does not call its layers itself: it hands them to a runner
(:meth:`Sequential.runner`, the one place the tier is chosen), the
textbook's own loop (:class:`convnet.loop.LayerLoop`) or the engine's.
"""
import math
import time

import numpy as np

from . import backends
from . import hooks
from . import layers as layers_module
from . import losses, optimizers
from .activations import SoftmaxFunction, LinearFunction


#: images per forward pass in ``predict``/``evaluate`` when no ``batch_size`` is given: within 2% of
#: the engine's fastest (1,000; docs/performance.md), while the textbook backend's im2col matrices
#: for a chunk stay near 50 MB
INFERENCE_BATCH = 256


class History:
    """What ``fit`` returns: ``history`` maps a metric name to its per-epoch values."""

    def __init__(self):
        self.history = {}
        self.epoch = []

    def append(self, epoch, logs):
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(v)

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"


class Sequential:
    """A linear stack of layers, built (all shapes fixed) as soon as the input shape is known.

    ``Sequential([...], input_shape=(28, 28, 1), seed=0)``; the input shape may
    instead be given to the first layer (``Conv2D(..., input_shape=...)``).
    ``seed`` makes initial weights, dropout masks and shuffling reproducible.
    """

    def __init__(self, layers=None, input_shape=None, name="sequential", seed=None):
        self.name = name
        self.seed = seed
        self.layers = []
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.optimizer = self.loss = None
        self.metrics = []
        self.stop_training = False
        self._names = set()
        for layer in layers or []:
            self.add(layer)

    # ------------------------------------------------------------ building
    def add(self, layer):
        if not isinstance(layer, layers_module.Layer):
            raise TypeError(f"Sequential.add expects a Layer, got {type(layer).__name__}")
        if layer.name is None:
            base, i = layer.base_name, 0
            layer.name = base
            while layer.name in self._names:
                i += 1
                layer.name = f"{base}_{i}"
        if layer.name in self._names:
            raise ValueError(f"duplicate layer name {layer.name!r}")
        self._names.add(layer.name)
        if not self.layers and self.input_shape is None and layer.input_shape is not None:
            self.input_shape = layer.input_shape
        self.layers.append(layer)
        if self.input_shape is not None:
            self.build()

    def build(self, input_shape=None, initialize=True):
        """Give every layer its input shape and parameters (glorot_uniform from ``seed``).

        ``initialize=False`` allocates the parameters without drawing them
        (for weights that are loaded next).
        """
        if input_shape is not None:
            self.input_shape = tuple(input_shape)
        if self.input_shape is None:
            raise ValueError("the model has no input shape: pass input_shape= to Sequential or the first layer")
        seeds = np.random.SeedSequence(self.seed).spawn(len(self.layers))
        shape = self.input_shape
        for layer, ss in zip(self.layers, seeds):
            if not layer.built or layer.input_shape != shape:
                layer.build(shape, np.random.default_rng(ss), initialize=initialize)
                if isinstance(layer, layers_module.Dropout):
                    layer.reseed(ss.spawn(1)[0])
            shape = layer.output_shape
        return shape

    def seed_dropout(self, seed, epoch):
        """Start every Dropout layer's keys from ``(seed, epoch, layer index)``: the one place masks are seeded.

        ``fit`` calls it at the start of each epoch, so a resumed run draws
        the masks of the uninterrupted one, and no two epochs share masks.
        """
        for i, layer in enumerate(self.layers):
            if isinstance(layer, layers_module.Dropout):
                layer.reseed([seed, epoch, i])

    @property
    def output_shape(self):
        return self.layers[-1].output_shape if self.layers else self.input_shape

    def trainable_layers(self):
        return [layer for layer in self.layers if layer.params]

    def count_params(self):
        return sum(layer.count_params() for layer in self.layers)

    def summary(self, print_fn=print):
        """Print (and return) a Keras-style table: name, output shape, parameter count."""
        self._require_built()
        line = "_" * 65
        rows = [f'Model: "{self.name}"', line,
                f" {'Layer (type)':<28}{'Output Shape':<26}{'Param #':>9}", "=" * 65]
        for layer in self.layers:
            shape = "(None, " + ", ".join(map(str, layer.output_shape)) + ")"
            rows.append(f" {layer.name + ' (' + type(layer).__name__ + ')':<28}{shape:<26}"
                        f"{layer.count_params():>9,}")
        total = self.count_params()
        rows += ["=" * 65, f"Total params: {total:,}", f"Trainable params: {total:,}",
                 "Non-trainable params: 0", line]
        text = "\n".join(rows)
        if print_fn is not None:
            print_fn(text)
        return text

    def _require_built(self):
        if not self.layers or not all(layer.built for layer in self.layers):
            raise ValueError("the model is not built yet: give it an input_shape")

    # ------------------------------------------------------------- weights
    def get_weights(self):
        """Copies of all parameters in Keras order: kernel, bias for each trainable layer."""
        return [p.copy() for layer in self.trainable_layers() for p in layer.params.values()]

    def set_weights(self, weights):
        """Load a list from :meth:`get_weights` (or Keras's ``model.get_weights()``)."""
        targets = [(layer, k, p) for layer in self.trainable_layers() for k, p in layer.params.items()]
        weights = list(weights)
        if len(weights) != len(targets):
            raise ValueError(f"set_weights: expected {len(targets)} arrays "
                             f"({', '.join(f'{l.name}/{k}' for l, k, _ in targets)}), got {len(weights)}")
        for (layer, key, p), w in zip(targets, weights):
            w = np.asarray(w)
            if w.shape != p.shape:
                raise ValueError(f"set_weights: {layer.name}/{key} expects shape {p.shape}, got {w.shape}")
        for (layer, key, p), w in zip(targets, weights):
            np.copyto(p, w, casting="unsafe")

    def params_and_grads(self):
        """``(key, param, grad)`` for every parameter, key ``"layer/param"``: what optimizers consume."""
        return [(f"{layer.name}/{k}", p, layer.grads[k])
                for layer in self.trainable_layers() for k, p in layer.params.items()]

    def clone(self, dtype=None, seed=None, weights=True):
        """An independent copy (not compiled): the same layers and, with ``weights``, the same weights.

        ``dtype``: cast the copy's parameters (e.g. float64 for a gradient
        check); ``weights=False`` draws new initial weights from ``seed``.
        The one way convnet copies a model.
        """
        config = self.get_config() if weights else {**self.get_config(), "seed": seed}
        copy = type(self).from_config(config)
        if weights:
            copy.set_weights(self.get_weights())
        return copy.astype(dtype) if dtype is not None else copy

    def astype(self, dtype):
        """Cast every layer's parameters, e.g. ``model.astype(np.float64)`` for a gradient check."""
        for layer in self.layers:
            layer.astype(dtype)
        return self

    # ---------------------------------------------------- forward/backward
    def runner(self):
        """What runs the layers now: the textbook's :class:`~convnet.loop.LayerLoop` or the engine's
        runner, as :func:`convnet.set_backend` chose (:func:`convnet.backends.runner`)."""
        return backends.runner(self.layers, owner=self)

    def forward(self, x, training=False):
        """Run the batch through every layer; each layer keeps its ``output``."""
        self._require_built()
        return self.runner().forward(x, training=training)

    __call__ = forward

    def backward(self, dout, preactivation=False, input_grad=True):
        """Backpropagate dL/d(output) through every layer; returns dL/d(input).

        ``preactivation=True``: ``dout`` is the gradient w.r.t. the last
        layer's value before its activation (fused softmax + loss).
        ``input_grad=False`` skips the gradients nobody needs: those below the
        first layer with parameters (then it returns None).
        """
        return self.runner().backward(dout, preactivation=preactivation, input_grad=input_grad)

    @property
    def activations(self):
        """Each layer's output from the last forward pass."""
        return {layer.name: layer.output for layer in self.layers}

    @property
    def gradients(self):
        """Each layer's dL/d(input) from the last backward pass (None where skipped)."""
        return {layer.name: layer.grad_input for layer in self.layers}

    # -------------------------------------------------------------- training
    def compile(self, optimizer="adam", loss="sparse_categorical_crossentropy", metrics=("accuracy",)):
        self.optimizer = optimizers.get(optimizer)
        self.loss = losses.get(loss)
        metrics = list(metrics or [])
        unknown = [m for m in metrics if m not in ("accuracy", "acc")]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; only 'accuracy' is supported")
        self.metrics = ["accuracy"] if metrics else []

    def _fused(self):
        """How the loss meets the last layer: 'softmax' (fused), 'logits' or 'plain'."""
        last = self.layers[-1].activation
        if isinstance(self.loss, losses.SparseCategoricalCrossentropy):
            if not self.loss.from_logits and isinstance(last, SoftmaxFunction):
                return "softmax"
            if self.loss.from_logits and isinstance(last, LinearFunction):
                return "logits"
        return "plain"

    def compute_loss(self, y, out, preactivation=None):
        """Loss of a forward pass, and the gradient to start backward with.

        ``preactivation``: the last layer's ``z`` that gave ``out`` (default:
        the one that layer kept from the last :meth:`forward`).
        """
        mode = self._fused()
        if mode == "softmax":
            z = self.layers[-1].preactivation if preactivation is None else preactivation
            loss, dz = self.loss.forward_logits(y, z)
            return loss, dz, True
        if mode == "logits":
            loss, dz = self.loss.forward_logits(y, out)
            return loss, dz, False
        loss = self.loss.forward(y, out)
        return loss, self.loss.backward(), False

    def train_step(self, x, y):
        """forward -> loss -> backward -> update on one batch; returns (loss, number correct).

        The forward and backward passes are :meth:`forward` and :meth:`backward`
        (on the engine, fused and with fewer thread hand-offs).
        """
        self._require_built()
        run = self.runner()
        with run.running():
            out = run.forward(x, training=True)
            loss, dout, pre = self.compute_loss(y, out)
            run.backward(dout, preactivation=pre, input_grad=False)
            run.apply(self.optimizer, self.params_and_grads())
        return loss, _n_correct(out, y)

    def _check_data(self, x, y=None, what="x"):
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"{what} has dtype {x.dtype}, expected a floating-point array (float32); "
                             f"scale integer images to [0, 1] first")
        if self.input_shape is None:                   # no shape given: built from the first data, as in Keras
            if not self.layers:
                raise ValueError("the model has no layers: add some before using it")
            if x.ndim < 2:
                raise ValueError(f"{what} has shape {x.shape}, expected (samples, ...)")
            self.build(x.shape[1:])
        if x.ndim != len(self.input_shape) + 1 or x.shape[1:] != self.input_shape:
            raise ValueError(f"{what} has shape {x.shape}, expected (samples, "
                             f"{', '.join(map(str, self.input_shape))})")
        if y is not None and len(y) != len(x):
            raise ValueError(f"{what} has {len(x)} samples but the labels have {len(y)}")
        return x

    def _check_set(self, x, y, what, batch_size=None):
        """``(x, y)`` as arrays after checking what ``fit``/``evaluate`` need, before any work: a positive
        integer ``batch_size``, at least one sample, numeric labels, one per sample, and no NaN or
        infinite input value (found with one cheap sum; only then is the first bad sample looked for)."""
        if batch_size is not None:
            _check_count("batch_size", batch_size, 1)
        y = np.asarray(y)
        if y.ndim == 0:
            raise ValueError(f"{what}: the labels must be an array with one label per sample, got {y!r}")
        x = self._check_data(x, y, what=f"{what}: x")
        if len(x) == 0:
            raise ValueError(f"{what}: x is empty; at least one sample is needed")
        if not (np.issubdtype(y.dtype, np.number) or y.dtype == bool):
            raise ValueError(f"{what}: the labels have dtype {y.dtype}; expected integer class indices "
                             f"(or one-hot rows), e.g. y.astype(int)")
        bad = None
        if not math.isfinite(float(np.sum(x, dtype=np.float64))):     # (a huge but finite sum: scan finds none)
            bad = next((i for i in range(len(x)) if not np.isfinite(x[i]).all()), None)
        if bad is not None:
            raise ValueError(f"{what}: x holds NaN or infinite values (the first in sample {bad}); "
                             f"training on them makes the loss NaN")
        return x, y

    def fit(self, x, y, epochs=1, batch_size=32, validation_data=None, validation_split=0.0,
            shuffle=True, seed=None, verbose=1, callbacks=(), initial_epoch=0, record_gradients=False,
            augment=None):
        """Train; returns a :class:`History`.

        The per-epoch ``loss`` and ``accuracy`` are running means over the
        epoch's batches (dropout on), as Keras reports them. ``verbose``: 0
        silent, 1 progress bar and a line per epoch, 2 the line only.
        ``record_gradients=True`` also records, per epoch, the mean norm of
        every parameter gradient (``history.history["grad_norms"]``).
        Epoch ``e`` shuffles and draws dropout masks from ``(seed, e)`` alone,
        so a run resumed at ``initial_epoch`` repeats the uninterrupted one.
        ``augment``: a function ``(images, rng) -> images`` applied to every
        training batch (e.g. :class:`convnet.augment.RandomAffine`); its
        generator too is seeded from ``(seed, epoch)``.
        When training ends, the optimizer's ``finalize_variable_values`` runs
        (with ``use_ema`` it puts the weights' moving average in their place).
        A NaN or infinite loss stops training with FloatingPointError.
        """
        if self.optimizer is None:
            raise ValueError("call compile() before fit()")
        x, y = self._check_set(x, y, "fit", batch_size)
        _check_count("epochs", epochs, 0)
        _check_count("initial_epoch", initial_epoch, 0)
        if validation_split and validation_data is None:
            if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float)) \
                    or not 0 < validation_split < 1:
                raise ValueError(f"validation_split must be a number in (0, 1), got {validation_split!r}")
            cut = int(len(x) * (1 - validation_split))
            if not 0 < cut < len(x):
                raise ValueError(f"validation_split={validation_split} of {len(x)} samples leaves "
                                 f"{cut} for training and {len(x) - cut} for validation; both need at least one")
            x, y, validation_data = x[:cut], y[:cut], (x[cut:], y[cut:])
        elif validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (x_val, y_val)")
            validation_data = self._check_set(*validation_data, "validation_data", 1)
        seed = self.seed if seed is None else seed
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % (2 ** 32))
        history = History()
        self.stop_training = False
        cbs = ([hooks.GradientNorms()] if record_gradients else []) + \
              ([hooks.ProgressBar(epochs, bar=verbose == 1)] if verbose else []) + list(callbacks)
        for cb in cbs:
            cb.model = self
        _notify(cbs, "on_train_begin")
        steps = math.ceil(len(x) / batch_size)
        augment = self.runner().augmenter(augment) if augment is not None else None
        for epoch in range(initial_epoch, epochs):
            self.seed_dropout(seed, epoch)
            order = np.random.default_rng([seed, epoch]).permutation(len(x)) if shuffle else np.arange(len(x))
            # a stream of its own: index len(layers) is no layer's, so no dropout mask shares it
            augment_rng = np.random.default_rng([seed, epoch, len(self.layers)])
            _notify(cbs, "on_epoch_begin", epoch, steps)
            start = time.perf_counter()
            seen = correct = 0
            loss_sum = 0.0
            for b in range(steps):
                idx = order[b * batch_size:(b + 1) * batch_size]
                xb = x[idx] if augment is None else augment(x[idx], augment_rng)
                loss, nc = self.train_step(xb.astype(self.layers[0].dtype, copy=False), y[idx])
                if not math.isfinite(loss):
                    _notify(cbs, "on_train_end")
                    raise FloatingPointError(f"loss became {loss} at epoch {epoch + 1}, batch {b + 1}/{steps}; "
                                             f"try a lower learning rate")
                seen += len(idx)
                loss_sum += loss * len(idx)
                correct += nc
                logs = {"loss": loss_sum / seen}
                if self.metrics:
                    logs["accuracy"] = correct / seen
                _notify(cbs, "on_batch_end", b, logs)
            logs["seconds"] = time.perf_counter() - start
            if validation_data is not None:
                _notify(cbs, "on_test_begin")
                val = self._evaluate(*validation_data)         # checked above
                _notify(cbs, "on_test_end")
                logs["val_loss"] = val[0]
                if self.metrics:
                    logs["val_accuracy"] = val[1]
            _notify(cbs, "on_epoch_end", epoch, logs)
            history.append(epoch, logs)
            if self.stop_training:
                break
        finalize = getattr(self.optimizer, "finalize_variable_values", None)
        if finalize is not None:                  # as Keras's fit: e.g. the weights' moving average
            finalize(self.params_and_grads())
        _notify(cbs, "on_train_end")
        self.history = history
        return history

    def _chunks(self, n, batch_size):
        """``(start, stop)`` of the inference batches."""
        if batch_size is None:
            batch_size = INFERENCE_BATCH
        _check_count("batch_size", batch_size, 1)
        return [(i, min(i + int(batch_size), n)) for i in range(0, n, int(batch_size))]

    def predict(self, x, batch_size=None, verbose=0):
        """Outputs for ``x`` (dropout off), ``batch_size`` images at a time.

        ``batch_size=None`` uses :data:`INFERENCE_BATCH`; any explicit size
        is used as given. No layer keeps its output (:meth:`infer`); use
        :meth:`forward` to inspect activations.
        """
        x = self._check_data(x)
        dtype = self.layers[0].dtype
        runner = self.runner()
        with runner.running():
            outs = [runner.infer(x[i:j].astype(dtype, copy=False))[1] for i, j in self._chunks(len(x), batch_size)]
        self.clear_cache()
        return np.concatenate(outs) if outs else np.zeros((0,) + self.output_shape, self.layers[-1].dtype)

    def evaluate(self, x, y, batch_size=None, verbose=0):
        """``[loss, accuracy]`` over the whole set, ``batch_size`` images at a time (no dropout)."""
        if self.loss is None:
            raise ValueError("call compile() before evaluate()")
        x, y = self._check_set(x, y, "evaluate", batch_size)
        result = self._evaluate(x, y, batch_size)
        if verbose:
            print(" - ".join(f"{k}: {v:.4f}" for k, v in zip(["loss"] + self.metrics, result)))
        return result

    def _evaluate(self, x, y, batch_size=None):
        """:meth:`evaluate` on a set :meth:`_check_set` has passed."""
        loss_sum, correct = 0.0, 0
        runner = self.runner()
        with runner.running():
            for i, j in self._chunks(len(x), batch_size):
                xb, yb = x[i:j], y[i:j]
                z, out = runner.infer(xb.astype(self.layers[0].dtype, copy=False))
                loss, _, _ = self.compute_loss(yb, out, z)
                loss_sum += loss * len(xb)
                correct += _n_correct(out, yb)
        self.clear_cache()
        n = max(len(x), 1)
        return [loss_sum / n] + ([correct / n] if self.metrics else [])

    def infer(self, x):
        """``(z, y)`` of the last layer for the batch ``x`` with dropout off: its preactivation and output.

        What :meth:`predict` and :meth:`evaluate` run. On the textbook it is
        :meth:`forward`; the engine runs the same math without keeping any
        layer's output.
        """
        self._require_built()
        return self.runner().infer(x)

    def clear_cache(self):
        """Every layer forgets what its last forward pass kept for backward (frees the memory)."""
        for layer in self.layers:
            layer.clear_cache()

    # ----------------------------------------------------------- config
    def get_config(self):
        return {"name": self.name, "seed": self.seed, "input_shape": list(self.input_shape),
                "layers": [{"class_name": type(l).__name__, "config": l.get_config()} for l in self.layers]}

    @classmethod
    def from_config(cls, config):
        layer_objs = []
        for spec in config["layers"]:
            try:
                layer_cls = layers_module.LAYER_CLASSES[spec["class_name"]]
            except KeyError:
                raise ValueError(f"unknown layer class {spec['class_name']!r} in model config") from None
            layer_objs.append(layer_cls(**spec["config"]))
        return cls(layer_objs, input_shape=tuple(config["input_shape"]), name=config.get("name", "sequential"),
                   seed=config.get("seed"))


def _check_count(name, value, low):
    """``value`` must be an integer (not a bool) of at least ``low``; else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer of at least {low}, got {value!r}")


def _n_correct(out, y):
    """How many rows of ``out`` have their argmax at the label (integer or one-hot)."""
    y = np.asarray(y)
    labels = y.argmax(axis=1) if y.ndim == 2 and y.shape[1] > 1 else y.reshape(len(y))
    return int(np.sum(out.argmax(axis=1) == labels))


def _notify(callbacks, hook, *args):
    """Call ``hook`` on every callback that has it (a callback need not define every hook)."""
    for cb in callbacks:
        method = getattr(cb, hook, None)
        if method is not None:
            method(*args)
