"""How a figure is measured: first call, warm-up, calibrated repeats, median and spread.

For one table row the columns (convnet, numpy, TensorFlow, ...) are timed
*in turn*: repeat 1 of every column, then repeat 2 of every column, and so
on. On a machine whose load changes during the run, each column then sees
the same conditions, and their ratio stays meaningful even if the absolute
times drift.

A repeat runs the operation ``number`` times back to back (chosen so that a
repeat lasts at least ``min_repeat_s``; fast kernels need many calls to rise
above the timer's resolution) and records the mean time per call. The
figure reported is the median over repeats; the spread is the interquartile
range and the extremes. The garbage collector is off during a repeat, as in
:mod:`timeit`.
"""
import gc
import math
import statistics
import time


class Timed:
    """One column of one row: the callable and everything measured about it."""

    def __init__(self, fn, warmup=None, scale=1.0, number=None):
        self.fn = fn                          # the operation, called with no argument
        self.warmup = warmup or fn            # what to call before timing (compiles, traces)
        self.scale = float(scale)             # multiply per-call times (e.g. steps -> epoch)
        self.fixed_number = number            # calls per repeat; None: calibrate
        self.first_call_s = None              # first call: numba compile / TF tracing included
        self.warmup_s = None
        self.number = number or 1
        self.times_s = []                     # per-call time of each repeat, scaled

    def prepare(self, min_repeat_s, warmup_calls=2, max_number=10_000):
        """First call (timed alone), more warm-up calls, then calibrate ``number``."""
        start = time.perf_counter()
        self.warmup()
        self.first_call_s = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(warmup_calls):
            self.warmup()
        self.warmup_s = time.perf_counter() - start
        if self.fixed_number:                 # long operations (an epoch): no calibration run
            return
        if self.warmup is self.fn and warmup_calls:
            per_call = self.warmup_s / warmup_calls
        else:
            per_call = self._time_once(1)
        self.number = max(1, min(max_number, math.ceil(min_repeat_s / max(per_call, 1e-9))))

    def _time_once(self, number):
        fn = self.fn
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            start = time.perf_counter()
            for _ in range(number):
                fn()
            return (time.perf_counter() - start) / number
        finally:
            if gc_was_enabled:
                gc.enable()

    def repeat(self):
        self.times_s.append(self._time_once(self.number) * self.scale)

    def summary(self):
        """JSON-ready figures: median, quartiles, extremes, every repeat."""
        times = sorted(self.times_s)
        return {
            "median_s": statistics.median(times),
            "p25_s": quantile(times, 0.25),
            "p75_s": quantile(times, 0.75),
            "min_s": times[0],
            "max_s": times[-1],
            "repeats": len(times),
            "calls_per_repeat": self.number,
            "scale": self.scale,
            "first_call_s": self.first_call_s,
            "warmup_s": self.warmup_s,
            "times_s": list(self.times_s),
        }


def quantile(sorted_values, q):
    """Linear-interpolation quantile of an already sorted, non-empty list."""
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def prepare_all(columns, min_repeat_s, warmup_calls=2):
    """First call and warm-up of every column (``columns``: name -> :class:`Timed`)."""
    for timed in columns.values():
        timed.prepare(min_repeat_s, warmup_calls)


def repeat_all(columns, repeats, settle_s=0.0):
    """``repeats`` rounds, one repeat of every column per round; returns the summaries.

    Before each repeat the process sleeps ``settle_s`` (untimed): worker
    threads that one library leaves spinning after its work (OpenMP, BLAS,
    TensorFlow's pool) go to sleep, instead of taking cores from the next
    library's repeat.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for _ in range(repeats):
        for timed in columns.values():
            if settle_s:
                time.sleep(settle_s)
            timed.repeat()
    return {name: timed.summary() for name, timed in columns.items()}
