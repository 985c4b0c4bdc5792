"""Pictures of training: learning curves, confusion matrix, mistakes, learned filters.

Every function draws with matplotlib's object-oriented API on an Agg canvas
(no display needed, no global pyplot state), writes the image atomically
(temporary file, then rename) and returns the path. The format follows the
file suffix (``.png``, ``.pdf``, ``.svg``...).
"""
import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .saving import atomic_path

__all__ = ["plot_history", "confusion_matrix", "plot_confusion_matrix", "plot_misclassified",
           "plot_filters"]


def _save(figure, path, dpi=100):
    """Render ``figure`` to ``path`` atomically; returns the path."""
    path = Path(path)
    FigureCanvasAgg(figure)
    fmt = path.suffix.lstrip(".").lower() or "png"
    with atomic_path(path, suffix="." + fmt) as tmp:
        figure.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
    return path


def _labels(y):
    """Integer labels from labels or one-hot/probability rows."""
    y = np.asarray(y)
    return y.argmax(axis=1) if y.ndim == 2 else y.astype(np.int64)


# ------------------------------------------------------------ learning curves
def plot_history(history, path, title=None, validation_label="validation"):
    """Loss and accuracy per epoch, training next to validation; returns ``path``.

    ``history``: a :class:`~convnet.History` or its ``history`` dict
    (``loss``, ``accuracy`` and optionally ``val_loss``, ``val_accuracy``).
    The training values are ``fit``'s running means (dropout on);
    ``validation_label`` names the ``val_*`` curves (e.g. "test").
    """
    history = getattr(history, "history", history)
    if not history.get("loss"):
        raise ValueError("plot_history: the history has no 'loss' values (train for at least one epoch)")
    panels = [(name, label) for name, label in (("loss", "loss"), ("accuracy", "accuracy"))
              if history.get(name)]
    figure = Figure(figsize=(5.5 * len(panels), 4))
    for i, (name, label) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), i + 1)
        epochs = np.arange(1, len(history[name]) + 1)
        axes.plot(epochs, history[name], "o-", label="training (running mean, dropout on)")
        val = history.get("val_" + name)
        if val:
            axes.plot(np.arange(1, len(val) + 1), val, "s-", label=validation_label)
        axes.set_xlabel("epoch")
        axes.set_ylabel(label)
        axes.set_xticks(epochs if len(epochs) <= 20 else np.linspace(1, len(epochs), 10, dtype=int))
        axes.grid(alpha=0.3)
        axes.legend()
    if title:
        figure.suptitle(title)
    return _save(figure, path)


# ---------------------------------------------------------- confusion matrix
def confusion_matrix(y_true, y_pred, num_classes=10):
    """``C[i, j]`` = how many examples of class ``i`` were predicted as ``j`` (int64)."""
    t, p = _labels(y_true), _labels(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"confusion_matrix: {len(t)} true labels but {len(p)} predictions")
    bad = (t < 0) | (t >= num_classes) | (p < 0) | (p >= num_classes)
    if bad.any():
        raise ValueError(f"confusion_matrix: labels must lie in [0, {num_classes})")
    # each (true, predicted) pair is one cell of a flattened num_classes^2 table
    return np.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def plot_confusion_matrix(y_true, y_pred, path, num_classes=10, title="confusion matrix"):
    """Counts of true (rows) vs predicted (columns) classes, each cell written in; returns ``path``.

    The colour scale leaves out the diagonal so the few mistakes stand out
    next to the thousands of correct answers.
    """
    cm = confusion_matrix(y_true, y_pred, num_classes)
    off_diagonal = cm * (1 - np.eye(num_classes, dtype=cm.dtype))
    figure = Figure(figsize=(7, 6))
    axes = figure.add_subplot()
    vmax = max(int(off_diagonal.max()), 1)
    image = axes.imshow(off_diagonal, cmap="Reds", vmin=0, vmax=vmax)
    figure.colorbar(image, ax=axes, label="errors (off-diagonal counts)")
    for i in range(num_classes):
        for j in range(num_classes):
            if cm[i, j]:
                dark = off_diagonal[i, j] > 0.6 * vmax
                axes.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                          fontweight="bold" if i == j else "normal", color="white" if dark else "black")
    ticks = np.arange(num_classes)
    axes.set_xticks(ticks)
    axes.set_yticks(ticks)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    accuracy = np.trace(cm) / max(cm.sum(), 1)
    axes.set_title(f"{title}\naccuracy {accuracy:.2%}: {cm.sum() - np.trace(cm)} errors in {cm.sum()}")
    return _save(figure, path)


# -------------------------------------------------------------- mistakes
def plot_misclassified(x, y_true, y_pred, path, n=36, title="misclassified"):
    """A grid of up to ``n`` misclassified images captioned "pred P / true T"; returns ``path``.

    ``y_pred`` may be labels or probability rows; with probabilities the
    caption also gives the confidence of the (wrong) prediction, and the
    most confident mistakes are shown first.
    """
    images = np.asarray(x)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    t, p = _labels(y_true), _labels(y_pred)
    if not len(images) == len(t) == len(p):
        raise ValueError(f"plot_misclassified: {len(images)} images, {len(t)} labels, {len(p)} predictions")
    wrong = np.flatnonzero(t != p)
    probs = np.asarray(y_pred) if np.asarray(y_pred).ndim == 2 else None
    if probs is not None:
        wrong = wrong[np.argsort(-probs[wrong, p[wrong]], kind="stable")]
    wrong = wrong[:n]
    columns = max(math.ceil(math.sqrt(len(wrong))), 1)
    rows = max(math.ceil(len(wrong) / columns), 1)
    figure = Figure(figsize=(1.5 * columns + 0.5, 1.7 * rows + 0.6))
    for k, i in enumerate(wrong):
        axes = figure.add_subplot(rows, columns, k + 1)
        axes.imshow(images[i], cmap="gray_r")
        axes.set_xticks([])
        axes.set_yticks([])
        caption = f"pred {p[i]} / true {t[i]}"
        if probs is not None:
            caption += f"\n{probs[i, p[i]]:.0%} sure"
        axes.set_title(caption, fontsize=8, color="red")
    if not len(wrong):
        axes = figure.add_subplot()
        axes.axis("off")
        axes.text(0.5, 0.5, "no misclassified examples", ha="center", va="center")
    figure.suptitle(f"{title}: {len(np.flatnonzero(t != p))} of {len(t)} wrong"
                    + (f", first {len(wrong)} shown" if len(wrong) < np.sum(t != p) else ""))
    return _save(figure, path)


# ---------------------------------------------------------------- filters
def plot_filters(kernel, path, title="first-layer filters", max_channels=8):
    """Show a convolution kernel ``(kh, kw, in_channels, filters)`` as small images; returns ``path``.

    With one input channel (MNIST's first layer) the filters form a
    square-ish grid; otherwise each row is an input channel (up to
    ``max_channels``) and each column a filter. All panels share one
    diverging colour scale centred on zero (red positive, blue negative),
    so their weights can be compared.
    """
    kernel = np.asarray(kernel)
    if kernel.ndim != 4:
        raise ValueError(f"plot_filters: expected a conv kernel (kh, kw, in_channels, filters), "
                         f"got shape {kernel.shape}")
    kh, kw, channels, filters = kernel.shape
    limit = float(np.abs(kernel).max()) or 1.0
    if channels == 1:
        columns = math.ceil(math.sqrt(filters))
        rows = math.ceil(filters / columns)
        cells = [(f, 0, f) for f in range(filters)]           # (panel index, channel, filter)
    else:
        rows, columns = min(channels, max_channels), filters
        cells = [(c * filters + f, c, f) for c in range(rows) for f in range(filters)]
    figure = Figure(figsize=(1.1 * columns + 1.2, 1.1 * rows + 0.6))
    image = None
    for panel, c, f in cells:
        axes = figure.add_subplot(rows, columns, panel + 1)
        image = axes.imshow(kernel[:, :, c, f], cmap="RdBu_r", vmin=-limit, vmax=limit,
                            interpolation="nearest")
        axes.set_xticks([])
        axes.set_yticks([])
        if channels == 1 or c == 0:
            axes.set_title(str(f), fontsize=7)
    figure.colorbar(image, ax=figure.axes, shrink=0.8, label="weight")
    shown = f"{kh}x{kw}, {filters} filters" + (f", {rows} of {channels} input channels" if channels > 1 else "")
    figure.suptitle(f"{title} ({shown})")
    return _save(figure, path)
