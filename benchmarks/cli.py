"""``python -m benchmarks``: time convnet against TensorFlow (and PyTorch) and write the results.

The order of a run:

1. set every library to the machine's cores (numba, BLAS, then TF and torch as
   they are imported);
2. load MNIST (or random data of its shape, with a note);
3. build the rows (:mod:`benchmarks.cases`) for the groups asked for;
4. for each row: warm up every column (first call timed separately), check
   that all columns agree with convnet, then time them in turn;
5. print the table, write ``benchmark.json`` and ``benchmark.png`` to ``--out``.

The exit status is 0 when every agreement check passed, 1 otherwise.
"""
import argparse
import os
import sys
import time
from pathlib import Path

from convnet.argtypes import bounded_int, comma_list  # noqa: F401  (benchmarks.cli.bounded_int as before)

from .timing import prepare_all, repeat_all

DEFAULT_OUT = Path(__file__).resolve().parent / "results"

#: settings of a full run and of --quick: (repeats, long repeats, seconds per repeat, epoch steps, images)
#: and the untimed pause before each repeat (see timing.repeat_all)
FULL = dict(repeats=15, long_repeats=3, min_repeat_s=0.2, settle_s=0.05, steps=None, images=10_000)
QUICK = dict(repeats=5, long_repeats=2, min_repeat_s=0.03, settle_s=0.01, steps=100, images=2_000)


positive_int = bounded_int(1)


def groups_arg(text):
    from .cases import GROUPS

    return comma_list(text, GROUPS, "group(s)")


def parse_args(argv=None):
    from .cases import GROUPS

    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time convnet's kernels, training step, epoch and inference against TensorFlow "
                    "(and PyTorch when it is installed), on the seed model's shapes.")
    p.add_argument("--quick", action="store_true",
                   help="about a minute: fewer, shorter repeats; epoch from 100 batches and inference from "
                        "2,000 images, both scaled up")
    p.add_argument("--only", type=groups_arg, default=list(GROUPS), metavar="GROUPS",
                   help=f"comma-separated groups to run (default all: {','.join(GROUPS)})")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                   help="where to write benchmark.json and benchmark.png (default benchmarks/results/)")
    p.add_argument("--repeats", type=positive_int, metavar="N",
                   help="timed repeats per column for every row (default 15, epoch and inference 3; "
                        "--quick 5 and 2)")
    p.add_argument("--steps", type=positive_int, metavar="N",
                   help="time the epoch on N batches and scale to 1,875 (default: a whole epoch; --quick 100)")
    p.add_argument("--images", type=positive_int, metavar="N",
                   help="time inference on N test images and scale to 10,000 (default 10,000; --quick 2,000)")
    p.add_argument("--data", choices=("mnist", "random"), default="mnist",
                   help="MNIST (default; random data of its shape with a note if it cannot be loaded) or random")
    p.add_argument("--no-tf", action="store_true",
                   help="leave TensorFlow out (it is also left out, with a note, when it cannot be imported)")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="threads for every library (default: the cores this process may use)")
    p.add_argument("--no-plot", action="store_true", help="do not draw benchmark.png")
    args = p.parse_args(argv)
    check_out(p, args.out)
    return args


def check_out(parser, out):
    """A usage error now, not after minutes of timing, if ``--out`` cannot take the results."""
    from convnet.utils import directory_problem

    problem = directory_problem(out)
    if problem:
        parser.error(f"--out {out}: {problem}")


def settings_from(args):
    settings = dict(QUICK if args.quick else FULL)
    if args.repeats is not None:
        settings["repeats"] = settings["long_repeats"] = args.repeats
    if args.steps is not None:
        settings["steps"] = args.steps
    if args.images is not None:
        settings["images"] = args.images
    settings.update(quick=args.quick, groups=args.only, data=args.data)
    return settings


def load_backends(args, threads, notes, log):
    """convnet on both backends (engine and textbook), and whichever of TensorFlow and PyTorch can be imported."""
    from . import convnet_impl

    backends = {"convnet": convnet_impl.Backend("numba"),
                "numpy": convnet_impl.Backend("numpy")}
    if args.no_tf:
        notes.append("TensorFlow left out (--no-tf)")
    else:
        log("importing TensorFlow ...")
        from . import tf_impl
        try:
            note = tf_impl.import_tensorflow(threads)
        except ImportError as err:
            notes.append(f"TensorFlow left out: it cannot be imported ({err}); pip install -e .[bench]")
        else:
            backends["tensorflow"] = tf_impl.Backend()
            if note:
                notes.append(note)
    from . import torch_impl
    try:
        torch_impl.import_torch(threads)
    except ImportError:
        pass                                     # the PyTorch column appears only when torch imports
    else:
        backends["torch"] = torch_impl.Backend()
    return backends


def run_case(case, min_repeat_s, settle_s, log):
    """Warm up, check agreement, then time; columns that disagree with convnet are not timed."""
    prepare_all(case.columns, min_repeat_s)
    ok = case.check()
    for lib, record in case.checks.items():
        if not record["passed"]:
            log(f"  AGREEMENT CHECK FAILED for {lib} in {case.name!r}: {record}")
            del case.columns[lib]
    repeat_all(case.columns, case.repeats, settle_s)
    return ok


def main(argv=None, log=None):
    args = parse_args(argv)
    settings = settings_from(args)
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    started = time.perf_counter()

    from .machine import ThreadSettings, machine_cores
    threads = ThreadSettings(args.threads or machine_cores()).configure_numpy_numba()
    notes = []
    try:
        backends = load_backends(args, threads, notes, log)
        from . import cases as cases_module, report
        from .data import load_data

        log("loading data ...")
        data = load_data(args.data)
        if data.note:
            notes.append(data.note)
        all_cases = cases_module.build_cases(
            backends, data, settings["groups"], settings["repeats"], settings["long_repeats"],
            steps=settings["steps"], inference_images=settings["images"])
        all_ok = True
        for i, case in enumerate(all_cases, 1):
            log(f"[{i}/{len(all_cases)}] {case.name} ...")
            all_ok &= run_case(case, settings["min_repeat_s"], settings["settle_s"], log)

        from .machine import describe_machine
        result = {
            "schema": 1,
            "machine": describe_machine(threads),
            "settings": {**settings, "batch": cases_module.BATCH,
                         "data_source": data.source, "tolerance": _tolerance()},
            "columns": list(backends),
            "rows": [report.row_record(c) for c in all_cases],
            "all_checks_passed": bool(all_ok),
            "notes": notes,
            "wall_time_s": None,
        }
        result["wall_time_s"] = time.perf_counter() - started
        print(report.render_table(result), flush=True)
        out = Path(args.out)
        report.write_json(result, out / "benchmark.json")
        written = [out / "benchmark.json"]
        if not args.no_plot:
            report.plot(result, out / "benchmark.png")
            written.append(out / "benchmark.png")
        print("\nwrote " + ", ".join(os.fspath(p) for p in written)
              + f" ({result['wall_time_s']:.0f} s)", flush=True)
    finally:
        threads.restore()
    if not all_ok:
        print("some agreement checks FAILED: those columns were not timed (see 'check')", file=sys.stderr)
        return 1
    return 0


def _tolerance():
    from .checks import TOLERANCE
    return TOLERANCE
