"""Every way a model enters or leaves convnet, one file each.

* :mod:`convnet.io.npz`: convnet's own one-file ``.npz`` models and training
  checkpoints (``convnet.save_model`` / ``convnet.load_model``, which also
  recognises ONNX and Keras files and hands them on);
* :mod:`convnet.io.keras`: Keras models converted both ways (``from_keras`` /
  ``to_keras``), the public face ``convnet.interop``;
* :mod:`convnet.io.onnx`: ONNX export and exact read-back; :mod:`convnet.io.onnx_import`:
  graphs other tools wrote (PyTorch, tf2onnx, Keras's exporter);
* :mod:`convnet.io.limits`: the limits every model file is held to, whatever its format.

The earlier module names (``convnet.saving``, ``convnet.interop``,
``convnet.onnx_io``, ``convnet.onnx_import``, ``convnet.limits``) are the same modules.
"""
from pathlib import Path

from . import npz
from .npz import save_model

__all__ = ["load_model", "save_model", "load_checkpoint"]


def load_model(path, compile=True):
    """The model in the file at ``path``, whatever its format: a convnet ``.npz`` file (architecture,
    weights, compile settings and optimizer state), an ONNX file (:func:`convnet.interop.from_onnx`) or
    a Keras ``.keras``/``.h5`` file (read by Keras with ``safe_mode=True``, then converted by
    :func:`convnet.interop.from_keras`); the format is told from the file's first bytes, not its name.
    ONNX and Keras models come back uncompiled. Raises :class:`~convnet.errors.ModelFileError`
    (naming the file) for anything wrong in it, ``FileNotFoundError`` if there is none."""
    return load_checkpoint(path, compile=compile).model


def load_checkpoint(path, compile=True):
    """Like :func:`load_model`, with the training progress a ``.npz`` checkpoint holds
    (:func:`convnet.io.npz.load_checkpoint`); an ONNX or Keras file gives its model at epoch 0."""
    kind = npz.other_format(path)
    if kind is None:
        return npz.load_checkpoint(path, compile=compile)
    if kind == "onnx":
        from .onnx import from_onnx
        model = from_onnx(path)
    else:
        from .keras import load_file
        model = load_file(Path(path), kind)
    return npz.Checkpoint(model=model, path=Path(path))
