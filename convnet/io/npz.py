"""Saving and loading models: everything in one ``.npz`` archive.

An ``.npz`` is a zip of ``.npy`` arrays. A model file holds these entries:

====================================  ==========================================
``format``                            JSON: ``{"format": "convnet-model", "version": 1, ...}``
``model_config``                      JSON: ``model.get_config()`` (the architecture)
``weights/<layer>/<param>``           every parameter, e.g. ``weights/conv2d/kernel``
``compile_config``                    JSON: optimizer class + config, loss class + config, metrics
``optimizer_state/iterations``        the optimizer's step count (0-d int64)
``optimizer_state/<slot>/<key>``      its per-parameter state, e.g. ``optimizer_state/m/conv2d/kernel``
``training``                          JSON: epochs completed, history so far, free-form metadata
====================================  ==========================================

The JSON entries are stored as ``uint8`` arrays of UTF-8 bytes, so loading
never needs ``allow_pickle=True`` (unpickling a file can run arbitrary code).

Writes are atomic: the archive is written to a temporary file in the target
directory and renamed over the target only once complete, so a crash or a
Ctrl-C leaves either the old file or the new one, never half of one.

Loads are all-or-nothing and bounded: every value read from the file is
checked (format, version, architecture, every shape, dtype and number)
before the model is used, and a problem raises :class:`ModelFileError`
naming the file and what is wrong. Only the entries above are read, each
after its size has been checked against what the architecture implies; the
architecture itself is bounded (:data:`MAX_WEIGHT_BYTES`, :data:`MAX_LAYERS`,
:data:`MAX_UNITS`), its shapes are compared with the stored arrays' before
anything is allocated, and it is built without drawing random weights, so no file
can make loading use more than a few hundred MB. float16 weights are widened
to float32; other dtypes and NaN or infinite values are rejected.

>>> convnet.save_model(model, "model.npz")
>>> model = convnet.load_model("model.npz")          # compiled, optimizer state restored
>>> ckpt = load_checkpoint("checkpoint.npz")         # + epochs done and history, to resume
>>> ckpt.model.fit(x, y, epochs=10, initial_epoch=ckpt.epoch, callbacks=[...])
"""
import inspect
import io
import json
import lzma
import math
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import losses, optimizers, schedules
from ..errors import ModelFileError
from ..model import Sequential
from ..utils import atomic_path

#: What identifies our files; bump the version when the layout changes.
FORMAT_NAME = "convnet-model"
FORMAT_VERSION = 1

WEIGHTS_PREFIX = "weights/"
OPTIMIZER_PREFIX = "optimizer_state/"


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns: a compiled model and where training stood."""

    model: object
    epoch: int = 0                       # epochs completed; pass as fit(initial_epoch=...)
    history: dict = field(default_factory=dict)   # metric -> per-epoch values so far
    metadata: dict = field(default_factory=dict)  # whatever the writer put there
    path: Path = None


def write_json(obj, path):
    """Write ``obj`` as indented JSON to ``path`` atomically; returns the path."""
    text = json.dumps(obj, indent=2, default=json_default) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def model_path(path):
    """The file name used for ``path``: ``.npz`` is appended when missing, as ``np.savez`` does."""
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


# ------------------------------------------------------------------------ save
def save_model(model, path, include_optimizer=True, epoch=None, history=None, metadata=None):
    """Write ``model`` to ``path`` (``.npz`` appended if missing); returns the final path.

    ``include_optimizer`` stores the compile settings and the optimizer state
    so training continues exactly where it stopped. ``epoch`` (epochs
    completed), ``history`` (a :class:`~convnet.History` or a dict of lists)
    and ``metadata`` (any JSON-serialisable dict) record training progress,
    which :func:`load_checkpoint` hands back.
    """
    path = model_path(path)
    model._require_built()
    check_loadable(model)
    arrays = {"format": _json_array({"format": FORMAT_NAME, "version": FORMAT_VERSION,
                                     "convnet_version": _convnet_version(),
                                     "weight_names": _weight_names(model)}),
              "model_config": _json_array(model.get_config())}
    for name, param in zip(_weight_names(model), _weights(model)):
        arrays[WEIGHTS_PREFIX + name] = param
    if include_optimizer and model.optimizer is not None:
        arrays["compile_config"] = _json_array(_compile_config(model))
        state = model.optimizer.get_state()
        arrays[OPTIMIZER_PREFIX + "iterations"] = np.asarray(int(state["iterations"]), dtype=np.int64)
        for name, value in state.items():
            if name != "iterations":
                arrays[OPTIMIZER_PREFIX + name] = np.asarray(value)
    if epoch is not None or history is not None or metadata:
        arrays["training"] = _json_array({"epoch": None if epoch is None else int(epoch),
                                          "history": _history_dict(history),
                                          "metadata": metadata or {}})
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:           # a file object: np.savez adds no suffix
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
    return path


def check_loadable(model):
    """Refuse to write a file that :func:`load_model` would refuse to read (see its limits)."""
    nbytes = sum(p.nbytes for p in _weights(model))
    if nbytes > MAX_WEIGHT_BYTES:
        raise ValueError(f"the model's weights take {nbytes:,} bytes; convnet's model files hold at most "
                         f"{MAX_WEIGHT_BYTES:,} (convnet.limits.MAX_WEIGHT_BYTES)")
    if len(model.layers) > MAX_LAYERS:
        raise ValueError(f"the model has {len(model.layers)} layers; model files hold at most {MAX_LAYERS}")
    for layer in model.layers:
        if _prod(layer.output_shape) > MAX_UNITS:
            raise ValueError(f"layer {layer.name!r} outputs {layer.output_shape} per image; model files allow at "
                             f"most {MAX_UNITS:,} values per layer (convnet.limits.MAX_UNITS)")
        window = getattr(layer, "window_size", None)
        if window is not None and \
                _prod(layer.output_shape[:-1]) * _prod(window) * layer.input_shape[-1] > MAX_WINDOW_VALUES:
            raise ValueError(f"layer {layer.name!r}'s windows take more than {MAX_WINDOW_VALUES:,} values per "
                             f"image; model files allow at most that (convnet.saving.MAX_WINDOW_VALUES)")


def _weight_names(model):
    return [f"{layer.name}/{k}" for layer in model.trainable_layers() for k in layer.params]


def _weights(model):
    return [p for layer in model.trainable_layers() for p in layer.params.values()]


def _compile_config(model):
    opt, loss = model.optimizer, model.loss
    return {"optimizer": {"class_name": type(opt).__name__, "config": opt.get_config()},
            "loss": {"class_name": type(loss).__name__, "config": loss.get_config()},
            "metrics": list(model.metrics)}


def _history_dict(history):
    if history is None:
        return {}
    return {k: list(v) for k, v in getattr(history, "history", history).items()}


def _convnet_version():
    from ..version import __version__
    return __version__


def json_default(obj):
    """Let json write numpy scalars and small arrays (e.g. values in a history)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _json_array(obj):
    """JSON text as a uint8 array: storable in an .npz without pickling."""
    return np.frombuffer(json.dumps(obj, default=json_default).encode("utf-8"), dtype=np.uint8)


# ------------------------------------------------------------------------ load
#: What a model file may ask for. Everything read from a file is checked against these
#: limits (and against the sizes the architecture implies) before memory is spent on it,
#: so a hostile file cannot make loading use more than a few hundred MB.
# shared with every other way a model enters (ONNX, importers): see convnet/io/limits.py
from .limits import (MAX_JSON_BYTES, MAX_LAYERS, MAX_TRAINING_JSON_BYTES, MAX_UNITS,  # noqa: E402
                     MAX_WEIGHT_BYTES, MAX_WINDOW_VALUES, LimitError, file_problem, input_shape_problem,
                     layer_shapes)
MAX_DIRECTORY_BYTES = 2 ** 20        # the zip's central directory (about 10,000 entries)
MAX_NPY_HEADER = 4096                # an .npy header (np.save writes 128 bytes)
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def load_model(path, compile=True):
    """Rebuild the model saved at ``path``: architecture, weights and (if stored) compile settings
    with the optimizer state. Raises :class:`ModelFileError` if the file is not a valid model file.

    This reads convnet's own ``.npz`` files; :func:`convnet.load_model` also reads ONNX and Keras
    files (told apart by :func:`other_format`)."""
    return load_checkpoint(path, compile=compile).model


def load_checkpoint(path, compile=True):
    """Like :func:`load_model`, but also return the training progress saved with the model.

    Returns a :class:`Checkpoint` ``(model, epoch, history, metadata, path)``;
    continue with ``model.fit(..., initial_epoch=checkpoint.epoch)``.

    Raises :class:`ModelFileError` (naming the file) for anything wrong in
    the file, ``FileNotFoundError`` if there is none.
    """
    kind = other_format(path)
    if kind is not None:
        raise ModelFileError(f"{path}: is {FORMAT_NAMES[kind]}, not a convnet .npz model; "
                             f"convnet.load_model reads it")
    with _Archive(path) as archive:
        header = archive.header()
        stored = archive.weight_headers(header)        # name -> (shape, dtype), from the .npy headers
        model = build_model(archive.path, archive.json("model_config"), stored)
        _set_weights(archive, model, stored, adopt_dtype=True)
        if compile and archive.has("compile_config"):
            _compile(archive, model, archive.json("compile_config"))
        training = archive.json("training", MAX_TRAINING_JSON_BYTES) if archive.has("training") else {}
    epoch, history, metadata = _training(archive.path, training)
    return Checkpoint(model=model, epoch=epoch, history=history, metadata=metadata, path=archive.path)


#: the first bytes of an HDF5 file (Keras's legacy .h5 format)
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: a .keras file is a zip of config.json with metadata.json and the weights (model.weights.h5), maybe assets
KERAS_ZIP_ENTRIES = ("config.json", "metadata.json", "model.weights.h5")
#: what each format of :func:`other_format` is, for messages
FORMAT_NAMES = {"onnx": "an ONNX file", "keras": "a Keras .keras file (a zip of config.json and model.weights.h5)",
                "h5": "a Keras HDF5 (.h5) file"}


def other_format(path):
    """``"onnx"``, ``"keras"`` or ``"h5"`` for a file of those formats, told by its content; None otherwise."""
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, "rb") as f:
        head = f.read(8)
    if head == HDF5_SIGNATURE:
        return "h5"
    if head.startswith(b"PK"):
        with _Archive(path) as archive:
            return "keras" if archive.is_keras() else None
    # an ONNX file is a protobuf ModelProto, which starts with field 1 (ir_version): the byte 0x08
    if path.suffix.lower() == ".onnx" or head[:1] == b"\x08":
        return "onnx"
    return None


def load_weights(model, path):
    """Copy the weights saved at ``path`` into the existing ``model``.

    Every saved array is checked against the model's parameters (in Keras
    order) before any is copied, so a mismatch leaves ``model`` unchanged.
    """
    with _Archive(path) as archive:
        stored = archive.weight_headers(archive.header())
        _set_weights(archive, model, stored)
    return model


class _Archive:
    """A model file opened for reading: only the entries the format defines are read, each
    after its size (from the zip's directory) has been checked, and never more than that size."""

    def __init__(self, path):
        path = Path(path)
        if not path.exists() and model_path(path).exists():
            path = model_path(path)
        if path.is_dir():
            raise ModelFileError(f"{path}: is a directory, expected a model file (.npz)")
        problem = file_problem(path)
        if problem and problem.endswith("does not exist"):
            raise FileNotFoundError(f"no model file at {path}")
        if problem:                    # a FIFO would block the reader, /dev/zero never ends
            raise ModelFileError(problem)
        self.path = path
        self.file = open(path, "rb")
        try:
            self.zip = self._open_zip()
            self.members = {info.filename[:-4]: info for info in self.zip.infolist()
                            if info.filename.endswith(".npy")}
        except BaseException:
            self.file.close()
            raise

    def _open_zip(self):
        start = self.file.read(6)
        self.file.seek(0)
        if start == b"\x93NUMPY":
            raise ModelFileError(f"{self.path}: holds a single array, not a convnet model archive")
        try:
            # zipfile reads the whole central directory at once (and makes an object per entry):
            # check its size first, from the same end record zipfile will use
            end = zipfile._EndRecData(self.file)
            if end is None:
                raise ModelFileError(f"{self.path}: cannot be read as a convnet model file (not a zip "
                                     f"archive: truncated or another format?)")
            if end[zipfile._ECD_SIZE] > MAX_DIRECTORY_BYTES:
                raise ModelFileError(f"{self.path}: its zip directory is {end[zipfile._ECD_SIZE]:,} bytes, "
                                     f"more than a model file has (at most {MAX_DIRECTORY_BYTES:,})")
            self.file.seek(0)
            return zipfile.ZipFile(self.file)
        except ModelFileError:
            raise
        except _READ_ERRORS as e:
            raise self.error(e) from e

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.zip.close()
        self.file.close()

    def error(self, e):
        return ModelFileError(f"{self.path}: cannot be read as a convnet model file (truncated or corrupt?): "
                              f"{type(e).__name__}: {e}")

    def has(self, key):
        return key in self.members

    def is_keras(self):
        """Whether the zip is a Keras ``.keras`` file rather than a convnet model."""
        names = set(self.zip.namelist())
        config, *others = KERAS_ZIP_ENTRIES
        return "format.npy" not in names and config in names and any(n in names for n in others)

    def read(self, key, limit):
        """The bytes of entry ``key``, at most ``limit`` of them (the directory's size is checked
        first, and the reading stops after ``limit`` bytes whatever the entry's header says)."""
        info = self.members[key]
        if info.file_size > limit:
            raise ModelFileError(f"{self.path}: entry {key!r} is {info.file_size:,} bytes, expected at most "
                                 f"{limit:,}")
        try:
            with self.zip.open(info) as f:
                data = f.read(limit + 1)
        except _READ_ERRORS as e:
            raise self.error(e) from e
        if len(data) != info.file_size:
            raise ModelFileError(f"{self.path}: entry {key!r} holds {len(data):,} bytes, its header says "
                                 f"{info.file_size:,} (corrupt file?)")
        return data

    def npy_header(self, key):
        """``(shape, dtype, offset)`` of the .npy entry ``key``, from its first bytes only."""
        if key not in self.members:
            raise ModelFileError(f"{self.path}: entry {key!r} is missing (truncated or not a convnet model file?)")
        try:
            with self.zip.open(self.members[key]) as f:
                head = io.BytesIO(f.read(MAX_NPY_HEADER))
            version = np.lib.format.read_magic(head)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(head, max_header_size=MAX_NPY_HEADER)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(head, max_header_size=MAX_NPY_HEADER)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except _READ_ERRORS as e:
            raise ModelFileError(f"{self.path}: entry {key!r} is not a readable array: {type(e).__name__}: {e}") \
                from e
        if fortran or dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
            raise ModelFileError(f"{self.path}: entry {key!r} has an unsupported layout ({dtype}, "
                                 f"fortran_order={fortran}); convnet writes plain C-order arrays")
        return tuple(shape), dtype, head.tell()

    def array(self, key, shape, dtypes, what):
        """Entry ``key`` as an array of exactly ``shape`` and one of ``dtypes`` (read-only, native order)."""
        found, dtype, offset = self.npy_header(key)
        if found != tuple(shape):
            raise ModelFileError(f"{self.path}: {what} has shape {found}, expected {tuple(shape)}")
        if dtype.newbyteorder("=") not in dtypes:
            raise ModelFileError(f"{self.path}: {what} has dtype {dtype}, expected "
                                 f"{' or '.join(str(d) for d in dtypes)}")
        count = _prod(found)
        data = self.read(key, offset + count * dtype.itemsize)
        if len(data) != offset + count * dtype.itemsize:
            raise ModelFileError(f"{self.path}: {what} is truncated")
        return np.frombuffer(data, dtype, count, offset).reshape(found)

    def json(self, key, limit=MAX_JSON_BYTES):
        """Entry ``key``: JSON text stored as a 1-D uint8 array."""
        shape, dtype, offset = self.npy_header(key)
        if dtype != np.uint8 or len(shape) != 1:
            raise ModelFileError(f"{self.path}: entry {key!r} should be JSON text stored as uint8 bytes, "
                                 f"got {dtype} {shape}")
        if shape[0] > limit:
            raise ModelFileError(f"{self.path}: entry {key!r} is {shape[0]:,} bytes of JSON, expected at most "
                                 f"{limit:,}")
        text = self.array(key, shape, (np.dtype(np.uint8),), f"entry {key!r}").tobytes()
        try:
            return json.loads(text.decode("utf-8"), parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise ModelFileError(f"{self.path}: entry {key!r} is not valid JSON: {type(e).__name__}: {e}") from e

    def header(self):
        """The ``format`` entry, checked: our format, our version, and the weights' names."""
        header = self.json("format")
        name = header.get("format") if isinstance(header, dict) else None
        version = header.get("version") if isinstance(header, dict) else None
        if name != FORMAT_NAME:
            raise ModelFileError(f"{self.path}: is a {name!r} file, expected format {FORMAT_NAME!r}")
        if version != FORMAT_VERSION or isinstance(version, bool):
            raise ModelFileError(f"{self.path}: has {FORMAT_NAME} version {version!r}; this convnet reads "
                                 f"version {FORMAT_VERSION}")
        return header

    def weight_headers(self, header):
        """``{name: (shape, dtype)}`` of the stored weights in Keras order, from their .npy headers
        (no data read yet); their total size is checked against :data:`MAX_WEIGHT_BYTES`."""
        names = header.get("weight_names")
        if names is None:                           # the entries themselves, in archive order
            names = [k[len(WEIGHTS_PREFIX):] for k in self.members if k.startswith(WEIGHTS_PREFIX)]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(names) > 4 * MAX_LAYERS:
            raise ModelFileError(f"{self.path}: 'weight_names' in the format entry should be a list of at most "
                                 f"{4 * MAX_LAYERS} names")
        missing = [n for n in names if WEIGHTS_PREFIX + n not in self.members]
        if missing:
            raise ModelFileError(f"{self.path}: weights {missing} are listed but missing (truncated file?)")
        stored, total = {}, 0
        for name in names:
            shape, dtype, _ = self.npy_header(WEIGHTS_PREFIX + name)
            total += _prod(shape) * dtype.itemsize
            if total > MAX_WEIGHT_BYTES:
                raise ModelFileError(f"{self.path}: the stored weights take more than {MAX_WEIGHT_BYTES:,} bytes, "
                                     f"the most convnet loads (convnet.limits.MAX_WEIGHT_BYTES)")
            stored[name] = (shape, dtype)
        return stored


#: what reading a damaged zip or .npy can raise (zipfile, zlib, lzma, bz2 and numpy's header parser)
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError, TypeError,
                SyntaxError, RuntimeError, NotImplementedError, OverflowError, MemoryError, RecursionError,
                struct.error, lzma.LZMAError)


def _no_constant(name):
    raise ValueError(f"{name} is not allowed in a model file")


def _prod(shape):
    result = 1
    for d in shape:
        result *= int(d)
    return result


def build_model(path, config, stored):
    """Rebuild the architecture in ``config`` without drawing random weights (they are loaded next).

    The config is checked first (layer classes, argument names, bounded sizes), then every
    layer's output and parameter shapes are worked out without allocating anything and
    compared with the stored arrays; only then is the model built.
    """
    layer_objs = _layers_from_config(path, config)
    input_shape = _input_shape(path, config)
    try:
        model = Sequential(layer_objs, name=config.get("name", "sequential"), seed=config.get("seed"))
        try:
            walked = layer_shapes(model.layers, input_shape)
        except LimitError as e:             # shapes only: nothing was allocated
            raise ModelFileError(f"{path}: {e}") from None
        expected = [(f"{layer.name}/{k}", tuple(s)) for layer, _, _ in walked for k, s in layer.param_shapes().items()]
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError, OverflowError, RecursionError) as e:
        raise ModelFileError(f"{path}: the stored architecture cannot be rebuilt: {type(e).__name__}: {e}") from e
    _check_shapes(path, expected, stored)
    model.build(input_shape, initialize=False)
    return model


def _check_shapes(path, expected, stored):
    """The stored weights (``{name: (shape, dtype)}``) must match ``expected`` ``[(name, shape)]`` in order."""
    if len(stored) != len(expected):
        raise ModelFileError(
            f"{path}: holds {len(stored)} weight arrays ({', '.join(stored)}), but the model has "
            f"{len(expected)} ({', '.join(n for n, _ in expected)}): different architecture")
    for (name, shape), (saved_name, (saved_shape, dtype)) in zip(expected, stored.items()):
        if saved_shape != shape:
            raise ModelFileError(f"{path}: weight {saved_name} has shape {saved_shape}, but the model's "
                                 f"{name} has shape {shape}: different architecture")
        if dtype.newbyteorder("=") not in FLOAT_DTYPES + (np.dtype(np.float16),):
            raise ModelFileError(f"{path}: weight {saved_name} has dtype {dtype}, expected float32 or float64 "
                                 f"(float16 is widened to float32)")


def _input_shape(path, config):
    shape = config.get("input_shape")
    if not isinstance(shape, list) or input_shape_problem(shape):
        raise ModelFileError(f"{path}: input_shape in the stored architecture {input_shape_problem(shape)}")
    return tuple(shape)


def _layers_from_config(path, config):
    """Layer objects (not built) for the stored config, every name and argument checked."""
    from .. import layers as layers_module
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise ModelFileError(f"{path}: the stored architecture should be an object with a list of layers")
    specs = config["layers"]
    if not 1 <= len(specs) <= MAX_LAYERS:
        raise ModelFileError(f"{path}: the stored architecture has {len(specs)} layers, expected 1 to {MAX_LAYERS}")
    name, seed = config.get("name", "sequential"), config.get("seed")
    if not isinstance(name, str) or len(name) > 256:
        raise ModelFileError(f"{path}: the model name should be a string of at most 256 characters")
    if seed is not None and not (isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2 ** 128):
        raise ModelFileError(f"{path}: the model seed should be a non-negative integer or null, got {seed!r}")
    result = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict) or not isinstance(spec.get("config"), dict):
            raise ModelFileError(f"{path}: layer {i} of the stored architecture should be an object with "
                                 f"'class_name' and 'config'")
        class_name, kwargs = spec.get("class_name"), spec["config"]
        cls = layers_module.LAYER_CLASSES.get(class_name) if isinstance(class_name, str) else None
        if cls is None:
            raise ModelFileError(f"{path}: unknown layer class {class_name!r} in the stored architecture; "
                                 f"expected one of {sorted(layers_module.LAYER_CLASSES)}")
        allowed = _arguments(cls) - {"input_shape"}
        unknown = sorted(str(k) for k in kwargs if k not in allowed)
        if unknown:
            raise ModelFileError(f"{path}: layer {i} ({class_name}) has unknown arguments {unknown}")
        layer_name = kwargs.get("name")
        if layer_name is not None and not (isinstance(layer_name, str) and 0 < len(layer_name) <= 256):
            raise ModelFileError(f"{path}: layer {i} ({class_name}) has a bad name {layer_name!r}")
        try:
            result.append(cls(**kwargs))
        except (KeyError, TypeError, ValueError, OverflowError, RecursionError) as e:
            raise ModelFileError(f"{path}: layer {i} ({class_name}) cannot be made from its stored arguments: "
                                 f"{type(e).__name__}: {e}") from e
    return result


def _arguments(cls):
    """The keyword arguments ``cls`` accepts (its own and, through ``**kwargs``, its bases')."""
    names = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return names - {"self"}


def _set_weights(archive, model, stored, adopt_dtype=False):
    """Check that the stored weights fit ``model`` exactly, then copy them in (all or nothing).

    With ``adopt_dtype`` (a freshly rebuilt model) the model takes the stored
    dtype, e.g. float64; otherwise values are cast to the model's dtype.
    float16 weights are widened to float32; other dtypes, NaN and infinity are rejected.
    """
    path = archive.path
    expected = list(zip(_weight_names(model), _weights(model)))
    _check_shapes(path, [(name, p.shape) for name, p in expected], stored)
    values = []
    for (name, param), (saved_name, (shape, dtype)) in zip(expected, stored.items()):
        w = archive.array(WEIGHTS_PREFIX + saved_name, shape, FLOAT_DTYPES + (np.dtype(np.float16),),
                          f"weight {saved_name}")
        if w.dtype.itemsize == 2 or not w.dtype.isnative:
            w = w.astype(np.float32 if w.dtype.itemsize == 2 else w.dtype.newbyteorder("="))
        if not np.isfinite(w).all():
            raise ModelFileError(f"{path}: weight {saved_name} holds NaN or infinite values")
        values.append(w)
    dtypes = {w.dtype for w in values}
    if adopt_dtype and len(dtypes) == 1 and dtypes != {np.dtype(param.dtype) for _, param in expected}:
        model.astype(dtypes.pop())             # e.g. a float64 model saved for a gradient check
    model.set_weights(values)


def _training(path, training):
    """``(epoch, history, metadata)`` from the ``training`` entry, every field checked."""
    if not isinstance(training, dict):
        raise ModelFileError(f"{path}: entry 'training' should be a JSON object, got {type(training).__name__}")
    epoch = training.get("epoch")
    if epoch is None:
        epoch = 0
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch <= 10 ** 6:
        raise ModelFileError(f"{path}: 'epoch' in entry 'training' should be an integer from 0 to 1,000,000, "
                             f"got {epoch!r}")
    history = training.get("history") or {}
    if not isinstance(history, dict) or not all(isinstance(v, list) for v in history.values()):
        raise ModelFileError(f"{path}: 'history' in entry 'training' should map metric names to lists")
    metadata = training.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ModelFileError(f"{path}: 'metadata' in entry 'training' should be a JSON object")
    return epoch, history, metadata


def _compile(archive, model, compile_config):
    """Recreate optimizer and loss from their configs and restore the optimizer state."""
    path = archive.path
    try:
        opt_spec, loss_spec = compile_config["optimizer"], compile_config["loss"]
        opt_cls = _by_class_name(optimizers.OPTIMIZERS.values(), opt_spec["class_name"], "optimizer")
        loss_cls = _by_class_name(losses.LOSSES.values(), loss_spec["class_name"], "loss")
        optimizer = opt_cls(**_numbers(opt_cls, opt_spec["config"]))
        loss = loss_cls(**_numbers(loss_cls, loss_spec["config"]))
        metrics = compile_config.get("metrics", ["accuracy"])
        if not isinstance(metrics, list) or len(metrics) > 8:
            raise ValueError(f"metrics should be a short list, got {metrics!r}")
        model.compile(optimizer, loss, metrics)
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as e:
        raise ModelFileError(f"{path}: the stored compile settings are invalid: {type(e).__name__}: {e}") from e
    state = _optimizer_state(archive, model)
    if state is not None:
        optimizer.set_state(state)


def _numbers(cls, config):
    """``config`` for ``cls(**config)``: known argument names, finite numbers, a positive learning rate."""
    if not isinstance(config, dict):
        raise TypeError(f"{cls.__name__}'s config should be an object, got {type(config).__name__}")
    allowed = _arguments(cls)
    config = dict(config)
    for key, value in config.items():
        if key not in allowed:
            raise ValueError(f"{cls.__name__} has no argument {key!r}")
        if isinstance(value, bool):
            continue
        if key == "learning_rate" and isinstance(value, dict):      # a schedule: checked as it is rebuilt
            config[key] = schedules.deserialize(value)
            continue
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{cls.__name__}'s {key} should be a finite number, got {value!r}")
    if isinstance(config.get("learning_rate"), (int, float)) and not config["learning_rate"] > 0:
        raise ValueError(f"learning_rate should be positive, got {config['learning_rate']!r}")
    return config


def _by_class_name(classes, class_name, what):
    for cls in classes:
        if cls.__name__ == class_name:
            return cls
    raise ValueError(f"unknown {what} class {class_name!r}; expected one of {[c.__name__ for c in classes]}")


def _optimizer_state(archive, model):
    """The stored ``optimizer.get_state()`` dict, checked against the model's parameters.

    Each state array must have its parameter's shape and a float dtype, and there are at
    most three per parameter (Adam keeps two, and ``use_ema`` one more: the average).
    """
    path = archive.path
    keys = [k[len(OPTIMIZER_PREFIX):] for k in archive.members if k.startswith(OPTIMIZER_PREFIX)]
    if not keys:
        return None
    if "iterations" not in keys:
        raise ModelFileError(f"{path}: optimizer state has no 'iterations' entry")
    iterations = archive.array(OPTIMIZER_PREFIX + "iterations", (), (np.dtype(np.int64), np.dtype(np.int32)),
                               "optimizer state 'iterations'")
    if not 0 <= int(iterations) < 2 ** 53:
        raise ModelFileError(f"{path}: optimizer state 'iterations' is {int(iterations)}, expected a step count")
    params = dict(zip(_weight_names(model), _weights(model)))
    state = {"iterations": int(iterations)}
    per_param = {}
    for name in keys:
        if name == "iterations":
            continue
        slot, _, key = name.partition("/")
        if key not in params:
            raise ModelFileError(f"{path}: optimizer state {name!r} is for a parameter the model does not have")
        per_param[key] = per_param.get(key, 0) + 1
        if per_param[key] > 3:
            raise ModelFileError(f"{path}: the optimizer state holds more than three arrays for {key}")
        value = archive.array(OPTIMIZER_PREFIX + name, params[key].shape, FLOAT_DTYPES + (np.dtype(np.float16),),
                              f"optimizer state {name!r}")
        if not np.isfinite(value).all():
            raise ModelFileError(f"{path}: optimizer state {name!r} holds NaN or infinite values")
        state[name] = value.astype(params[key].dtype, copy=False)
    return state
