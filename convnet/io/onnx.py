"""ONNX export of a trained model, reading back what convnet exported, and importing other tools' graphs.

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

``to_onnx(..., input_layout="NCHW")`` writes a graph that takes
channels-first images instead (PyTorch's layout): it starts channels first,
with no transpose, and records the layout in the ``convnet.input_layout``
metadata entry.

**Reading back.** :func:`from_onnx` reads a file written by :func:`to_onnx`
as exactly the model it came from: the architecture comes from the
``convnet.model_config`` metadata entry, the weights from the initializers,
and the file's graph must be, node for node, the graph that convnet writes
for that architecture. Everything is checked before memory is spent on it
(file size, the format, each initializer's type and shape against the
architecture); anything else raises :class:`OnnxFileError` naming the file
and what is wrong.

**Importing.** A file from another producer (PyTorch, tf2onnx, Keras's
exporter) is handed to :mod:`convnet.onnx_import`, which rebuilds its graph
as convnet layers when it is made of operations convnet has, converting the
layouts, and otherwise raises one :class:`OnnxFileError` naming the node and
the op. The imported model goes through the same checks as a model file of
convnet's own, and the file through ``onnx.checker``.

Every file, exported or imported, is held to the limits every model file
shares with ``.npz`` files (:mod:`convnet.limits`: the config's length before
it is parsed, layers, input size, units, weights).
"""
import json
import os
import secrets
from pathlib import Path

import numpy as np

from .. import activations, layers
from ..errors import ConversionError, ModelFileError, OnnxFileError
from .limits import (MAX_JSON_BYTES, MAX_LAYERS, MAX_MODEL_FILE_BYTES, MAX_WEIGHT_BYTES,
                     LimitError, file_problem, input_shape_problem, layer_shapes)
from ..utils import pad_amounts

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
#: written when the graph takes channels-first images (``to_onnx(..., input_layout="NCHW")``)
LAYOUT_KEY = "convnet.input_layout"
INPUT_LAYOUTS = ("NHWC", "NCHW")
#: the weights, config and graph of the largest model convnet loads fit well within this (convnet.limits);
#: a larger file is refused before it is read into memory
MAX_FILE_BYTES = MAX_MODEL_FILE_BYTES
#: a protobuf message (a whole ONNX file without external data) cannot exceed 2 GiB
MAX_PROTO_BYTES = (1 << 31) - 1

_NCHW, _NHWC = [0, 3, 1, 2], [0, 2, 3, 1]      # Transpose permutations into and out of channels first


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

    def __init__(self, onnx, channels_first=False):
        self.onnx, self.nodes, self.initializers = onnx, [], []
        self.tensor, self.channels_first = INPUT_NAME, channels_first

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
    from ..model import Sequential

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


def _layout_shape(shape, layout):
    """``shape`` (convnet's, channels last) as the graph states it for ``layout``."""
    return (shape[2], shape[0], shape[1]) if layout == "NCHW" and len(shape) == 3 else tuple(shape)


def _model_proto(onnx, model, opset, input_layout="NHWC"):
    """The ONNX ModelProto of a built, exportable model (float32).

    With ``input_layout="NCHW"`` the graph takes (and, for a model ending on
    an image, gives) channels-first images: it starts channels first rather
    than with a transpose, and does not transpose back at the end.
    """
    from ..version import __version__

    helper = onnx.helper
    nchw = input_layout == "NCHW"
    g = _Graph(onnx, channels_first=nchw)
    for layer in model.layers:
        _EXPORTERS[type(layer)](g, layer)
    # node names are "<layer>/<op>", so these two (suffixes no layer uses) cannot clash with them
    if not nchw:
        g.to_channels_last(f"{OUTPUT_NAME}/to_channels_last")
    if not g.nodes:                          # e.g. only Dropout layers: the output is the input
        g.add("Identity", f"{OUTPUT_NAME}/identity")
    g.nodes[-1].output[0] = OUTPUT_NAME
    float32 = onnx.TensorProto.FLOAT
    out_layout = input_layout if g.channels_first else "NHWC"
    in_shape, out_shape = _layout_shape(model.input_shape, input_layout), _layout_shape(model.output_shape, out_layout)
    graph = helper.make_graph(
        g.nodes, model.name, [helper.make_tensor_value_info(INPUT_NAME, float32, [BATCH_DIM, *in_shape])],
        [helper.make_tensor_value_info(OUTPUT_NAME, float32, [BATCH_DIM, *out_shape])],
        initializer=g.initializers,
        doc_string=f"convnet model {model.name!r}: input {INPUT_NAME!r} (batch, "
                   f"{', '.join(map(str, in_shape))}) float32 "
                   f"{'channels first (NCHW)' if nchw else 'channels last, as model.predict takes it'}; "
                   f"output {OUTPUT_NAME!r}")
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name=PRODUCER, producer_version=__version__,
                              ir_version=helper.find_min_ir_version_for(opsets))
    props = {CONFIG_KEY: json.dumps(model.get_config()), GRAPH_VERSION_KEY: GRAPH_VERSION}
    if nchw:
        props[LAYOUT_KEY] = "NCHW"
    helper.set_model_props(proto, props)
    return proto


def to_onnx(model, path, opset=DEFAULT_OPSET, overwrite=False, input_layout="NHWC"):
    """Write ``model`` (a built :class:`convnet.Sequential`) as an ONNX file at ``path``; returns the path.

    ``input_layout="NCHW"`` writes a graph that takes channels-first images,
    ``(N, C, H, W)``, the layout PyTorch and most ONNX consumers expect (a
    model that ends on an image then gives NCHW too); the default "NHWC"
    takes exactly what ``model.predict`` takes.

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
    if input_layout not in INPUT_LAYOUTS:
        raise ValueError(f"input_layout must be one of {INPUT_LAYOUTS}, got {input_layout!r}")
    if input_layout == "NCHW" and len(model.input_shape) != 3:
        raise ValueError(f"input_layout='NCHW' is for image inputs (height, width, channels); this model takes "
                         f"{model.input_shape}")
    proto = _model_proto(onnx, model, opset, input_layout)
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
    """The :class:`convnet.Sequential` stored in an ONNX file (float32, not compiled).

    A file written by :func:`to_onnx` comes back as the same model (names,
    Dropout layers and all); a graph from another tool (PyTorch, tf2onnx,
    Keras's exporter) is imported by :mod:`convnet.onnx_import` when it is
    made of operations convnet has. Raises :class:`OnnxFileError` for a file
    that is neither (see the module docstring).
    """
    onnx = _onnx()
    path = Path(path)
    problem = file_problem(path)
    if problem:
        raise (FileNotFoundError if problem.endswith("does not exist") else OnnxFileError)(problem)
    proto = _read_proto(onnx, path)
    if proto.producer_name != PRODUCER:
        return _import_foreign(onnx, path, proto)
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
    layout = _stored_layout(path, proto, model)
    _compare_graphs(path, proto.graph, _model_proto(onnx, model, opset, layout).graph)
    _run_checker(onnx, path, proto)
    return model


def _import_foreign(onnx, path, proto):
    """A graph another tool wrote, rebuilt as convnet layers (see :mod:`convnet.onnx_import`)."""
    from . import limits
    from . import npz as saving
    from .onnx_import import MIN_FOREIGN_OPSET, import_graph

    opsets = {}
    for o in proto.opset_import:
        domain = o.domain.decode("utf-8", "replace") if isinstance(o.domain, bytes) else o.domain
        opsets[domain or ""] = o.version
    newest = onnx.defs.onnx_opset_version()
    if not MIN_FOREIGN_OPSET <= opsets.get("", opsets.get("ai.onnx", 0)) <= newest:
        raise OnnxFileError(f"{path}: imports opsets {opsets}; convnet reads the default domain at opset "
                            f"{MIN_FOREIGN_OPSET} to {newest}")
    opset = opsets.get("", opsets.get("ai.onnx"))
    input_shape, stack, _ = import_graph(onnx, path, proto, opset, (limits.MAX_WEIGHT_BYTES, limits.MAX_UNITS))
    if not stack:
        raise OnnxFileError(f"{path}: computes nothing convnet has a layer for (its output is its input)")
    name = proto.graph.name if isinstance(proto.graph.name, str) else ""
    config = {"name": name if name.isprintable() and 0 < len(name) <= 64 else "imported",
              "input_shape": list(input_shape),
              "layers": [{"class_name": class_name, "config": layer_config} for class_name, layer_config, _ in stack]}
    weights = [np.asarray(w, np.float32) for _, _, ws in stack if ws for w in ws]
    stored = {f"layer {i} ({class_name})/{key}": (w.shape, w.dtype) for i, (class_name, _, ws) in enumerate(stack)
              if ws for key, w in zip(("kernel", "bias"), ws)}
    try:
        model = saving.build_model(path, config, stored)          # the limits of convnet's own files
    except ModelFileError as e:
        raise OnnxFileError(str(e)) from None
    model.set_weights(weights)
    _run_checker(onnx, path, proto)
    try:        # and ONNX's type rules: a graph onnxruntime would refuse is refused here too
        onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OnnxFileError(f"{path}: fails ONNX's type and shape inference: {first[:300]}") from None
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
    """convnet's graph version and the opset of a file convnet produced; returns the opset."""
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


def _stored_layout(path, proto, model):
    """The input layout a convnet file records ("NHWC" when it records none)."""
    layout = {p.key: p.value for p in proto.metadata_props}.get(LAYOUT_KEY, "NHWC")
    if layout not in INPUT_LAYOUTS or (layout == "NCHW" and len(model.input_shape) != 3):
        raise OnnxFileError(f"{path}: metadata {LAYOUT_KEY!r} is {layout!r}; expected one of {INPUT_LAYOUTS} "
                            f"(NCHW only for an image input)")
    return layout


def _run_checker(onnx, path, proto):
    """onnx.checker on the whole file: the last word (it also rejects e.g. strings that are not UTF-8)."""
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OnnxFileError(f"{path}: fails onnx.checker: {first}") from None


def _initializers(onnx, path, proto):
    """Name -> TensorProto, each float32 with as many values as its dims say (nothing decoded yet)."""
    inits, total = {}, 0
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
        total += 4 * n
        if total > MAX_WEIGHT_BYTES:
            raise OnnxFileError(f"{path}: the initializers take more than {MAX_WEIGHT_BYTES:,} bytes, the most "
                                f"convnet loads (convnet.limits.MAX_WEIGHT_BYTES)")
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
    if len(props[CONFIG_KEY]) > MAX_JSON_BYTES:           # before it is parsed into objects
        raise OnnxFileError(f"{path}: metadata {CONFIG_KEY!r} takes {len(props[CONFIG_KEY]):,} characters; a "
                            f"model config is at most {MAX_JSON_BYTES:,} (convnet.limits.MAX_JSON_BYTES)")
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
    if len(config["layers"]) > MAX_LAYERS:
        return f"it has {len(config['layers'])} layers; at most {MAX_LAYERS} (convnet.limits.MAX_LAYERS)"
    shape = config.get("input_shape")
    if not isinstance(shape, list) or input_shape_problem(shape):
        return f"'input_shape' {input_shape_problem(shape)}"
    for i, spec in enumerate(config["layers"]):
        if (not isinstance(spec, dict) or not isinstance(spec.get("class_name"), str)
                or spec["class_name"] not in layers.LAYER_CLASSES
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
    from ..model import Sequential

    try:
        layer_objs = [layers.LAYER_CLASSES[spec["class_name"]](**spec["config"]) for spec in config["layers"]]
        expected = {}
        for layer, shape, _ in layer_shapes(layer_objs, tuple(config["input_shape"])):   # shapes only
            expected.update(_onnx_weight_shapes(layer, shape))
    except LimitError as e:
        raise OnnxFileError(f"{path}: {e}") from None
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
