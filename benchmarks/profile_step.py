"""Where does one training step go? A layer-by-layer profile of ``train_step``.

    python -m benchmarks.profile_step [--batch 32] [--steps 200] [--dtype float32]

Builds the seed model (the Keras MNIST CNN), compiles it with Adam and the
sparse cross-entropy, warms up (numba compilation, buffer allocation) and
then times ``Sequential.train_step`` two ways:

1. plain, with nothing in the way: the median milliseconds per step, which
   is the number to compare with other frameworks;
2. instrumented: every layer's ``forward`` and ``backward``, the loss and
   the optimizer update are wrapped in a timer for the duration of the run,
   so the table shows where each millisecond of a step goes (median over
   the steps, per phase). The wrappers sit around the very methods
   ``train_step`` calls, so the profile follows the real code path. (The
   engine runs the conv, pooling and dropout layers of a *run* in one pass
   per thread before their own calls: see :mod:`convnet.engine.training`;
   the run has a phase of its own, and those layers' phases show only the
   hand-over.)

It also prints which BLAS kernel ran, the BLAS / numba thread pools as
they are outside a step, and convnet's own setting (:mod:`convnet.engine.threads`,
which shares the kernels and the large products between its own threads
and holds BLAS at one thread inside a step), because on a small machine
thread contention can cost more than the maths. ``--threads N`` sets
convnet's thread count for the run (``none``: leave the pools alone).
"""
import argparse
import os
import sys
import time
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.cli import bounded_int  # noqa: E402
from convnet.architectures import mnist_cnn  # noqa: E402


def batches(batch, steps, seed=0):
    """``steps`` batches of MNIST training images if cached, else uniform noise of the same shape."""
    rng = np.random.default_rng(seed)
    try:
        from convnet.datasets import load_mnist, preprocess
        (x, y), _ = load_mnist(verbose=False) if _accepts_verbose(load_mnist) else load_mnist()
        x = preprocess(x)
        source = "MNIST"
    except Exception as exc:  # no data: the timing does not depend on pixel values much
        x = rng.random((batch * 64, 28, 28, 1), dtype=np.float32)
        y = rng.integers(0, 10, len(x))
        source = f"random noise ({type(exc).__name__})"
    idx = rng.permutation(len(x))
    out = []
    for s in range(steps):
        take = idx[(s * batch) % (len(x) - batch):][:batch]
        out.append((np.ascontiguousarray(x[take]), y[take]))
    return out, source


def _accepts_verbose(fn):
    import inspect
    try:
        return "verbose" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def thread_report():
    """One line per thread pool: BLAS library, kernel architecture, threads; numba's layer and threads."""
    lines = []
    try:
        from threadpoolctl import threadpool_info
        for pool in threadpool_info():
            lines.append(f"{pool.get('internal_api')} {pool.get('version')} kernel={pool.get('architecture')} "
                         f"threads={pool.get('num_threads')}")
    except ImportError:
        lines.append("threadpoolctl not installed: BLAS threads unknown")
    import numba
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "(not started)"
    lines.append(f"numba {numba.__version__} threading_layer={layer} threads={numba.get_num_threads()}")
    from convnet.engine import threads
    lines.append(f"convnet.engine.threads: {threads.get_num_threads()} thread(s) share the kernels and the conv "
                 f"layers' work (by images); BLAS held at 1 inside a step; numba's pool unused"
                 if threads.get_num_threads() is not None
                 else "convnet.engine.threads: None (kernels on the calling thread, BLAS pool left as above)")
    env = {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS", "OMP_", "NUMBA_", "MKL_", "CONVNET_"))}
    lines.append(f"environment: {env or 'no thread variables set'}")
    return lines


class PhaseTimer:
    """Wraps methods so each call adds its wall time to a named phase of the current step."""

    def __init__(self):
        self.current = defaultdict(float)
        self.steps = []
        self.order = []

    def wrap(self, obj, method, phase):
        original = getattr(obj, method)
        if phase not in self.order:
            self.order.append(phase)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.current[phase] += time.perf_counter() - t0

        own = method in vars(obj)            # an attribute of obj itself (a module's function), not of its class
        setattr(obj, method, timed)
        return lambda: setattr(obj, method, original) if own else delattr(obj, method)

    def end_step(self, total):
        self.current["(total)"] = total
        self.steps.append(dict(self.current))
        self.current = defaultdict(float)

    def medians(self):
        names = self.order + ["(total)"]
        return {n: 1e3 * float(np.median([s.get(n, 0.0) for s in self.steps])) for n in names}


def profile(model, data, warmup=20):
    """Median ms per plain step, and the per-phase medians of an instrumented run."""
    for xb, yb in data[:warmup]:
        model.train_step(xb, yb)
    plain = []
    for xb, yb in data[warmup:]:
        t0 = time.perf_counter()
        model.train_step(xb, yb)
        plain.append(time.perf_counter() - t0)

    from convnet.engine import training
    timer = PhaseTimer()
    undo = [timer.wrap(training, "_forward_run", "run of layers, forward")]
    undo += [timer.wrap(layer, "forward", f"{layer.name} forward") for layer in model.layers]
    undo.append(timer.wrap(model.loss, "forward_logits", "loss (softmax + cross-entropy)"))
    undo.append(timer.wrap(training, "_backward_run", "run of layers, backward"))
    undo += [timer.wrap(layer, "backward", f"{layer.name} backward") for layer in reversed(model.layers)]
    undo.append(timer.wrap(model.optimizer, "apply", "optimizer update"))
    try:
        for xb, yb in data[warmup:]:
            t0 = time.perf_counter()
            model.train_step(xb, yb)
            timer.end_step(time.perf_counter() - t0)
    finally:
        for u in undo:
            u()
    return 1e3 * float(np.median(plain)), timer.medians()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=bounded_int(1), default=32)
    parser.add_argument("--steps", type=bounded_int(1), default=200, help="timed steps (after warm-up)")
    parser.add_argument("--warmup", type=bounded_int(0), default=20)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", default=None,
                        help="convnet.engine.threads.set_num_threads for the run: a positive number or 'none' "
                             "(default: the current setting, CONVNET_NUM_THREADS or 2)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        from convnet.engine import threads
        try:
            threads.set_num_threads(threads._parse(args.threads, "--threads"))
        except ValueError as e:
            parser.error(str(e))

    model = mnist_cnn(seed=0)
    if args.dtype == "float64":
        model.astype(np.float64)
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    data, source = batches(args.batch, args.steps + args.warmup)
    data = [(x.astype(args.dtype), y) for x, y in data]

    t_import = time.perf_counter()
    model.train_step(*data[0])
    first = time.perf_counter() - t_import
    plain_ms, phases = profile(model, data, args.warmup)

    print(f"seed model, batch {args.batch}, {args.dtype}, data: {source}")
    for line in thread_report():
        print("  " + line)
    print(f"first step (includes any numba compile / cache load): {1e3 * first:.1f} ms")
    print(f"train_step, plain:  {plain_ms:.2f} ms median over {args.steps} steps "
          f"-> {plain_ms * 60000 / args.batch / 1e3:.2f} s per 60,000-image epoch")
    total = phases.pop("(total)")
    accounted = sum(phases.values())
    print(f"train_step, instrumented: {total:.2f} ms median; per phase (median ms):")
    print("  (engine: the conv, pooling and dropout layers of a run (convnet/engine/training.py) are computed "
          "in its phase, one hand-off for all; their own phases show only the hand-over)")
    for name, ms in phases.items():
        print(f"  {name:<40}{ms:8.3f}  {100 * ms / total:5.1f}%")
    print(f"  {'(model glue, outside the phases)':<40}{total - accounted:8.3f}  "
          f"{100 * (total - accounted) / total:5.1f}%")


if __name__ == "__main__":
    main()
