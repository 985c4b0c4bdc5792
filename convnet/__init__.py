"""convnet: a convolutional neural network library written from scratch in NumPy + numba.

    from convnet import Sequential, layers, losses, optimizers

Two tiers with one contract. The textbook tier states the math in plain
NumPy: :mod:`convnet.layers` (each layer's forward and backward),
:mod:`convnet.activations`, :mod:`convnet.losses`, :mod:`convnet.optimizers`,
:mod:`convnet.model`, with the window helpers in :mod:`convnet.windows` and
plain-loop versions in :mod:`convnet.reference`. The engine tier,
:mod:`convnet.engine`, computes the same things fast (numba kernels, threads,
blocking); it imports the textbook, never the other way. A model hands its
layers to a runner, the textbook's loop or the engine's, and
:func:`set_backend` chooses: ``"engine"`` (the default) or ``"textbook"``
(plain NumPy, numba never loaded); ``"numba"`` and ``"numpy"`` are older
names for the same two.
"""
from . import activations, gradcheck, initializers, layers, losses, optimizers, reference
from .backends import backend, get_backend, set_backend
from .model import History, Sequential
from . import saving  # noqa: F401  (convnet.saving, as before the models moved into convnet.io)
from .io import load_checkpoint, load_model, save_model
from .version import __version__

__all__ = ["Sequential", "History", "load_model", "save_model", "load_checkpoint", "layers", "losses", "optimizers", "activations", "initializers",
           "reference", "gradcheck", "set_backend", "get_backend", "backend"]
