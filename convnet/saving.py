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

Loads are all-or-nothing: the whole archive is read and checked (format,
version, architecture, every shape) before any model is touched, and a
problem raises :class:`ModelFileError` naming the file and what is wrong.

>>> model.save("model.npz")
>>> model = convnet.load_model("model.npz")          # compiled, optimizer state restored
>>> ckpt = load_checkpoint("checkpoint.npz")         # + epochs done and history, to resume
>>> ckpt.model.fit(x, y, epochs=10, initial_epoch=ckpt.epoch, callbacks=[...])
"""
import json
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import losses, optimizers
from .utils import atomic_path

#: What identifies our files; bump the version when the layout changes.
FORMAT_NAME = "convnet-model"
FORMAT_VERSION = 1

WEIGHTS_PREFIX = "weights/"
OPTIMIZER_PREFIX = "optimizer_state/"


class ModelFileError(ValueError):
    """A model file is unreadable, of another format, or does not fit the model."""


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
    text = json.dumps(obj, indent=2, default=_json_default) + "\n"
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
    from . import __version__
    return __version__


def _json_default(obj):
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
    return np.frombuffer(json.dumps(obj, default=_json_default).encode("utf-8"), dtype=np.uint8)


# ------------------------------------------------------------------------ load
def load_model(path, compile=True):
    """Rebuild the model saved at ``path``: architecture, weights and (if stored) compile settings
    with the optimizer state. Raises :class:`ModelFileError` if the file is not a valid model file."""
    return load_checkpoint(path, compile=compile).model


def load_checkpoint(path, compile=True):
    """Like :func:`load_model`, but also return the training progress saved with the model.

    Returns a :class:`Checkpoint` ``(model, epoch, history, metadata, path)``;
    continue with ``model.fit(..., initial_epoch=checkpoint.epoch)``.
    """
    path, arrays = _read_archive(path)
    config = _json_entry(path, arrays, "model_config")
    model = _build_model(path, config)
    _set_weights(path, model, arrays, adopt_dtype=True)
    if compile and "compile_config" in arrays:
        _compile(path, model, _json_entry(path, arrays, "compile_config"), arrays)
    training = _json_entry(path, arrays, "training") if "training" in arrays else {}
    if not isinstance(training, dict):
        raise ModelFileError(f"{path}: entry 'training' should be a JSON object, got {type(training).__name__}")
    epoch = training.get("epoch")
    return Checkpoint(model=model, epoch=int(epoch or 0), history=training.get("history") or {},
                      metadata=training.get("metadata") or {}, path=path)


def load_weights(model, path):
    """Copy the weights saved at ``path`` into the existing ``model``.

    Every saved array is checked against the model's parameters (in Keras
    order) before any is copied, so a mismatch leaves ``model`` unchanged.
    """
    path, arrays = _read_archive(path)
    _set_weights(path, model, arrays)
    return model


def _read_archive(path):
    """Read every array of a model file into memory and check its format header."""
    path = Path(path)
    if not path.exists() and model_path(path).exists():
        path = model_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ModelFileError(f"{path}: holds a single array, not a convnet model archive")
        with archive:
            arrays = {name: archive[name] for name in archive.files}
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as e:
        raise ModelFileError(f"{path}: cannot be read as a convnet model file (truncated or corrupt?): "
                             f"{type(e).__name__}: {e}") from e
    header = _json_entry(path, arrays, "format")
    name = header.get("format") if isinstance(header, dict) else None
    version = header.get("version") if isinstance(header, dict) else None
    if name != FORMAT_NAME:
        raise ModelFileError(f"{path}: is a {name!r} file, expected format {FORMAT_NAME!r}")
    if version != FORMAT_VERSION:
        raise ModelFileError(f"{path}: has {FORMAT_NAME} version {version!r}; this convnet reads "
                             f"version {FORMAT_VERSION}")
    return path, arrays


def _json_entry(path, arrays, key):
    if key not in arrays:
        raise ModelFileError(f"{path}: entry {key!r} is missing (truncated or not a convnet model file?)")
    arr = arrays[key]
    if arr.dtype != np.uint8 or arr.ndim != 1:
        raise ModelFileError(f"{path}: entry {key!r} should be JSON text stored as uint8 bytes, "
                             f"got {arr.dtype} {arr.shape}")
    try:
        return json.loads(arr.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{path}: entry {key!r} is not valid JSON: {e}") from e


def _build_model(path, config):
    from .model import Sequential
    try:
        return Sequential.from_config(config)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{path}: the stored architecture cannot be rebuilt: {type(e).__name__}: {e}") from e


def _set_weights(path, model, arrays, adopt_dtype=False):
    """Check that the stored weights fit ``model`` exactly, then copy them in (all or nothing).

    With ``adopt_dtype`` (a freshly rebuilt model) the model takes the stored
    dtype, e.g. float64; otherwise values are cast to the model's dtype.
    """
    expected = [(name, p) for name, p in zip(_weight_names(model), _weights(model))]
    stored = [k[len(WEIGHTS_PREFIX):] for k in arrays if k.startswith(WEIGHTS_PREFIX)]
    header_names = _json_entry(path, arrays, "format").get("weight_names")
    if header_names is not None:
        missing = [n for n in header_names if n not in stored]
        if missing:
            raise ModelFileError(f"{path}: weights {missing} are listed but missing (truncated file?)")
        stored = list(header_names)
    if len(stored) != len(expected):
        raise ModelFileError(
            f"{path}: holds {len(stored)} weight arrays ({', '.join(stored)}), but the model has "
            f"{len(expected)} ({', '.join(n for n, _ in expected)}): different architecture")
    values = []
    for (name, param), saved_name in zip(expected, stored):
        w = arrays[WEIGHTS_PREFIX + saved_name]
        if w.shape != param.shape:
            raise ModelFileError(f"{path}: weight {saved_name} has shape {w.shape}, but the model's "
                                 f"{name} has shape {param.shape}: different architecture")
        if not np.issubdtype(w.dtype, np.floating):
            raise ModelFileError(f"{path}: weight {saved_name} has dtype {w.dtype}, expected floating point")
        values.append(w)
    dtypes = {w.dtype for w in values}
    if adopt_dtype and len(dtypes) == 1 and dtypes != {np.dtype(param.dtype) for _, param in expected}:
        model.astype(dtypes.pop())             # e.g. a float64 model saved for a gradient check
    model.set_weights(values)


def _compile(path, model, compile_config, arrays):
    """Recreate optimizer and loss from their configs and restore the optimizer state."""
    try:
        opt_spec, loss_spec = compile_config["optimizer"], compile_config["loss"]
        opt_cls = _by_class_name(optimizers.OPTIMIZERS.values(), opt_spec["class_name"], "optimizer")
        loss_cls = _by_class_name(losses.LOSSES.values(), loss_spec["class_name"], "loss")
        optimizer = opt_cls(**opt_spec["config"])
        loss = loss_cls(**loss_spec["config"])
        metrics = compile_config.get("metrics", ["accuracy"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{path}: the stored compile settings are invalid: {type(e).__name__}: {e}") from e
    state = _optimizer_state(path, model, arrays)
    model.compile(optimizer, loss, metrics)
    if state is not None:
        optimizer.set_state(state)


def _by_class_name(classes, class_name, what):
    for cls in classes:
        if cls.__name__ == class_name:
            return cls
    raise ValueError(f"unknown {what} class {class_name!r}; expected one of {[c.__name__ for c in classes]}")


def _optimizer_state(path, model, arrays):
    """The stored ``optimizer.get_state()`` dict, checked against the model's parameters."""
    entries = {k[len(OPTIMIZER_PREFIX):]: v for k, v in arrays.items() if k.startswith(OPTIMIZER_PREFIX)}
    if not entries:
        return None
    if "iterations" not in entries:
        raise ModelFileError(f"{path}: optimizer state has no 'iterations' entry")
    params = dict(zip(_weight_names(model), _weights(model)))
    state = {"iterations": int(entries.pop("iterations"))}
    for name, value in entries.items():
        slot, _, key = name.partition("/")
        if key not in params:
            raise ModelFileError(f"{path}: optimizer state {name!r} is for a parameter the model does not have")
        if value.shape != params[key].shape:
            raise ModelFileError(f"{path}: optimizer state {name!r} has shape {value.shape}, "
                                 f"expected {params[key].shape}")
        state[name] = value.astype(params[key].dtype, copy=False)
    return state
