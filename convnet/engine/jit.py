"""What every engine kernel shares: how it is compiled, its index type, its ranges of images.

The engine's loops: each computes what a few lines of the textbook tier
compute (:mod:`convnet.windows`, :mod:`convnet.layers`, :mod:`convnet.rng`,
:mod:`convnet.optimizers`) and the tests hold it to them. This module holds
only array plumbing, no layer logic; ``docs/performance.md`` has the
measurements behind the choices below. Every kernel works on
channels-last (NHWC) arrays. All kernels are compiled with ``cache=True``
(a second run loads the machine code from disk, once per dtype: float32 for
training, float64 for gradient checks) and ``nogil=True``: they release
Python's global interpreter lock, so two threads can run one kernel at the
same time on different images.

**Ranges of images.** Called with their documented arguments, the kernels
allocate their result and process the whole batch. Each one also accepts,
at the end, the output array(s) to write into and a range ``n0 <= n < n1``
along the first (batch) axis (``n1 = -1``: to the end); then it writes only
those images of the given outputs. Images never share an output element, so
two threads running one kernel on two ranges of a batch cannot race, and
every element is computed by the same loop whatever the split: the result
is bit-for-bit that of one call over the whole batch.
:func:`convnet.engine.threads.over_images` does the splitting. Hot code passes the
range even for the whole batch (``0, N``): numba compiles a separate
specialisation when the optional arguments are left out, whose loops did
not vectorise.

Conventions shared by the window kernels:

* ``x``       input batch, shape ``(N, H, W, C)``
* ``kh, kw``  window height and width, ``sh, sw`` strides
* ``pt, pl``  zero (or -inf) padding added at the top and on the left;
  the bottom/right padding is implied by the output size ``(OH, OW)``
* a window position ``(oh, ow)`` covers input rows ``oh*sh - pt + i`` and
  columns ``ow*sw - pl + j`` for ``0 <= i < kh``, ``0 <= j < kw``.

Why the loops look the way they do: in NHWC the ``kw`` pixels of one window
row are ``kw*C`` *consecutive* numbers in memory. So the kernels view an
image as ``(H, W*C)`` and move whole window rows with one unit-stride loop
(which LLVM turns into vector instructions), and keep the channel loop
innermost everywhere else for the same reason. Only windows that touch the
padding take the slower element-by-element path.

**Unsigned indices.** Inner loops index with ``np.uint64`` values (``_u``):
numba lets a signed index be negative (counting from the end), and the check
for that on every access stopped LLVM from vectorising the loops (it emitted
gather instructions instead). An unsigned index cannot be negative; the
values are the same (the same copies and additions in the same order).

The naive loop versions in :mod:`convnet.reference` compute the same things
without any of these tricks and the tests compare the two.
"""
import numpy as np
from numba import njit

_jit = njit(cache=True, nogil=True)
_u = np.uint64      # an index that cannot be negative (see "Unsigned indices" above)


@_jit
def _rows(a):
    """A contiguous ``a`` seen as ``(a.shape[0], everything else)`` (a view when ``a`` is contiguous)."""
    N = a.shape[0]
    return np.ascontiguousarray(a).reshape(N, a.size // N if N > 0 else 0)


@_jit
def _stop(n1, N):
    """End of an image range: ``n1``, or ``N`` when ``n1`` is negative (meaning "to the end")."""
    return N if n1 < 0 else min(n1, N)
