"""How many threads convnet uses, and BLAS held at one thread inside a model-level call.

Both tiers use this (the textbook's loop too), so it imports neither numba
nor the engine. The engine's helper threads (:mod:`convnet.engine.threads`)
read the count from here; :func:`convnet.engine.threads.set_num_threads` is
the public way to change it (it also retires helpers of the old count).

* the environment variable ``CONVNET_NUM_THREADS`` sets the starting value
  (a positive number, or ``none``: convnet leaves BLAS's pool alone and does
  not split work); the default is 2 on a machine with at least 2 cores, else 1.
"""
import os
import threading


def parse(value, source):
    """A thread count from text: a positive integer, or ``none``/empty for None."""
    text = str(value).strip().lower()
    if text in ("none", ""):
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{source}={value!r}: expected a positive integer or 'none'")
    return n


def from_environment():
    return parse(os.environ.get("CONVNET_NUM_THREADS", str(min(2, os.cpu_count() or 1))), "CONVNET_NUM_THREADS")


#: threads sharing convnet's work (None: convnet leaves BLAS alone and splits nothing)
num_threads = from_environment()
_blas_pools = None          # threadpoolctl controllers of the BLAS libraries, found on first use
_local = threading.local()  # per Python thread: nesting depth of `limited` (train_step -> forward -> ...)


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
    """Context manager: BLAS runs on one thread inside (if convnet manages threads), as before outside.

    Many small products are slower on a pool of threads that wait for each
    other; the engine's own threads share the work instead. Cheap enough to
    enter on every batch (a few ctypes calls); nested uses cost nothing,
    only the outermost one changes and restores the pool.
    """

    def __enter__(self):
        depth = _local.depth = getattr(_local, "depth", 0) + 1
        self.active = depth == 1 and num_threads is not None      # only the outermost one acts
        if self.active:
            self.blas_before = []
            for pool in _blas():
                self.blas_before.append((pool, pool.num_threads))
                pool.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        _local.depth -= 1
        if self.active:
            for pool, before in self.blas_before:
                pool.set_num_threads(before)
        return False
