"""Reproducible experiments built on convnet; run one with ``python -m experiments.<name>``.

* :mod:`experiments.mnist`: train the seed CNN on MNIST (Keras reference: 99.34% test accuracy).
"""
