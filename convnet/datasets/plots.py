"""Pictures of the data: how many of each digit, and what the digits look like.

The figures are drawn with matplotlib's object-oriented API on an Agg canvas,
so no display is needed, and saved atomically (a temporary file renamed into
place) so an interrupted run never leaves half an image behind.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..plotting import as_labels, save_figure

__all__ = ["plot_label_distribution", "plot_samples"]


def _as_images(x: np.ndarray) -> np.ndarray:
    """(N, H, W) images from (N, H, W) or (N, H, W, 1)."""
    x = np.asarray(x)
    return x[..., 0] if x.ndim == 4 and x.shape[-1] == 1 else x


def plot_label_distribution(
    y: np.ndarray, path: str | os.PathLike, title: str = "MNIST label distribution",
    num_classes: int = 10,
) -> Path:
    """Bar chart of how many examples there are of each digit; returns ``path``.

    ``y`` may be integer labels or one-hot rows.  Each bar carries its count.
    """
    labels = as_labels(y)
    counts = np.bincount(labels, minlength=num_classes)
    figure = Figure(figsize=(8, 4.5), dpi=100)
    axes = figure.add_subplot()
    bars = axes.bar(np.arange(len(counts)), counts, color="tab:blue")
    axes.bar_label(bars, labels=[str(c) for c in counts], padding=2, fontsize=8)
    axes.set_xticks(np.arange(len(counts)))
    axes.set_xlabel("digit")
    axes.set_ylabel("number of examples")
    axes.set_title(f"{title} (n = {len(labels)})")
    axes.margins(y=0.12)
    return save_figure(figure, path)


def plot_samples(
    x: np.ndarray, y: np.ndarray, path: str | os.PathLike, n: int = 25,
    predicted: np.ndarray | None = None, title: str | None = None,
) -> Path:
    """A square-ish grid of the first ``n`` images with their labels; returns ``path``.

    With ``predicted`` each image is captioned "pred/true" and wrong
    predictions are drawn in red.  ``y`` and ``predicted`` may be integer
    labels or one-hot/probability rows.
    """
    images = _as_images(x)[:n]
    truth = as_labels(y)[: len(images)]
    guesses = None if predicted is None else as_labels(predicted)[: len(images)]
    columns = math.ceil(math.sqrt(len(images))) or 1
    rows = math.ceil(len(images) / columns) or 1
    figure = Figure(figsize=(1.4 * columns, 1.6 * rows), dpi=100)
    for i, image in enumerate(images):
        axes = figure.add_subplot(rows, columns, i + 1)
        axes.imshow(image, cmap="gray_r")
        axes.set_xticks([])
        axes.set_yticks([])
        if guesses is None:
            axes.set_title(str(truth[i]), fontsize=10)
        else:
            wrong = guesses[i] != truth[i]
            axes.set_title(f"{guesses[i]}/{truth[i]}", fontsize=10,
                           color="red" if wrong else "black")
    if title or guesses is not None:
        figure.suptitle(title or "predicted/true")
    return save_figure(figure, path)
