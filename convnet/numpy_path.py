"""Pure-NumPy versions of the kernels in :mod:`convnet.kernels` (no numba).

Each function here has exactly the signature and the result of its namesake
in :mod:`convnet.kernels`, but is written with whole-array NumPy operations
instead of compiled loops. They exist for two reasons:

* to show what the kernels compute in a third way (after the plain loops of
  :mod:`convnet.reference` and the numba loops of :mod:`convnet.kernels`);
* to measure what the numba kernels gain: :func:`use_numpy_kernels` swaps
  them into the layers, so a whole model trains on the NumPy path
  (``python -m benchmarks`` reports this as the "numpy" column).

The vectorisation idea for im2col / col2im: instead of looping over output
positions, loop over the ``kh * kw`` offsets ``(i, j)`` inside a window. For
a fixed offset, the pixels seen by *all* windows form one strided slice of
the (padded) image, ``xp[:, i : i + sh*OH : sh, j : j + sw*OW : sw, :]``, so
each offset is a single array copy (im2col) or a single array addition
(col2im). Max-pooling uses ``sliding_window_view`` to see every window at
once and ``argmax`` over the window axis; its backward scatters with
``np.bincount``, which sums the contributions of overlapping windows. The
element-wise kernels (bias, ReLU, dropout, the Adam update) are the one-line NumPy
expressions that the numba versions fuse into single passes.

All functions are channels-last (NHWC); the conventions (``kh, kw, sh, sw,
pt, pl, OH, OW``) are those described at the top of :mod:`convnet.kernels`.
Like the kernels, each also accepts its output array(s) and a range of
images ``n0 <= n < n1`` at the end (what :func:`convnet.threads.over_images`
passes): it then computes those images only, into the given outputs.
"""
import contextlib
import sys

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import kernels     # for its constants only (the dropout generator's); no kernel is called


def _pad_for_windows(x, kh, kw, sh, sw, pt, pl, OH, OW, value):
    """Pad ``x`` so that all ``OH x OW`` windows lie inside the array.

    Top/left padding is given (``pt``, ``pl``); bottom/right padding is what
    the last window needs: it ends at row ``(OH-1)*sh - pt + kh`` (exclusive).
    """
    N, H, W, C = x.shape
    pb = max(0, (OH - 1) * sh + kh - pt - H)
    pr = max(0, (OW - 1) * sw + kw - pl - W)
    if pt == pb == pl == pr == 0:
        return x
    return np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=value)


def _images(n0, n1, N):
    """The slice ``n0:n1`` of the batch axis (``n1 < 0``: to the end)."""
    return slice(n0, N if n1 < 0 else min(n1, N))


def im2col_into(x, kh, kw, sh, sw, pt, pl, OH, OW, cols, n0=0, n1=-1):
    """:func:`im2col` writing into the given ``(N*OH*OW, kh*kw*C)`` buffer ``cols``; returns it.

    With a range, only the rows of images ``n0 <= n < n1`` are written.
    """
    part = _images(n0, n1, len(x))
    if (part.start, part.stop) != (0, len(x)):
        rows = OH * OW
        im2col_into(x[part], kh, kw, sh, sw, pt, pl, OH, OW, cols[part.start * rows:part.stop * rows])
        return cols
    N, H, W, C = x.shape
    xp = _pad_for_windows(x, kh, kw, sh, sw, pt, pl, OH, OW, 0)
    c6 = cols.reshape(N, OH, OW, kh, kw, C)            # a view: writing c6 writes cols
    for i in range(kh):
        for j in range(kw):
            # offset (i, j) of every window at once: one strided slice
            c6[:, :, :, i, j, :] = xp[:, i:i + sh * OH:sh, j:j + sw * OW:sw, :][:, :OH, :OW]
    return cols


def im2col(x, kh, kw, sh, sw, pt, pl, OH, OW):
    """Unfold every ``kh x kw`` window of ``x`` into one row of a matrix.

    Returns ``cols`` of shape ``(N*OH*OW, kh*kw*C)``, rows in ``(n, oh, ow)``
    order, each row in ``(i, j, c)`` order (like ``kernel.reshape(-1, F)``);
    padding positions are zero. Same result as :func:`convnet.kernels.im2col`.
    """
    N, H, W, C = x.shape
    cols = np.empty((N * OH * OW, kh * kw * C), dtype=x.dtype)
    return im2col_into(x, kh, kw, sh, sw, pt, pl, OH, OW, cols)


def col2im(dcols, N, H, W, C, kh, kw, sh, sw, pt, pl, OH, OW, dx=None, n0=0, n1=-1):
    """Adjoint of :func:`im2col`: add every window row back onto its pixels.

    ``dx[n, h, w, c]`` is the sum of the ``dcols`` entries that were copied
    from pixel ``(h, w, c)``; padding positions are dropped. Returns an
    ``(N, H, W, C)`` array, the same as :func:`convnet.kernels.col2im`
    (given ``dx`` and a range: images ``n0..n1`` of ``dx`` are overwritten).
    """
    if dx is not None:
        part, rows = _images(n0, n1, N), OH * OW
        dx[part] = col2im(dcols[part.start * rows:part.stop * rows], part.stop - part.start, H, W, C,
                          kh, kw, sh, sw, pt, pl, OH, OW)
        return dx
    d6 = dcols.reshape(N, OH, OW, kh, kw, C)
    Hp = max(H + pt, (OH - 1) * sh + kh)
    Wp = max(W + pl, (OW - 1) * sw + kw)
    dxp = np.zeros((N, Hp, Wp, C), dtype=dcols.dtype)
    for i in range(kh):
        for j in range(kw):
            # within one offset the windows touch distinct pixels, so "+=" on
            # the strided slice never adds two values into one place at once
            dxp[:, i:i + sh * (OH - 1) + 1:sh, j:j + sw * (OW - 1) + 1:sw, :] += d6[:, :, :, i, j, :]
    return np.ascontiguousarray(dxp[:, pt:pt + H, pl:pl + W, :])


def maxpool_forward(x, kh, kw, sh, sw, pt, pl, OH, OW, out=None, argmax=None, n0=0, n1=-1):
    """Max over each window and the flat index ``h*W + w`` of its first maximum.

    Returns ``(out, argmax)`` like :func:`convnet.kernels.maxpool_forward`:
    ``out`` (N, OH, OW, C) in ``x``'s dtype and ``argmax`` (int32, same
    shape). ``np.argmax`` returns the first maximum in row-by-row scan order,
    the tie rule of the kernel and of TensorFlow, and treats NaN as the
    maximum (the first NaN wins), as the kernel does. Padding is ``-inf``.
    """
    if out is not None or argmax is not None:
        part = _images(n0, n1, len(x))
        o, a = maxpool_forward(x[part], kh, kw, sh, sw, pt, pl, OH, OW)
        if out is None:
            out = np.empty((len(x), OH, OW, x.shape[3]), x.dtype)
        if argmax is None:
            argmax = np.empty((len(x), OH, OW, x.shape[3]), np.int32)
        out[part], argmax[part] = o, a
        return out, argmax
    N, H, W, C = x.shape
    xp = _pad_for_windows(x, kh, kw, sh, sw, pt, pl, OH, OW, -np.inf)
    # windows[n, oh, ow, c] is the kh x kw window, flattened row by row
    windows = sliding_window_view(xp, (kh, kw), axis=(1, 2))[:, ::sh, ::sw][:, :OH, :OW]
    windows = windows.reshape(N, OH, OW, C, kh * kw)
    k = windows.argmax(axis=-1)                                  # (N, OH, OW, C), first max
    out = np.take_along_axis(windows, k[..., None], axis=-1)[..., 0].astype(x.dtype, copy=False)
    # position of the winner in the unpadded image
    i, j = np.divmod(k, kw)
    h = np.arange(OH).reshape(1, OH, 1, 1) * sh - pt + i
    w = np.arange(OW).reshape(1, 1, OW, 1) * sw - pl + j
    return out, (h * W + w).astype(np.int32)


def maxpool_backward(dout, argmax, H, W, dx=None, n0=0, n1=-1):
    """Send each window's gradient to the pixel that won its max.

    ``dx[n, h, w, c]`` is the sum of ``dout[n, oh, ow, c]`` over the windows
    whose ``argmax`` is ``h*W + w`` (several, if windows overlap); zero
    elsewhere. Same result as :func:`convnet.kernels.maxpool_backward`.
    """
    if dx is not None:
        part = _images(n0, n1, len(dout))
        dx[part] = maxpool_backward(dout[part], argmax[part], H, W)
        return dx
    N, OH, OW, C = dout.shape
    n = np.arange(N).reshape(N, 1, 1, 1)
    c = np.arange(C).reshape(1, 1, 1, C)
    # flat index of (n, pixel, c) in an (N, H*W, C) array; bincount sums repeats
    target = (n * (H * W) + argmax.astype(np.int64)) * C + c
    dx = np.bincount(target.ravel(), weights=dout.ravel(), minlength=N * H * W * C)
    return dx.astype(dout.dtype, copy=False).reshape(N, H, W, C)


# ---------------------------------------------------------- element-wise
# The kernels module also fuses a few element-wise passes into single loops;
# here they are the plain NumPy expressions those loops replace.

def add_bias(z, b, n0=0, n1=-1):
    """``z[r, f] += b[f]`` in place (broadcasting along the rows ``n0 <= r < n1``); returns ``z``."""
    z[_images(n0, n1, len(z))] += b
    return z


def sum_rows(z):
    """``z.sum(axis=0)`` (a bias gradient)."""
    return z.sum(axis=0)


def relu_forward(z, y=None, n0=0, n1=-1):
    """``y = max(z, 0)`` as a new array (or into ``y``, rows ``n0..n1``)."""
    if y is None:
        return np.maximum(z, z.dtype.type(0))
    part = _images(n0, n1, len(z))
    np.maximum(z[part], z.dtype.type(0), out=y[part])
    return y


def relu_backward(dout, y, dz=None, n0=0, n1=-1):
    """``dL/dz = dL/dy * [y > 0]``, from the ReLU's output ``y`` (into ``dz``, rows ``n0..n1``, if given)."""
    if dz is None:
        return np.where(y > 0, dout, dout.dtype.type(0))
    part = _images(n0, n1, len(dout))
    dz[part] = np.where(y[part] > 0, dout[part], dout.dtype.type(0))
    return dz


def _splitmix64(z):
    """SplitMix64's output function on a uint64 array (wrapping arithmetic, as in the kernel)."""
    z = (z ^ (z >> np.uint64(30))) * kernels._MIX1
    z = (z ^ (z >> np.uint64(27))) * kernels._MIX2
    return z ^ (z >> np.uint64(31))


def dropout_forward(x, key, threshold, scale, y=None, mask=None, n0=0, n1=-1):
    """Inverted dropout: element ``e`` is kept when the top 24 bits of
    ``splitmix64(key + (e + 1) * GOLDEN)`` are ``>= threshold``; ``mask = scale * kept``,
    ``y = x * mask``; returns ``(y, mask)``. Given ``y`` and ``mask``, rows ``n0..n1`` are written.
    """
    N = len(x)
    lo, hi = (0, N) if y is None or mask is None else _images(n0, n1, N).indices(N)[:2]
    per_image = x[0].size if N else 0
    e = np.arange(lo * per_image, hi * per_image, dtype=np.uint64)
    r = _splitmix64(np.uint64(key) + (e + np.uint64(1)) * kernels._GOLDEN) >> np.uint64(64 - kernels.DROPOUT_BITS)
    kept = (r >= np.uint64(threshold)).reshape((hi - lo,) + x.shape[1:])
    m = kept.astype(x.dtype) * x.dtype.type(scale)
    if y is None or mask is None:
        return x * m, m
    mask[lo:hi] = m
    y[lo:hi] = x[lo:hi] * m
    return y, mask


def adam_update(param, grad, m, v, b1, b2, lr_t, eps, n0=0, n1=-1):
    """One Adam step, in place: ``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g^2``,
    ``param -= lr_t m / (sqrt(v) + eps)``; with a range, only the flat elements ``n0..n1``."""
    if (n0, n1) not in ((0, -1), (0, param.size)):
        part = _images(n0, n1, param.size)
        flat = [a.reshape(-1)[part] for a in (param, grad, m, v)]    # views: updated in place
        adam_update(*flat, b1, b2, lr_t, eps)
        return
    one = param.dtype.type(1)
    m *= b1
    m += (one - b1) * grad
    v *= b2
    v += (one - b2) * np.square(grad)
    param -= lr_t * m / (np.sqrt(v) + eps)


#: kernel name in :mod:`convnet.kernels` -> its NumPy replacement
NUMPY_KERNELS = {
    "im2col": im2col,
    "im2col_into": im2col_into,
    "col2im": col2im,
    "maxpool_forward": maxpool_forward,
    "maxpool_backward": maxpool_backward,
    "add_bias": add_bias,
    "sum_rows": sum_rows,
    "relu_forward": relu_forward,
    "relu_backward": relu_backward,
    "dropout_forward": dropout_forward,
    "adam_update": adam_update,
}


def compiled_kernels():
    """The public numba-compiled functions of :mod:`convnet.kernels`, by name.

    A "compiled kernel" is any public attribute whose type comes from numba
    (``@njit`` dispatchers, ``@vectorize`` ufuncs, ...). Private helpers
    (leading underscore) are only called from inside other kernels, which
    are replaced whole, so they need no NumPy version.
    """
    found = {}
    for name, obj in vars(kernels).items():
        if name.startswith("_") or not callable(obj):
            continue
        if type(obj).__module__.split(".")[0] == "numba":
            found[name] = obj
    return found


@contextlib.contextmanager
def use_numpy_kernels():
    """Run the layers on the NumPy path for the duration of a ``with`` block.

    >>> with use_numpy_kernels():
    ...     model.fit(x, y, epochs=1)          # no numba kernel is called

    Every public compiled kernel of :mod:`convnet.kernels` is replaced by
    its NumPy version, both as an attribute of :mod:`convnet.kernels` (how
    the layers call them: ``kernels.im2col(...)``) and wherever a
    ``convnet`` module imported one by name (``from .kernels import im2col``).
    If the kernels module gains a compiled kernel that has no NumPy version
    here, this raises ``NotImplementedError`` naming it rather than quietly
    mixing numba and NumPy code. The originals are restored on exit, even on
    error. Not thread-safe: it patches module attributes for the whole
    process.
    """
    compiled = compiled_kernels()
    missing = sorted(set(compiled) - set(NUMPY_KERNELS))
    if missing:
        raise NotImplementedError(
            f"convnet.kernels has compiled kernel(s) {missing} with no NumPy version in "
            f"convnet.numpy_path (which covers {sorted(NUMPY_KERNELS)}); add one before timing the NumPy path")
    # id -> (original, replacement): match by identity, never by name
    by_id = {id(fn): (fn, NUMPY_KERNELS[name]) for name, fn in compiled.items()}
    modules = [m for name, m in list(sys.modules.items())
               if m is not None and (name == "convnet" or name.startswith("convnet."))]
    patched = []                                   # (module, attribute, original)
    try:
        for module in modules:
            for attr, value in list(vars(module).items()):
                entry = by_id.get(id(value))
                if entry is not None and entry[0] is value:
                    patched.append((module, attr, value))
                    setattr(module, attr, entry[1])
        yield
    finally:
        for module, attr, value in reversed(patched):
            setattr(module, attr, value)
