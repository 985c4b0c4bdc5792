"""Gradient checking by central differences (run it in float64).

The analytic gradient from ``backward`` is compared with

    df/dx_i  ~  (f(x + h e_i) - f(x - h e_i)) / (2 h)

and the relative error ``max_i |a_i - n_i| / max(|a_i| + |n_i|, 1e-8)``
(the CS231n definition; :func:`norm_relative_error` is the whole-array
version, robust to entries whose gradient is almost zero). In float64 with h = 1e-5 a correct backward gives
about 1e-8 or less; a wrong one gives something near 1.

To check a single layer, the scalar is ``f = sum(layer.forward(x) * R)``
for a fixed random ``R``, so ``df/d(output) = R`` is what backward receives.
"""
import numpy as np


def relative_error(analytic, numeric):
    """Largest element-wise relative error between two gradient arrays."""
    a, n = np.asarray(analytic, dtype=np.float64), np.asarray(numeric, dtype=np.float64)
    if a.shape != n.shape:
        raise ValueError(f"gradient shapes differ: {a.shape} vs {n.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - n) / np.maximum(np.abs(a) + np.abs(n), 1e-8)))


def norm_relative_error(analytic, numeric):
    """``||a - n|| / max(||a|| + ||n||, 1e-12)``: one number for a whole set of entries.

    Unlike :func:`relative_error` it is not dominated by entries whose true
    gradient is so small (say 1e-9, common in a trained network) that the
    finite difference's round-off noise (~1e-11 in float64) is a large
    fraction of it.
    """
    a, n = np.ravel(np.asarray(analytic, dtype=np.float64)), np.ravel(np.asarray(numeric, dtype=np.float64))
    if a.shape != n.shape:
        raise ValueError(f"gradient shapes differ: {a.shape} vs {n.shape}")
    return float(np.linalg.norm(a - n) / max(np.linalg.norm(a) + np.linalg.norm(n), 1e-12))


def numerical_gradient(f, x, h=1e-5, indices=None):
    """Central-difference gradient of the scalar function ``f()`` w.r.t. the array ``x``.

    ``x`` is perturbed in place (and restored). ``indices`` (flat) limits the
    check to a sample of entries; the others are left as NaN.
    """
    grad = np.full(x.shape, np.nan) if indices is not None else np.zeros(x.shape)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    if flat.base is not x and flat is not x and not np.shares_memory(flat, x):
        raise ValueError("x must be contiguous so it can be perturbed in place")
    for i in (range(flat.size) if indices is None else indices):
        old = flat[i]
        flat[i] = old + h
        fp = f()
        flat[i] = old - h
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * h)
    return grad


def _sample(size, max_entries, rng):
    if max_entries is None or size <= max_entries:
        return None
    return rng.choice(size, size=max_entries, replace=False)


def _compare(analytic, numeric, indices):
    if indices is None:
        return relative_error(analytic, numeric)
    return relative_error(analytic.reshape(-1)[indices], numeric.reshape(-1)[indices])


def check_layer(layer, x, training=False, h=1e-5, seed=0, max_entries=None):
    """Relative errors of a layer's input and parameter gradients.

    Returns ``{"input": err, "kernel": err, "bias": err, ...}``. ``x`` should
    be float64 and the layer cast with ``layer.astype(np.float64)``.
    """
    rng = np.random.default_rng(seed)
    x = np.array(x, dtype=np.float64)
    out = layer.forward(x, training=training)
    R = rng.standard_normal(out.shape)

    def f():
        return float(np.sum(layer.forward(x, training=training) * R))

    layer.forward(x, training=training)
    layer.need_input_grad = True
    dx = layer.backward(R)
    analytic = {"input": dx, **{k: g.copy() for k, g in layer.grads.items()}}
    errors = {}
    idx = _sample(x.size, max_entries, rng)
    errors["input"] = _compare(analytic["input"], numerical_gradient(f, x, h, idx), idx)
    for name, p in layer.params.items():
        idx = _sample(p.size, max_entries, rng)
        errors[name] = _compare(analytic[name], numerical_gradient(f, p, h, idx), idx)
    return errors


def check_model(model, x, y, h=1e-5, seed=0, max_entries=30, training=False):
    """Relative errors of the whole model's gradients of its compiled loss.

    Checks dL/d(input) and every parameter, on a random sample of at most
    ``max_entries`` entries each. With ``training=True`` the dropout layers
    draw one mask which is then held fixed for every evaluation.
    Returns ``{"input": err, "conv2d/kernel": err, ...}``.
    """
    from .layers import Dropout

    rng = np.random.default_rng(seed)
    x = np.array(x, dtype=np.float64)
    dropouts = [l for l in model.layers if isinstance(l, Dropout)]
    if training:
        model.forward(x, training=True)
        for layer in dropouts:
            layer.fixed_mask = layer.mask if layer.mask is not None else np.ones_like(layer.output)
    try:
        def f():
            out = model.forward(x, training=training)
            return model.compute_loss(y, out)[0]

        out = model.forward(x, training=training)
        _, dout, pre = model.compute_loss(y, out)
        dx = model.backward(dout, preactivation=pre, input_grad=True)
        analytic = {"input": dx}
        for key, _, g in model.params_and_grads():
            analytic[key] = g.copy()
        errors = {}
        idx = _sample(x.size, max_entries, rng)
        errors["input"] = _compare(analytic["input"], numerical_gradient(f, x, h, idx), idx)
        for key, p, _ in model.params_and_grads():
            idx = _sample(p.size, max_entries, rng)
            errors[key] = _compare(analytic[key], numerical_gradient(f, p, h, idx), idx)
        return errors
    finally:
        for layer in dropouts:
            layer.fixed_mask = None
