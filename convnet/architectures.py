"""Ready-made architectures.

:func:`mnist_cnn` is the project's reference model: the Keras MNIST CNN that
reaches 99.34% test accuracy (150,858 parameters)::

    input 28x28x1 -> Conv2D(32, 4x4, relu) 25x25x32 -> MaxPool2D(2) 12x12x32 -> Dropout
    -> Conv2D(32, 4x4, relu) 9x9x32 -> MaxPool2D(2) 4x4x32 -> Dropout -> Flatten 512
    -> Dense(256, relu) -> Dropout -> Dense(10, softmax)
"""
from . import layers
from .model import Sequential


def mnist_cnn(seed=0, dropout=(0.25, 0.25, 0.5)):
    """The reference MNIST CNN, weights (and dropout masks) drawn from ``seed``.

    ``dropout``: the rates of its three Dropout layers.
    """
    d1, d2, d3 = dropout
    return Sequential([
        layers.Conv2D(32, 4, activation="relu"), layers.MaxPool2D(2), layers.Dropout(d1),
        layers.Conv2D(32, 4, activation="relu"), layers.MaxPool2D(2), layers.Dropout(d2),
        layers.Flatten(), layers.Dense(256, activation="relu"), layers.Dropout(d3),
        layers.Dense(10, activation="softmax"),
    ], input_shape=(28, 28, 1), seed=seed)
