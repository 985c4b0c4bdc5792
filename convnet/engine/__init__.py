"""The engine tier: everything in convnet that exists only for speed.

:mod:`convnet.engine.kernels` (numba loops), :mod:`convnet.engine.threads`
(sharing a batch between threads), and faster versions of textbook classes
with the same contract: the layers (:mod:`convnet.engine.layers`), Adam
(:mod:`convnet.engine.optimizers`), a model's training step
(:mod:`convnet.engine.training`) and inference pass
(:mod:`convnet.engine.inference`), and the augmentation
(:mod:`convnet.engine.augment`). :data:`IMPLEMENTATIONS` tells :mod:`convnet.backends`
which textbook class each one stands in for; the backend ``"numba"`` (the
default) uses them, ``"numpy"`` does not.
"""
import convnet.activations
import convnet.augment
import convnet.layers
import convnet.model
import convnet.optimizers

from . import augment, layers, optimizers, training

#: textbook class -> engine class (constructed with the textbook object)
IMPLEMENTATIONS = {
    convnet.layers.Conv2D: layers.Conv2D,
    convnet.layers.MaxPool2D: layers.MaxPool2D,
    convnet.layers.Dropout: layers.Dropout,
    convnet.layers.Dense: layers.Dense,
    convnet.activations.ReLUFunction: layers.ReLU,
    convnet.optimizers.Adam: optimizers.Adam,
    convnet.model.Sequential: training.Sequential,
    convnet.augment.RandomAffine: augment.RandomAffine,
}
