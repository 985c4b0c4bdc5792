"""Thread settings and the description of the machine a benchmark ran on.

Every library gets the same number of threads, the number of cores this
process may run on: numba's parallel kernels (``numba.set_num_threads``),
the BLAS behind NumPy's matrix products (``threadpoolctl``) and TensorFlow's
intra-op and inter-op pools. The description (CPU, OS, versions, BLAS,
environment) is stored with the figures, so that a table can always be
traced back to where and how it was made.
"""
import datetime
import os
import platform
import subprocess
import sys

#: environment variables that change how fast the BLAS or the libraries run
PERFORMANCE_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                   "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER", "TF_ENABLE_ONEDNN_OPTS",
                   "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def machine_cores():
    """Cores this process may use (its CPU affinity), else all the machine's cores."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class ThreadSettings:
    """Set every library to ``cores`` threads; :meth:`describe` says what was obtained.

    The BLAS limit is held until :meth:`restore` (the benchmark keeps it for
    the whole run). TensorFlow only accepts thread counts before it runs its
    first op, so :func:`benchmarks.tf_impl.import_tensorflow` calls
    :meth:`configure_tensorflow` right after importing it.
    """

    def __init__(self, cores):
        if cores < 1:
            raise ValueError(f"thread count must be at least 1, got {cores}")
        self.cores = int(cores)
        self._blas = None
        self.tensorflow = None

    def configure_numpy_numba(self, numba=True):
        """BLAS (and, unless ``numba=False``, numba and convnet: a Keras-only process need not load them)."""
        from threadpoolctl import threadpool_limits

        if numba:
            import numba as numba_module

            import convnet  # noqa: F401  (first, so that any thread default it sets on import is overridden)
            from convnet.engine import threads as convnet_threads

            numba_module.set_num_threads(min(self.cores, numba_module.config.NUMBA_NUM_THREADS))
            convnet_threads.set_num_threads(self.cores)     # the engine's own threads (the ones it uses)
        self._blas = threadpool_limits(limits=self.cores)
        return self

    def configure_tensorflow(self, tf):
        """Set TF's pools; returns a note if TF had already started (then its counts stand)."""
        note = None
        try:
            tf.config.threading.set_intra_op_parallelism_threads(self.cores)
            tf.config.threading.set_inter_op_parallelism_threads(self.cores)
        except RuntimeError as err:            # TF already initialised in this process
            note = f"TensorFlow thread counts could not be set ({err}); the values shown are TF's own"
        self.tensorflow = tf
        return note

    def configure_torch(self, torch):
        torch.set_num_threads(self.cores)

    def restore(self):
        if self._blas is not None:
            self._blas.restore_original_limits()
            self._blas = None

    def describe(self):
        """The thread counts actually in force, library by library."""
        from threadpoolctl import threadpool_info

        out = {"requested": self.cores}
        engine = sys.modules.get("convnet.engine.threads")
        if engine is not None:
            out["convnet"] = engine.get_num_threads()
        numba = sys.modules.get("numba")
        if numba is not None:                  # (a Keras-only process does not load it)
            out["numba"] = numba.get_num_threads()
            try:
                out["numba_threading_layer"] = numba.threading_layer()
            except ValueError:                 # no parallel kernel has run yet
                out["numba_threading_layer"] = None
        out["threadpools"] = [
            {key: info.get(key) for key in ("user_api", "internal_api", "prefix", "version",
                                            "architecture", "num_threads", "threading_layer")}
            for info in threadpool_info()]
        if self.tensorflow is not None:
            threading = self.tensorflow.config.threading
            out["tensorflow"] = {"intra_op": threading.get_intra_op_parallelism_threads(),
                                 "inter_op": threading.get_inter_op_parallelism_threads()}
        torch = sys.modules.get("torch")
        if torch is not None:
            out["torch"] = {"num_threads": torch.get_num_threads()}
        return out


def numpy_blas():
    """The BLAS NumPy's matrix products go to: internal_api, version, architecture, threads."""
    from threadpoolctl import threadpool_info

    for info in threadpool_info():
        if info.get("user_api") == "blas" and "numpy" in info.get("filepath", ""):
            return {key: info.get(key) for key in ("internal_api", "version", "architecture", "num_threads")}
    for info in threadpool_info():            # a BLAS not vendored by the numpy wheel
        if info.get("user_api") == "blas":
            return {key: info.get(key) for key in ("internal_api", "version", "architecture", "num_threads")}
    return None


def cpu_model():
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_revision():
    """``(commit, dirty)`` of the working tree holding this package, or ``(None, None)``."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                capture_output=True, text=True, timeout=10, check=True).stdout
        return commit, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def library_versions():
    """Versions of the libraries involved (None for those not imported)."""
    versions = {"python": platform.python_version()}
    for name in ("numpy", "numba", "convnet", "tensorflow", "keras", "torch", "threadpoolctl", "matplotlib"):
        module = sys.modules.get(name)
        versions[name] = getattr(module, "__version__", None) if module is not None else None
    return versions


def describe_machine(threads):
    """Everything needed to judge and reproduce the figures (JSON-ready)."""
    commit, dirty = git_revision()
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "cores": machine_cores(),
        "logical_cpus": os.cpu_count(),
        "os": platform.platform(),
        "load_average_1_5_15min": load,
        "versions": library_versions(),
        "numpy_blas": numpy_blas(),
        "threads": threads.describe(),
        "env": {name: os.environ.get(name) for name in PERFORMANCE_ENV},
        "env_present": {name: name in os.environ for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
        "git_commit": commit,
        "git_dirty": dirty,
        "command": " ".join([os.path.basename(sys.executable), "-m", "benchmarks"] + sys.argv[1:]),
    }


#: side of the square float32 matrices whose product measures the machine's GEMM speed
GEMM_SIZE = 2048


def gemm_gflops(threads, size=GEMM_SIZE, repeats=5):
    """GFLOP/s of NumPy's BLAS on a large float32 product ``(size, size) @ (size, size)`` with ``threads`` threads.

    The best of ``repeats`` timed products after one untimed: the speed the
    machine's cores reach on the most favourable shape, the yardstick for
    "the machine's floor" (the FLOP count of some work divided by it).
    """
    import time

    import numpy as np
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a, b = (rng.random((size, size), dtype=np.float32) for _ in range(2))
    with threadpool_limits(limits=threads, user_api="blas"):
        a @ b
        best = min(_time(lambda: a @ b, time) for _ in range(repeats))
    return 2.0 * size ** 3 / best / 1e9


def _time(fn, time):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
