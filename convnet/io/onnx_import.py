"""Importing ONNX graphs written by other tools (PyTorch, tf2onnx, Keras's exporter) as convnet models.

:func:`convnet.onnx_io.from_onnx` hands every file that convnet did not write
to :func:`import_graph`. The graph is walked node by node, in its order, and
each node either becomes part of a convnet layer or is evaluated right away:

* **layers**: Conv, MaxPool, Gemm, MatMul, Relu, Softmax, Dropout, Flatten
  become Conv2D, MaxPool2D, Dense, ReLU, Softmax, Dropout, Flatten; an Add of
  a constant right after a Conv or Dense is its bias, a Relu or Softmax right
  after one is its activation.
* **layout**: Transpose, Identity, Cast to float and a Reshape that only
  moves axes of size 1 change no numbers, so they become no layer: what is
  recorded is where each of convnet's axes sits in the ONNX tensor.
* **shape arithmetic**: Shape, Gather, Concat, Unsqueeze, Squeeze, Slice,
  Cast, Constant (the chains exporters emit to compute a flatten's target
  shape) are evaluated on the spot, the batch size kept as a symbol.

**Layouts.** convnet's images are channels last (NHWC); ONNX's Conv and
MaxPool read channels first (NCHW). A 4-D input read by a Conv or MaxPool
first is NCHW (PyTorch's layout); one that the graph transposes to NCHW
first is NHWC (what tf2onnx writes for Keras). Either way the imported model
takes NHWC images, like every convnet model. Kernels OIHW become HWIO, and a
flatten of a channels-first tensor gives its features in the order
``(c, h, w)`` where convnet's Flatten gives ``(h, w, c)``: the rows of the
next Dense kernel are permuted to match, so the model computes what the graph
computes. A 4-D input that no op fixes (it is flattened first) is taken as
NHWC when the producer is tf2onnx or Keras, else as NCHW.

**Refusals.** An op, attribute or setting convnet has no layer for (e.g.
padding other than "valid" or TensorFlow's "same", dilation, groups, a skip
connection, a second input) raises one :class:`~convnet.onnx_io.OnnxFileError`
naming the node, its op and what is supported; nothing is returned half
built. Sizes are checked before memory is spent: the number of nodes, the
initializers' total size (the weight limit of convnet's own model files),
every layer's output size, and each constant computed on the way.
"""
import itertools
import math

import numpy as np

from ..utils import pad_amounts

__all__ = ["import_graph", "SUPPORTED_OPS", "MIN_FOREIGN_OPSET", "MAX_NODES"]

#: every op the importer reads (in the default ONNX domain)
SUPPORTED_OPS = ("Conv", "MaxPool", "Relu", "Softmax", "Dropout", "Flatten", "Reshape", "Gemm", "MatMul", "Add",
                 "Transpose", "Identity", "Cast", "Shape", "Gather", "Concat", "Unsqueeze", "Squeeze", "Slice",
                 "Constant")
#: the oldest opset read (Slice takes its bounds as inputs from 10 on; older attribute forms are read too)
MIN_FOREIGN_OPSET = 9
#: more nodes than any graph of convnet's layers needs (each layer is a few nodes)
MAX_NODES = 10_000
#: producers whose 4-D inputs are channels last unless an op says otherwise
_CHANNELS_LAST_PRODUCERS = ("tf2onnx", "keras2onnx", "keras")
_NCHW = (0, 3, 1, 2)


class _BatchSize:
    """The batch size inside shape arithmetic: unknown until the model runs."""

    def __repr__(self):
        return "batch"


BATCH = _BatchSize()


class _Data:
    """A tensor on the path from the input to the output, described relative to convnet's tensor.

    ``shape`` is convnet's per-example shape, ``(H, W, C)`` or ``(F,)`` (or what
    the input had); ``perm[i]`` is the axis of convnet's tensor (batch first)
    that sits at axis ``i`` of the ONNX tensor, ``None`` while the input's
    layout is still undecided; ``order`` (flat tensors) maps ONNX feature ``i``
    to convnet's feature ``order[i]`` (None: the same order). ``open_layer``
    is the index of a Conv2D/Dense whose output this still is, before any
    activation: an Add may become its bias, a Relu/Softmax its activation.
    """

    __slots__ = ("shape", "perm", "order", "open_layer")

    def __init__(self, shape, perm, order=None, open_layer=None):
        self.shape, self.perm, self.order, self.open_layer = tuple(shape), perm, order, open_layer

    def onnx_shape(self, batch=BATCH):
        full = (batch,) + self.shape
        return tuple(full[p] for p in self.perm)

    def derived(self, **changes):
        new = _Data(self.shape, self.perm, self.order, self.open_layer)
        for key, value in changes.items():
            setattr(new, key, value)
        return new


class _Unusable:
    """An output convnet cannot provide (Dropout's mask, MaxPool's indices)."""

    def __init__(self, what):
        self.what = what


def _text(s):
    """A string from the file (a damaged file's strings may come back as bytes)."""
    return s.decode("utf-8", "replace") if isinstance(s, bytes) else s


class _Importer:
    def __init__(self, onnx, path, proto, opset, limits):
        self.onnx, self.path, self.proto, self.opset = onnx, path, proto, opset
        self.max_weight_bytes, self.max_units = limits
        self.values = {}             # name -> _Data, np.ndarray (a constant) or _Unusable
        self.layers = []             # [class_name, config, weights or None]
        self.head = None             # the one _Data the next layer may read
        self.input_shape = None
        self.static_batch = None
        self.node = None             # (index, NodeProto) being read, for messages
        self.stored_bytes = 0        # initializers and Constant values, checked before they are decoded
        self.channels_last_default = _text(proto.producer_name).lower().startswith(_CHANNELS_LAST_PRODUCERS)

    # ------------------------------------------------------------ messages
    def fail(self, what):
        from ..errors import OnnxFileError

        if self.node is None:
            return OnnxFileError(f"{self.path}: {what}")
        i, node = self.node
        return OnnxFileError(f"{self.path}: node {i} {_text(node.name)!r} ({_text(node.op_type)}): {what}")

    # ------------------------------------------------------------ the walk
    def run(self):
        graph = self.proto.graph
        if len(graph.node) > MAX_NODES:
            raise self.fail(f"has {len(graph.node):,} nodes, more than the {MAX_NODES:,} convnet reads")
        if len(graph.sparse_initializer):
            raise self.fail("holds sparse initializers; convnet reads dense weights only")
        self._read_initializers(graph)
        self._read_input(graph)
        for i, node in enumerate(graph.node):
            self.node = (i, node)
            self._node(node)
        self.node = None
        return self._finish(graph)

    def _read_initializers(self, graph):
        for tensor in graph.initializer:
            self._count(self._check_tensor(tensor, f"initializer {_text(tensor.name)!r}"))
            if not isinstance(tensor.name, str) or not tensor.name:
                raise self.fail(f"an initializer has the name {tensor.name!r} (empty or not UTF-8 text)")
            if tensor.name in self.values:
                raise self.fail(f"initializer {tensor.name!r} appears twice")
            self.values[tensor.name] = tensor          # decoded when a node reads it

    def _count(self, nbytes):
        """Add a stored tensor's size to the total read from the file, and refuse a total over the limit."""
        self.stored_bytes += nbytes
        if self.stored_bytes > self.max_weight_bytes:
            raise self.fail(f"its initializers and constants take more than {self.max_weight_bytes:,} bytes, the "
                            f"most convnet loads (convnet.limits.MAX_WEIGHT_BYTES)")

    def _check_tensor(self, tensor, what):
        """The tensor's byte size, once its type, shape and stored length are known to agree."""
        T = self.onnx.TensorProto
        if tensor.data_location == T.EXTERNAL or len(tensor.external_data):   # never open the file it names
            raise self.fail(f"{what} refers to external data; convnet reads only weights stored inside the file")
        fields = {T.FLOAT: ("float_data", 4), T.INT64: ("int64_data", 8), T.INT32: ("int32_data", 4),
                  T.BOOL: ("int32_data", 1)}
        if tensor.data_type not in fields:
            raise self.fail(f"{what} has data type {tensor.data_type}; convnet reads float32 weights, "
                            f"int64/int32 shapes and booleans ({T.FLOAT}, {T.INT64}, {T.INT32}, {T.BOOL})")
        dims = tuple(tensor.dims)
        if len(dims) > 8 or any(d < 0 for d in dims):
            raise self.fail(f"{what} has shape {dims}")
        count = math.prod(dims)
        field, size = fields[tensor.data_type]
        if tensor.HasField("raw_data"):
            stored, exact = len(tensor.raw_data) // size, len(tensor.raw_data) % size == 0
        else:
            stored, exact = len(getattr(tensor, field)), True
        if not exact or stored != count:
            raise self.fail(f"{what} of shape {dims} holds {stored} values, expected {count} (truncated or "
                            f"damaged file?)")
        return count * size

    def _decode(self, tensor, what):
        array = self.onnx.numpy_helper.to_array(tensor)
        if array.dtype == np.float32 and not np.isfinite(array).all():
            raise self.fail(f"{what} holds NaN or infinite values")
        return array

    def _read_input(self, graph):
        inputs = [v for v in graph.input if v.name not in self.values]     # old files list weights as inputs
        if len(inputs) != 1:
            raise self.fail(f"has {len(inputs)} inputs ({', '.join(repr(_text(v.name)) for v in inputs)}); a "
                            f"convnet model has one, the batch of images or feature vectors")
        value = inputs[0]
        tensor_type = value.type.tensor_type
        if not value.type.HasField("tensor_type") or tensor_type.elem_type != self.onnx.TensorProto.FLOAT:
            raise self.fail(f"input {_text(value.name)!r} is not a float32 tensor")
        if not tensor_type.HasField("shape"):
            raise self.fail(f"input {_text(value.name)!r} has no shape; convnet needs the image or feature size")
        dims = list(tensor_type.shape.dim)
        if not 2 <= len(dims) <= 4:
            raise self.fail(f"input {_text(value.name)!r} has {len(dims)} dimensions; convnet reads a batch of "
                            f"feature vectors (2), of 2-D arrays (3) or of images (4)")
        shape = []
        for axis, d in enumerate(dims[1:], 1):
            if not d.HasField("dim_value") or not 1 <= d.dim_value <= self.max_units:
                raise self.fail(f"input {_text(value.name)!r} has dimension {axis} = "
                                f"{_text(d.dim_param) or d.dim_value or 'unknown'}; convnet needs a fixed size "
                                f"from 1 to {self.max_units:,}")
            shape.append(int(d.dim_value))
        if math.prod(shape) > self.max_units:
            raise self.fail(f"input {_text(value.name)!r} has {math.prod(shape):,} values per example, more than "
                            f"{self.max_units:,} (convnet.limits.MAX_UNITS)")
        if dims[0].HasField("dim_value") and dims[0].dim_value > 0:
            self.static_batch = int(dims[0].dim_value)       # e.g. torch.onnx.export without dynamic axes
        if len(shape) == 3:
            data = _Data(shape, None)                       # NCHW or NHWC: decided by the first op that cares
        else:
            data = _Data(shape, tuple(range(len(shape) + 1)))
            self.input_shape = tuple(shape)
        self.values[value.name] = self.head = data

    def _finish(self, graph):
        if len(graph.output) != 1:
            raise self.fail(f"has {len(graph.output)} outputs; a convnet model has one")
        name = graph.output[0].name
        value = self.values.get(name)
        if value is None or value is not self.head:
            raise self.fail(f"its output {_text(name)!r} is not the end of the chain of layers from its input")
        if value.perm is None:
            value = self._resolve(value, nchw=not self.channels_last_default)
        if len(value.shape) == 1 and (value.perm != (0, 1) or value.order is not None):
            raise self.fail("its output holds the features in another order than convnet's layers would "
                            "(a flatten of channels-first data with no Dense after it)")
        # an image comes out channels last, as convnet's layers give it; NCHW is the one other layout accepted
        if value.perm not in ((0, 1), (0, 1, 2), (0, 1, 2, 3), _NCHW):
            raise self.fail(f"its output has shape {self._describe(value)}, axes in an order convnet's layers do "
                            f"not give (images come out NHWC, or NCHW in the file)")
        return self.input_shape, self.layers, value.onnx_shape()

    # ------------------------------------------------------------ one node
    def _node(self, node):
        op, domain = _text(node.op_type), _text(node.domain)
        if domain not in ("", "ai.onnx"):
            raise self.fail(f"op {op!r} of domain {domain!r} has no convnet equivalent; convnet imports "
                            f"{', '.join(SUPPORTED_OPS)} (default domain)")
        handler = _HANDLERS.get(op)
        if handler is None:
            raise self.fail(f"has no convnet equivalent; convnet imports {', '.join(SUPPORTED_OPS)}")
        for name in list(node.input) + list(node.output):
            if not isinstance(name, str):
                raise self.fail(f"a tensor name {name!r} is not UTF-8 text (damaged file?)")
        inputs = [self._value(name) if name else None for name in node.input]
        try:
            outputs = handler(self, node, inputs)
        except (ValueError, IndexError, TypeError, OverflowError) as e:     # numpy's, on odd shapes
            from ..errors import OnnxFileError
            if isinstance(e, OnnxFileError):
                raise
            raise self.fail(f"cannot be evaluated: {type(e).__name__}: {e}") from None
        if not isinstance(outputs, tuple):
            outputs = (outputs,)
        names = list(node.output)
        if not names or not names[0]:
            raise self.fail("has no output")
        for k, name in enumerate(names):
            if not name:
                continue
            if name in self.values:
                raise self.fail(f"writes {name!r}, which already exists (an ONNX graph assigns each name once)")
            self.values[name] = outputs[k] if k < len(outputs) else _Unusable(f"output {k} of {node.op_type}")

    def _value(self, name):
        value = self.values.get(name)
        if value is None:
            raise self.fail(f"reads {name!r}, which neither an earlier node nor an initializer makes")
        if isinstance(value, _Unusable):
            raise self.fail(f"reads {name!r}, {value.what}, which convnet does not compute")
        if isinstance(value, self.onnx.TensorProto):
            value = self.values[name] = self._decode(value, f"initializer {name!r}")
        return value

    # ------------------------------------------------------------ helpers
    def attributes(self, node, spec):
        """``{name: value}`` for ``node``'s attributes; ``spec`` maps each allowed name to its kind."""
        A = self.onnx.AttributeProto
        kinds = {"int": (A.INT, lambda a: int(a.i)), "ints": (A.INTS, lambda a: [int(v) for v in a.ints]),
                 "float": (A.FLOAT, lambda a: float(a.f)), "floats": (A.FLOATS, lambda a: [float(v) for v in a.floats]),
                 "string": (A.STRING, lambda a: _text(a.s)), "tensor": (A.TENSOR, lambda a: a.t)}
        result = {}
        for a in node.attribute:
            name = _text(a.name)
            if name not in spec:
                allowed = ", ".join(sorted(spec)) or "none"
                raise self.fail(f"attribute {name!r} is not supported (supported: {allowed})")
            kind, read = kinds[spec[name]]
            if a.type != kind:
                raise self.fail(f"attribute {name!r} should be of type {spec[name]}")
            if spec[name] in ("ints", "floats") and len(a.ints) + len(a.floats) > 64:
                raise self.fail(f"attribute {name!r} has {len(a.ints) + len(a.floats)} values")
            result[name] = read(a)
        return result

    def data(self, value, what="its input"):
        """``value`` as the chain's current tensor (the one a new layer may read)."""
        if not isinstance(value, _Data):
            raise self.fail(f"{what} is a constant; convnet imports ops on constants only for shape arithmetic "
                            f"({', '.join(_CONST_OPS)})")
        if value is not self.head:
            raise self.fail("reads a tensor that another node has already used: convnet builds one chain of "
                            "layers, without branches or skip connections")
        return value

    def const(self, value, what):
        if not isinstance(value, np.ndarray):
            raise self.fail(f"{what} must be a constant (an initializer or computed from constants)")
        return value

    def numbers(self, value, what, dtype=np.float32):
        """A constant without the batch symbol in it."""
        value = self.const(value, what)
        if value.dtype == object:
            raise self.fail(f"{what} depends on the batch size")
        return value.astype(dtype, copy=False)

    def add_layer(self, class_name, config, weights=None):
        self.layers.append([class_name, config, weights])
        return len(self.layers) - 1

    def emit(self, data):
        self.head = data
        return data

    def check_units(self, shape):
        if math.prod(shape) > self.max_units:
            raise self.fail(f"would output {shape} per example, more than {self.max_units:,} values "
                            f"(convnet.limits.MAX_UNITS)")

    def _resolve(self, data, nchw):
        """Decide the 4-D input's layout (``data`` is the input or follows it through elementwise ops)."""
        shape = data.shape
        data.shape, data.perm = ((shape[1], shape[2], shape[0]), _NCHW) if nchw else (shape, (0, 1, 2, 3))
        self.input_shape = data.shape
        return data

    def image(self, data):
        """``data`` as an NCHW image (what Conv and MaxPool read)."""
        if data.perm is None:
            self._resolve(data, nchw=True)
        if len(data.shape) != 3 or data.perm != _NCHW:
            raise self.fail(f"reads a tensor of shape {self._describe(data)} that is not a batch of NCHW images "
                            f"(Conv and MaxPool read channels first)")
        return data

    def _describe(self, data):
        if data.perm is None:
            return f"(batch, {', '.join(map(str, data.shape))})"
        return "(" + ", ".join(map(str, data.onnx_shape("batch"))) + ")"

    def window(self, data, kernel, attrs, ceil_mode=0):
        """``(strides, padding)`` for a window op, or an error when convnet has no equivalent padding."""
        H, W, _ = data.shape
        strides = attrs.get("strides", [1, 1])
        dilations = attrs.get("dilations", [1, 1])
        if len(strides) != 2 or not all(1 <= s <= 1024 for s in strides):
            raise self.fail(f"strides={strides}: expected two strides from 1 to 1024")
        if dilations != [1, 1]:
            raise self.fail(f"dilations={dilations} is not supported (convnet's windows are not dilated)")
        auto_pad = attrs.get("auto_pad", "NOTSET")
        if auto_pad not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
            raise self.fail(f"auto_pad={auto_pad!r} is not an ONNX auto_pad value")
        pads = attrs.get("pads", [0, 0, 0, 0])
        if len(pads) != 4 or not all(0 <= p <= 1024 for p in pads):
            raise self.fail(f"pads={pads}: expected four pads from 0 to 1024")
        if auto_pad == "VALID":
            pads = [0, 0, 0, 0]
        elif auto_pad.startswith("SAME"):
            (top, bottom), (left, right) = (pad_amounts(n, k, s, "same") for n, k, s in zip((H, W), kernel, strides))
            pads = [top, left, bottom, right] if auto_pad == "SAME_UPPER" else [bottom, right, top, left]
        rounding = math.ceil if ceil_mode else math.floor
        found = []
        for axis, (n, k, s) in enumerate(zip((H, W), kernel, strides)):
            before, after = pads[axis], pads[axis + 2]
            if n + before + after < k:
                raise self.fail(f"its {k}-wide window does not fit the {n}-wide input with pads {pads}")
            found.append((before, rounding((n + before + after - k) / s) + 1))
        for padding in ("valid", "same"):
            want = [(pad_amounts(n, k, s, padding)[0], n // s + (n % s > 0) if padding == "same" else (n - k) // s + 1)
                    for n, k, s in zip((H, W), kernel, strides)]
            if found == want and all(o >= 1 for _, o in want):
                return tuple(strides), padding
        same = [pad_amounts(n, k, s, "same") for n, k, s in zip((H, W), kernel, strides)]
        raise self.fail(f"pads={pads} with strides={list(strides)}{' and ceil_mode=1' if ceil_mode else ''} on a "
                        f"{H}x{W} input is neither 'valid' (no padding) "
                        f"nor 'same' (pads={[same[0][0], same[1][0], same[0][1], same[1][1]]} here, the odd "
                        f"pixel at the bottom/right as in TensorFlow), the two paddings convnet's layers have")

    def dense(self, kernel, out_perm):
        """A Dense layer of ``kernel`` (convnet's (in, out), rows in convnet's feature order)."""
        units = kernel.shape[1]
        index = self.add_layer("Dense", {"units": int(units)}, [kernel, np.zeros(units, np.float32)])
        return _Data((units,), out_perm, open_layer=index)

    def flat_input(self, data, transposed):
        """Check ``data`` is a flat batch, ONNX rows (batch, features) or, ``transposed``, (features, batch)."""
        if data.perm is None:
            self._resolve(data, nchw=not self.channels_last_default)
        want = (1, 0) if transposed else (0, 1)
        if len(data.shape) != 1 or data.perm != want:
            raise self.fail(f"multiplies a tensor of shape {self._describe(data)}; convnet's Dense reads "
                            f"{'(features, batch)' if transposed else '(batch, features)'} here (flatten first)")

    def rows_in_convnet_order(self, data, kernel):
        """Dense kernel rows reordered from the ONNX feature order to convnet's (see ``_Data.order``)."""
        if kernel.ndim != 2 or kernel.shape[0] != data.shape[0]:
            raise self.fail(f"weight of shape {kernel.shape} does not fit {data.shape[0]} input features")
        if data.order is None:
            return np.ascontiguousarray(kernel)
        result = np.empty_like(kernel)
        result[data.order] = kernel
        return result

    def add_bias(self, data, bias):
        """Fold a constant added to ``data`` into the bias of the Conv2D/Dense that made it."""
        if data.open_layer is None:
            raise self.fail("adds a constant that is not the bias of the Conv or Dense just before it; convnet "
                            "has no layer that adds a constant")
        onnx_shape = data.onnx_shape(1)
        if bias.ndim > len(onnx_shape) or np.broadcast_shapes(onnx_shape, bias.shape) != onnx_shape:
            raise self.fail(f"adds a constant of shape {bias.shape} to a tensor of shape {self._describe(data)}")
        full = np.broadcast_to(bias, onnx_shape).transpose(np.argsort(data.perm))       # convnet's layout
        if data.order is not None:
            flat = np.empty_like(full)
            flat[:, data.order] = full
            full = flat
        per_unit = full.reshape(-1, full.shape[-1])
        if not (per_unit == per_unit[0]).all():
            raise self.fail(f"adds a constant of shape {bias.shape} that differs across positions, not a "
                            f"per-channel bias; convnet has no layer for it")
        layer = self.layers[data.open_layer]
        layer[2][1] = layer[2][1] + per_unit[0]
        return self.emit(data.derived())

    def activation(self, data, name):
        if data.open_layer is not None:
            self.layers[data.open_layer][1]["activation"] = name
            return self.emit(data.derived(open_layer=None))
        self.add_layer({"relu": "ReLU", "softmax": "Softmax"}[name], {})
        return self.emit(data.derived(open_layer=None))

    def flatten(self, data):
        if data.perm is None:
            self._resolve(data, nchw=not self.channels_last_default)
        if len(data.shape) == 1:
            if data.perm != (0, 1):
                raise self.fail("flattens a (features, batch) tensor: the batch must come first")
            return self.emit(data.derived())
        if data.perm[0] != 0:
            raise self.fail("flattens a tensor whose first axis is not the batch")
        # ONNX's flat features are convnet's (h, w, c) features laid out in the ONNX tensor's axis order
        axes = [p - 1 for p in data.perm[1:]]
        order = np.arange(math.prod(data.shape)).reshape(data.shape).transpose(axes).ravel()
        self.add_layer("Flatten", {})
        size = math.prod(data.shape)
        return self.emit(_Data((size,), (0, 1), None if (order == np.arange(size)).all() else order))

    def transpose(self, data, perm):
        if data.perm is None:
            self._resolve(data, nchw=tuple(perm) != _NCHW)
        rank = len(data.perm)
        if sorted(perm) != list(range(rank)):
            raise self.fail(f"perm={list(perm)} is not a permutation of the {rank} axes")
        new = tuple(data.perm[p] for p in perm)
        if rank > 2 and new[0] != 0:
            raise self.fail(f"perm={list(perm)} moves the batch axis away from the front")
        return self.emit(data.derived(perm=new))


# ---------------------------------------------------------------- the ops that build layers
def _conv(imp, node, inputs):
    attrs = imp.attributes(node, {"kernel_shape": "ints", "strides": "ints", "pads": "ints", "dilations": "ints",
                                  "group": "int", "auto_pad": "string"})
    if len(inputs) not in (2, 3) or inputs[1] is None:
        raise imp.fail("expects inputs (X, W) or (X, W, B)")
    data = imp.image(imp.data(inputs[0]))
    weight = imp.numbers(inputs[1], "the kernel W")
    bias = None if len(inputs) < 3 or inputs[2] is None else imp.numbers(inputs[2], "the bias B")
    if attrs.get("group", 1) != 1:
        raise imp.fail(f"group={attrs['group']} is not supported (convnet's Conv2D is not grouped)")
    H, W, C = data.shape
    if weight.ndim != 4 or weight.shape[1] != C:
        raise imp.fail(f"kernel of shape {weight.shape} does not fit {C} input channels (expected (out, {C}, kh, kw))")
    filters, kernel = weight.shape[0], list(weight.shape[2:])
    if attrs.get("kernel_shape", kernel) != kernel:
        raise imp.fail(f"kernel_shape={attrs['kernel_shape']} but the kernel is {kernel[0]}x{kernel[1]}")
    if bias is not None and bias.shape != (filters,):
        raise imp.fail(f"bias of shape {bias.shape}, expected ({filters},)")
    strides, padding = imp.window(data, kernel, attrs)
    out = (_window_output(H, kernel[0], strides[0], padding), _window_output(W, kernel[1], strides[1], padding),
           filters)
    imp.check_units(out)
    hwio = np.ascontiguousarray(weight.transpose(2, 3, 1, 0))
    index = imp.add_layer("Conv2D", {"filters": int(filters), "kernel_size": kernel, "strides": list(strides),
                                     "padding": padding},
                          [hwio, np.zeros(filters, np.float32) if bias is None else bias.copy()])
    return imp.emit(_Data(out, _NCHW, open_layer=index))


def _window_output(n, k, s, padding):
    return -(-n // s) if padding == "same" else (n - k) // s + 1



def _maxpool(imp, node, inputs):
    attrs = imp.attributes(node, {"kernel_shape": "ints", "strides": "ints", "pads": "ints", "dilations": "ints",
                                  "auto_pad": "string", "ceil_mode": "int", "storage_order": "int"})
    if len(inputs) != 1:
        raise imp.fail("expects one input")
    data = imp.image(imp.data(inputs[0]))
    kernel = attrs.get("kernel_shape")
    if kernel is None or len(kernel) != 2 or not all(1 <= k <= 1024 for k in kernel):
        raise imp.fail(f"kernel_shape={kernel}: expected two sizes from 1 to 1024")
    if attrs.get("ceil_mode", 0) not in (0, 1):
        raise imp.fail(f"ceil_mode={attrs['ceil_mode']}: expected 0 or 1")
    strides, padding = imp.window(data, kernel, attrs, attrs.get("ceil_mode", 0))
    H, W, C = data.shape
    out = (_window_output(H, kernel[0], strides[0], padding), _window_output(W, kernel[1], strides[1], padding), C)
    imp.add_layer("MaxPool2D", {"pool_size": list(kernel), "strides": list(strides), "padding": padding})
    return imp.emit(_Data(out, _NCHW)), _Unusable("MaxPool's indices")


def _gemm(imp, node, inputs):
    attrs = imp.attributes(node, {"alpha": "float", "beta": "float", "transA": "int", "transB": "int"})
    if len(inputs) not in (2, 3) or inputs[0] is None or inputs[1] is None:
        raise imp.fail("expects inputs (A, B) or (A, B, C)")
    trans_a, trans_b = attrs.get("transA", 0), attrs.get("transB", 0)
    if trans_a not in (0, 1) or trans_b not in (0, 1):
        raise imp.fail(f"transA={trans_a}, transB={trans_b}: expected 0 or 1")
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    if not (math.isfinite(alpha) and math.isfinite(beta)):
        raise imp.fail(f"alpha={alpha}, beta={beta}: expected finite numbers")
    a, b = inputs[0], inputs[1]
    if isinstance(a, _Data):             # Y = X' @ B': the usual (batch, in) @ (in, out)
        data = imp.data(a)
        imp.flat_input(data, transposed=bool(trans_a))
        weight = imp.numbers(b, "B")
        weight = weight.T if trans_b else weight
        out_perm = (0, 1)
    else:                                # Y = A' @ X': (out, in) @ (in, batch), the batch second
        data = imp.data(b, "input B")
        imp.flat_input(data, transposed=not trans_b)
        weight = imp.numbers(a, "A")
        weight = (weight if trans_a else weight.T) if weight.ndim == 2 else weight
        out_perm = (1, 0)
    if weight.ndim != 2:
        raise imp.fail(f"the weight has shape {weight.shape}; Gemm multiplies matrices")
    kernel = imp.rows_in_convnet_order(data, weight * np.float32(alpha) if alpha != 1 else weight)
    imp.check_units((kernel.shape[1],))
    out = imp.emit(imp.dense(kernel.astype(np.float32), out_perm))
    if len(inputs) == 3 and inputs[2] is not None:
        c = imp.numbers(inputs[2], "C")
        out = imp.add_bias(out, c * np.float32(beta) if beta != 1 else c)
    return out


def _matmul(imp, node, inputs):
    imp.attributes(node, {})
    if len(inputs) != 2 or any(v is None for v in inputs):
        raise imp.fail("expects inputs (A, B)")
    a, b = inputs
    if isinstance(a, _Data):
        data = imp.data(a)
        imp.flat_input(data, transposed=False)
        weight, out_perm = imp.numbers(b, "B"), (0, 1)
    else:
        data = imp.data(b, "input B")
        imp.flat_input(data, transposed=True)
        weight, out_perm = imp.numbers(a, "A"), (1, 0)
        weight = weight.T if weight.ndim == 2 else weight
    if weight.ndim != 2:
        raise imp.fail(f"the weight has shape {weight.shape}; convnet's Dense multiplies by a matrix")
    kernel = imp.rows_in_convnet_order(data, weight)
    imp.check_units((kernel.shape[1],))
    return imp.emit(imp.dense(kernel, out_perm))


def _add(imp, node, inputs):
    imp.attributes(node, {})
    if len(inputs) != 2 or any(v is None for v in inputs):
        raise imp.fail("expects two inputs")
    if not any(isinstance(v, _Data) for v in inputs):
        return _evaluate(imp, node, inputs)
    if all(isinstance(v, _Data) for v in inputs):
        raise imp.fail("adds two tensors (a skip connection?); convnet builds one chain of layers, and adds "
                       "only a constant bias")
    data, other = inputs if isinstance(inputs[0], _Data) else inputs[::-1]
    data = imp.data(data)
    if data.perm is None:
        raise imp.fail("adds a constant to the input; convnet has no layer that adds a constant")
    return imp.add_bias(data, imp.numbers(other, "the added tensor (convnet adds only a constant bias)"))


def _relu(imp, node, inputs):
    imp.attributes(node, {})
    if len(inputs) != 1:
        raise imp.fail("expects one input")
    return imp.activation(imp.data(inputs[0]), "relu")


def _softmax(imp, node, inputs):
    attrs = imp.attributes(node, {"axis": "int"})
    if len(inputs) != 1:
        raise imp.fail("expects one input")
    data = imp.data(inputs[0])
    if data.perm is None:
        imp._resolve(data, nchw=not imp.channels_last_default)
    rank = len(data.perm)
    axis = attrs.get("axis", -1 if imp.opset >= 13 else 1)
    if not -rank <= axis < rank:
        raise imp.fail(f"axis={axis} is out of range for a {rank}-D tensor")
    axis %= rank
    # before opset 13 Softmax normalised over every axis from `axis` on, flattened
    if data.perm[axis] != rank - 1 or (imp.opset < 13 and axis != rank - 1):
        raise imp.fail(f"softmax over axis {axis} of a tensor of shape {imp._describe(data)}; convnet's Softmax "
                       f"is over the channels or features alone")
    return imp.activation(data, "softmax")


def _dropout(imp, node, inputs):
    attrs = imp.attributes(node, {"ratio": "float", "seed": "int", "is_test": "int"})
    if not 1 <= len(inputs) <= 3:
        raise imp.fail("expects inputs (data, ratio, training_mode)")
    data = imp.data(inputs[0])
    rate = attrs.get("ratio", 0.5)
    if len(inputs) > 1 and inputs[1] is not None:
        ratio = imp.numbers(inputs[1], "ratio")
        if ratio.size != 1:
            raise imp.fail(f"ratio of shape {ratio.shape}, expected one number")
        rate = float(ratio.reshape(-1)[0])
    if len(inputs) > 2 and inputs[2] is not None:
        training = imp.numbers(inputs[2], "training_mode", np.float64)
        if training.size != 1 or training.reshape(-1)[0]:
            raise imp.fail("training_mode must be a constant false: convnet imports inference graphs")
    if not 0 <= rate < 1:
        raise imp.fail(f"ratio={rate}: expected 0 <= ratio < 1")
    if rate > 0:
        imp.add_layer("Dropout", {"rate": rate})
    return imp.emit(data.derived(open_layer=None)), _Unusable("Dropout's mask")


def _flatten(imp, node, inputs):
    attrs = imp.attributes(node, {"axis": "int"})
    if len(inputs) != 1:
        raise imp.fail("expects one input")
    if not isinstance(inputs[0], _Data):
        return _evaluate(imp, node, inputs)
    data = imp.data(inputs[0])
    if attrs.get("axis", 1) != 1:
        raise imp.fail(f"axis={attrs['axis']}: convnet flattens everything after the batch (axis=1)")
    return imp.flatten(data)


def _transpose(imp, node, inputs):
    attrs = imp.attributes(node, {"perm": "ints"})
    if len(inputs) != 1:
        raise imp.fail("expects one input")
    if not isinstance(inputs[0], _Data):
        return _evaluate(imp, node, inputs)
    data = imp.data(inputs[0])
    rank = len(data.shape) + 1
    return imp.transpose(data, attrs.get("perm", list(range(rank))[::-1]))


def _identity(imp, node, inputs):
    attrs = imp.attributes(node, {"to": "int", "saturate": "int"} if node.op_type == "Cast" else {})
    if len(inputs) != 1:
        raise imp.fail("expects one input")
    if not isinstance(inputs[0], _Data):
        return _evaluate(imp, node, inputs)
    if node.op_type == "Cast" and attrs.get("to") != imp.onnx.TensorProto.FLOAT:
        raise imp.fail(f"casts the data to type {attrs.get('to')}; convnet computes in float32 only")
    return imp.emit(imp.data(inputs[0]).derived())


def _reshape(imp, node, inputs):
    attrs = imp.attributes(node, {"allowzero": "int"})
    if len(inputs) != 2 or any(v is None for v in inputs):
        raise imp.fail("expects inputs (data, shape)")
    if not isinstance(inputs[0], _Data):
        return _evaluate(imp, node, inputs)
    data = imp.data(inputs[0])
    target = imp.const(inputs[1], "the target shape")
    if target.ndim != 1 or len(target) > 8:
        raise imp.fail(f"target shape of shape {target.shape}; expected a short list of sizes")
    source = data.onnx_shape() if data.perm is not None else (BATCH,) + data.shape
    size = math.prod(data.shape)
    dims, infer = [], None
    for i, d in enumerate(target.tolist()):
        if d is BATCH or (i == 0 and imp.static_batch is not None and d == imp.static_batch):
            dims.append(BATCH)
        elif d == 0 and not attrs.get("allowzero", 0):
            if i >= len(source):
                raise imp.fail(f"target shape {target.tolist()} copies dimension {i}, which the input lacks")
            dims.append(source[i])
        elif d == -1 and infer is None:
            infer = i
            dims.append(None)
        elif isinstance(d, int) and d >= 1:
            dims.append(d)
        else:
            raise imp.fail(f"target shape {target.tolist()} is not a shape convnet can follow")
    known = math.prod(d for d in dims if d is not None and d is not BATCH)
    if infer is not None:
        if BATCH in dims:
            if known == 0 or size % known:
                raise imp.fail(f"target shape {target.tolist()} does not fit {size} values per example")
            dims[infer] = size // known
        elif infer == 0 and known == size:
            dims[0] = BATCH
        else:
            raise imp.fail(f"target shape {target.tolist()} does not keep the batch as the first dimension")
    if dims[0] is not BATCH or BATCH in dims[1:]:
        raise imp.fail(f"target shape {target.tolist()} does not keep the batch as the first dimension")
    per_example = tuple(dims[1:])
    if math.prod(per_example) != size:
        raise imp.fail(f"target shape {target.tolist()} does not fit {size} values per example")
    if len(per_example) == 1:
        return imp.flatten(data)
    current = tuple(source[1:])
    if per_example == current and data.perm is not None:
        return imp.emit(data.derived())
    # a reshape that only moves axes of size 1 is a transpose (tf2onnx writes one for an NHWC -> NCHW of 1 channel)
    if len(per_example) == len(current):
        rank = len(current) + 1
        preferred = [(0, 3, 1, 2)] if data.perm is None or data.perm == (0, 1, 2, 3) else [(0, 2, 3, 1)]
        candidates = preferred + [(0,) + p for p in itertools.permutations(range(1, rank))]
        for perm in candidates:
            moved = tuple(current[p - 1] for p in perm[1:])
            kept = [p for p in perm[1:] if current[p - 1] != 1]
            if moved == per_example and kept == sorted(kept):
                return imp.transpose(data, perm)
    raise imp.fail(f"reshapes {imp._describe(data)} to {target.tolist()}; convnet follows only a flatten "
                   f"(batch, -1) or a reshape that moves axes of size 1")


def _shape(imp, node, inputs):
    attrs = imp.attributes(node, {"start": "int", "end": "int"})
    if len(inputs) != 1:
        raise imp.fail("expects one input")
    value = inputs[0]
    if isinstance(value, _Data):
        full = value.onnx_shape() if value.perm is not None else (BATCH,) + value.shape
        shape = np.array(full, dtype=object)
    else:
        shape = np.array(imp.const(value, "its input").shape, dtype=np.int64)
    start, end = attrs.get("start", 0), attrs.get("end", len(shape))
    shape = shape[slice(start, end)]
    return shape.astype(np.int64) if BATCH not in shape.tolist() else shape


# ---------------------------------------------------------------- shape arithmetic on constants
def _evaluate(imp, node, inputs):
    """A node whose inputs are all constants, computed now (with the batch size as a symbol)."""
    op = _text(node.op_type)
    if op not in _CONST_OPS:
        raise imp.fail("computes on constants; convnet evaluates only shape arithmetic "
                       f"({', '.join(_CONST_OPS)}) on them")
    args = [None if v is None else imp.const(v, f"input {i}") for i, v in enumerate(inputs)]
    result = _CONST_OPS[op](imp, node, args)
    if not isinstance(result, np.ndarray):         # numpy gives a lone object (the batch symbol) unwrapped
        result = np.asarray(result, dtype=object)
    if result.size > imp.max_weight_bytes // 4:
        raise imp.fail(f"computes a constant of {result.size:,} values, more than convnet reads")
    return result


def _ints(imp, value, what):
    values = imp.numbers(value, what, np.int64).reshape(-1)
    if len(values) > 16:
        raise imp.fail(f"{what} has {len(values)} entries")
    return [int(v) for v in values]


def _axes(imp, node, args, attrs):
    if imp.opset >= 13 and node.op_type in ("Unsqueeze", "Squeeze"):
        return None if len(args) < 2 or args[1] is None else _ints(imp, args[1], "axes")
    return attrs.get("axes")


def _c_unsqueeze(imp, node, args):
    attrs = imp.attributes(node, {"axes": "ints"} if imp.opset < 13 else {})
    x = args[0]
    axes = _axes(imp, node, args, attrs)
    if not axes:
        raise imp.fail("has no axes")
    out_rank = x.ndim + len(axes)
    axes = sorted(a % out_rank for a in axes)
    for a in axes:
        x = np.expand_dims(x, a)
    return x


def _c_squeeze(imp, node, args):
    attrs = imp.attributes(node, {"axes": "ints"} if imp.opset < 13 else {})
    x = args[0]
    axes = _axes(imp, node, args, attrs)
    if axes is None:
        return np.squeeze(x)
    return np.squeeze(x, axis=tuple(a % max(x.ndim, 1) for a in axes))


def _c_gather(imp, node, args):
    attrs = imp.attributes(node, {"axis": "int"})
    if len(args) != 2 or args[1] is None:
        raise imp.fail("expects inputs (data, indices)")
    x, indices = args[0], imp.numbers(args[1], "indices", np.int64)
    axis = attrs.get("axis", 0)
    if x.ndim == 0 or not -x.ndim <= axis < x.ndim:
        raise imp.fail(f"axis={axis} is out of range")
    n = x.shape[axis]
    if indices.size and not ((-n <= indices) & (indices < n)).all():
        raise imp.fail(f"indices {indices.tolist()} are out of range for a dimension of {n}")
    if indices.size * (x.size // max(n, 1)) > imp.max_weight_bytes // 4:
        raise imp.fail("gathers more values than convnet reads")
    return np.take(x, np.where(indices < 0, indices + n, indices), axis=axis)


def _c_concat(imp, node, args):
    attrs = imp.attributes(node, {"axis": "int"})
    if not args or any(a is None for a in args) or "axis" not in attrs:
        raise imp.fail("expects inputs and an axis")
    if sum(a.size for a in args) > imp.max_weight_bytes // 4:
        raise imp.fail("concatenates more values than convnet reads")
    dtype = object if any(a.dtype == object for a in args) else None
    return np.concatenate([a.astype(dtype) if dtype else a for a in args], axis=attrs["axis"])


def _c_slice(imp, node, args):
    if imp.opset < 10:
        attrs = imp.attributes(node, {"starts": "ints", "ends": "ints", "axes": "ints"})
        starts, ends, axes, steps = attrs.get("starts"), attrs.get("ends"), attrs.get("axes"), None
    else:
        imp.attributes(node, {})
        if not 3 <= len(args) <= 5 or args[1] is None or args[2] is None:
            raise imp.fail("expects inputs (data, starts, ends[, axes, steps])")
        starts, ends = _ints(imp, args[1], "starts"), _ints(imp, args[2], "ends")
        axes = _ints(imp, args[3], "axes") if len(args) > 3 and args[3] is not None else None
        steps = _ints(imp, args[4], "steps") if len(args) > 4 and args[4] is not None else None
    x = args[0]
    if starts is None or ends is None or len(starts) != len(ends):
        raise imp.fail("needs as many starts as ends")
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    if not len(axes) == len(steps) == len(starts) or 0 in steps:
        raise imp.fail("needs one axis and one nonzero step per start")
    index = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if not -x.ndim <= axis < x.ndim:
            raise imp.fail(f"axis {axis} is out of range")
        n = x.shape[axis]
        start, end = (v + n if v < 0 else v for v in (start, end))
        if step > 0:
            start, end = min(max(start, 0), n), min(max(end, 0), n)
        else:                                   # ends below 0 mean "through the first element"
            start, end = min(max(start, 0), n - 1), min(max(end, -1), n - 1)
            end = None if end == -1 else end
        index[axis % x.ndim] = slice(start, end, step)
    return x[tuple(index)]


def _c_cast(imp, node, args):
    attrs = imp.attributes(node, {"to": "int", "saturate": "int"})
    T = imp.onnx.TensorProto
    types = {T.FLOAT: np.float32, T.INT64: np.int64, T.INT32: np.int32, T.DOUBLE: np.float64}
    if attrs.get("to") not in types:
        raise imp.fail(f"casts to type {attrs.get('to')}; convnet evaluates casts to float and integer types only")
    x = args[0]
    if x.dtype == object:                      # a shape holding the batch symbol stays symbolic
        if types[attrs["to"]] not in (np.int64, np.int32):
            raise imp.fail("casts the batch size to a float")
        return x
    return x.astype(types[attrs["to"]])


def _c_reshape(imp, node, args):
    attrs = imp.attributes(node, {"allowzero": "int"})
    x, target = args[0], _ints(imp, args[1], "the target shape")
    dims = [x.shape[i] if d == 0 and not attrs.get("allowzero", 0) and i < x.ndim else d for i, d in enumerate(target)]
    return x.reshape(dims)


def _c_transpose(imp, node, args):
    attrs = imp.attributes(node, {"perm": "ints"})
    perm = attrs.get("perm", list(range(args[0].ndim))[::-1])
    if sorted(perm) != list(range(args[0].ndim)):
        raise imp.fail(f"perm={perm} is not a permutation of the {args[0].ndim} axes")
    return args[0].transpose(perm)


def _c_flatten(imp, node, args):
    attrs = imp.attributes(node, {"axis": "int"})
    x = args[0]
    axis = attrs.get("axis", 1) % max(x.ndim, 1) if x.ndim else 0
    return x.reshape(math.prod(x.shape[:axis]), -1)


def _c_identity(imp, node, args):
    imp.attributes(node, {})
    return args[0]


def _c_add(imp, node, args):
    a, b = (imp.numbers(v, "an input", v.dtype) for v in args)      # integers stay integers (shape arithmetic)
    return a + b


def _constant(imp, node, inputs):
    attrs = imp.attributes(node, {"value": "tensor", "value_float": "float", "value_floats": "floats",
                                  "value_int": "int", "value_ints": "ints"})
    if inputs or len(attrs) != 1:
        raise imp.fail("expects no input and one value attribute (value, value_float(s), value_int(s))")
    (key, value), = attrs.items()
    if key == "value":
        imp._count(imp._check_tensor(value, "its value"))
        return imp._decode(value, "its value")
    dtype = np.float32 if key.startswith("value_float") else np.int64
    return np.array(value, dtype=dtype)


_CONST_OPS = {"Identity": _c_identity, "Cast": _c_cast, "Reshape": _c_reshape, "Transpose": _c_transpose,
              "Gather": _c_gather, "Concat": _c_concat, "Unsqueeze": _c_unsqueeze, "Squeeze": _c_squeeze,
              "Slice": _c_slice, "Flatten": _c_flatten, "Add": _c_add}


def _const_only(imp, node, inputs):
    if any(isinstance(v, _Data) for v in inputs):
        raise imp.fail(f"reads the data; convnet evaluates {_text(node.op_type)} only in shape arithmetic")
    return _evaluate(imp, node, inputs)


_HANDLERS = {"Conv": _conv, "MaxPool": _maxpool, "Relu": _relu, "Softmax": _softmax, "Dropout": _dropout,
             "Flatten": _flatten, "Reshape": _reshape, "Gemm": _gemm, "MatMul": _matmul, "Add": _add,
             "Transpose": _transpose, "Identity": _identity, "Cast": _identity, "Shape": _shape,
             "Gather": _const_only, "Concat": _const_only, "Unsqueeze": _const_only, "Squeeze": _const_only,
             "Slice": _const_only, "Constant": _constant}


def import_graph(onnx, path, proto, opset, limits):
    """``(input_shape, [[class_name, config, weights or None], ...], output ONNX shape)`` for a foreign graph.

    ``limits`` is ``(max weight bytes, max values per example)``. Raises
    :class:`~convnet.onnx_io.OnnxFileError` for anything convnet cannot follow.
    """
    return _Importer(onnx, path, proto, opset, limits).run()
