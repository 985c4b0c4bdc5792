"""How many threads convnet's kernels and matrix products use.

Two thread pools serve a training step: numba's (the ``prange`` loops in
:mod:`convnet.kernels`) and the BLAS library's behind numpy's ``@``. Both
keep their idle workers spinning for a while after each parallel region,
hoping for more work. At batch 32 every region is short (tens to hundreds
of microseconds), so on a small machine the two pools mostly fight each
other, and any other busy process, for the cores: on the 2-core
development machine a seed-model step took ~280 ms with both pools at two
threads and ~9 ms with one thread each (``docs/performance.md``).

So convnet runs its own work on **one thread by default**, and only there:
:meth:`Sequential.train_step`, ``forward`` and ``backward`` enter
:func:`limited`, which sets both pools to :func:`get_num_threads` threads
and restores the previous settings on the way out. Code outside convnet
keeps whatever threads it had.

* ``set_num_threads(n)`` picks another count (e.g. 2 on an otherwise idle
  machine with large batches; measure first);
* ``set_num_threads(None)`` stops convnet from touching the pools at all;
* the environment variable ``CONVNET_NUM_THREADS`` sets the starting value
  (a number, or ``none``).
"""
import os
import threading

import numba

def _from_environment():
    value = os.environ.get("CONVNET_NUM_THREADS", "1").strip().lower()
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
_local = threading.local()  # per Python thread: nesting depth of `limited` (train_step -> forward -> ...)


def set_num_threads(n):
    """Threads for numba kernels and BLAS inside convnet's forward/backward/train_step (``None``: don't limit)."""
    global _num_threads
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"set_num_threads: expected a positive int or None, got {n!r}")
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


class limited:
    """Context manager: numba and BLAS run on :func:`get_num_threads` threads inside, as before outside.

    Cheap enough to enter on every batch (a few ctypes calls); nested uses
    cost nothing, only the outermost one changes and restores the pools.
    """

    def __enter__(self):
        depth = _local.depth = getattr(_local, "depth", 0) + 1
        self.active = depth == 1 and _num_threads is not None      # only the outermost one acts
        if self.active:
            n = _num_threads
            self.numba_before = numba.get_num_threads()
            numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
            self.blas_before = []
            for pool in _blas():
                self.blas_before.append((pool, pool.num_threads))
                pool.set_num_threads(n)
        return self

    def __exit__(self, *exc):
        _local.depth -= 1
        if self.active:
            numba.set_num_threads(self.numba_before)
            for pool, before in self.blas_before:
                pool.set_num_threads(before)
        return False
