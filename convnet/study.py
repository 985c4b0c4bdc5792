"""Look inside backpropagation: per-layer statistics, gradient checks, saliency and pictures.

Every layer keeps ``output`` after a forward pass and ``grad_output``
(dL/d its output, arriving from above) and ``grad_input`` (dL/d its input,
leaving downwards) after a backward pass, plus ``grads`` for its parameters.
The functions here run one batch through a model and summarise those arrays:

* :func:`layer_statistics` -- per layer: output shape, activation mean/std,
  dead ReLUs, gradient norms arriving and leaving, parameter-gradient norms;
* :func:`gradient_check` -- analytic vs central-difference gradients of a
  float64 copy of the model (:func:`convnet.gradcheck.check_model`);
* :func:`saliency_map` -- d(class score)/d(input pixels);
* gradient norms during training: :class:`convnet.callbacks.GradientNorms`,
  the parameter-gradient norms after every batch;
* plots: :func:`plot_feature_maps`, :func:`plot_saliency`,
  :func:`plot_gradient_norms`.

Figures are made without pyplot (no global state, no display needed) and
written atomically by :func:`save_figure`.
"""
import os

import numpy as np

from . import gradcheck, losses
from .activations import ReLUFunction, SoftmaxFunction
from .layers import Conv2D

__all__ = ["layer_statistics", "format_layer_statistics", "copy_model", "gradient_check",
           "format_gradient_check", "saliency_map", "conv_feature_maps",
           "new_figure", "save_figure", "plot_feature_maps", "plot_saliency", "plot_gradient_norms"]


def _norm(a):
    """Euclidean (Frobenius) norm as a Python float, None for a missing array."""
    return None if a is None else float(np.linalg.norm(np.asarray(a, dtype=np.float64)))


# ------------------------------------------------------------------ statistics
def layer_statistics(model, x, y, training=False):
    """Run one forward + backward pass of the model's loss on ``(x, y)``; summarise every layer.

    Returns ``(loss, rows)``; one dict per layer with keys ``name``, ``type``,
    ``output_shape`` (with the batch axis), ``mean``, ``std`` (of the output),
    ``zero_fraction`` and ``dead_fraction`` (ReLU layers only, else None),
    ``grad_in`` (norm of dL/d output arriving from the layer above),
    ``grad_out`` (norm of dL/d input leaving to the layer below) and
    ``param_grads`` ({"kernel": norm, "bias": norm}).

    A unit is *dead* if it is zero for every example in the batch (for a
    conv layer: a channel that is zero at every position of every example).
    For the last layer with a fused softmax + cross-entropy, ``grad_in`` is
    dL/dz for the logits z, since that is what the loss hands it.
    ``training=True`` turns dropout on (one random mask).
    """
    loss_fn = model.loss if model.loss is not None else losses.SparseCategoricalCrossentropy()
    saved, model.loss = model.loss, loss_fn
    try:
        out = model.forward(x, training=training)
        loss, dout, pre = model.compute_loss(y, out)
        model.backward(dout, preactivation=pre, input_grad=True)
    finally:
        model.loss = saved
    rows = []
    for layer in model.layers:
        a = np.asarray(layer.output, dtype=np.float64)
        row = {"name": layer.name, "type": type(layer).__name__, "output_shape": tuple(a.shape),
               "mean": float(a.mean()), "std": float(a.std()), "zero_fraction": None, "dead_fraction": None,
               "grad_in": _norm(layer.grad_output), "grad_out": _norm(layer.grad_input),
               "param_grads": {k: _norm(g) for k, g in layer.grads.items()}}
        if isinstance(layer.activation, ReLUFunction):
            row["zero_fraction"] = float(np.mean(a == 0))
            alive = (a > 0).reshape(-1, a.shape[-1]).any(axis=0)     # per feature/channel
            row["dead_fraction"] = float(1 - alive.mean())
        rows.append(row)
    return float(loss), rows


def format_layer_statistics(rows):
    """A fixed-width text table of :func:`layer_statistics` rows."""
    head = (f"{'layer':<28}{'output shape':<18}{'mean':>8}{'std':>8}{'zeros':>7}{'dead':>6}"
            f"{'|dL/dout|':>11}{'|dL/din|':>11}  parameter-gradient norms")
    lines = [head, "-" * len(head)]
    for r in rows:
        zeros = "" if r["zero_fraction"] is None else f"{r['zero_fraction']:.0%}"
        dead = "" if r["dead_fraction"] is None else f"{r['dead_fraction']:.0%}"
        gout = "-" if r["grad_out"] is None else f"{r['grad_out']:.3e}"
        params = "  ".join(f"{k} {v:.3e}" for k, v in r["param_grads"].items())
        lines.append(f"{r['name'] + ' (' + r['type'] + ')':<28}{str(r['output_shape']):<18}"
                     f"{r['mean']:>8.4f}{r['std']:>8.4f}{zeros:>7}{dead:>6}{r['grad_in']:>11.3e}{gout:>11}"
                     f"  {params}".rstrip())
    return "\n".join(lines)


# -------------------------------------------------------------- gradient check
def copy_model(model, dtype=np.float64):
    """An independent copy of ``model`` (same architecture and weights) with parameters in ``dtype``."""
    clone = model.clone(dtype)
    clone.compile(optimizer="sgd", loss=model.loss if model.loss is not None else
                  "sparse_categorical_crossentropy", metrics=[])
    return clone


def gradient_check(model, x, y, max_entries=10, seed=0, h=1e-5, jitter_zero_biases=False):
    """Analytic vs numerical gradient for a random sample of entries of the input and every parameter.

    Works on a float64 copy of the model (the model itself is untouched),
    dropout off. For each sampled entry ``i`` of an array ``w``:
    ``numeric = (L(w + h e_i) - L(w - h e_i)) / (2h)``, compared with the
    analytic gradient from ``backward`` by
    :func:`convnet.gradcheck.relative_error`.

    An entry whose perturbation flips a ReLU on/off or moves a max-pool
    winner sits on a kink, where the derivative does not exist (typical of
    an untrained model: zero biases over blank image regions put
    pre-activations exactly at 0); such entries are counted in ``kinks``
    and left out of the error. With ``jitter_zero_biases=True``, bias
    arrays that are exactly zero are replaced *in the copy* by small random
    values (uniform in +-0.01), which moves those pre-activations off the
    kink so the biases of an untrained model can be checked too.

    Returns ``{"input" | "layer/param": {"error": max relative error,
    "norm_error": relative error of the sampled entries as one vector,
    "checked": entries compared, "kinks": entries skipped}}``. An error of
    about 1e-7 or less means backward is right. On a well-trained model many
    gradient entries are tiny (the loss is nearly 0), and the finite
    difference's round-off (~1e-11) makes the element-wise ``error`` of
    such an entry large although backward is right: read ``norm_error``.
    """
    clone = copy_model(model, np.float64)
    rng = np.random.default_rng(seed)
    if jitter_zero_biases:
        for layer in clone.layers:
            bias = layer.params.get("bias")
            if bias is not None and not np.any(bias):
                bias[...] = rng.uniform(-0.01, 0.01, size=bias.shape)
    return gradcheck.check_model(clone, x, y, h=h, seed=seed, max_entries=max_entries, kinks=True)


def format_gradient_check(results):
    """Text table of :func:`gradient_check` results."""
    lines = [f"{'gradient':<20}{'rel. error':>12}{'worst entry':>13}{'checked':>9}{'at kink':>9}",
             "-" * 63]

    def fmt(value):
        return "n/a" if np.isnan(value) else f"{value:.2e}"

    for key, r in results.items():
        lines.append(f"{key:<20}{fmt(r['norm_error']):>12}{fmt(r['error']):>13}{r['checked']:>9}{r['kinks']:>9}")
    lines.append("(rel. error: ||a - n|| / (||a|| + ||n||) over the checked entries; worst entry: the largest "
                 "|a - n| / (|a| + |n|), inflated by round-off where a gradient is nearly 0)")
    return "\n".join(lines)


# ------------------------------------------------------------------ saliency
def saliency_map(model, x, target=None, through="logit"):
    """Gradient of a class score with respect to the input pixels, shape ``x.shape``.

    ``target``: class per example (default: the predicted class).
    ``through="logit"`` differentiates the score before the softmax
    (start backward with a one-hot at the pre-activation, ``preactivation=True``);
    ``through="probability"`` differentiates the softmax output itself
    (the one-hot goes through the softmax Jacobian first). Dropout is off.
    """
    if through not in ("logit", "probability"):
        raise ValueError(f"through must be 'logit' or 'probability', got {through!r}")
    out = model.forward(x, training=False)
    target = out.argmax(axis=1) if target is None else np.broadcast_to(np.asarray(target), (len(out),))
    onehot = np.zeros_like(out)
    onehot[np.arange(len(out)), target] = 1
    # d(score_c)/dx for each example c: seed backward with e_c, sum over the batch is harmless
    # because example n's score depends only on example n's input.
    pre = through == "logit" and isinstance(model.layers[-1].activation, SoftmaxFunction)
    return model.backward(onehot, preactivation=pre, input_grad=True)


# ---------------------------------------------------------- gradient records
def conv_feature_maps(model, image):
    """``[(layer name, (H, W, F) output)]`` of every Conv2D layer for one ``(H, W, C)`` image."""
    model.forward(np.asarray(image, dtype=model.layers[0].dtype)[None], training=False)
    return [(layer.name, layer.output[0]) for layer in model.layers if isinstance(layer, Conv2D)]


# -------------------------------------------------------------------- figures
def new_figure(nrows=1, ncols=1, figsize=None, **subplot_kw):
    """A matplotlib Figure and its axes, made without pyplot (no display, no global state)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained", dpi=110)
    return fig, fig.subplots(nrows, ncols, **subplot_kw)


def save_figure(fig, path, dpi=None):
    """Write ``fig`` to ``path`` as PNG atomically with :func:`convnet.plotting.save_figure` (the one saver;
    a figure of :func:`new_figure` keeps its own margins); returns the path as a string."""
    from .plotting import save_figure as save

    return os.fspath(save(fig, path, dpi=dpi, fmt="png"))


def _hide_ticks(ax):
    ax.set_xticks([])
    ax.set_yticks([])


def plot_feature_maps(model, image, path, columns=8):
    """PNG: the input digit, then every channel of every Conv2D layer's output (after ReLU)."""
    maps = conv_feature_maps(model, image)
    if not maps:
        raise ValueError("the model has no Conv2D layer")
    rows_per_layer = [int(np.ceil(m.shape[-1] / columns)) for _, m in maps]
    nrows = 1 + sum(rows_per_layer)
    fig, axes = new_figure(nrows, columns, figsize=(1.3 * columns, 1.35 * nrows))
    for ax in axes.ravel():
        ax.set_axis_off()
    axes[0, 0].imshow(np.asarray(image)[..., 0], cmap="gray")
    axes[0, 0].set_title("input", fontsize=8)
    row = 1
    for (name, m), nr in zip(maps, rows_per_layer):
        for f in range(m.shape[-1]):
            ax = axes[row + f // columns, f % columns]
            ax.imshow(m[..., f], cmap="viridis")
            ax.set_title(f"{name}[{f}]", fontsize=6)
        row += nr
    fig.suptitle("feature maps (ReLU outputs) of the conv layers")
    return save_figure(fig, path)


def plot_saliency(images, saliency, labels, predicted, path):
    """PNG: each input digit above its saliency ``|d score / d pixel|``."""
    n = len(images)
    fig, axes = new_figure(2, n, figsize=(1.5 * n, 3.4))
    axes = np.asarray(axes).reshape(2, n)
    for i in range(n):
        axes[0, i].imshow(np.asarray(images[i])[..., 0], cmap="gray")
        axes[0, i].set_title(f"label {labels[i]}, pred {predicted[i]}", fontsize=7)
        s = np.abs(np.asarray(saliency[i])).max(axis=-1)
        axes[1, i].imshow(s, cmap="hot")
        _hide_ticks(axes[0, i])
        _hide_ticks(axes[1, i])
    axes[1, 0].set_ylabel("|d logit / d x|", fontsize=8)
    fig.suptitle("saliency: gradient of the predicted class's logit w.r.t. the pixels")
    return save_figure(fig, path)


def plot_gradient_norms(norms, path, xlabel="step", title="parameter-gradient norms during training"):
    """PNG: one line per ``"layer/param"`` (log scale) from ``{key: [norm per step or epoch]}``."""
    fig, ax = new_figure(figsize=(8, 4.5))
    for key, values in norms.items():
        v = np.asarray(values, dtype=np.float64)
        ax.plot(np.arange(1, len(v) + 1), v, label=key, linestyle="-" if key.endswith("kernel") else "--")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("||dL/dparam||")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)
