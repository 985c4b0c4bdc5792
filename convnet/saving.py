"""Saving and loading models (one .npz: JSON config, weights, optimizer state)."""


def save_model(model, path, include_optimizer=True):
    raise NotImplementedError("being written")


def load_model(path):
    raise NotImplementedError("being written")
