"""``python -m benchmarks.isolated``: convnet's and Keras's epoch and inference, each in its own process.

``python -m benchmarks`` runs every library in one process, one after the
other. For the model rows that is not a fair comparison: once TensorFlow is
loaded and has run, its thread pools and convnet's (numba, BLAS) get in each
other's way, and convnet's training step is measurably slower than in a
process of its own; Keras's epoch time, too, varies a lot from run to run.
This command measures each library in a **fresh subprocess** instead:

1. the parent (which never imports TensorFlow) writes the seed model's
   initial weights (``convnet_impl.seed_model(0).get_weights()``, Keras
   order) to an ``.npz`` file in a temporary folder, and the data
   (MNIST scaled to float32, as :func:`benchmarks.data.load_data` gives it)
   as ``.npy`` files beside it, so that both workers read the very same
   arrays the same way and neither pays for decoding the IDX files;
2. for each repeat it starts one worker per library,
   ``python -m benchmarks.isolated --worker LIB --weights FILE ...``, in an
   order that alternates from repeat to repeat (keras, convnet; then
   convnet, keras; ...), so that a drift in the machine's load hits both;
3. a worker sets its threads as ``python -m benchmarks`` does (the keras
   worker without loading numba or convnet at all), loads the data,
   builds the model with those weights, warms up (a short ``fit`` and a
   ``predict``), then times one epoch of ``fit`` (batch 32, shuffled) and a
   ``predict`` over the test images, measures the test accuracy after that
   epoch, its peak RSS and its start-up time, and prints one JSON object as
   the last line of its standard output;
4. the parent prints per-library medians (with min-max), the **paired
   ratios** convnet/keras (each convnet run over the keras run of the same
   repeat) and their median, the headline "epoch ratio", and writes
   ``isolated.json`` to ``--out``.

Set ``BENCHMARKS_ISOLATED_HIDE_TF=1`` to make the keras worker behave as if
TensorFlow were not installed (the keras column is then left out with a
note, exactly as on a machine without TensorFlow).
"""
import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .cli import bounded_int, check_out, comma_list

_STARTED_WALL = time.time()              # when this module began to run (worker start-up phases)
_STARTED = time.perf_counter()

LIBRARIES = ("convnet", "keras")
DEFAULT_ORDER = ("keras", "convnet")     # repeat 1's order; repeat 2 reverses it, and so on
EPOCH_STEPS = 1875                        # 60,000 images / batch 32
TEST_IMAGES = 10_000
BATCH = 32
DEFAULT_REPEATS = 5
QUICK = dict(repeats=2, steps=100, images=2_000)
DEFAULT_WARMUP_BATCHES = 10
WARMUP_BATCHES_RANGE = (2, 64)
WARMUP_PREDICT = 1000
DEFAULT_TIMEOUT_S = 1800.0
SETTLE_S = 0.05                           # untimed pause before each timed call
TARGET_EPOCH_RATIO = 0.5                  # issue 15: convnet's fastest epoch <= 0.5 x Keras's fastest
TARGET_FLOOR_RATIO = 1.6                  # ... and <= 1.6 x the machine's floor for the epoch's FLOPs
TARGET_INFERENCE_RATIO = 0.6              # ... and inference <= 0.6 x Keras's, each at its fastest batch size
INFERENCE_BATCHES = (32, 256, 1000)       # evaluate over the test images at each of these batch sizes
SCALING_BATCHES = (32, 64, 128, 256)      # --scaling: epoch time against batch size ...
SCALING_THREADS = (1, 2)                  # ... and thread count
SCALING_IMAGES = 12_800                   # --scaling: training images timed per worker (scaled to 60,000)
SCALING_REPEATS = 2                       # --scaling: runs per (library, batch size, threads) unless --repeats
TRAIN_IMAGES = EPOCH_STEPS * BATCH
HIDE_TF_ENV = "BENCHMARKS_ISOLATED_HIDE_TF"
UNAVAILABLE_EXIT = 3                      # a worker's exit status when its library cannot be imported
STDERR_TAIL_LINES = 25
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ arguments
def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive, finite number of seconds, got {text!r}")
    return value


def libs_arg(text):
    """``"convnet,keras"`` -> ``["convnet", "keras"]`` (order kept, duplicates refused)."""
    libs = comma_list(text, LIBRARIES, "library")
    if len(set(libs)) != len(libs):
        raise argparse.ArgumentTypeError(f"a library is named twice in {text!r}")
    return libs


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.isolated",
        description="Time one epoch of fit (batch 32) and predict of the seed model in convnet and in Keras, "
                    "each library in its own fresh process, alternating, and report the paired ratios "
                    "convnet/keras.")
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK['repeats']} repeats, the epoch timed on {QUICK['steps']} batches and "
                        f"inference on {QUICK['images']:,} images, both scaled up")
    p.add_argument("--repeats", type=bounded_int(1), metavar="N",
                   help=f"worker runs per library (default {DEFAULT_REPEATS}; --quick {QUICK['repeats']})")
    p.add_argument("--steps", type=bounded_int(1, EPOCH_STEPS), metavar="S",
                   help=f"time fit on the first S*32 training images and scale to an epoch of {EPOCH_STEPS} "
                        f"batches (default {EPOCH_STEPS}: the whole epoch; --quick {QUICK['steps']})")
    p.add_argument("--images", type=bounded_int(1, TEST_IMAGES), metavar="I",
                   help=f"time predict on the first I test images and scale to {TEST_IMAGES:,} "
                        f"(default {TEST_IMAGES:,}; --quick {QUICK['images']:,})")
    p.add_argument("--libs", type=libs_arg, default=list(DEFAULT_ORDER), metavar="LIBS",
                   help="comma-separated libraries, in repeat 1's order (default keras,convnet)")
    p.add_argument("--threads", type=bounded_int(1), metavar="N",
                   help="threads for every library (default: the cores this process may use)")
    p.add_argument("--warmup-batches", type=bounded_int(*WARMUP_BATCHES_RANGE), metavar="N",
                   default=DEFAULT_WARMUP_BATCHES,
                   help=f"batches of the warm-up fit before the timed epoch (default {DEFAULT_WARMUP_BATCHES})")
    p.add_argument("--data", choices=("mnist", "random"), default="mnist",
                   help="MNIST (default; random data of its shape, with a note, if it cannot be loaded) or "
                        "random data (accuracy is then meaningless)")
    p.add_argument("--timeout", type=_positive_float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                   help=f"give up on a worker after this long (default {DEFAULT_TIMEOUT_S:.0f} s)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                   help="where to write isolated.json (default benchmarks/results/)")
    p.add_argument("--scaling", action="store_true",
                   help=f"instead: epoch time and images/s against batch size ({', '.join(map(str, SCALING_BATCHES))})"
                        f" and threads ({', '.join(map(str, SCALING_THREADS))}), each worker timing "
                        f"{SCALING_IMAGES:,} training images (scaled to 60,000); writes scaling.json and scaling.png")
    worker = p.add_argument_group("worker mode (started by the parent; not needed by hand)")
    worker.add_argument("--worker", choices=LIBRARIES, metavar="LIB",
                        help="measure LIB in this process and print one JSON line")
    worker.add_argument("--weights", type=Path, metavar="FILE", help="the .npz of initial weights (worker only)")
    worker.add_argument("--data-dir", type=Path, metavar="DIR",
                        help="the .npy data files the parent wrote (worker only)")
    worker.add_argument("--launched-at", type=float, metavar="EPOCH_SECONDS",
                        help="time.time() when the parent started this worker (worker only)")
    worker.add_argument("--batch", type=bounded_int(1, 1024), default=BATCH, metavar="B",
                        help=f"batch size of the timed fit (worker only; default {BATCH})")
    worker.add_argument("--no-inference", action="store_true",
                        help="time fit only (worker only; used by --scaling)")
    return p


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker is not None:
        if args.weights is None or args.data_dir is None:
            parser.error("--worker needs --weights FILE and --data-dir DIR")
        if args.quick or args.repeats is not None:
            parser.error("--quick and --repeats are for the parent, not for --worker")
    elif args.weights is not None or args.data_dir is not None or args.launched_at is not None:
        parser.error("--weights, --data-dir and --launched-at are only for --worker")
    elif args.batch != BATCH or args.no_inference:
        parser.error("--batch and --no-inference are only for --worker (--scaling sets them itself)")
    else:
        check_out(parser, args.out)
    settings = dict(QUICK) if args.quick else dict(repeats=DEFAULT_REPEATS, steps=EPOCH_STEPS, images=TEST_IMAGES)
    if args.scaling:
        settings["repeats"] = SCALING_REPEATS
        if args.steps is not None:
            parser.error("--steps does not apply to --scaling (each worker times "
                         f"{SCALING_IMAGES:,} images, or --images' worth with --quick)")
    for key in ("repeats", "steps", "images"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    args.repeats, args.steps, args.images = settings["repeats"], settings["steps"], settings["images"]
    return args


# --------------------------------------------------------- pure computations
def run_order(libs, repeat):
    """The order of repeat ``repeat`` (1-based): ``libs`` on odd repeats, reversed on even ones."""
    libs = list(libs)
    return libs if repeat % 2 == 1 else libs[::-1]


def spread(values):
    """Median, min, max and every value of a list of numbers (None when the list is empty)."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": list(values)}


def paired_ratios(results, key, top="convnet", bottom="keras"):
    """``top``'s ``key`` over ``bottom``'s, repeat by repeat, for the repeats where both ran.

    ``results`` maps a library to ``{repeat: worker record}``. Returns
    ``{"per_repeat": [{"repeat", "ratio", top, bottom}], "median", "min", "max",
    "median_over_fastest"}`` or None when no repeat has both. The last is
    ``top``'s median over ``bottom``'s fastest (smallest) figure in those
    repeats: the cautious reading when ``bottom``'s times scatter widely.
    """
    per_repeat = []
    for repeat in sorted(set(results.get(top, {})) & set(results.get(bottom, {}))):
        a, b = results[top][repeat].get(key), results[bottom][repeat].get(key)
        if a is None or not b:
            continue
        per_repeat.append({"repeat": repeat, "ratio": a / b, top: a, bottom: b})
    if not per_repeat:
        return None
    ratios = [p["ratio"] for p in per_repeat]
    fastest = min(p[bottom] for p in per_repeat)
    return {"per_repeat": per_repeat, "median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
            "median_over_fastest": statistics.median(p[top] for p in per_repeat) / fastest,
            "fastest": min(p[top] for p in per_repeat) / fastest}


def layer_macs(model):
    """Multiply-adds per image of each matrix product of ``model`` (a built convnet ``Sequential``).

    ``{layer name: (forward MACs, backward MACs)}`` for Conv2D and Dense
    layers: forward ``z = x W``; backward ``dW = x^T dz`` and, except for
    the first layer (no one needs its input gradient), ``dx = dz W^T``, each
    as many multiply-adds as the forward.
    """
    out = {}
    for i, layer in enumerate(model.layers):
        kernel = layer.params.get("kernel")
        if kernel is None:
            continue
        positions = int(np_prod(layer.output_shape[:-1]))     # output pixels (1 for Dense)
        forward = positions * int(kernel.size)
        out[layer.name] = (forward, forward * (1 if i == 0 else 2))
    return out


def np_prod(values):
    result = 1
    for v in values:
        result *= int(v)
    return result


def epoch_flops(model, images=TRAIN_IMAGES):
    """FLOPs (2 per multiply-add) of the matrix products of one training epoch over ``images`` images."""
    return 2.0 * images * sum(f + b for f, b in layer_macs(model).values())


def inference_flops(model, images=TEST_IMAGES):
    """FLOPs of the forward products over ``images`` images."""
    return 2.0 * images * sum(f for f, _ in layer_macs(model).values())


def summarize(results):
    """Per library: the spread of every measured figure over its successful repeats."""
    keys = ("epoch_s", "predict_s", "inference_s", "peak_rss_mb", "peak_rss_train_mb", "accuracy", "startup_s",
            "first_step_s", "epoch_measured_s", "predict_measured_s")
    return {lib: {"repeats_ok": len(runs), **{k: spread([runs[r].get(k) for r in sorted(runs)]) for k in keys}}
            for lib, runs in results.items()}


# ------------------------------------------------------------------- worker
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


# ------------------------------------------------------------------- parent
def worker_command(lib, weights_path, args, threads, batch=BATCH, steps=None):
    command = [sys.executable, "-m", "benchmarks.isolated", "--worker", lib, "--weights", os.fspath(weights_path),
               "--data-dir", os.fspath(Path(weights_path).parent / DATA_FOLDER),
               "--steps", str(steps or args.steps), "--images", str(args.images), "--threads", str(threads),
               "--warmup-batches", str(args.warmup_batches),
               "--launched-at", repr(time.time())]
    if batch != BATCH or steps is not None:
        command += ["--batch", str(batch), "--no-inference"]
    return command


def _tail(text, lines=STDERR_TAIL_LINES):
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_worker(lib, weights_path, args, threads, **scaling):
    """Start one worker and wait for it: ``("ok", record)``, ``("unavailable", why)`` or ``("failed", info)``."""
    command = worker_command(lib, weights_path, args, threads, **scaling)
    started = time.perf_counter()
    try:
        proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=args.timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as err:
        stderr = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else (err.stderr or "")
        return "failed", {"returncode": None, "error": f"timed out after {args.timeout:g} s",
                          "stderr_tail": _tail(stderr), "wall_s": time.perf_counter() - started}
    wall = time.perf_counter() - started
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    record = None
    if lines:
        try:
            record = json.loads(lines[-1])
        except json.JSONDecodeError:
            record = None
    if proc.returncode == UNAVAILABLE_EXIT and isinstance(record, dict) and "unavailable" in record:
        return "unavailable", record["unavailable"]
    if proc.returncode != 0 or not isinstance(record, dict) or "epoch_s" not in record:
        why = (f"exit status {proc.returncode}" if proc.returncode != 0
               else "no JSON result on the last line of its output")
        return "failed", {"returncode": proc.returncode, "error": why, "stderr_tail": _tail(proc.stderr),
                          "stdout_tail": _tail(proc.stdout, 5), "wall_s": wall}
    record["wall_s"] = wall
    return "ok", record


def _machine(threads, workers):
    """The machine description of :mod:`benchmarks.machine`, with the workers' own thread settings/versions."""
    from .machine import ThreadSettings, describe_machine

    machine = describe_machine(ThreadSettings(threads))
    machine["command"] = " ".join([os.path.basename(sys.executable), "-m", "benchmarks.isolated"] + sys.argv[1:])
    machine["threads"] = {"requested": threads, "per_library": {lib: rec["threads"] for lib, rec in workers.items()}}
    machine["numpy_blas_per_library"] = {lib: rec.get("numpy_blas") for lib, rec in workers.items()}
    for rec in workers.values():
        for name, version in (rec.get("versions") or {}).items():
            if version and not machine["versions"].get(name):
                machine["versions"][name] = version
    return machine


def _fmt_s(summary):
    if not summary:
        return "-"
    return f"{summary['median']:.3g} s ({summary['min']:.3g}-{summary['max']:.3g})"


def _fmt(summary, spec, unit=""):
    if not summary:
        return "-"
    return (f"{format(summary['median'], spec)}{unit} ({format(summary['min'], spec)}-"
            f"{format(summary['max'], spec)})")


def render_table(report):
    """The text printed at the end of a parent run."""
    machine, settings = report["machine"], report["settings"]
    blas = machine.get("numpy_blas") or {}
    out = [f"convnet vs Keras, one process per library: {machine['date']}, {machine['cpu_model']}, "
           f"{machine['cores']} cores, {machine['os']}",
           "versions: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v),
           f"numpy BLAS: {blas.get('internal_api')} {blas.get('version')} {blas.get('architecture')}",
           "environment: " + (", ".join(f"{k}={v}" for k, v in machine["env"].items() if v is not None)
                              or "none of the variables that change BLAS/thread behaviour is set"),
           f"threads: {settings['threads']} per library; repeats: {settings['repeats']}; epoch = "
           f"{settings['steps']} batches of {BATCH}"
           + (f" scaled x{settings['epoch_scale']:g}" if settings["epoch_scale"] != 1 else "")
           + f"; predict = {settings['images']:,} images"
           + (f" scaled x{settings['predict_scale']:g}" if settings["predict_scale"] != 1 else ""),
           "figures: median (min-max) over the repeats", ""]
    header = ["library", "runs", "epoch", "evaluate (10,000), fastest batch", "predict (10,000)", "peak RSS",
              "test accuracy", "import + 1st step", "start-up"]
    rows = []
    for lib, s in report["summary"].items():
        rows.append([lib, str(s["repeats_ok"]), _fmt_s(s["epoch_s"]), _fmt_s(s["inference_s"]),
                     _fmt_s(s["predict_s"]), _fmt(s["peak_rss_mb"], ".0f", " MB"), _fmt(s["accuracy"], ".4f"),
                     _fmt_s(s["first_step_s"]), _fmt_s(s["startup_s"])])
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i])
              for i in range(len(header))]

    def fmt(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    out += [fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    ratios = report.get("ratios") or {}
    if ratios.get("epoch"):
        out += ["", "paired ratios convnet/keras (same repeat; < 1: convnet faster):"]
        predict = {p["repeat"]: p["ratio"] for p in (ratios.get("predict") or {}).get("per_repeat", [])}
        for p in ratios["epoch"]["per_repeat"]:
            extra = f", predict {predict[p['repeat']]:.3f}" if p["repeat"] in predict else ""
            out.append(f"  repeat {p['repeat']}: epoch {p['ratio']:.3f} "
                       f"({p['convnet']:.3g} s / {p['keras']:.3g} s){extra}")
        e = ratios["epoch"]
        out.append(f"  median: epoch {e['median']:.3f} (min {e['min']:.3f}, max {e['max']:.3f})"
                   + (f", predict {ratios['predict']['median']:.3f}" if ratios.get("predict") else ""))
        out.append(f"  convnet's median over keras's fastest: epoch {e['median_over_fastest']:.3f}"
                   + (f", predict {ratios['predict']['median_over_fastest']:.3f}" if ratios.get("predict") else ""))
        caveat = (f"; an estimate: {settings['steps']} batches timed, not a whole epoch"
                  if settings["steps"] != EPOCH_STEPS else "")
        out += ["", f"EPOCH RATIO convnet/keras, fastest over fastest: {e['fastest']:.3f} "
                    f"(target <= {report['target_epoch_ratio']}: {_verdict(report['epoch_ratio_meets_target'])}"
                    f"{caveat}); median of the {len(e['per_repeat'])} paired ratio(s): {e['median']:.3f}"]
        inf = ratios.get("inference")
        if inf:
            out.append(f"INFERENCE RATIO convnet/keras (evaluate, 10,000 images, each at its fastest of batch sizes "
                       f"{', '.join(map(str, INFERENCE_BATCHES))}), fastest over fastest: {inf['fastest']:.3f} "
                       f"(target <= {TARGET_INFERENCE_RATIO}: {_verdict(report['inference_ratio_meets_target'])}); "
                       f"median of the paired ratios: {inf['median']:.3f}")
        rss = ratios.get("peak_rss")
        if rss:
            train = ratios.get("peak_rss_train")
            out.append(f"PEAK RSS convnet/keras: {rss['median']:.3f} over the whole run (median of the paired ratios; "
                       f"target <= 1/3)" + (f", {train['median']:.3f} up to the end of the epoch (before the "
                                             f"inference sweep)" if train else ""))
    floor = report.get("floor")
    if floor:
        out += ["", f"machine floor: the epoch's matrix products are {floor['epoch_flops'] / 1e12:.3f} TFLOP "
                    f"({floor['epoch_flops'] / TRAIN_IMAGES / 1e6:.2f} MFLOP per image, forward and backward); a "
                    f"{floor['gemm_size']}x{floor['gemm_size']} float32 GEMM ran at {floor['gemm_gflops']:.0f} GFLOP/s "
                    f"(best of {len(floor['gemm_gflops_values'])} measurements, "
                    f"{min(floor['gemm_gflops_values']):.0f}-{max(floor['gemm_gflops_values']):.0f}) on "
                    f"{settings['threads']} thread(s): floor {floor['epoch_floor_s']:.2f} s per epoch"]
        if floor.get("convnet_over_floor") is not None:
            out.append(f"FLOOR RATIO convnet's fastest epoch / floor: {floor['convnet_over_floor']:.2f} "
                       f"(target <= {TARGET_FLOOR_RATIO}: {_verdict(floor['convnet_over_floor'] <= TARGET_FLOOR_RATIO)})"
                       + (f"; keras: {floor['keras_over_floor']:.2f}" if floor.get("keras_over_floor") else ""))
    if report["failures"]:
        out += ["", "FAILED workers:"]
        for f in report["failures"]:
            out.append(f"  {f['library']}, repeat {f['repeat']}: {f['error']}")
            out += [f"    | {line}" for line in f.get("stderr_tail", "").splitlines()]
    if report["notes"]:
        out += ["", "notes:"] + [f"  - {n}" for n in report["notes"]]
    return "\n".join(out)


def _verdict(met):
    return "met" if met else "NOT met"


def measure_floor(threads, log):
    """GFLOP/s of a large float32 GEMM with ``threads`` BLAS threads (see :func:`benchmarks.machine.gemm_gflops`)."""
    from .machine import gemm_gflops

    gflops = gemm_gflops(threads)
    log(f"  large float32 GEMM: {gflops:.0f} GFLOP/s")
    return gflops


def floor_report(gflops_values, summary, model):
    """The machine's floor for an epoch and each library's fastest epoch over it."""
    from .machine import GEMM_SIZE

    flops = epoch_flops(model)
    best = max(gflops_values)
    floor = {"epoch_flops": flops, "inference_flops": inference_flops(model), "gemm_size": GEMM_SIZE,
             "gemm_gflops": best, "gemm_gflops_values": gflops_values, "epoch_floor_s": flops / (best * 1e9),
             "layer_macs_per_image": layer_macs(model), "target": TARGET_FLOOR_RATIO}
    floor["inference_floor_s"] = floor["inference_flops"] / (best * 1e9)
    for lib in ("convnet", "keras"):
        epochs = (summary.get(lib) or {}).get("epoch_s")
        floor[f"{lib}_over_floor"] = epochs["min"] / floor["epoch_floor_s"] if epochs else None
    return floor


def parent_main(args, log):
    if args.scaling:
        return scaling_main(args, log)
    started = time.perf_counter()
    threads = args.threads or _cores()
    libs = list(args.libs)
    notes = []
    settings = {"repeats": args.repeats, "steps": args.steps, "images": args.images, "libs": libs,
                "orders": [run_order(libs, r) for r in range(1, args.repeats + 1)], "threads": threads,
                "batch": BATCH, "predict_batch": 1000, "inference_batches": list(INFERENCE_BATCHES),
                "epoch_scale": EPOCH_STEPS / args.steps,
                "predict_scale": TEST_IMAGES / args.images, "warmup_fit_batches": args.warmup_batches,
                "data": args.data, "quick": args.quick, "timeout_s": args.timeout,
                "weights": "benchmarks.convnet_impl.seed_model(0).get_weights()"}
    if args.steps != EPOCH_STEPS:
        notes.append(f"epoch timed on {args.steps} batches of {BATCH}, scaled x{EPOCH_STEPS / args.steps:g} "
                     f"(fit's per-call overhead is scaled with it)")
    if args.images != TEST_IMAGES:
        notes.append(f"predict timed on {args.images:,} test images, scaled x{TEST_IMAGES / args.images:g}; "
                     f"accuracy is on those {args.images:,} images")
    if args.data == "random":
        notes.append("random data (--data random): test accuracy is meaningless")
    notes.append(f"each worker warms up (a {args.warmup_batches}-batch fit and a predict) on the model it then "
                 f"times, so the timed epoch starts from the seed weights plus {args.warmup_batches} Adam steps")
    notes.append("both workers load the same float32 arrays from .npy files the parent wrote (MNIST: 219 MB of "
                 "the peak RSS of each); the keras worker loads neither numba nor convnet's kernels")

    from .convnet_impl import seed_model
    results = {lib: {} for lib in libs}
    runs, failures, dropped = [], [], {}
    with tempfile.TemporaryDirectory(prefix="convnet-isolated-") as tmp:
        weights_path = Path(tmp) / "seed_weights.npz"
        write_weights(seed_model(0).get_weights(), weights_path)
        data_note = write_data(args.data, Path(tmp) / DATA_FOLDER, max(args.steps, args.warmup_batches) * BATCH,
                               args.images)
        if data_note:
            notes.append(data_note)
        gflops = []
        for repeat in range(1, args.repeats + 1):
            gflops.append(measure_floor(threads, log))
            for position, lib in enumerate(run_order(libs, repeat)):
                if lib in dropped:
                    continue
                log(f"[repeat {repeat}/{args.repeats}] {lib} worker ...")
                status, payload = run_worker(lib, weights_path, args, threads)
                run = {"repeat": repeat, "position": position, "library": lib, "status": status}
                if status == "ok":
                    results[lib][repeat] = payload
                    run["result"] = payload
                    log(f"  epoch {payload['epoch_s']:.3g} s, predict {payload['predict_s']:.3g} s, "
                        f"accuracy {payload['accuracy']:.4f}, peak RSS {payload['peak_rss_mb']:.0f} MB, "
                        f"start-up {payload['startup_s']:.3g} s")
                elif status == "unavailable":
                    dropped[lib] = payload
                    run["why"] = payload
                    notes.append(f"{lib} left out: {payload}" + ("; pip install -e .[bench]" if lib == "keras"
                                                                   else ""))
                    log(f"  {lib} unavailable: {payload}")
                else:
                    failures.append({"library": lib, "repeat": repeat, **payload})
                    run.update(payload)
                    dropped[lib] = "failed"
                    log(f"  {lib} worker FAILED in repeat {repeat}: {payload['error']}\n"
                        + "\n".join(f"    | {line}" for line in payload["stderr_tail"].splitlines()))
                    if repeat < args.repeats:
                        notes.append(f"{lib}: its later repeats were not run after its worker failed in "
                                     f"repeat {repeat}")
                runs.append(run)

    measured = {lib: results[lib] for lib in LIBRARIES if results.get(lib)}
    first = {lib: r[min(r)] for lib, r in measured.items()}
    for lib, rec in first.items():
        notes += [f"{lib}: {n}" for n in rec.get("notes", []) if f"{lib}: {n}" not in notes]
    ratios = None
    if "convnet" in measured and "keras" in measured:
        ratios = {"epoch": paired_ratios(measured, "epoch_s"), "predict": paired_ratios(measured, "predict_s"),
                  "inference": paired_ratios(measured, "inference_s"),
                  "peak_rss": paired_ratios(measured, "peak_rss_mb"),
                  "peak_rss_train": paired_ratios(measured, "peak_rss_train_mb")}
    epoch_ratio = ratios["epoch"]["fastest"] if ratios and ratios["epoch"] else None
    inference_ratio = ratios["inference"]["fastest"] if ratios and ratios["inference"] else None
    summary = summarize(measured)
    report = {
        "schema": 1,
        "kind": "isolated",
        "settings": settings,
        "runs": runs,
        "summary": summary,
        "ratios": ratios,
        "epoch_ratio": epoch_ratio,
        "epoch_ratio_is": "convnet's fastest epoch over keras's fastest (paired median in ratios.epoch.median)",
        "target_epoch_ratio": TARGET_EPOCH_RATIO,
        "epoch_ratio_meets_target": None if epoch_ratio is None else bool(epoch_ratio <= TARGET_EPOCH_RATIO),
        "inference_ratio": inference_ratio,
        "target_inference_ratio": TARGET_INFERENCE_RATIO,
        "inference_ratio_meets_target": None if inference_ratio is None
        else bool(inference_ratio <= TARGET_INFERENCE_RATIO),
        "floor": floor_report(gflops, summary, seed_model(0)) if gflops else None,
        "failures": failures,
        "all_workers_ok": not failures and bool(measured),
        "machine": _machine(threads, first),
        "notes": notes,
        "wall_time_s": None,
    }
    try:
        report["machine"]["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        report["machine"]["load_average_end"] = None
    report["wall_time_s"] = time.perf_counter() - started

    from .report import write_json
    print(render_table(report), flush=True)
    path = Path(args.out) / "isolated.json"
    write_json(report, path)
    print(f"\nwrote {os.fspath(path)} ({report['wall_time_s']:.0f} s)", flush=True)
    if failures:
        print("some workers FAILED (see above and 'failures' in the JSON)", file=sys.stderr)
        return 1
    if not measured:
        print("nothing was measured: no library could be run", file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------ scaling
def scaling_rows(results):
    """Table rows ``{batch, threads, <lib>_epoch_s, <lib>_images_per_s, ratio}``: each cell the fastest repeat.

    ``results`` maps ``(lib, batch, threads)`` to the list of worker records.
    """
    keys = sorted({(b, t) for _, b, t in results})
    rows = []
    for batch, threads in keys:
        row = {"batch": batch, "threads": threads}
        for lib in LIBRARIES:
            records = results.get((lib, batch, threads)) or []
            if records:
                best = min(r["epoch_s"] for r in records)
                row[f"{lib}_epoch_s"] = best
                row[f"{lib}_images_per_s"] = TRAIN_IMAGES / best
                row[f"{lib}_epoch_values"] = [r["epoch_s"] for r in records]
        if row.get("convnet_epoch_s") and row.get("keras_epoch_s"):
            row["ratio"] = row["convnet_epoch_s"] / row["keras_epoch_s"]
        rows.append(row)
    return rows


def render_scaling(rows):
    """The scaling table as text (one line per batch size and thread count)."""
    header = ["batch", "threads", "convnet epoch", "convnet images/s", "keras epoch", "keras images/s",
              "convnet/keras"]
    lines = []
    for row in rows:
        cells = [str(row["batch"]), str(row["threads"])]
        for lib in LIBRARIES:
            t = row.get(f"{lib}_epoch_s")
            cells += [f"{t:.2f} s" if t else "-", f"{row[f'{lib}_images_per_s']:,.0f}" if t else "-"]
        cells.append(f"{row['ratio']:.2f}" if row.get("ratio") else "-")
        lines.append(cells)
    widths = [max(len(header[i]), *(len(c[i]) for c in lines)) if lines else len(header[i])
              for i in range(len(header))]
    fmt = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))   # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(c) for c in lines])


def plot_scaling(rows, path):
    """images/s against batch size, one line per library and thread count (PNG at ``path``)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from convnet.plotting import save_figure

    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    styles = {"convnet": "-o", "keras": "--s"}
    for lib in LIBRARIES:
        for threads in sorted({r["threads"] for r in rows}):
            points = [(r["batch"], r[f"{lib}_images_per_s"]) for r in rows
                      if r["threads"] == threads and r.get(f"{lib}_images_per_s")]
            if points:
                ax.plot(*zip(*points), styles[lib], label=f"{lib}, {threads} thread{'s' if threads > 1 else ''}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({r["batch"] for r in rows}), [str(b) for b in sorted({r["batch"] for r in rows})])
    ax.set_xlabel("batch size")
    ax.set_ylabel("training images per second (one epoch of fit)")
    ax.set_title("Seed model, one process per library")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def scaling_main(args, log):
    """``--scaling``: one worker per (library, batch size, threads, repeat), fit only; table, JSON, plot."""
    from .report import write_json

    started = time.perf_counter()
    libs = list(args.libs)
    images = QUICK["steps"] * BATCH if args.quick else SCALING_IMAGES
    batches = [b for b in SCALING_BATCHES if images // b >= 2]
    results, runs, failures, dropped = {}, [], [], {}
    from .convnet_impl import seed_model
    with tempfile.TemporaryDirectory(prefix="convnet-scaling-") as tmp:
        weights_path = Path(tmp) / "seed_weights.npz"
        write_weights(seed_model(0).get_weights(), weights_path)
        note = write_data(args.data, Path(tmp) / DATA_FOLDER, max(images, args.warmup_batches * max(batches)),
                          args.images)
        for repeat in range(1, args.repeats + 1):
            for batch in batches:
                for threads in SCALING_THREADS:
                    for lib in run_order(libs, repeat):
                        if lib in dropped:
                            continue
                        log(f"[repeat {repeat}/{args.repeats}] {lib}, batch {batch}, {threads} thread(s) ...")
                        status, payload = run_worker(lib, weights_path, args, threads, batch=batch,
                                                     steps=images // batch)
                        runs.append({"repeat": repeat, "library": lib, "batch": batch, "threads": threads,
                                     "status": status, "result" if status == "ok" else "why": payload})
                        if status == "ok":
                            results.setdefault((lib, batch, threads), []).append(payload)
                            log(f"  epoch {payload['epoch_s']:.3g} s ({payload['images_per_s']:,.0f} images/s)")
                        else:
                            dropped[lib] = status
                            if status == "failed":
                                failures.append({"library": lib, "batch": batch, "threads": threads, **payload})
                            log(f"  {lib} {status}: {payload if status == 'unavailable' else payload['error']}")
    rows = scaling_rows(results)
    report = {"schema": 1, "kind": "scaling",
              "settings": {"repeats": args.repeats, "libs": libs, "batches": batches, "threads": list(SCALING_THREADS),
                           "images_timed": images, "scaled_to": TRAIN_IMAGES, "warmup_fit_batches": args.warmup_batches,
                           "data": args.data, "cell": "fastest repeat"},
              "rows": rows, "runs": runs, "failures": failures,
              "machine": _machine(max(SCALING_THREADS), {}),
              "notes": [n for n in [note] if n] + [f"{lib}: {why}" for lib, why in dropped.items()],
              "wall_time_s": time.perf_counter() - started}
    print(render_scaling(rows), flush=True)
    out = Path(args.out)
    write_json(report, out / "scaling.json")
    if rows:
        plot_scaling(rows, out / "scaling.png")
    print(f"\nwrote {os.fspath(out / 'scaling.json')} and scaling.png ({report['wall_time_s']:.0f} s)", flush=True)
    return 1 if failures else 0


def main(argv=None, log=None):
    args = parse_args(argv)
    if args.worker is not None:
        return worker_main(args)
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    return parent_main(args, log)


if __name__ == "__main__":
    sys.exit(main())
