"""How many threads convnet's kernels and matrix products use.

Two thread pools would normally serve a training step: numba's (the
``prange`` loops in :mod:`convnet.kernels`) and the BLAS library's behind
numpy's ``@``. Both keep their idle workers *spinning* for a while after
each parallel region, hoping for more work. At batch 32 every region is
short (tens to hundreds of microseconds), so on a small machine the two
pools mostly fight each other, and any other busy process, for the cores:
on the 2-core development machine a seed-model step took ~280 ms with both
pools at two threads and ~9 ms with one thread each
(``docs/performance.md``).

So inside :meth:`Sequential.train_step`, ``forward`` and ``backward``
(which enter :func:`limited`), convnet holds numba and BLAS at **one
thread** and parallelises only where it pays: the large matrix products of
the convolutions (:func:`matmul`) are cut into row blocks shared between
the calling thread and sleeping helper threads. A helper that cannot get a
core only delays its block; it never burns a core waiting. The previous
pool settings are restored on the way out, so code outside convnet keeps
whatever threads it had.

* ``set_num_threads(n)``: threads sharing a large product (default: 2 on
  a machine with at least 2 cores, else 1); ``1`` is fully serial;
* ``set_num_threads(None)``: convnet does not touch the pools at all
  (numba and BLAS use their own settings; no splitting);
* the environment variable ``CONVNET_NUM_THREADS`` sets the starting value
  (a number, or ``none``).
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np


def _from_environment():
    value = os.environ.get("CONVNET_NUM_THREADS", str(min(2, os.cpu_count() or 1))).strip().lower()
    if value in ("none", ""):
        return None
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"CONVNET_NUM_THREADS={value!r}: expected a positive integer or 'none'") from None
    if n < 1:
        raise ValueError(f"CONVNET_NUM_THREADS={value!r}: expected a positive integer or 'none'")
    return n


_num_threads = _from_environment()
_blas_pools = None          # threadpoolctl controllers of the BLAS libraries, found on first use
_helpers = None             # ThreadPoolExecutor for matmul's extra row blocks, made on first use
#: products smaller than this many flops (2*M*K*N) are not worth a hand-off to a helper thread
MIN_SPLIT_FLOPS = 16e6
_local = threading.local()  # per Python thread: nesting depth of `limited` (train_step -> forward -> ...)


def set_num_threads(n):
    """Threads sharing convnet's large matrix products (numba and BLAS: 1) inside train_step/forward/backward.

    ``None``: convnet leaves numba's and BLAS's thread pools alone and does not split products.
    """
    global _num_threads, _helpers
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"set_num_threads: expected a positive int or None, got {n!r}")
    if _helpers is not None and n != _num_threads:
        _helpers.shutdown(wait=True)
        _helpers = None
    _num_threads = n


def get_num_threads():
    """The count set by :func:`set_num_threads` (``None`` when convnet leaves the pools alone)."""
    return _num_threads


def _blas():
    """BLAS thread-pool controllers (empty if threadpoolctl is missing). Looked up once: it is slow."""
    global _blas_pools
    if _blas_pools is None:
        try:
            from threadpoolctl import ThreadpoolController
            _blas_pools = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
        except Exception:       # no threadpoolctl, or a BLAS it cannot drive: leave BLAS alone
            _blas_pools = []
    return _blas_pools


def matmul(a, b):
    """``a @ b`` for 2-D arrays; inside :func:`limited`, a large product is split by rows over the threads.

    Row block ``r`` of the result is ``a[rows r] @ b``, so the blocks are
    independent: the caller computes the first and each helper thread one
    of the others, all with single-threaded BLAS (numpy releases the GIL
    inside BLAS, so the blocks really run at the same time).
    """
    n = _num_threads
    M, K = a.shape
    F = b.shape[1]
    if (n is None or n == 1 or getattr(_local, "depth", 0) == 0
            or 2.0 * M * K * F < MIN_SPLIT_FLOPS or M < 64 * n):
        return a @ b
    global _helpers
    if _helpers is None:
        _helpers = ThreadPoolExecutor(max_workers=n - 1, thread_name_prefix="convnet-matmul")
    out = np.empty((M, F), dtype=np.result_type(a, b))
    edges = [M * i // n for i in range(n + 1)]
    futures = [_helpers.submit(np.matmul, a[lo:hi], b, out[lo:hi]) for lo, hi in zip(edges[1:-1], edges[2:])]
    np.matmul(a[:edges[1]], b, out[:edges[1]])
    for future in futures:
        future.result()
    return out


class limited:
    """Context manager: numba and BLAS run on one thread inside (if convnet manages threads), as before outside.

    Cheap enough to enter on every batch (a few ctypes calls); nested uses
    cost nothing, only the outermost one changes and restores the pools.
    """

    def __enter__(self):
        depth = _local.depth = getattr(_local, "depth", 0) + 1
        self.active = depth == 1 and _num_threads is not None      # only the outermost one acts
        if self.active:
            self.numba_before = numba.get_num_threads()
            numba.set_num_threads(1)
            self.blas_before = []
            for pool in _blas():
                self.blas_before.append((pool, pool.num_threads))
                pool.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        _local.depth -= 1
        if self.active:
            numba.set_num_threads(self.numba_before)
            for pool, before in self.blas_before:
                pool.set_num_threads(before)
        return False
