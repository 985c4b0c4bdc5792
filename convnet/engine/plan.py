"""The engine's plan for a model's layers: the groups it fuses, the passes that share a hand-off, the records each writes.

The textbook runs a model one layer at a time, each layer's ``forward``
recording its ``output`` (and ``preactivation``, ``cache``, a dropout's
``mask``) and each ``backward`` its ``grad_output``, ``grads`` and
``grad_input``. The engine computes the same records, and :func:`make`
decides once per model (:class:`convnet.engine.model.EngineModel` keeps the
plan while the layers stay as they are) how:

* **groups.** A Conv2D whose activation is ReLU, followed by a MaxPool2D
  (not the model's last layer), is one :class:`ConvGroup`: its pass adds
  the bias and applies ReLU to each block of the convolution's output while
  the block is in cache, and pools it; in backward the pooling computes
  the ReLU's gradient in the same loop as its own. A ReLU Conv2D without
  such a pool is a group of one that still fuses bias and ReLU. Every
  other layer is a :class:`Single`: its own math, by the engine's version
  (:mod:`convnet.engine.layers`) where there is one, else the layer's own.
* **runs.** A convolution, a pooling or a dropout computes image ``n`` of
  its output from image ``n`` of its input alone. So consecutive such
  groups (the seed model's ``conv -> pool -> dropout -> conv -> pool ->
  dropout``) form a :class:`Run`: every layer's output arrays are
  allocated first (each group's ``start``: a list of
  :class:`~convnet.engine.layers.Pass`), then each thread carries its share
  of the images through the whole run in one hand-off. Backward does the
  same in reverse, over the fixed blocks of images over which a
  convolution sums its kernel gradient
  (:func:`convnet.engine.threads.reduction_blocks`), so the sums do not
  depend on the number of threads. Dense layers (whose kernel gradient
  sums over the whole batch), the last layer (whose backward may start
  from the loss's fused gradient), a ReLU convolution without its pool,
  a dropout that draws no mask and layers the engine does not know run
  on their own.

Each group lists the records it writes (:attr:`Group.records`); the
numbers are those of the same layers run one at a time by the engine
(``make(layers, fuse=False)``), bit for bit, for any number of threads
(``tests/test_engine_plan.py``).
"""
import numpy as np

from .. import layers
from ..activations import LinearFunction, ReLUFunction
from . import layers as engine_layers
from . import threads

#: textbook layer class -> the engine's version of its math (exact types: a subclass may change the math)
DRIVERS = {layers.Conv2D: engine_layers.Conv2D, layers.MaxPool2D: engine_layers.MaxPool2D,
           layers.Dropout: engine_layers.Dropout, layers.Dense: engine_layers.Dense}

FORWARD_RECORDS = ("preactivation", "output")
BACKWARD_RECORDS = ("grad_output", "grad_input")


class Group:
    """Consecutive layers ``layers[i:j]`` computed together."""

    def __init__(self, i, model_layers):
        self.i, self.layers = i, tuple(model_layers)
        self.j = i + len(self.layers)

    @property
    def records(self):
        """``(layer name, attribute)`` of everything the group writes on its layers, forward then backward."""
        found = []
        for layer in self.layers:
            found += [(layer.name, a) for a in FORWARD_RECORDS + self.extra_records(layer)]
        for layer in reversed(self.layers):
            found += [(layer.name, a) for a in BACKWARD_RECORDS] + ([(layer.name, "grads")] if layer.params else [])
        return found

    def extra_records(self, layer):
        if isinstance(layer, layers.Dropout):
            return ("mask",)
        return ("cache",) if type(layer) in (layers.Conv2D, layers.MaxPool2D, layers.Dense) else ()

    def describe(self):
        return " + ".join(f"{layer.name}" for layer in self.layers) + f": {self.kind}"


def _activation(layer):
    """The engine's ReLU for a ReLU activation, else the layer's own activation object."""
    return engine_layers.ReLU(layer.activation) if type(layer.activation) is ReLUFunction else layer.activation


class Single(Group):
    """One layer, as the textbook's ``Layer.forward``/``backward`` with the engine's math where it has one."""

    def __init__(self, i, layer):
        super().__init__(i, [layer])
        self.layer = layer
        driver = DRIVERS.get(type(layer))
        self.math = driver(layer) if driver is not None else layer
        self.act = _activation(layer)
        self.kind = "engine" if driver is not None else "its own math"

    def forward(self, x, training):
        layer = self.layer
        x = layer._check_input(x)
        layer.preactivation = self.math.call(x, training)
        layer.output = self.act.forward(layer.preactivation)
        return layer.output

    def backward(self, dout, preactivation=False):
        layer = self.layer
        layer.grad_output = dout = layer._check_grad(dout)
        dz = dout if preactivation else self.act.backward(dout, layer.output)
        layer.grad_input = self.math.backprop(dz)
        return layer.grad_input


class ConvGroup(Group):
    """A Conv2D (with its activation fused when it is ReLU), and with ``pool`` the MaxPool2D reading its ReLU output."""

    def __init__(self, i, conv, pool=None):
        super().__init__(i, [conv] if pool is None else [conv, pool])
        self.conv, self.pool = conv, pool
        self.relu = type(conv.activation) is ReLUFunction
        self.math = engine_layers.Conv2D(conv)
        self.pool_math = engine_layers.MaxPool2D(pool) if pool is not None else None
        self.act = engine_layers.ReLU(conv.activation) if self.relu else None
        self.kind = "conv" + (" + bias + ReLU" if self.relu else " + bias") + (" + pool" if pool is not None else "")

    def start(self, x, training):
        """Set up the forward passes over ``x``: ``(passes, output)``; the records are set (filled by the passes)."""
        conv = self.conv
        x = np.ascontiguousarray(conv._check_input(x))
        fused = self.relu and self.math.fuses(len(x), x.dtype)
        z, y, pooled, step = self.math.start(x, relu=fused, pool=self.pool_math if fused else None)
        passes = [step]
        if self.relu and not fused:               # too large to fuse: ReLU and pooling as passes of their own
            y = np.empty_like(z)
            passes.append(engine_layers.Pass(lambda n0, n1: engine_layers.relu_forward(z, y, n0, n1), y, z.size))
        conv.preactivation, conv.output = z, (y if self.relu else z)
        out = conv.output
        if self.pool is not None:
            if pooled is None:
                step = self.pool_math.start(y)
                passes.append(step)
                out = step.out
            else:
                out = pooled[0]
            self.pool.preactivation = self.pool.output = out
        return passes, out

    def start_backward(self, dout):
        """Set up the backward passes for ``dout``: ``(passes, dx, finish)``; ``finish()`` after the passes."""
        conv, pool, passes = self.conv, self.pool, []
        if pool is not None:                      # the pooling's dx, and the ReLU's dz in the same pass
            pool.grad_output = dout = pool._check_grad(dout)
            step, dx_pool, dz = self.pool_math.start_backward(dout, relu=True)
            passes.append(step)
            pool.grad_input = conv.grad_output = dx_pool
        else:
            conv.grad_output = dout = conv._check_grad(dout)
            dz = self.act.backward(dout, conv.output) if self.relu else dout    # (a hand-off of its own)
        step, finish = self.math.start_backward(dz)
        passes.append(step)

        def done():
            conv.grad_input = finish()
        return passes, step.out, done


class _OneLayerGroup(Group):
    """A pooling or a dropout in a run: one layer, one pass each way, the layer's own records."""

    def __init__(self, i, layer, math):
        super().__init__(i, [layer])
        self.layer, self.math = layer, math

    def start(self, x, training):
        layer = self.layer
        step = self.math.start(layer._check_input(x))
        layer.preactivation = layer.output = step.out
        return [step], step.out

    def start_backward(self, dout):
        layer = self.layer
        layer.grad_output = dout = layer._check_grad(dout)
        step = self._backward_pass(dout)
        layer.grad_input = step.out
        return [step], step.out, None

    def _backward_pass(self, dout):
        return self.math.start_backward(dout)


class PoolGroup(_OneLayerGroup):
    """A MaxPool2D in a run (its input not a fused convolution's ReLU output)."""

    kind = "pool"

    def __init__(self, i, pool):
        super().__init__(i, pool, engine_layers.MaxPool2D(pool))

    def _backward_pass(self, dout):
        return self.math.start_backward(dout)[0]      # (pass, dx, None): no ReLU to fold in here


class DropoutGroup(_OneLayerGroup):
    """A Dropout drawing its mask, in a run."""

    kind = "dropout"

    def __init__(self, i, dropout):
        super().__init__(i, dropout, engine_layers.Dropout(dropout))


class Run:
    """Groups whose passes run in one hand-off per direction: each thread carries its images through all of them."""

    def __init__(self, groups):
        self.groups = groups
        self.i, self.j = groups[0].i, groups[-1].j

    def forward(self, x, training):
        x = np.ascontiguousarray(x)
        passes, a = [], x
        for group in self.groups:
            more, a = group.start(a, training)
            passes += more
        _run_all(passes, len(x), threads.over_reduction_blocks)       # whole blocks: a conv's products are fixed
        return a

    def backward(self, dout, preactivation=False):
        passes, finishes, d = [], [], dout
        for group in reversed(self.groups):
            more, d, finish = group.start_backward(d)
            passes += more
            if finish is not None:
                finishes.append(finish)
            if d is None:                         # the first layer needs no dL/dx: nothing below it runs
                break
        _run_all(passes, len(dout), threads.over_reduction_blocks)
        for finish in finishes:
            finish()
        return d


def _run_all(passes, n_images, share):
    if passes:
        def images(n0, n1):
            for step in passes:
                step.run(n0, n1)
        share(images, n_images, max(step.size for step in passes))


class Plan:
    """``steps``: what runs, in order (each a :class:`Run` or a :class:`Single`, with ``forward``/``backward``)."""

    def __init__(self, steps):
        self.steps = steps

    @property
    def groups(self):
        """Every group, in order."""
        return [g for step in self.steps for g in (step.groups if isinstance(step, Run) else [step])]

    def runs(self):
        """``[(i, j), ...]``: the runs of at least two layers ``i <= k < j`` done as one pass per thread."""
        return [(step.i, step.j) for step in self.steps if isinstance(step, Run) and step.j - step.i >= 2]

    def describe(self):
        """The plan in words: one line per step, its groups and the records they write."""
        lines = []
        for step in self.steps:
            groups = step.groups if isinstance(step, Run) else [step]
            head = "one hand-off: " if isinstance(step, Run) else ""
            lines.append(head + "; ".join(g.describe() for g in groups))
            for g in groups:
                lines.append("    writes " + ", ".join(f"{name}.{attr}" for name, attr in g.records))
        return "\n".join(lines)


def _joins(model_layers, k, training):
    """Can layer ``k`` run as a pass of a run (see the module docstring)?"""
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
        return engine_layers.Dropout(layer).drawn(training)
    return kind is layers.MaxPool2D


def make(model_layers, training=True, fuse=True):
    """The plan for ``model_layers`` (a forward with ``training``, and the backward after it).

    ``fuse=False``: every layer on its own (the engine's math, layer by
    layer, no runs): what the fused plan is held to, bit for bit.
    """
    n = len(model_layers)
    if not fuse:
        return Plan([Single(k, layer) for k, layer in enumerate(model_layers)])
    steps, k = [], 0
    while k < n:
        j = k
        while j < n and _joins(model_layers, j, training):
            j += 1
        if j - k >= 2:                            # a run of layers k..j-1
            groups, m = [], k
            while m < j:
                layer = model_layers[m]
                if type(layer) is layers.Conv2D:
                    fused = type(layer.activation) is ReLUFunction and m + 1 < j    # its pool is in the run
                    groups.append(ConvGroup(m, layer, model_layers[m + 1] if fused else None))
                    m += 2 if fused else 1
                elif type(layer) is layers.MaxPool2D:
                    groups.append(PoolGroup(m, layer))
                    m += 1
                else:
                    groups.append(DropoutGroup(m, layer))
                    m += 1
            steps.append(Run(groups))
            k = j
            continue
        layer = model_layers[k]
        if type(layer) is layers.Conv2D and layer.built and type(layer.activation) is ReLUFunction:
            steps.append(Run([ConvGroup(k, layer)]))          # bias and ReLU in one pass, alone
        else:
            steps.append(Single(k, layer))
        k += 1
    return Plan(steps)
