"""Gradient checking by central differences (run it in float64).

The analytic gradient from ``backward`` is compared with

    df/dx_i  ~  (f(x + h e_i) - f(x - h e_i)) / (2 h)

and the relative error ``max_i |a_i - n_i| / max(|a_i| + |n_i|, 1e-8)``
(the CS231n definition; :func:`norm_relative_error` is the whole-array
version, robust to entries whose gradient is almost zero). In float64 with h = 1e-5 a correct backward gives
about 1e-8 or less; a wrong one gives something near 1.

To check a single layer, the scalar is ``f = sum(layer.forward(x) * R)`` (the layer run on the tier in use)
for a fixed random ``R``, so ``df/d(output) = R`` is what backward receives.
"""
import numpy as np

from . import backends


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
    gflat = grad.reshape(-1)
    for i, f_plus, f_minus, _, _ in _perturbed(f, x, range(x.size) if indices is None else indices, h):
        gflat[i] = (f_plus - f_minus) / (2 * h)
    return grad


def _perturbed(f, x, indices, h, observe=None):
    """For each flat index ``i``: ``(i, f(x + h e_i), f(x - h e_i), observed +, observed -)``.

    ``x`` is perturbed in place and restored before each tuple is yielded;
    ``observe()`` (if given) is called right after each ``f()``.
    """
    flat = x.reshape(-1)
    if not np.shares_memory(flat, x):
        raise ValueError("the array must be contiguous so it can be perturbed in place")
    for i in indices:
        old = flat[i]
        flat[i] = old + h
        f_plus, seen_plus = f(), observe() if observe is not None else None
        flat[i] = old - h
        f_minus, seen_minus = f(), observe() if observe is not None else None
        flat[i] = old
        yield i, f_plus, f_minus, seen_plus, seen_minus


def _sample(size, max_entries, rng):
    if max_entries is None or size <= max_entries:
        return np.arange(size)
    return rng.choice(size, size=max_entries, replace=False)


def switches(model, x):
    """The discrete choices of ``model``'s last forward pass on ``x``: which ReLUs are on, which pixel won each max-pool window.

    Inside a region where none of these changes, the network is a smooth
    (piecewise-linear) function, so central differences are exact up to
    rounding; across a change (a *kink*) the derivative does not exist.
    """
    from .activations import ReLUFunction
    from .layers import MaxPool2D
    from .windows import im2col

    found, below = [], x
    for layer in model.layers:
        if isinstance(layer, MaxPool2D):                     # recomputed from the layer's input: any backend
            windows = im2col(np.asarray(below), layer.window, fill=-np.inf)
            found.append(windows.reshape(len(windows), -1, below.shape[3]).argmax(axis=1))
        if isinstance(layer.activation, ReLUFunction):
            found.append(layer.output > 0)
        below = layer.output
    return found


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))


def _check_entries(f, array, analytic, indices, h, state=None):
    """Central differences of ``f`` at the flat ``indices`` of ``array``, compared with ``analytic``.

    With ``state`` (a function returning the forward pass's discrete
    choices, see :func:`switches`), an entry whose perturbation changes them
    sits on a kink and is counted in ``kinks`` instead of compared.
    Returns ``{"error", "norm_error", "checked", "kinks"}``.
    """
    grad = np.asarray(analytic).reshape(-1)
    if state is not None:
        f()
        base = state()
    analytic_values, numeric_values, kinks = [], [], 0
    for i, f_plus, f_minus, state_plus, state_minus in _perturbed(f, array, indices, h, state):
        if state is not None and not (_same(state_plus, base) and _same(state_minus, base)):
            kinks += 1
            continue
        analytic_values.append(grad[i])
        numeric_values.append((f_plus - f_minus) / (2 * h))
    if not analytic_values:
        return {"error": float("nan"), "norm_error": float("nan"), "checked": 0, "kinks": kinks}
    return {"error": relative_error(analytic_values, numeric_values),
            "norm_error": norm_relative_error(analytic_values, numeric_values),
            "checked": len(analytic_values), "kinks": kinks}


def check_layer(layer, x, training=False, h=1e-5, seed=0, max_entries=None):
    """Relative errors of a layer's input and parameter gradients.

    Returns ``{"input": err, "kernel": err, "bias": err, ...}`` (the largest
    element-wise relative error of each). ``x`` is cast to float64; cast the
    layer with ``layer.astype(np.float64)``.
    """
    run = backends.runner([layer])                             # the layer on the tier in use
    rng = np.random.default_rng(seed)
    x = np.array(x, dtype=np.float64)                 # a float64 copy we may perturb in place
    out = run.forward(x, training=training)
    R = rng.standard_normal(out.shape)

    def f():
        return float(np.sum(run.forward(x, training=training) * R))

    run.forward(x, training=training)
    targets = [("input", x, run.backward(R, input_grad=True))] + [(k, layer.params[k], g.copy()) for k, g in layer.grads.items()]
    return {key: _check_entries(f, array, grad, _sample(array.size, max_entries, rng), h)["error"]
            for key, array, grad in targets}


def check_model(model, x, y, h=1e-5, seed=0, max_entries=30, training=False, kinks=False):
    """Relative errors of the whole model's gradients of its compiled loss.

    Checks dL/d(input) and every parameter, on a random sample of at most
    ``max_entries`` entries each (``None``: all). With ``training=True`` the
    dropout layers draw one mask which is then held fixed for every
    evaluation. Returns ``{"input": err, "conv2d/kernel": err, ...}``.

    ``kinks=True`` leaves out entries whose perturbation flips a ReLU or
    moves a max-pool winner (see :func:`switches`) and returns, per key,
    ``{"error", "norm_error", "checked", "kinks"}`` instead of the error alone.
    """
    from .layers import Dropout

    rng = np.random.default_rng(seed)
    x = np.array(x, dtype=np.float64)                 # a float64 copy we may perturb in place
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
        targets = [("input", x, dx)] + [(key, p, g.copy()) for key, p, g in model.params_and_grads()]
        state = (lambda: switches(model, x)) if kinks else None
        results = {key: _check_entries(f, array, grad, _sample(array.size, max_entries, rng), h, state)
                   for key, array, grad in targets}
        return results if kinks else {key: r["error"] for key, r in results.items()}
    finally:
        for layer in dropouts:
            layer.fixed_mask = None
