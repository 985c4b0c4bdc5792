"""How many threads convnet's kernels and matrix products use, and how work is shared between them.

Two thread pools would normally serve a training step: numba's parallel
loops and the BLAS library's behind numpy's ``@``. Both keep their idle
workers *spinning* for a while after each parallel region, hoping for more
work. At batch 32 every region is short (tens to hundreds of
microseconds), so on a small machine the pools mostly fight each other, and
any other busy process, for the cores: on the 2-core development machine a
seed-model step was about 30 times slower with both pools at two threads
than with one thread each (``docs/performance.md``).

So convnet shares the work itself, between the calling thread and a few
*sleeping* helper threads (one on a 2-core machine):

* :func:`over_images` runs a numba kernel (:mod:`convnet.engine.kernels` lists them) on
  ranges of images (the kernels release the GIL, so the ranges really run
  at the same time). Each image is computed by the same loop whatever the
  split, so the result is bit-for-bit that of one serial call.
  :func:`in_parallel` does the same for a Python function of a range, e.g.
  a convolution's "im2col, product, bias" for some images, so that each
  thread runs the whole sequence on its own images with one hand-off.
* :func:`matmul` cuts a large matrix product into row blocks, each an
  ordinary single-threaded BLAS product (numpy releases the GIL in BLAS).
  Row ``r`` of ``a @ b`` only depends on row ``r`` of ``a``; the test suite
  checks that the split result equals the unsplit one.
* :func:`over_elements` shares out one element-wise kernel over several
  arrays at once (Adam's update of every parameter: one hand-off).
* A *sum over the batch* (a convolution's kernel and bias gradients) is
  taken as partial sums over fixed blocks of images
  (:func:`reduction_blocks`) added in block order (:func:`add_in_order`):
  each thread sums whole blocks, so the rounding is the same for any
  number of threads.

Inside a model-level call (``train_step``, ``forward``, ``backward``,
``predict``, ``evaluate``: each enters :func:`limited` once, through its
runner's ``running()``) BLAS is held at **one thread**, and restored on the
way out, so code outside convnet keeps whatever threads it had. A waiting
thread polls for about half a millisecond, yielding its core to any other
process between polls, and then sleeps: a helper that cannot get a core
only delays its block; it never holds a core waiting. Nothing here uses numba's own thread pool (no kernel has a
``prange`` loop).

On a busy machine a helper may not get a core for a whole scheduler time
slice (milliseconds), and a step of several hand-offs then takes longer
on two threads than on one (measured: up to 3x). So when the calling
thread has had to wait for its helpers longer than its own share, and
longer than :data:`LATE_WAIT_SECONDS`, :data:`LATE_SPLITS` times in a row,
the next :data:`SERIAL_CALLS` splits run on the calling thread alone, then
splitting is tried again. The numbers do not change: every result is the
same for any number of threads.

* ``set_num_threads(n)``: threads sharing the work (default: 2 on a
  machine with at least 2 cores, else 1); ``1`` is fully serial;
* ``set_num_threads(None)``: convnet does not touch BLAS's pool and does
  not split anything (kernels run on the calling thread, products with
  BLAS's own threads);
* the environment variable ``CONVNET_NUM_THREADS`` sets the starting value
  (a positive number, or ``none``).
"""
import ctypes
import os
import queue
import threading
import time

import numpy as np
from numba import njit

from .. import cpu


def _parse(value, source):
    return cpu.parse(value, source)


def _from_environment():
    return cpu.from_environment()


_helpers = []               # the running helper threads (started on first use)
_split_lock = threading.Lock()   # one split at a time: helpers serve one caller thread at once
#: products smaller than this many flops (2*M*K*N) are not worth a hand-off to a helper thread
MIN_SPLIT_FLOPS = 16e6
#: kernels whose largest array has fewer elements than this run on the calling thread alone
MIN_SPLIT_ELEMENTS = 50_000


def set_num_threads(n):
    """Threads sharing convnet's kernels and large products (BLAS: 1 inside train_step/forward/backward).

    ``None``: convnet leaves BLAS's thread pool alone and does not split work.
    """
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"set_num_threads: expected a positive int or None, got {n!r}")
    forget_busy_spell()
    if n != cpu.num_threads:
        _stop_helpers()
    cpu.num_threads = n


def get_num_threads():
    """The count set by :func:`set_num_threads` (``None`` when convnet leaves the pools alone)."""
    return cpu.num_threads


# ------------------------------------------------------------ helper threads
#: how many times a waiting thread polls (about 0.5 us each, yielding the core in between)
#: before it goes to sleep: ~0.5 ms, longer than the gap between two hand-offs inside a step
SPIN_ROUNDS = 1000


def _libc_sched_yield():
    """``sched_yield`` from the C library, or None where there is none (then waiting threads only sleep)."""
    try:
        fn = ctypes.CDLL(None).sched_yield
    except (OSError, AttributeError, TypeError):
        return None
    fn.restype, fn.argtypes = ctypes.c_int, ()
    return fn


_sched_yield = _libc_sched_yield()

if _sched_yield is not None:
    @njit(nogil=True)                     # not cached: it calls a C function by address
    def _poll(flag, rounds):
        """Wait without the GIL until ``flag[0] == 1``, for at most ``rounds`` polls; True if it came.

        ``sched_yield`` between polls lets any other runnable process have
        the core, and (an opaque C call) makes the compiler re-read ``flag``.
        """
        for _ in range(rounds):
            if flag[0] == 1:
                return True
            _sched_yield()
        return flag[0] == 1

    @njit(nogil=True)
    def _raise_and_poll(done, posted, rounds):
        """``done[0] = 1`` (after the GIL is released), then :func:`_poll` for ``posted``."""
        done[0] = 1
        return _poll(posted, rounds)
else:
    def _poll(flag, rounds):
        return False

    def _raise_and_poll(done, posted, rounds):
        done[0] = 1
        return False


class _Helper:
    """One worker thread: takes ``(fn, args)`` from its inbox, posts the outcome to its outbox.

    Both queues are ``queue.SimpleQueue`` (implemented in C); they alone
    carry the jobs and outcomes. Waking a *sleeping* thread costs tens of
    microseconds on a virtual machine, as much as a small kernel, so both
    sides first *poll* a flag for a short while (:data:`SPIN_ROUNDS`,
    without the GIL, yielding the core between polls) and only then block
    on the queue: ``posted`` says "a job is in the inbox", ``done`` says
    "the outcome is in the outbox and I have let go of the GIL". The flags
    are only hints: a stale one costs a wasted poll, never a wrong result,
    because the queue ``get`` is what waits for the real item.
    """

    def __init__(self, index):
        self.inbox, self.outbox = queue.SimpleQueue(), queue.SimpleQueue()
        self.posted = np.zeros(1, np.int64)
        self.done = np.zeros(1, np.int64)
        self.thread = threading.Thread(target=self._serve, name=f"convnet-helper-{index}", daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            _raise_and_poll(self.done, self.posted, SPIN_ROUNDS)   # the next job usually comes soon
            job = self.inbox.get()                                 # sleeps if it has not
            self.posted[0] = 0
            if job is None:                       # told to stop
                return
            fn, args = job
            try:
                fn(*args)
                self.outbox.put(None)
            except BaseException as exc:          # handed to the caller, raised there
                self.outbox.put(exc)

    def post(self, fn, args):
        self.done[0] = 0
        self.inbox.put((fn, args))
        self.posted[0] = 1

    def outcome(self):
        _poll(self.done, SPIN_ROUNDS)
        return self.outbox.get()

    def stop(self):
        self.inbox.put(None)
        self.posted[0] = 1


def _stop_helpers():
    global _helpers
    for helper in _helpers:
        helper.stop()
    _helpers = []


def _forget_helpers_after_fork():
    """A forked child has none of its parent's threads: start new helpers when needed."""
    global _helpers, _split_lock
    _helpers = []
    _split_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helpers_after_fork)


def _run_blocks(fn, bounds):
    """``fn(lo, hi)`` for each ``(lo, hi)`` of ``bounds``: the first on this thread, the others on helpers.

    Waits for all of them; an exception in any block is raised here (after
    every block has finished, so no helper still writes into the output).
    """
    while len(_helpers) < len(bounds) - 1:
        _helpers.append(_Helper(len(_helpers)))
    for helper, (lo, hi) in zip(_helpers, bounds[1:]):
        helper.post(fn, (lo, hi))
    error = None
    start = time.perf_counter()
    try:
        fn(*bounds[0])
    except BaseException as exc:
        error = exc
    own = time.perf_counter()
    for helper in _helpers[:len(bounds) - 1]:
        outcome = helper.outcome()
        if outcome is not None and error is None:
            error = outcome
    _note_wait(own - start, time.perf_counter() - own)
    if error is not None:
        raise error


def _split(n_items, parts):
    """``parts`` consecutive ``(lo, hi)`` ranges covering ``0..n_items`` as evenly as possible."""
    edges = [n_items * i // parts for i in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:]))


#: a split after which the calling thread waited for its helpers longer than its own share and longer
#: than this is *late*: a helper did not get a core in time (another process had it)
LATE_WAIT_SECONDS = 1e-3
#: this many late splits in a row ...
LATE_SPLITS = 3
#: ... and the next this many splits run on the calling thread alone (about a second of training)
SERIAL_CALLS = 500
_late = 0                   # late splits in a row
_serial_left = 0            # splits still to run on the calling thread alone


def forget_busy_spell():
    """Split again from the next call on, whatever a busy moment just before decided (see the module docstring)."""
    global _late, _serial_left
    _late = _serial_left = 0


def _note_wait(own, wait):
    """Record one split: the calling thread's share took ``own`` seconds, then it waited ``wait`` for the helpers."""
    global _late, _serial_left
    if wait > max(own, LATE_WAIT_SECONDS):
        _late += 1
        if _late >= LATE_SPLITS:
            _late, _serial_left = 0, SERIAL_CALLS
    else:
        _late = 0


def _parts(n_items):
    """How many threads a split of ``n_items`` should use now (1: do not split)."""
    global _serial_left
    n = cpu.num_threads
    if n is None or n == 1 or n_items < 2:
        return 1
    if _serial_left > 0:            # the machine was busy a moment ago (see the module docstring)
        _serial_left -= 1
        return 1
    return min(n, n_items)


# ---------------------------------------------------------------- public
def in_parallel(fn, n_items, size):
    """Call ``fn(n0, n1)`` on consecutive ranges covering ``0..n_items``, one range per thread.

    ``fn`` must touch only the items ``n0 <= n < n1`` of its outputs (so
    the ranges can run at the same time) and should spend its time in code
    that releases the GIL (the numba kernels, BLAS). ``size`` is a measure
    of the work (elements of the largest array involved): under
    :data:`MIN_SPLIT_ELEMENTS`, or with one thread, or while another Python
    thread is using the helpers, it is a single call ``fn(0, n_items)``.
    """
    parts = _parts(n_items)
    if parts == 1 or size < MIN_SPLIT_ELEMENTS or not _split_lock.acquire(blocking=False):
        fn(0, n_items)
        return
    try:
        _run_blocks(fn, _split(n_items, parts))
    finally:
        _split_lock.release()


#: sums over a batch (a convolution's kernel and bias gradients) are taken as partial sums over
#: this many fixed blocks of images, added in block order (see :func:`reduction_blocks`)
REDUCTION_BLOCKS = 2


def reduction_blocks(n_items):
    """A fixed split of ``0..n_items`` into :data:`REDUCTION_BLOCKS` ranges, for sums over a batch.

    A sum over the images, taken as one partial sum per block and then the
    partial sums added in block order (:func:`add_in_order`), gets the same
    rounding however many threads computed the blocks: each thread takes
    whole blocks (``in_parallel(fn, len(blocks), size)``), and the split
    depends only on ``n_items``.
    """
    return _split(n_items, max(1, min(REDUCTION_BLOCKS, n_items)))


def blocks_within(n0, n1, n_items):
    """The :func:`reduction_blocks` of ``n_items`` inside ``n0..n1`` (a range :func:`over_reduction_blocks` gave)."""
    inside = [(m0, m1) for m0, m1 in reduction_blocks(n_items) if n0 <= m0 and m1 <= n1]
    if sum(m1 - m0 for m0, m1 in inside) != n1 - n0:
        raise ValueError(f"images {n0}..{n1} of {n_items} are not whole reduction blocks")
    return inside


def add_in_order(parts):
    """``parts[0] + parts[1] + ...`` (along the first axis), always in that order."""
    total = parts[0].copy()
    for part in parts[1:]:
        total += part
    return total


def over_images(kernel, n_images, *args):
    """Run ``kernel(*args, n0, n1)`` over image ranges covering ``0..n_images``, shared between threads.

    ``kernel`` is a kernel of :mod:`convnet.engine.kernels`
    and ``args`` its arguments *including the output arrays*: given a range,
    a kernel writes the images ``n0 <= n < n1`` of those outputs and nothing
    else (see the kernels module; for ``add_bias`` the range is one of rows,
    for ``adam_update`` one of flat elements). Small jobs (the largest array
    argument under :data:`MIN_SPLIT_ELEMENTS` elements) run in one call on
    this thread. The results are in the output arrays; nothing is returned.
    """
    largest = max((a.size for a in args if isinstance(a, np.ndarray)), default=0)
    in_parallel(lambda n0, n1: kernel(*args, n0, n1), n_images, largest)


def over_elements(kernel, arrays, *args):
    """``kernel(*arrays[i], *args)`` for every group of arrays, all shared out in one split.

    ``arrays`` is a list of groups of same-sized arrays (e.g. a parameter,
    its gradient and its optimizer slots) and ``kernel`` one that accepts a
    range of *flat elements* ``n0 <= k < n1`` (``adam_update``). The groups
    are laid end to end and the total cut into one range per thread, so the
    threads get equal numbers of elements however the sizes differ, with a
    single hand-off; each element is computed exactly as by the unsplit call.
    """
    starts, total = [], 0
    for group in arrays:
        starts.append(total)
        total += group[0].size

    def elements(e0, e1):
        for group, start in zip(arrays, starts):
            lo, hi = max(e0 - start, 0), min(e1 - start, group[0].size)
            if lo < hi:
                kernel(*group, *args, lo, hi)
    in_parallel(elements, total, total)


#: a product is split by columns only when its inner dimension is at most this long: every
#: column block reads all of ``a``, and with a long inner dimension two half-products took
#: longer than the whole one (conv1's kernel gradient, K = 20,000; docs/performance.md)
MAX_COLUMN_SPLIT_INNER = 4096


#: a product worth sharing is cut into this many blocks whatever the thread count (see :func:`matmul`)
MATMUL_BLOCKS = 2


def _matmul_blocks(M, K, F):
    """The blocks a product ``(M, K) @ (K, F)`` is computed in: ``(bounds, by_rows)``; one block: not cut.

    The cut depends on the shapes alone, never on the thread count or a busy machine.
    """
    by_rows = M >= F * 4                         # rows unless the result is short and wide
    n = M // 64 if by_rows else F // 16
    if (not by_rows and K > MAX_COLUMN_SPLIT_INNER) or n < 2 or 2.0 * M * K * F < MIN_SPLIT_FLOPS:
        return [(0, M if by_rows else F)], by_rows
    return _split(M if by_rows else F, MATMUL_BLOCKS), by_rows


def matmul(a, b):
    """``a @ b`` for 2-D arrays; inside :func:`limited`, a large product is computed in two blocks.

    Row block ``r`` of the result is ``a[rows r] @ b`` and column block
    ``c`` is ``a @ b[:, columns c]``, so the blocks are independent: the
    caller computes the first and a helper thread the other, each with
    single-threaded BLAS (numpy releases the GIL inside BLAS, so the blocks
    really run at the same time); on one thread they run one after the other.
    Products with many rows are cut by rows, those with few rows (a dense
    layer's forward) by columns; at least 64 rows or 16 columns per block, and
    no column cut when the inner dimension is long (:data:`MAX_COLUMN_SPLIT_INNER`).
    The blocks are the same on any thread count because BLAS may round a
    block's entries differently from the same entries of the whole product.
    """
    M, K = a.shape
    F = b.shape[1]
    if cpu.num_threads is None or getattr(cpu._local, "depth", 0) == 0:
        return np.matmul(a, b)
    bounds, by_rows = _matmul_blocks(M, K, F)
    if len(bounds) == 1:
        return np.matmul(a, b)
    out = np.empty((M, F), dtype=np.result_type(a, b))
    if by_rows:
        block = lambda lo, hi: np.matmul(a[lo:hi], b, out[lo:hi])
    else:
        block = lambda lo, hi: np.matmul(a, b[:, lo:hi], out[:, lo:hi])
    if _parts(len(bounds)) < len(bounds) or not _split_lock.acquire(blocking=False):
        for lo, hi in bounds:
            block(lo, hi)
        return out
    try:
        _run_blocks(block, bounds)
    finally:
        _split_lock.release()
    return out


#: BLAS at one thread inside a model-level call (the same for both tiers: :class:`convnet.cpu.limited`)
limited = cpu.limited


def over_reduction_blocks(fn, n_items, size):
    """``fn(n0, n1)`` on ranges of ``0..n_items`` made of whole :func:`reduction_blocks`, one range per thread."""
    blocks = reduction_blocks(n_items)
    in_parallel(lambda j0, j1: fn(blocks[j0][0], blocks[j1 - 1][1]), len(blocks), size)
