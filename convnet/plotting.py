"""Pictures of training: learning curves, confusion matrix, mistakes, learned filters.

Every function draws with matplotlib's object-oriented API on an Agg canvas
(no display needed, no global pyplot state), writes the image atomically
(temporary file, then rename) and returns the path. The format follows the
file suffix (``.png``, ``.pdf``, ``.svg``...).
"""
import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine

from .files import atomic_path

__all__ = ["plot_history", "confusion_matrix", "plot_confusion_matrix", "plot_misclassified",
           "plot_filters"]


def save_figure(figure, path, dpi=None, tight=None, fmt=None):
    """Render ``figure`` to ``path`` atomically; returns the path: convnet's one figure saver.

    The format follows the suffix (PNG without one) unless ``fmt`` is given.
    ``dpi``: the figure's own unless given. ``tight`` crops the white margin
    (``bbox_inches="tight"``); by default every figure but one with a
    constrained layout (which has set its own margins) is cropped.
    """
    path = Path(path)
    FigureCanvasAgg(figure)
    fmt = fmt or path.suffix.lstrip(".").lower() or "png"
    dpi = figure.dpi if dpi is None else dpi
    tight = not isinstance(figure.get_layout_engine(), ConstrainedLayoutEngine) if tight is None else tight
    with atomic_path(path, suffix="." + fmt) as tmp:
        figure.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight" if tight else None)
    return path


def as_labels(y):
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
    figure = Figure(figsize=(5.5 * len(panels), 4), dpi=100)
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
    return save_figure(figure, path)


# ---------------------------------------------------------- confusion matrix
def confusion_matrix(y_true, y_pred, num_classes=10):
    """``C[i, j]`` = how many examples of class ``i`` were predicted as ``j`` (int64)."""
    t, p = as_labels(y_true), as_labels(y_pred)
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
    figure = Figure(figsize=(7, 6), dpi=100)
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
    return save_figure(figure, path)


# ------------------------------------------------------------------ grids
def _montage(tiles, columns, gap_x, gap_y):
    """Paste equally sized 2-D ``tiles`` into one array, row by row, NaN between them.

    Returns the canvas and each tile's top-left corner. One ``imshow`` of
    the canvas is far cheaper to draw than one subplot per tile.
    """
    n, h, w = tiles.shape
    rows = max(math.ceil(n / columns), 1)
    canvas = np.full((rows * (h + gap_y), columns * (w + gap_x) + gap_x), np.nan)
    corners = []
    for k in range(n):
        r, c = divmod(k, columns)
        top, left = r * (h + gap_y) + gap_y, c * (w + gap_x) + gap_x
        canvas[top:top + h, left:left + w] = tiles[k]
        corners.append((top, left))
    return canvas, corners


def _grid_axes(figure, canvas, cmap, vmin, vmax):
    """One borderless axes showing ``canvas``; NaN gaps are drawn white."""
    axes = figure.add_axes((0, 0, 1, 1))
    colormap = matplotlib.colormaps[cmap].with_extremes(bad="white")
    image = axes.imshow(canvas, cmap=colormap, vmin=vmin, vmax=vmax, interpolation="nearest")
    axes.set_axis_off()
    return axes, image


# -------------------------------------------------------------- mistakes
def plot_misclassified(x, y_true, y_pred, path, n=36, title="misclassified"):
    """A grid of up to ``n`` misclassified images captioned "pred P / true T"; returns ``path``.

    ``y_pred`` may be labels or probability rows; with probabilities the
    caption also gives the confidence of the (wrong) prediction, and the
    most confident mistakes are shown first.
    """
    images = np.asarray(x, dtype=np.float64)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    t, p = as_labels(y_true), as_labels(y_pred)
    if images.ndim != 3 or not len(images) == len(t) == len(p):
        raise ValueError(f"plot_misclassified: {len(images)} images, {len(t)} labels, {len(p)} predictions "
                         f"(images must be (N, H, W) or (N, H, W, 1), got {np.shape(x)})")
    all_wrong = np.flatnonzero(t != p)
    probs = np.asarray(y_pred) if np.asarray(y_pred).ndim == 2 else None
    wrong = all_wrong
    if probs is not None:
        wrong = wrong[np.argsort(-probs[wrong, p[wrong]], kind="stable")]
    wrong = wrong[:n]
    header = f"{title}: {len(all_wrong)} of {len(t)} wrong" + (
        f", the {len(wrong)} shown" if len(wrong) < len(all_wrong) else "")
    h, w = images.shape[1:]
    columns = max(math.ceil(math.sqrt(len(wrong))), 1)
    gap_y = int(h * (0.75 if probs is not None else 0.5))       # room for the caption above each image
    canvas, corners = _montage(images[wrong], columns, gap_x=w // 4, gap_y=gap_y)
    inches = 1.5 / w                                               # one image is 1.5 inches wide
    figure = Figure(figsize=(canvas.shape[1] * inches, canvas.shape[0] * inches + 0.4), dpi=100)
    axes, _ = _grid_axes(figure, canvas, "gray_r", 0, max(float(images.max(initial=0)), 1e-12))
    for (top, left), i in zip(corners, wrong):
        caption = f"pred {p[i]} / true {t[i]}"
        if probs is not None:
            caption += f"\n{probs[i, p[i]]:.0%} sure"
        axes.text(left + w / 2, top - 1, caption, ha="center", va="bottom", fontsize=8, color="red")
    if not len(wrong):
        axes.text(0.5, 0.5, "no misclassified examples", ha="center", va="center", transform=axes.transAxes)
    figure.suptitle(header, y=1.0, va="bottom")
    return save_figure(figure, path)


# ---------------------------------------------------------------- filters
def plot_filters(kernel, path, title="first-layer filters", max_channels=8):
    """Show a convolution kernel ``(kh, kw, in_channels, filters)`` as small images; returns ``path``.

    With one input channel (MNIST's first layer) the filters form a
    square-ish grid, numbered; otherwise each row is an input channel (up
    to ``max_channels``) and each column a filter. All share one diverging
    colour scale centred on zero (red positive, blue negative), so their
    weights can be compared.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 4:
        raise ValueError(f"plot_filters: expected a conv kernel (kh, kw, in_channels, filters), "
                         f"got shape {kernel.shape}")
    kh, kw, channels, filters = kernel.shape
    limit = float(np.abs(kernel).max()) or 1.0
    shown_channels = min(channels, max_channels)
    # tiles in reading order: (filter f) for one channel, (channel c, filter f) row by row otherwise
    tiles = kernel[:, :, :shown_channels, :].transpose(2, 3, 0, 1).reshape(-1, kh, kw)
    columns = math.ceil(math.sqrt(filters)) if channels == 1 else filters
    gap_y = max(kh // 2, 1) if channels == 1 else max(kh // 4, 1)
    canvas, corners = _montage(tiles, columns, gap_x=max(kw // 4, 1), gap_y=gap_y)
    inches = 0.9 / kw                                              # one filter is 0.9 inches wide
    figure = Figure(figsize=(canvas.shape[1] * inches + 1.0, canvas.shape[0] * inches + 0.4), dpi=100)
    axes, image = _grid_axes(figure, canvas, "RdBu_r", -limit, limit)
    for k, (top, left) in enumerate(corners):
        c, f = divmod(k, filters) if channels > 1 else (0, k)
        if channels == 1:
            axes.text(left + kw / 2 - 0.5, top - 0.6, str(f), ha="center", va="bottom", fontsize=7)
        elif c == 0:
            axes.text(left + kw / 2 - 0.5, top - 0.6, f"f{f}", ha="center", va="bottom", fontsize=7)
        if channels > 1 and f == 0:
            axes.text(left - 1, top + kh / 2 - 0.5, f"in {c}", ha="right", va="center", fontsize=7)
    figure.colorbar(image, ax=axes, shrink=0.8, label="weight", pad=0.02)
    shown = f"{kh}x{kw}, {filters} filters" + (
        f", {shown_channels} of {channels} input channels" if channels > 1 else "")
    figure.suptitle(f"{title} ({shown})", y=1.0, va="bottom")
    return save_figure(figure, path)
