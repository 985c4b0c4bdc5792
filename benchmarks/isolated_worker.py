"""The worker side of ``python -m benchmarks.isolated``: one library measured in a process of its own.

A worker (``python -m benchmarks.isolated --worker LIB ...``) sets its
threads, loads the data and weights the parent wrote, builds the model,
warms up, times one epoch of ``fit``, ``evaluate`` at each batch size and a
``predict``, and prints one JSON object as the last line of its standard
output (see :mod:`benchmarks.isolated` for the whole procedure).
"""
import gc
import json
import os
import resource
import sys
import time
from pathlib import Path

from .data import BATCH_SIZE, PREDICT_BATCH, TEST_SHAPE, TRAIN_SHAPE

_STARTED_WALL = time.time()              # when this module began to run (worker start-up phases)
_STARTED = time.perf_counter()

LIBRARIES = ("convnet", "keras")
#: one epoch of MNIST at the benchmark's batch size, and the test set that inference runs over
BATCH = BATCH_SIZE
EPOCH_STEPS = TRAIN_SHAPE[0] // BATCH
TEST_IMAGES = TEST_SHAPE[0]
TRAIN_IMAGES = EPOCH_STEPS * BATCH
WARMUP_PREDICT = PREDICT_BATCH
SETTLE_S = 0.05                           # untimed pause before each timed call
INFERENCE_BATCHES = (32, 256, PREDICT_BATCH)   # evaluate over the test images at each of these batch sizes
HIDE_TF_ENV = "BENCHMARKS_ISOLATED_HIDE_TF"
UNAVAILABLE_EXIT = 3                      # a worker's exit status when its library cannot be imported


class WorkerError(Exception):
    """A failure the worker explains in one message (no traceback needed)."""


class LibraryUnavailable(Exception):
    """The worker's library cannot be imported."""


def peak_rss_mb():
    """This process's peak resident set size in MB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def read_weights(path):
    """The arrays of an ``.npz`` written by :func:`write_weights`, in order."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as npz:
            names = sorted(npz.files, key=lambda name: int(name.rsplit("_", 1)[-1]))
            weights = [npz[name] for name in names]
    except FileNotFoundError:
        raise WorkerError(f"weights file {os.fspath(path)!r} does not exist") from None
    except Exception as err:
        raise WorkerError(f"cannot read weights file {os.fspath(path)!r} ({type(err).__name__}: {err}); "
                          f"expected an .npz of arrays arr_0, arr_1, ...") from None
    if not weights:
        raise WorkerError(f"weights file {os.fspath(path)!r} holds no arrays")
    return weights


DATA_FOLDER = "data"
DATA_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def write_data(kind, directory, n_train, n_test):
    """Save the first ``n_train``/``n_test`` images of ``load_data(kind)`` as ``.npy`` files; its note or None."""
    import json as json_module

    import numpy as np

    from .data import load_data

    data = load_data(kind)
    directory.mkdir(parents=True, exist_ok=True)
    for name in DATA_ARRAYS:
        n = n_train if name.endswith("train") else n_test
        np.save(directory / f"{name}.npy", np.ascontiguousarray(getattr(data, name)[:n]))
    (directory / "source.json").write_text(json_module.dumps({"source": data.source, "note": data.note}))
    return data.note


class _Data:
    """What a worker trains and predicts on (the arrays :func:`write_data` saved)."""

    def __init__(self, arrays, source):
        self.x_train, self.y_train, self.x_test, self.y_test = arrays
        self.source = source


def read_data(directory):
    """The arrays :func:`write_data` saved in ``directory`` (a clear error if they are not there)."""
    import numpy as np

    directory = Path(directory)
    try:
        arrays = [np.load(directory / f"{name}.npy") for name in DATA_ARRAYS]
        source = json.loads((directory / "source.json").read_text())["source"]
    except (OSError, ValueError, KeyError) as err:
        raise WorkerError(f"cannot read the data in {os.fspath(directory)!r} ({type(err).__name__}: {err}); "
                          f"expected {', '.join(n + '.npy' for n in DATA_ARRAYS)} and source.json "
                          f"as the parent writes them") from None
    return _Data(arrays, source)


def write_weights(weights, path):
    """Save ``weights`` (a list of arrays) as ``arr_0, arr_1, ...`` in ``path``."""
    import numpy as np

    np.savez(path, *weights)


def _timed(fn):
    """Seconds one call of ``fn`` takes (after an untimed pause; garbage collector off) and its result."""
    gc.collect()
    time.sleep(SETTLE_S)
    gc.disable()
    try:
        start = time.perf_counter()
        result = fn()
        return time.perf_counter() - start, result
    finally:
        gc.enable()


def _last(history, key):
    values = getattr(history, "history", {}).get(key) if history is not None else None
    return float(values[-1]) if values else None


def measure(lib, weights_path, steps, images, threads_n, warmup_batches, data_dir, launched_at=None,
            batch=BATCH, inference=True):
    """Everything a worker reports, as a JSON-ready dict (runs in the worker process)."""
    phases = {}
    if launched_at is not None:
        phases["python_start_s"] = _STARTED_WALL - launched_at
    mark = time.perf_counter()

    from .machine import ThreadSettings, library_versions, numpy_blas
    threads = ThreadSettings(threads_n).configure_numpy_numba(numba=lib != "keras")
    notes = []
    if lib == "keras":
        if os.environ.get(HIDE_TF_ENV):
            raise LibraryUnavailable(f"TensorFlow hidden by {HIDE_TF_ENV}={os.environ[HIDE_TF_ENV]}")
        from . import tf_impl
        try:
            note = tf_impl.import_tensorflow(threads)
        except ImportError as err:
            raise LibraryUnavailable(f"TensorFlow cannot be imported ({err})") from None
        if note:
            notes.append(note)
        backend = tf_impl.Backend()
    else:
        from . import convnet_impl
        backend = convnet_impl.Backend()
    rss_after_import = peak_rss_mb()
    phases["import_s"] = time.perf_counter() - mark

    mark = time.perf_counter()
    data = read_data(data_dir)
    weights = read_weights(weights_path)
    phases["data_s"] = time.perf_counter() - mark

    mark = time.perf_counter()
    try:
        model = backend.make_model(weights)
    except Exception as err:
        raise WorkerError(f"the weights in {os.fspath(weights_path)!r} do not fit the seed model "
                          f"({type(err).__name__}: {err})") from None
    phases["build_s"] = time.perf_counter() - mark

    n_train = steps * batch
    x, y = data.x_train[:n_train], data.y_train[:n_train]
    x_test, y_test = data.x_test[:images], data.y_test[:images]
    # the warm-up predict sees both batch shapes the timed one will (1000 and the remainder)
    n_warm_predict = min(images, WARMUP_PREDICT + images % WARMUP_PREDICT)
    mark = time.perf_counter()
    model.make_fit(data.x_train[:batch], data.y_train[:batch], batch)()      # the first training step
    phases["first_step_s"] = time.perf_counter() - mark
    model.make_fit(data.x_train[:warmup_batches * batch], data.y_train[:warmup_batches * batch], batch)()
    if inference:
        model.make_predict(x_test[:n_warm_predict])()
        for b in INFERENCE_BATCHES:         # each batch size's shapes once (full batch and remainder)
            n_warm = min(images, b + images % b)
            model.make_evaluate(x_test[:n_warm], y_test[:n_warm], b)()
    phases["warmup_s"] = time.perf_counter() - mark
    ready = time.time()
    startup_s = ready - (launched_at if launched_at is not None else _STARTED_WALL)

    fit_s, history = _timed(model.make_fit(x, y, batch))
    record = {
        "library": lib,
        "batch": batch,
        "epoch_s": fit_s * TRAIN_IMAGES / n_train,
        "epoch_measured_s": fit_s,
        "epoch_steps": steps,
        "images_per_s": n_train / fit_s,
        "first_step_s": phases["import_s"] + phases["build_s"] + phases["first_step_s"],
        "threads": threads.describe(),
        "numpy_blas": numpy_blas(),
        "peak_rss_mb": peak_rss_mb(),
        "peak_rss_train_mb": peak_rss_mb(),      # before the inference sweep (its batches of 1,000)
        "startup_s": startup_s,
        "phases_s": phases,
        "pid": os.getpid(),
    }
    if not inference:
        return record
    evaluate_s = {}
    for b in INFERENCE_BATCHES:
        seconds, _ = _timed(model.make_evaluate(x_test, y_test, b))
        evaluate_s[str(b)] = seconds * TEST_IMAGES / images
    fastest_batch = min(evaluate_s, key=evaluate_s.get)
    predict_s, probabilities = _timed(model.make_predict(x_test))

    import numpy as np
    probabilities = np.asarray(probabilities)
    if probabilities.shape != (images, 10):
        raise WorkerError(f"predict returned shape {probabilities.shape}, expected {(images, 10)}")
    accuracy = float(np.mean(np.argmax(probabilities, axis=1) == y_test))
    return {
        **record,
        "evaluate_s": evaluate_s,
        "inference_s": evaluate_s[fastest_batch],
        "inference_batch": int(fastest_batch),
        "predict_s": predict_s * TEST_IMAGES / images,
        "predict_measured_s": predict_s,
        "predict_images": images,
        "accuracy": accuracy,
        "fit_loss": _last(history, "loss"),
        "fit_accuracy": _last(history, "accuracy"),
        "peak_rss_mb": peak_rss_mb(),
        "rss_after_import_mb": rss_after_import,
        "startup_from": "parent launch" if launched_at is not None else "worker module start",
        "warmup": {"fit_batches": warmup_batches, "predict_images": n_warm_predict},
        "data_source": data.source,
        "versions": library_versions(),
        "notes": notes,
    }


def worker_main(args):
    """Measure ``args.worker``; JSON on stdout's last line, exit 0; else a message on stderr, exit non-zero."""
    from .report import _strict

    real_stdout = sys.stdout
    sys.stdout = sys.stderr                    # anything a library prints stays off the JSON line
    try:
        result = measure(args.worker, args.weights, args.steps, args.images, args.threads or _cores(),
                         args.warmup_batches, args.data_dir, args.launched_at, args.batch, not args.no_inference)
    except LibraryUnavailable as err:
        print(f"isolated worker ({args.worker}): library unavailable: {err}", file=sys.stderr)
        real_stdout.write(json.dumps({"library": args.worker, "unavailable": str(err)}) + "\n")
        return UNAVAILABLE_EXIT
    except WorkerError as err:
        print(f"isolated worker ({args.worker}): error: {err}", file=sys.stderr)
        return 1
    except Exception:
        import traceback
        traceback.print_exc()
        print(f"isolated worker ({args.worker}): error: unexpected failure (traceback above)", file=sys.stderr)
        return 1
    finally:
        sys.stdout = real_stdout
    real_stdout.write(json.dumps(_strict(result), allow_nan=False) + "\n")
    real_stdout.flush()
    return 0


def _cores():
    from .machine import machine_cores
    return machine_cores()
