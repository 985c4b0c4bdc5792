"""convnet: a convolutional neural network library written from scratch in NumPy + numba.

    from convnet import Sequential, layers, losses, optimizers

Read :mod:`convnet.layers` for each layer's forward and backward math,
:mod:`convnet.kernels` for the numba kernels (im2col, col2im, max-pool) and
:mod:`convnet.reference` for plain-loop versions of the same computations.
"""
from . import activations, gradcheck, initializers, kernels, layers, losses, optimizers, reference
from .model import History, Sequential
from .saving import load_model

__version__ = "0.1.0"

__all__ = ["Sequential", "History", "load_model", "layers", "losses", "optimizers", "activations", "initializers",
           "kernels", "reference", "gradcheck"]
