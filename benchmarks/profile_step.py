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
   per thread: see :mod:`convnet.engine.plan`;
   the run has a phase of its own, and those layers' phases show only the
   hand-over.)

``--kernels`` adds a third table, taken on one thread so that the times
add up: every engine kernel (:mod:`convnet.engine.kernels`) and every
matrix product (by its shapes and the engine method that asked for it,
with its GFLOP/s), per step, and what is left: the Python of the layers'
calls and NumPy's small element-wise work. It shows how much of a step is
arithmetic BLAS already does at its own speed and how much is everything
around it. (The timers themselves add about a microsecond per call; the
plain one-thread step is printed beside the timed one.)

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
import types
from collections import Counter, defaultdict

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


def _timed(fn, add):
    """``fn`` wrapped so that the wall time of each call is handed to ``add(seconds)``."""
    def call(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            add(time.perf_counter() - t0)
    return call


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

        def add(seconds):
            self.current[phase] += seconds

        own = method in vars(obj)            # an attribute of obj itself (a module's function), not of its class
        setattr(obj, method, _timed(original, add))
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

    from convnet.engine import plan
    steps = model.runner().plan(True).steps if hasattr(model.runner(), "plan") else None
    timer = PhaseTimer()
    if steps is None:                              # the textbook's loop: each layer's own methods
        undo = [timer.wrap(layer, "forward", f"{layer.name} forward") for layer in model.layers]
        undo.append(timer.wrap(model.loss, "forward_logits", "loss (softmax + cross-entropy)"))
        undo += [timer.wrap(layer, "backward", f"{layer.name} backward") for layer in reversed(model.layers)]
    else:                                          # the engine's plan: its runs and its single layers

        def label(step):
            return "run of layers," if isinstance(step, plan.Run) else step.layer.name
        undo = [timer.wrap(step, "forward", f"{label(step)} forward") for step in steps]
        undo.append(timer.wrap(model.loss, "forward_logits", "loss (softmax + cross-entropy)"))
        undo += [timer.wrap(step, "backward", f"{label(step)} backward") for step in reversed(steps)]
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


class KernelTimer:
    """Wall time per engine kernel and per matrix-product shape, summed over the timed steps."""

    def __init__(self):
        self.seconds, self.calls, self.flops = defaultdict(float), Counter(), {}

    def timed(self, name, fn):
        def add(seconds):
            self.seconds[name] += seconds
            self.calls[name] += 1
        return _timed(fn, add)

    def product(self, a, b, *args, **kwargs):
        """``np.matmul``, timed under the label of its operands' shapes and the engine method that asked."""
        (M, K), N = a.shape, b.shape[-1]
        frame = sys._getframe(1)
        while frame.f_back is not None and frame.f_globals.get("__name__") not in ("convnet.engine.layers",
                                                                                 "convnet.engine.inference"):
            frame = frame.f_back                     # from threads.matmul up to the layer that called it
        method = ".".join(frame.f_code.co_qualname.split(".")[:2])
        name = f"product {M}x{K} @ {K}x{N} ({method})"
        self.flops[name] = 2.0 * M * K * N
        return self.timed(name, np.matmul)(a, b, *args, **kwargs)

    def install(self):
        """Wrap the engine's kernels and the ``np.matmul`` its modules call; returns the undo function."""
        import numba

        from convnet.engine import adam, affine, inference, layers, threads, winograd
        undo = []
        for module in (layers, inference, winograd, adam, affine):    # the modules that call kernels from Python
            for name, fn in list(vars(module).items()):
                if isinstance(fn, numba.core.registry.CPUDispatcher) and not name.startswith("_"):
                    setattr(module, name, self.timed(name, fn))
                    undo.append((module, name, fn))
        proxy = types.ModuleType("numpy")            # numpy with a timed matmul, for the engine's modules only
        proxy.__dict__.update(vars(np))
        proxy.matmul = self.product
        for module in (layers, threads, adam):
            undo.append((module, "np", module.np))
            module.np = proxy

        def restore():
            for module, name, original in undo:
                setattr(module, name, original)
        return restore

    def table(self, steps, total_ms):
        """``[(name, ms per step, calls per step, GFLOP/s or None)]``, largest first, and the rest's row last."""
        rows = [(name, 1e3 * s / steps, self.calls[name] / steps,
                 self.flops[name] * self.calls[name] / s / 1e9 if name in self.flops and s > 0 else None)
                for name, s in sorted(self.seconds.items(), key=lambda kv: -kv[1])]
        rest = total_ms - sum(r[1] for r in rows)
        return rows + [("(the rest: Python, NumPy element-wise work, allocation)", rest, None, None)]


def groups(rows):
    """The rows of :meth:`KernelTimer.table` summed: ``[(matrix products, ms, GFLOP/s), (kernels, ms, None), (rest, ...)]``."""
    products = [r for r in rows if r[3] is not None]
    ms = sum(r[1] for r in products)
    flops = sum(r[1] * r[3] for r in products)           # ms x GFLOP/s: MFLOP
    return [("matrix products (BLAS, one thread)", ms, flops / ms if ms else None),
            ("engine kernels (numba)", sum(r[1] for r in rows[:-1] if r[3] is None), None),
            (rows[-1][0], rows[-1][1], None)]


def kernel_profile(model, data, warmup=20):
    """One-thread steps, plain and then with every engine kernel and product timed.

    Returns ``(plain ms per step, timed ms per step, KernelTimer.table rows)``, means over ``data[warmup:]``.
    """
    from convnet.engine import threads
    timed = data[warmup:]

    def mean_step_ms():
        t0 = time.perf_counter()
        for xb, yb in timed:
            model.train_step(xb, yb)
        return 1e3 * (time.perf_counter() - t0) / len(timed)

    before = threads.get_num_threads()
    threads.set_num_threads(1)
    try:
        for xb, yb in data[:warmup]:
            model.train_step(xb, yb)
        plain_ms = mean_step_ms()
        timer = KernelTimer()
        restore = timer.install()
        try:
            total_ms = mean_step_ms()
        finally:
            restore()
    finally:
        threads.set_num_threads(before)
    return plain_ms, total_ms, timer.table(len(timed), total_ms)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=bounded_int(1), default=32)
    parser.add_argument("--steps", type=bounded_int(1), default=200, help="timed steps (after warm-up)")
    parser.add_argument("--warmup", type=bounded_int(0), default=20)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", default=None,
                        help="convnet.engine.threads.set_num_threads for the run: a positive number or 'none' "
                             "(default: the current setting, CONVNET_NUM_THREADS or 2)")
    parser.add_argument("--kernels", action="store_true",
                        help="also time every engine kernel and matrix product of one-thread steps")
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
    print("  (engine: the conv, pooling and dropout layers of a run (convnet/engine/plan.py) are computed "
          "in its phase, one hand-off for all)")
    for name, ms in phases.items():
        print(f"  {name:<40}{ms:8.3f}  {100 * ms / total:5.1f}%")
    print(f"  {'(model glue, outside the phases)':<40}{total - accounted:8.3f}  "
          f"{100 * (total - accounted) / total:5.1f}%")
    if args.kernels:
        plain_ms, step_ms, rows = kernel_profile(model, data, args.warmup)
        print(f"one thread: {plain_ms:.2f} ms per step plain, {step_ms:.2f} with every kernel and product timed "
              f"(means); per step:")
        for group, ms, gflops in groups(rows):
            print(f"  {group:<58}{ms:8.3f}  {100 * ms / step_ms:5.1f}%" + (f"  {gflops:14.0f} GFLOP/s" if gflops else ""))
        print("  of which, each kernel and product:")
        for name, ms, calls, gflops in rows[:-1]:
            extra = f"{calls:6.1f} calls" if calls is not None else ""
            extra += f"  {gflops:5.0f} GFLOP/s" if gflops is not None else ""
            print(f"    {name:<56}{ms:8.3f}  {100 * ms / step_ms:5.1f}%  {extra}")


if __name__ == "__main__":
    main()
