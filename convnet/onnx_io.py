"""ONNX export of a trained model, and reading back what convnet exported.

>>> from convnet.interop import to_onnx, from_onnx
>>> to_onnx(model, "model.onnx")                    # needs the onnx extra: pip install -e ".[onnx]"
>>> import onnxruntime
>>> probs = onnxruntime.InferenceSession("model.onnx").run(None, {"input": x})[0]   # == model.predict(x)
>>> model = from_onnx("model.onnx")                 # the same convnet model back

The graph takes what ``model.predict`` takes, a float32 batch ``(N, *input_shape)``
channels last (NHWC), under the name ``input``, and gives what it gives under
the name ``output``; the batch dimension is the symbol ``batch``.

**Channels last in a channels-first format.** ONNX's Conv and MaxPool read
NCHW tensors with kernels ``(out, in, kh, kw)``; convnet's are NHWC with
kernels ``(kh, kw, in, out)``. So the graph transposes the input to NCHW
before the first Conv/MaxPool, stores each conv kernel transposed to
``(out, in, kh, kw)``, and transposes back to NHWC before Flatten (and at the
end, if the model ends on an image). The transpose before Flatten is what
keeps the features in convnet's order ``(h, w, c)``, the order the next Dense
kernel's rows were trained in: flattening the NCHW tensor instead would give
the same shapes and a different function.

**Padding.** "same" pads like TensorFlow, the odd pixel at the bottom/right,
so the graph carries explicit ``pads`` (``utils.pad_amounts``) rather than
``auto_pad``; "valid" pools and convolutions floor, as ONNX does without
``ceil_mode``.

Dropout is left out (the graph is for inference). A layer without an ONNX
equivalent here, such as a user-defined one or a subclass of a convnet layer
(it may compute something else), raises :class:`~convnet.interop.ConversionError`
naming the layer.

**Reading back.** :func:`from_onnx` accepts only graphs written by
:func:`to_onnx`: the architecture comes from the ``convnet.model_config``
metadata entry, the weights from the initializers, and the file's graph must
be, node for node, the graph that convnet writes for that architecture.
Everything is checked before memory is spent on it (file size, the format, each
initializer's type and shape against the architecture); anything else raises
:class:`OnnxFileError` naming the file and what is wrong.
"""
import json
import os
import secrets
from pathlib import Path

import numpy as np

from . import activations, layers
from .errors import ConversionError
from .utils import pad_amounts

__all__ = ["to_onnx", "from_onnx", "OnnxFileError", "ConversionError", "DEFAULT_OPSET", "MIN_OPSET",
           "INPUT_NAME", "OUTPUT_NAME", "BATCH_DIM", "EXPORTED_LAYERS"]

#: the opset written by default; opsets from MIN_OPSET to the newest the installed onnx knows work
DEFAULT_OPSET = 17
#: Softmax over one axis (rather than over everything after it, flattened) needs opset 13
MIN_OPSET = 13
INPUT_NAME, OUTPUT_NAME, BATCH_DIM = "input", "output", "batch"
PRODUCER = "convnet"
#: metadata entries written into every exported file
CONFIG_KEY, GRAPH_VERSION_KEY, GRAPH_VERSION = "convnet.model_config", "convnet.onnx_graph_version", "1"
#: convnet's models are megabytes; a larger file is refused before it is read into memory
MAX_FILE_BYTES = 1 << 30
#: a protobuf message (a whole ONNX file without external data) cannot exceed 2 GiB
MAX_PROTO_BYTES = (1 << 31) - 1
_MAX_DIM = 1 << 16      # largest image side / feature count accepted from a file's input shape

_NCHW, _NHWC = [0, 3, 1, 2], [0, 2, 3, 1]      # Transpose permutations into and out of channels first


class OnnxFileError(ValueError):
    """An ONNX file that is unreadable, damaged, or was not exported by convnet."""


def _onnx():
    """Import onnx lazily, with a clear message when the extra is not installed."""
    try:
        import onnx
        from onnx import numpy_helper  # noqa: F401  (onnx.numpy_helper is used through onnx)
    except ImportError:
        raise ImportError('ONNX export needs the onnx package: pip install -e ".[onnx]" '
                          '(which also brings onnxruntime to run the exported model)') from None
    return onnx


# ---------------------------------------------------------------------- export
class _Graph:
    """The nodes and initializers of the graph being written, and where the data stands.

    ``tensor`` names the current value; ``channels_first`` says whether it is
    an NCHW image (after a transpose) rather than convnet's own layout.
    Every node is named ``<layer>/<op>`` and so is its output.
    """

    def __init__(self, onnx):
        self.onnx, self.nodes, self.initializers = onnx, [], []
        self.tensor, self.channels_first = INPUT_NAME, False

    def add(self, op, name, inputs=None, **attributes):
        node = self.onnx.helper.make_node(op, [self.tensor] if inputs is None else inputs, [name], name=name,
                                          **attributes)
        self.nodes.append(node)
        self.tensor = name

    def weight(self, name, array):
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array, np.float32), name))
        return name

    def to_channels_first(self, layer):
        if not self.channels_first:
            self.add("Transpose", f"{layer.name}/Transpose", perm=_NCHW)
            self.channels_first = True

    def to_channels_last(self, name):
        if self.channels_first:
            self.add("Transpose", name, perm=_NHWC)
            self.channels_first = False

    def activation(self, layer):
        """The layer's activation as a node (softmax over the channels: axis 1 when channels first)."""
        kind = _activation_kind(layer)
        if kind == "relu":
            self.add("Relu", f"{layer.name}/Relu")
        elif kind == "softmax":
            self.add("Softmax", f"{layer.name}/Softmax", axis=1 if self.channels_first else -1)


def _activation_kind(layer):
    """``None``, ``"relu"`` or ``"softmax"``; an activation object swapped by hand is refused."""
    name = None if layer.activation_name == "linear" else layer.activation_name
    expected = activations.ACTIVATIONS.get(name)
    if expected is None or type(layer.activation) is not expected:
        raise ConversionError(f"layer {layer.name!r} ({type(layer).__name__}): activation "
                              f"{type(layer.activation).__name__} has no ONNX equivalent in convnet's exporter; "
                              f"expected None, 'relu' or 'softmax'")
    return name


def _export_conv2d(g, layer):
    g.to_channels_first(layer)
    H, W, _ = layer.input_shape
    (kh, kw), (sh, sw) = layer.kernel_size, layer.strides
    top, bottom = pad_amounts(H, kh, sh, layer.padding)
    left, right = pad_amounts(W, kw, sw, layer.padding)
    kernel = g.weight(f"{layer.name}/kernel", layer.params["kernel"].transpose(3, 2, 0, 1))   # HWIO -> OIHW
    bias = g.weight(f"{layer.name}/bias", layer.params["bias"])
    g.add("Conv", f"{layer.name}/Conv", inputs=[g.tensor, kernel, bias], kernel_shape=[kh, kw],
          strides=[sh, sw], pads=[top, left, bottom, right])
    g.activation(layer)


def _export_maxpool2d(g, layer):
    g.to_channels_first(layer)
    H, W, _ = layer.input_shape
    (kh, kw), (sh, sw) = layer.pool_size, layer.strides
    top, bottom = pad_amounts(H, kh, sh, layer.padding)
    left, right = pad_amounts(W, kw, sw, layer.padding)
    # ONNX's MaxPool ignores the padded cells (as if -inf), as convnet's kernel does
    g.add("MaxPool", f"{layer.name}/MaxPool", kernel_shape=[kh, kw], strides=[sh, sw],
          pads=[top, left, bottom, right])


def _export_dropout(g, layer):
    """Identity at inference: nothing in the graph."""


def _export_flatten(g, layer):
    g.to_channels_last(f"{layer.name}/Transpose")       # flatten in convnet's (h, w, c) order: see the top
    g.add("Flatten", f"{layer.name}/Flatten", axis=1)


def _export_dense(g, layer):
    kernel = g.weight(f"{layer.name}/kernel", layer.params["kernel"])          # (in, out), as Gemm's B
    bias = g.weight(f"{layer.name}/bias", layer.params["bias"])
    g.add("Gemm", f"{layer.name}/Gemm", inputs=[g.tensor, kernel, bias])
    g.activation(layer)


def _export_activation_layer(g, layer):
    g.activation(layer)


#: convnet layer class -> how it is written; matched on the exact class (a subclass may compute something else)
_EXPORTERS = {layers.Conv2D: _export_conv2d, layers.MaxPool2D: _export_maxpool2d, layers.Dropout: _export_dropout,
              layers.Flatten: _export_flatten, layers.Dense: _export_dense, layers.ReLU: _export_activation_layer,
              layers.Softmax: _export_activation_layer}
EXPORTED_LAYERS = tuple(cls.__name__ for cls in _EXPORTERS)


def _check_exportable(model):
    from .model import Sequential

    if not isinstance(model, Sequential):
        raise TypeError(f"expected a convnet Sequential model, got {type(model).__name__}")
    if model.input_shape is None or not all(layer.built for layer in model.layers):
        raise ValueError("the model is not built (its input shape is unknown): pass input_shape= to Sequential")
    for layer in model.layers:
        if type(layer) not in _EXPORTERS:
            raise ConversionError(f"layer {layer.name!r} ({type(layer).__name__}) has no ONNX equivalent in "
                                  f"convnet's exporter; it exports {', '.join(EXPORTED_LAYERS)}")


def _check_opset(onnx, opset):
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be an integer from {MIN_OPSET} to {newest} (the newest the installed onnx "
                         f"{onnx.__version__} knows), got {opset!r}")
    return int(opset)


def _model_proto(onnx, model, opset):
    """The ONNX ModelProto of a built, exportable model (float32)."""
    from .version import __version__

    helper = onnx.helper
    g = _Graph(onnx)
    for layer in model.layers:
        _EXPORTERS[type(layer)](g, layer)
    # node names are "<layer>/<op>", so these two (suffixes no layer uses) cannot clash with them
    g.to_channels_last(f"{OUTPUT_NAME}/to_channels_last")
    if not g.nodes:                          # e.g. only Dropout layers: the output is the input
        g.add("Identity", f"{OUTPUT_NAME}/identity")
    g.nodes[-1].output[0] = OUTPUT_NAME
    float32 = onnx.TensorProto.FLOAT
    graph = helper.make_graph(
        g.nodes, model.name, [helper.make_tensor_value_info(INPUT_NAME, float32, [BATCH_DIM, *model.input_shape])],
        [helper.make_tensor_value_info(OUTPUT_NAME, float32, [BATCH_DIM, *model.output_shape])],
        initializer=g.initializers,
        doc_string=f"convnet model {model.name!r}: input {INPUT_NAME!r} (batch, "
                   f"{', '.join(map(str, model.input_shape))}) float32 channels last, as model.predict takes it; "
                   f"output {OUTPUT_NAME!r}")
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name=PRODUCER, producer_version=__version__,
                              ir_version=helper.find_min_ir_version_for(opsets))
    helper.set_model_props(proto, {CONFIG_KEY: json.dumps(model.get_config()), GRAPH_VERSION_KEY: GRAPH_VERSION})
    return proto


def to_onnx(model, path, opset=DEFAULT_OPSET, overwrite=False):
    """Write ``model`` (a built :class:`convnet.Sequential`) as an ONNX file at ``path``; returns the path.

    The graph computes ``model.predict`` in float32 (see the module docstring
    for the layout), passes ``onnx.checker`` with full shape inference before
    it is written, and records the producer (``convnet`` and its version),
    the model's config, and the input and output names and shapes.
    The file is written atomically; an existing ``path`` is an error unless
    ``overwrite=True``.
    """
    onnx = _onnx()
    opset = _check_opset(onnx, opset)
    _check_exportable(model)
    proto = _model_proto(onnx, model, opset)
    if proto.ByteSize() > MAX_PROTO_BYTES:
        raise ConversionError(f"the model's {model.count_params():,} parameters do not fit in one ONNX file "
                              f"(protobuf's 2 GiB limit)")
    onnx.checker.check_model(proto, full_check=True)
    return _write_new_file(path, proto.SerializeToString(), overwrite)


def _write_new_file(path, data, overwrite):
    """Write ``data`` to a temporary file beside ``path``, then move it into place.

    Without ``overwrite`` the move is a hard link, which fails rather than
    replace a file that appeared meanwhile (where links are not supported, a
    check just before the rename has to do).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give the name of the .onnx file to write")
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it") from None
            except OSError:                      # no hard links on this file system
                if path.exists():
                    raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it") from None
                os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# ---------------------------------------------------------------------- import
def from_onnx(path):
    """The :class:`convnet.Sequential` stored in an ONNX file written by :func:`to_onnx` (float32, not compiled).

    Raises :class:`OnnxFileError` for a file that is not one (see the module docstring).
    """
    onnx = _onnx()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {path}")
    proto = _read_proto(onnx, path)
    opset = _check_header(onnx, path, proto)
    inits = _initializers(onnx, path, proto)
    config = _stored_config(path, proto)
    model = _build_checked(path, config, inits)
    weights = []
    for layer in model.layers:
        for key in layer.params:
            array = onnx.numpy_helper.to_array(inits[f"{layer.name}/{key}"])
            weights.append(array.transpose(2, 3, 1, 0) if array.ndim == 4 else array)      # OIHW -> HWIO
    model.set_weights(weights)
    _compare_graphs(path, proto.graph, _model_proto(onnx, model, opset).graph)
    _run_checker(onnx, path, proto)
    return model


def _read_proto(onnx, path):
    size = path.stat().st_size
    if size == 0:
        raise OnnxFileError(f"{path}: is empty, expected an ONNX model")
    if size > MAX_FILE_BYTES:
        raise OnnxFileError(f"{path}: is {size:,} bytes, larger than any model convnet exports "
                            f"(limit {MAX_FILE_BYTES:,})")
    from google.protobuf.message import DecodeError

    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except (DecodeError, RuntimeError, ValueError) as e:
        raise OnnxFileError(f"{path}: cannot be read as an ONNX model (not ONNX, or truncated): {e}") from None
    return proto


def _check_header(onnx, path, proto):
    """Producer, convnet's graph version and the opset; returns the opset."""
    if proto.producer_name != PRODUCER:
        raise OnnxFileError(f"{path}: was produced by {proto.producer_name or 'an unnamed producer'!r}; "
                            f"convnet reads back only the ONNX files it exported (producer 'convnet')")
    props = {p.key: p.value for p in proto.metadata_props}
    if props.get(GRAPH_VERSION_KEY) != GRAPH_VERSION:
        raise OnnxFileError(f"{path}: has convnet graph version {props.get(GRAPH_VERSION_KEY)!r}; this convnet "
                            f"reads version {GRAPH_VERSION}")
    opsets = {o.domain: o.version for o in proto.opset_import}
    newest = onnx.defs.onnx_opset_version()
    if set(opsets) != {""} or not MIN_OPSET <= opsets[""] <= newest:
        raise OnnxFileError(f"{path}: imports opsets {opsets}; expected only the default domain at "
                            f"{MIN_OPSET} to {newest}")
    return opsets[""]


def _run_checker(onnx, path, proto):
    """onnx.checker on the whole file: the last word (it also rejects e.g. strings that are not UTF-8)."""
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OnnxFileError(f"{path}: fails onnx.checker: {first}") from None


def _initializers(onnx, path, proto):
    """Name -> TensorProto, each float32 with as many values as its dims say (nothing decoded yet)."""
    inits = {}
    for tensor in proto.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:          # never read the file it names
            raise OnnxFileError(f"{path}: initializer {tensor.name!r} refers to external data; convnet's files "
                                f"hold their weights inside")
        if not isinstance(tensor.name, str):       # protobuf hands back bytes that are not UTF-8 as bytes
            raise OnnxFileError(f"{path}: initializer name {tensor.name!r} is not UTF-8 text (damaged file?)")
        if tensor.name in inits:
            raise OnnxFileError(f"{path}: initializer {tensor.name!r} appears twice")
        if tensor.data_type != onnx.TensorProto.FLOAT:
            raise OnnxFileError(f"{path}: initializer {tensor.name!r} has data type {tensor.data_type}, "
                                f"expected float32 ({onnx.TensorProto.FLOAT})")
        dims = tuple(tensor.dims)
        if any(d < 1 for d in dims):
            raise OnnxFileError(f"{path}: initializer {tensor.name!r} has shape {dims}; convnet's weights have "
                                f"no empty dimension")
        n = int(np.prod(dims, dtype=object))
        stored = len(tensor.raw_data) // 4 if tensor.HasField("raw_data") else len(tensor.float_data)
        if tensor.HasField("raw_data") and len(tensor.raw_data) % 4 or stored != n:
            raise OnnxFileError(f"{path}: initializer {tensor.name!r} of shape {dims} holds {stored} values, "
                                f"expected {n} (truncated or damaged file?)")
        inits[tensor.name] = tensor
    return inits


def _stored_config(path, proto):
    props = {p.key: p.value for p in proto.metadata_props}
    if CONFIG_KEY not in props:
        raise OnnxFileError(f"{path}: has no {CONFIG_KEY!r} metadata entry (not exported by convnet?)")
    try:
        config = json.loads(props[CONFIG_KEY])
    except (ValueError, RecursionError) as e:       # bad JSON, bytes that are not UTF-8, absurd nesting
        raise OnnxFileError(f"{path}: metadata {CONFIG_KEY!r} is not valid JSON: {e}") from None
    bad = _config_problem(config)
    if bad:
        raise OnnxFileError(f"{path}: metadata {CONFIG_KEY!r} is not a convnet model config: {bad}")
    return config


def _config_problem(config):
    """What is wrong with the shape of a stored model config, or None."""
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        return "expected an object with a 'layers' list"
    if not isinstance(config.get("name", ""), str):
        return "'name' is not a string"
    shape = config.get("input_shape")
    if (not isinstance(shape, list) or not 1 <= len(shape) <= 3
            or not all(type(d) is int and 1 <= d <= _MAX_DIM for d in shape)):
        return f"'input_shape' should be 1 to 3 integers from 1 to {_MAX_DIM}, got {shape!r}"
    for i, spec in enumerate(config["layers"]):
        if (not isinstance(spec, dict) or spec.get("class_name") not in layers.LAYER_CLASSES
                or not isinstance(spec.get("config"), dict)):
            return (f"layer {i} should be {{'class_name': one of {sorted(layers.LAYER_CLASSES)}, "
                    f"'config': {{...}}}}, got {str(spec)[:200]}")
        if not isinstance(spec["config"].get("name"), str) or "input_shape" in spec["config"]:
            return f"layer {i} should have a string 'name' and no 'input_shape'"
    return None


def _onnx_weight_shapes(layer, input_shape):
    """Name -> shape of the initializers :func:`to_onnx` writes for ``layer`` on ``input_shape``."""
    if type(layer) is layers.Conv2D:
        (kh, kw), F = layer.kernel_size, layer.filters
        return {f"{layer.name}/kernel": (F, input_shape[2], kh, kw), f"{layer.name}/bias": (F,)}
    if type(layer) is layers.Dense:
        return {f"{layer.name}/kernel": (input_shape[0], layer.units), f"{layer.name}/bias": (layer.units,)}
    return {}


def _build_checked(path, config, inits):
    """Build the model of ``config`` once its parameter shapes are known to equal the file's initializers."""
    from .model import Sequential

    try:
        layer_objs = [layers.LAYER_CLASSES[spec["class_name"]](**spec["config"]) for spec in config["layers"]]
        shape, expected = tuple(config["input_shape"]), {}
        for layer in layer_objs:                         # shapes only: nothing is allocated yet
            expected.update(_onnx_weight_shapes(layer, shape))
            shape = layer.compute_output_shape(shape)
    except (TypeError, ValueError, KeyError, IndexError, OverflowError) as e:
        raise OnnxFileError(f"{path}: the stored architecture cannot be rebuilt: {type(e).__name__}: {e}") from None
    if set(expected) != set(inits):
        raise OnnxFileError(f"{path}: holds initializers {sorted(inits)}, but its architecture has "
                            f"{sorted(expected)}")
    for name, dims in expected.items():
        if tuple(inits[name].dims) != dims:
            raise OnnxFileError(f"{path}: initializer {name!r} has shape {tuple(inits[name].dims)}, but its "
                                f"architecture needs {dims}")
    try:
        return Sequential(layer_objs, input_shape=tuple(config["input_shape"]), name=config.get("name", "sequential"),
                          seed=config.get("seed"))
    except (TypeError, ValueError) as e:
        raise OnnxFileError(f"{path}: the stored architecture cannot be rebuilt: {type(e).__name__}: {e}") from None


def _compare_graphs(path, found, expected):
    """The file's graph must be the one convnet writes for the architecture it records."""
    def text(s):                   # a damaged file's strings may not be UTF-8: protobuf then gives bytes
        return s.decode("utf-8", "replace") if isinstance(s, bytes) else s

    def describe(node):
        return (f"{text(node.op_type)} {text(node.name)!r} ({', '.join(map(text, node.input))} -> "
                f"{', '.join(map(text, node.output))})")

    for i, (a, b) in enumerate(zip(found.node, expected.node)):
        if a != b:
            raise OnnxFileError(f"{path}: node {i} is {describe(a)}, but convnet writes {describe(b)} there "
                                f"for the architecture recorded in the file (edited graph?)")
    if len(found.node) != len(expected.node):
        raise OnnxFileError(f"{path}: has {len(found.node)} nodes, but convnet writes {len(expected.node)} for "
                            f"the architecture recorded in the file (edited graph?)")
    if list(found.input) != list(expected.input) or list(found.output) != list(expected.output):
        raise OnnxFileError(f"{path}: the graph's inputs/outputs are not the ones convnet writes: expected "
                            f"{INPUT_NAME!r} (batch, {', '.join(map(str, _dims(expected.input[0])))}) -> "
                            f"{OUTPUT_NAME!r} (batch, {', '.join(map(str, _dims(expected.output[0])))})")


def _dims(value_info):
    return [d.dim_value for d in value_info.type.tensor_type.shape.dim][1:]
