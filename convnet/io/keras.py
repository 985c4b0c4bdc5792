"""Convert models between convnet and Keras (TensorFlow), weights included.

>>> from convnet.interop import from_keras, to_keras
>>> model = from_keras(keras_model)     # a convnet.Sequential computing the same function
>>> keras_model = to_keras(model)       # and back

Both libraries use the same layouts (channels-last images, conv kernels
``(kh, kw, in, out)``, dense kernels ``(in, out)``, Keras's "valid"/"same"
padding rule), so a conversion maps each layer's config one to one and
copies the weights unchanged.

Supported: Sequential models of Conv2D, MaxPooling2D, Dropout, Flatten,
Dense, ReLU and Softmax, with activations None/"linear", "relu" and
"softmax". Anything else (another layer type, dilation, a leaky ReLU,
channels-first data) raises :class:`ConversionError` naming the layer and
the setting. TensorFlow/Keras is imported only when a function here is
called, so convnet itself does not need it.

ONNX: :func:`to_onnx` writes a model as an ONNX file that onnxruntime runs on
the same input as ``model.predict`` (or, with ``input_layout="NCHW"``, on
channels-first images), and :func:`from_onnx` reads such a file back, or
imports a graph written by PyTorch, tf2onnx or Keras when it is made of
operations convnet has (implemented in :mod:`convnet.onnx_io` and
:mod:`convnet.onnx_import`, which have the details; the onnx package is
imported only when they are called).
"""
from pathlib import Path

import numpy as np

from .. import layers
from ..errors import ConversionError, ModelFileError
from .limits import MAX_WEIGHT_BYTES
from .npz import FORMAT_NAMES
from ..model import Sequential

__all__ = ["ConversionError", "from_keras", "to_keras", "SUPPORTED_KERAS_LAYERS", "to_onnx", "from_onnx"]

#: Keras class name -> the convnet layer it becomes.
SUPPORTED_KERAS_LAYERS = ("Conv2D", "MaxPooling2D", "Dropout", "Flatten", "Dense", "ReLU", "Softmax")
_ACTIVATIONS = {None: None, "linear": None, "relu": "relu", "softmax": "softmax"}


def _keras():
    """Import Keras lazily, with a clear message when TensorFlow is missing."""
    try:
        import keras
    except ImportError:
        raise ImportError("convnet.interop needs TensorFlow with Keras 3: pip install tensorflow-cpu") from None
    return keras


# ---------------------------------------------------------------- Keras -> convnet
def _activation_name(keras_layer):
    """The activation of a Keras layer as convnet's name (None, "relu", "softmax")."""
    act = getattr(keras_layer, "activation", None)
    name = None if act is None else getattr(act, "__name__", str(act))
    if name not in _ACTIVATIONS:
        raise ConversionError(f"layer {keras_layer.name!r} ({type(keras_layer).__name__}): activation {name!r} "
                              f"is not supported; expected one of None, 'linear', 'relu', 'softmax'")
    return _ACTIVATIONS[name]


def _require(keras_layer, condition, what):
    if not condition:
        raise ConversionError(f"layer {keras_layer.name!r} ({type(keras_layer).__name__}): {what}")


def _check_channels_last(keras_layer, config):
    fmt = config.get("data_format") or "channels_last"
    _require(keras_layer, fmt == "channels_last",
             f"data_format={fmt!r} is not supported; convnet is channels_last (NHWC)")


def _convert_keras_layer(kl):
    """One Keras layer -> ``(convnet layer, [weights in convnet order] or None)``."""
    kind = type(kl).__name__
    config = kl.get_config()
    name = kl.name
    if kind == "Conv2D":
        _check_channels_last(kl, config)
        _require(kl, tuple(config.get("dilation_rate", (1, 1))) == (1, 1),
                 f"dilation_rate={config['dilation_rate']} is not supported (only 1)")
        _require(kl, config.get("groups", 1) == 1, f"groups={config['groups']} is not supported (only 1)")
        layer = layers.Conv2D(config["filters"], tuple(config["kernel_size"]), strides=tuple(config["strides"]),
                              padding=config["padding"], activation=_activation_name(kl), name=name)
        kernel = np.asarray(kl.kernel)
        bias = np.asarray(kl.bias) if kl.use_bias else np.zeros(config["filters"], kernel.dtype)
        return layer, [kernel, bias]
    if kind == "MaxPooling2D":
        _check_channels_last(kl, config)
        strides = config.get("strides")
        layer = layers.MaxPool2D(tuple(config["pool_size"]), strides=None if strides is None else tuple(strides),
                                 padding=config["padding"], name=name)
        return layer, None
    if kind == "Dropout":
        _require(kl, not config.get("noise_shape"), "noise_shape is not supported")
        return layers.Dropout(config["rate"], seed=config.get("seed"), name=name), None
    if kind == "Flatten":
        _check_channels_last(kl, config)
        return layers.Flatten(name=name), None
    if kind == "Dense":
        layer = layers.Dense(config["units"], activation=_activation_name(kl), name=name)
        kernel = np.asarray(kl.kernel)
        bias = np.asarray(kl.bias) if kl.use_bias else np.zeros(config["units"], kernel.dtype)
        return layer, [kernel, bias]
    if kind == "ReLU":
        _require(kl, config.get("max_value") is None and not config.get("negative_slope")
                 and not config.get("threshold"),
                 "only the plain ReLU (max_value=None, negative_slope=0, threshold=0) is supported")
        return layers.ReLU(name=name), None
    if kind == "Softmax":
        _require(kl, config.get("axis", -1) in (-1, [-1]), f"softmax axis {config.get('axis')} is not supported "
                                                            f"(only the last axis, -1)")
        return layers.Softmax(name=name), None
    raise ConversionError(f"layer {name!r} of type {kind} is not supported; convnet can convert "
                          f"{', '.join(SUPPORTED_KERAS_LAYERS)}")


def from_keras(keras_model, seed=None):
    """A :class:`convnet.Sequential` with the architecture and weights of a Keras Sequential model.

    The Keras model must know its input shape (built, e.g. with
    ``keras.Input``). Raises :class:`ConversionError` for unsupported
    layers or settings.
    """
    keras = _keras()
    if not isinstance(keras_model, keras.Sequential):
        raise ConversionError(f"expected a keras.Sequential model, got {type(keras_model).__name__}; "
                              f"only linear stacks of layers can be converted")
    try:
        input_shape = tuple(keras_model.input_shape[1:])
    except (AttributeError, ValueError):
        raise ConversionError("the Keras model is not built (its input shape is unknown); create it with "
                              "keras.Input(shape=...) or call it on data first") from None
    if any(d is None for d in input_shape):
        raise ConversionError(f"the Keras model's input shape {input_shape} has unknown dimensions")
    converted = [_convert_keras_layer(kl) for kl in keras_model.layers]
    model = Sequential([layer for layer, _ in converted], input_shape=input_shape, name=keras_model.name, seed=seed)
    model.set_weights([w for _, ws in converted if ws for w in ws])
    return model


# ---------------------------------------------------------------- convnet -> Keras
def _to_keras_layer(keras, layer):
    kind = type(layer).__name__
    act = getattr(layer, "activation_name", None)
    if kind == "Conv2D":
        return keras.layers.Conv2D(layer.filters, layer.kernel_size, strides=layer.strides, padding=layer.padding,
                                   activation=act, name=layer.name)
    if kind == "MaxPool2D":
        return keras.layers.MaxPooling2D(layer.pool_size, strides=layer.strides, padding=layer.padding,
                                         name=layer.name)
    if kind == "Dropout":
        return keras.layers.Dropout(layer.rate, seed=layer.seed, name=layer.name)
    if kind == "Flatten":
        return keras.layers.Flatten(name=layer.name)
    if kind == "Dense":
        return keras.layers.Dense(layer.units, activation=act, name=layer.name)
    if kind == "ReLU":
        return keras.layers.ReLU(name=layer.name)
    if kind == "Softmax":
        return keras.layers.Softmax(name=layer.name)
    raise ConversionError(f"layer {layer.name!r} of type {kind} has no Keras counterpart in this converter")


def to_keras(model):
    """A ``keras.Sequential`` with the architecture and weights of a convnet :class:`Sequential`."""
    keras = _keras()
    model._require_built()
    keras_layers = [_to_keras_layer(keras, layer) for layer in model.layers]
    keras_model = keras.Sequential([keras.Input(shape=model.input_shape)] + keras_layers, name=model.name)
    keras_model.set_weights([w.astype(np.float32) for w in model.get_weights()])
    return keras_model


# ---------------------------------------------------------------- ONNX
def to_onnx(model, path, opset=17, overwrite=False, input_layout="NHWC"):
    """Write ``model`` as an ONNX file at ``path`` (see :func:`convnet.onnx_io.to_onnx`); returns the path.

    ``input_layout="NCHW"`` makes the graph take channels-first images, as PyTorch does."""
    from .onnx import to_onnx as export
    return export(model, path, opset=opset, overwrite=overwrite, input_layout=input_layout)


def from_onnx(path):
    """The convnet model in an ONNX file: one :func:`to_onnx` wrote, or a graph from PyTorch, tf2onnx or
    Keras made of operations convnet has (see :mod:`convnet.onnx_import`)."""
    from .onnx import from_onnx as read
    return read(path)


#: the largest Keras file handed to Keras: weights at the limit, with an optimizer's two slots, and the config
MAX_KERAS_FILE_BYTES = 4 * MAX_WEIGHT_BYTES + 2 ** 20


def load_file(path, kind):
    """A Keras file (``kind``: ``"keras"`` or ``"h5"``, see :func:`convnet.io.npz.other_format`), loaded by
    Keras in safe mode and converted to convnet layers by :func:`from_keras`."""
    what = FORMAT_NAMES[kind]
    try:
        import keras
    except ImportError:
        raise ModelFileError(f"{path}: is {what}; convnet reads it through Keras, which is not installed here: "
                             f"pip install tensorflow-cpu (or convnet's bench extra), then load it again; or, where "
                             f"Keras is installed, convert it with convnet.interop.from_keras(keras.saving.load_model"
                             f"(path)) and keep it with convnet.save_model") from None
    size = path.stat().st_size
    if size > MAX_KERAS_FILE_BYTES:
        raise ModelFileError(f"{path}: is {what} of {size:,} bytes, more than a model convnet loads can take "
                             f"(at most {MAX_KERAS_FILE_BYTES:,})")
    import shutil
    import tempfile

    suffix = ".keras" if kind == "keras" else ".h5"
    with tempfile.TemporaryDirectory(prefix="convnet-keras-") as tmp:
        source = path
        if path.suffix.lower() not in ((suffix, ".hdf5") if kind == "h5" else (suffix,)):
            source = Path(tmp) / f"model{suffix}"        # Keras picks its reader by the suffix
            shutil.copyfile(path, source)
        try:
            # safe_mode refuses what would run code from the file (Lambda layers' pickled functions)
            keras_model = keras.saving.load_model(str(source), compile=False, safe_mode=True)
        except Exception as e:                     # Keras raises many types for a file it cannot read
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ModelFileError(f"{path}: is {what}, but Keras cannot load it: {type(e).__name__}: {first}") \
                from None
    try:
        return from_keras(keras_model)
    except ConversionError as e:
        raise ModelFileError(f"{path}: the Keras model cannot become a convnet model: {e}") from None


