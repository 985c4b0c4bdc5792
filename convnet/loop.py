"""The textbook's runner: a model's layers called one after another, in plain NumPy.

A model hands its layers to a runner (:func:`convnet.backends.runner`); this
is the textbook's: ``forward`` calls each layer's ``forward`` in order,
``backward`` each layer's ``backward`` in reverse, each layer turning
dL/d(its output) into dL/d(its input). The engine's runner
(:class:`convnet.engine.model.EngineModel`) has the same methods and
leaves the same records on the layers.
"""
from . import cpu


class LayerLoop:
    """Runs ``layers`` (a list of built layers) with their own ``forward``/``backward``."""

    def __init__(self, layers):
        self.layers = layers

    def running(self):
        """Context for a model-level call: BLAS on one thread inside (:class:`convnet.cpu.limited`)."""
        return cpu.limited()

    def forward(self, x, training=False):
        """Run the batch through every layer; each layer keeps its ``output``."""
        with cpu.limited():
            for layer in self.layers:
                x = layer.forward(x, training=training)
        return x

    def backward(self, dout, preactivation=False, input_grad=True):
        """dL/d(input) from dL/d(output) through every layer, last first (see ``Sequential.backward``)."""
        layers = self.layers
        first = next((i for i, l in enumerate(layers) if l.params), 0)
        with cpu.limited():
            for i in range(len(layers) - 1, -1, -1):
                layer = layers[i]
                layer.need_input_grad = input_grad or i > first
                dout = layer.backward(dout, preactivation=preactivation and i == len(layers) - 1)
                if dout is None:
                    break
        return dout

    def infer(self, x):
        """``(z, y)`` of the last layer with dropout off: :meth:`forward`, then its preactivation and output."""
        y = self.forward(x, training=False)
        return self.layers[-1].preactivation, y

    def apply(self, optimizer, params_and_grads):
        """One optimizer step: the optimizer's own update."""
        optimizer.apply(params_and_grads)

    def augmenter(self, augment):
        """The function that augments a batch: ``augment`` itself."""
        return augment
