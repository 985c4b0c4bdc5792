"""A training step with fewer thread hand-offs: runs of layers done as one pass per thread.

The textbook :meth:`Sequential.forward <convnet.model.Sequential.forward>`
calls each layer in turn, and the engine shares each layer's work between
threads on its own: a hand-off (and a wait for the slowest thread) per
layer. Yet a convolution, a pooling or a dropout computes image ``n`` of
its output from image ``n`` of its input alone. So here a *run* of such
layers (the seed model's ``conv -> pool -> dropout -> conv -> pool ->
dropout``) is set up first, every layer's output arrays allocated
(``start`` of each engine layer, :class:`convnet.engine.layers.Pass`), and
then each thread carries its share of the images through the whole run in
one hand-off. Backward does the same for the same run in reverse; there the
shares are the fixed blocks of images over which a convolution sums its
kernel gradient (:func:`convnet.engine.threads.reduction_blocks`), so the
sums are those of the layer-by-layer engine, for any number of threads.

Then each layer's own ``forward``/``backward`` is called as usual and finds
its result already computed for exactly the array it receives (checked by
identity): every layer still records its ``output``, ``preactivation``,
``grad_output`` and ``grad_input``, and the numbers are those of the
layer-by-layer engine bit for bit (tested). Layers that cannot join a run
(dense layers, whose kernel gradient sums over the whole batch; a layer
you wrote; an activation other than ReLU and linear) run layer by layer.
"""
import numpy as np

from .. import backends, layers
from ..activations import LinearFunction, ReLUFunction
from . import inference, threads
from .layers import Conv2D


def _joins(model_layers, k, training):
    """Can layer ``k`` run as a pass of a run of layers (not the last layer; see the module docstring)?"""
    layer = model_layers[k]
    if not layer.built or k == len(model_layers) - 1:
        return False
    act, kind = type(layer.activation), type(layer)
    if kind is layers.Conv2D:
        # a ReLU's backward is computed by the pooling that reads it: one must follow
        return act is LinearFunction or (act is ReLUFunction and type(model_layers[k + 1]) is layers.MaxPool2D)
    if act is not LinearFunction:
        return False
    if kind is layers.Dropout:
        return backends.implementation(layer).drawn(training)
    return kind is layers.MaxPool2D


def runs(model_layers, training=True):
    """``[(i, j), ...]``: the runs of at least two consecutive layers ``i <= k < j`` done as one pass per thread."""
    found, i = [], 0
    while i < len(model_layers):
        j = i
        while j < len(model_layers) and _joins(model_layers, j, training):
            j += 1
        if j - i >= 2:
            found.append((i, j))
        i = j + 1
    return found


def _forward_run(run_layers, x):
    """Compute the forward passes of ``run_layers`` on ``x``, one hand-off; each layer's next call takes its result."""
    steps, a, k = [], x, 0
    while k < len(run_layers):
        layer = run_layers[k]
        if a.dtype != layer.dtype or a.shape[1:] != layer.input_shape:
            break                                  # the layer would cast or refuse it: let it
        impl = backends.implementation(layer)
        if isinstance(impl, Conv2D):
            fuse = impl.relu() is not None and k + 1 < len(run_layers)
            pool = backends.implementation(run_layers[k + 1]) if fuse else None
            z, step = impl.start(a, pool)
            impl.pending = (a, z)
            if type(layer.activation) is ReLUFunction and step.y is None:
                steps.append(step)                 # too large to fuse: the ReLU runs on its own
                break
            k += 1 if pool is not None else 0      # the pooling is part of this pass
        else:
            step = impl.start(a)
            impl.pending = (a, step.out)
        steps.append(step)
        a = step.out
        k += 1
    _run_all(steps, len(x), threads.over_reduction_blocks)      # whole blocks: a conv's products are fixed


def _backward_run(run_layers, dout):
    """Compute the backward passes of ``run_layers`` (last layer first) for ``dout``, one hand-off."""
    steps, d = [], dout
    for layer in reversed(run_layers):
        if d is None or d.dtype != layer.dtype or d.shape != layer.output.shape:
            break
        impl = backends.implementation(layer)
        if isinstance(impl, Conv2D):
            relu = impl.relu()
            if relu is not None:                   # the ReLU's dz, computed by the pooling above
                given = relu.computed_backward
                if given is None or given[0] is not d or given[1] is not layer.output:
                    break
                d = given[2]
            step, finish = impl.start_backward(d)
            impl.pending_backward = (d, finish)
        else:
            step = impl.start_backward(d)
            impl.pending_backward = (d, step.out)
        steps.append(step)
        d = step.out
    _run_all(steps, len(dout), threads.over_reduction_blocks)


def _run_all(steps, n_images, share):
    if steps:
        def images(n0, n1):
            for step in steps:
                step.run(n0, n1)
        share(images, n_images, max(step.size for step in steps))


def forward(model, x, training):
    """:meth:`Sequential.forward <convnet.model.Sequential.forward>` with runs of layers done in one hand-off."""
    model._require_built()
    found = dict(runs(model.layers, training))
    with backends.running():
        for k, layer in enumerate(model.layers):
            if k in found:
                x = np.ascontiguousarray(x)
                _forward_run(model.layers[k:found[k]], x)
            x = layer.forward(x, training=training)
    return x


def backward(model, dout, preactivation=False, input_grad=True):
    """:meth:`Sequential.backward <convnet.model.Sequential.backward>`, with the runs of :func:`forward`."""
    model_layers = model.layers
    first = next((i for i, l in enumerate(model_layers) if l.params), 0)
    last_of = {j - 1: i for i, j in runs(model_layers)}
    with backends.running():
        for k in range(len(model_layers) - 1, -1, -1):
            layer = model_layers[k]
            if k in last_of:
                for i in range(last_of[k], k + 1):
                    model_layers[i].need_input_grad = input_grad or i > first
                _backward_run(model_layers[last_of[k]:k + 1], np.asarray(dout))
            layer.need_input_grad = input_grad or k > first
            dout = layer.backward(dout, preactivation=preactivation and k == len(model_layers) - 1)
            if dout is None:
                break
    return dout


class Sequential(inference.Sequential):
    """Engine version of :class:`convnet.model.Sequential`: ``forward``/``backward`` of a training step, and ``infer``."""

    def forward(self, x, training=False):
        return forward(self.model, x, training)

    def backward(self, dout, preactivation=False, input_grad=True):
        return backward(self.model, dout, preactivation, input_grad)
