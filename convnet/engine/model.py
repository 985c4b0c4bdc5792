"""The engine's runner for a model's layers: the one engine model class.

A model hands its layers to a runner (:func:`convnet.backends.runner`);
:class:`EngineModel` is the engine's. It has the methods of the textbook's
:class:`convnet.loop.LayerLoop` and leaves the same records on the layers;
it computes them by a plan made once for the layers (:mod:`convnet.engine.plan`
for training, :mod:`convnet.engine.inference` for ``predict`` and
``evaluate``), kept while the layers stay as they are.
"""
from .. import augment as augment_module
from .. import layers as layers_module
from .. import optimizers
from . import adam, affine, inference, plan, threads
from .winograd import TransformedKernel


def _signature(model_layers, training):
    """What a plan depends on: each layer, its kind, activation, shape and dtype, and whether a dropout draws."""
    return (training,) + tuple(
        (id(layer), type(layer), type(layer.activation), layer.built, layer.input_shape, layer.dtype,
         isinstance(layer, layers_module.Dropout) and layer.rate != 0 and layer.fixed_mask is None)
        for layer in model_layers)


class EngineModel:
    """Runs ``layers`` (a model's list of layers) on the engine."""

    def __init__(self, model_layers, fuse=True):
        self.layers = model_layers
        self.fuse = fuse
        self._plans = {}                  # training flag -> (signature, Plan)
        self._last = None                 # the plan of the last forward pass: its backward follows it
        self._inference = None            # (signature, the inference steps or None)
        self._transformed = {}            # id(conv layer) -> its TransformedKernel (Winograd)

    def running(self):
        """Context for a model-level call: BLAS on one thread inside, the engine's threads sharing the work."""
        return threads.limited()

    def plan(self, training=True):
        """The :class:`~convnet.engine.plan.Plan` for a forward pass with ``training`` (made once, kept)."""
        signature = _signature(self.layers, training)
        kept = self._plans.get(training)
        if kept is None or kept[0] != signature:
            kept = self._plans[training] = (signature, plan.make(self.layers, training, self.fuse))
        return kept[1]

    def forward(self, x, training=False):
        """Every layer's forward records for the batch ``x``; returns the last layer's output."""
        planned = self._last = self.plan(training)
        with threads.limited():
            for step in planned.steps:
                x = step.forward(x, training)
        return x

    def backward(self, dout, preactivation=False, input_grad=True):
        """Every layer's backward records, last layer first; returns dL/d(input) (None when skipped)."""
        planned = self._last if self._last is not None else self.plan(True)
        model_layers = self.layers
        first = next((i for i, l in enumerate(model_layers) if l.params), 0)
        last = len(model_layers) - 1
        with threads.limited():
            for step in reversed(planned.steps):
                for k in range(step.i, step.j):
                    model_layers[k].need_input_grad = input_grad or k > first
                dout = step.backward(dout, preactivation=preactivation and step.j - 1 == last)
                if dout is None:
                    break
        return dout

    def _transformed_kernel(self, layer):
        found = self._transformed.get(id(layer))
        if found is None or found.layer is not layer:
            found = self._transformed[id(layer)] = TransformedKernel(layer)
        return found

    def infer(self, x):
        """``(z, y)`` of the last layer for the batch ``x`` with dropout off; no layer keeps anything."""
        signature = _signature(self.layers, False)
        if self._inference is None or self._inference[0] != signature:
            self._inference = (signature, inference.plan(self.layers, self._transformed_kernel))
        planned = self._inference[1]
        if planned is None:                      # a layer or activation inference has no step for
            y = self.forward(x, training=False)
            return self.layers[-1].preactivation, y
        with threads.limited():
            return inference.infer(planned, self.layers[-1].output_shape, x)

    def apply(self, optimizer, params_and_grads):
        """One optimizer step; Adam's update by the engine's one fused pass (:mod:`convnet.engine.adam`)."""
        if type(optimizer) is optimizers.Adam:
            optimizer.apply(params_and_grads, update_all=adam.Adam(optimizer).update_all)
        else:
            optimizer.apply(params_and_grads)

    def augmenter(self, augment):
        """The function that augments a batch: the engine's resampling for a :class:`convnet.augment.RandomAffine`."""
        if type(augment) is augment_module.RandomAffine:
            return affine.RandomAffine(augment)
        return augment


def describe(model_layers, training=True):
    """The engine's plan for these layers, in words (see :meth:`convnet.engine.plan.Plan.describe`)."""
    return plan.make(model_layers, training).describe()

