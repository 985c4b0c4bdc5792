"""``python -m benchmarks.isolated``: convnet's and Keras's epoch and inference, each in its own process.

``python -m benchmarks`` runs every library in one process, one after the
other. For the model rows that is not a fair comparison: once TensorFlow is
loaded and has run, its thread pools and convnet's (numba, BLAS) get in each
other's way, and convnet's training step is measurably slower than in a
process of its own; Keras's epoch time, too, varies a lot from run to run.
This command measures each library in a **fresh subprocess** instead
(this module is the parent; :mod:`benchmarks.isolated_worker` the worker,
:mod:`benchmarks.isolated_report` the figures and tables):

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
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .cli import bounded_int, check_out, comma_list
from .isolated_report import (TARGET_EPOCH_RATIO, TARGET_INFERENCE_RATIO, floor_report, paired_ratios, plot_scaling,
                              render_scaling, render_table, scaling_rows, summarize)
from .isolated_worker import (BATCH, DATA_FOLDER, EPOCH_STEPS, INFERENCE_BATCHES, LIBRARIES, TEST_IMAGES,
                              TRAIN_IMAGES, UNAVAILABLE_EXIT, worker_main, write_data, write_weights)
from .machine import machine_cores


DEFAULT_ORDER = ("keras", "convnet")     # repeat 1's order; repeat 2 reverses it, and so on
DEFAULT_REPEATS = 5
QUICK = dict(repeats=2, steps=100, images=2_000)
DEFAULT_WARMUP_BATCHES = 10
WARMUP_BATCHES_RANGE = (2, 64)
DEFAULT_TIMEOUT_S = 1800.0
SCALING_BATCHES = (32, 64, 128, 256)      # --scaling: epoch time against batch size ...
SCALING_THREADS = (1, 2)                  # ... and thread count
SCALING_IMAGES = 12_800                   # --scaling: training images timed per worker (scaled to 60,000)
SCALING_REPEATS = 2                       # --scaling: runs per (library, batch size, threads) unless --repeats
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


def measure_floor(threads, log):
    """GFLOP/s of a large float32 GEMM with ``threads`` BLAS threads (see :func:`benchmarks.machine.gemm_gflops`)."""
    from .machine import gemm_gflops

    gflops = gemm_gflops(threads)
    log(f"  large float32 GEMM: {gflops:.0f} GFLOP/s")
    return gflops


def parent_main(args, log):
    if args.scaling:
        return scaling_main(args, log)
    started = time.perf_counter()
    threads = args.threads or machine_cores()
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
