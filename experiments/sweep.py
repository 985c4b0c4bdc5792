"""Run a grid of ``experiments.mnist`` runs (recipes x settings x seeds) and report their statistics.

    python -m experiments.sweep --recipe convnet,keras --seeds 0-9 --out runs/sweep
    python -m experiments.sweep --recipe keras --seeds 0-4 --set lr=1e-3,2e-3 --out runs/lr
    python -m experiments.sweep --recipe convnet,keras --seeds 0-9 --scheduler tcp://HOST:8786 --out DIR
    python -m experiments.sweep --from-results experiments/results --groups mnist,keras --out DIR

Each run is ``python -m experiments.mnist`` itself, in a child process of its own
(a crash, a leak or numba's thread state stays in it), with ``--recipe R --seed S
--out DIR/<recipe>/<setting>/seed<S> --quiet --no-plots --threads T`` and the
sweep's other options; its folder holds what that command always writes
(``metrics.json``, ``model.npz``, ``checkpoint.npz``).

``--set KEY=V1,V2`` adds a dimension to the grid (``--set`` again: all combinations);
the keys are experiments.mnist's options (:data:`SETTABLE`). The setting's folder
is ``default`` without ``--set``, else ``KEY=VALUE`` pairs joined by commas
(``lr=0.002``, ``batch-size=64,lr=0.002``), with the values written one way
(``2e-3`` and ``0.002`` are the same folder).

Where the runs go:

* by default, a pool of local worker processes: ``--workers`` runs at a time, each
  with ``--threads`` threads (default 1), together no more than the machine's cores;
* ``--scheduler tcp://HOST:PORT``: the workers of a running Dask cluster
  (``dask scheduler``, ``dask worker``), one task per run; a task lost with its
  worker is run again by Dask. ``--out`` must be the same folder for the client
  and every worker (one machine, or a shared file system).

A sweep can be stopped (Ctrl-C) and started again with the same command: a run
whose ``metrics.json`` is complete (final held-out accuracy, every epoch, the
same settings) is not run again; a run with a checkpoint but no metrics is
continued with ``--resume``; a run that fails is reported with its error and
the others go on. A file lock per run (``.seed<S>.lock`` beside its folder)
keeps two processes from ever training the same run at once.

At the end, ``DIR/summary.json``, ``DIR/summary.md`` and ``DIR/summary.png``
describe every run: per recipe and setting n, mean, standard deviation, a
Student-t 95% confidence interval of the mean, min, median, max; for every two
recipes under one setting the difference of the means with its Welch 95%
confidence interval and the seeds' pairs. ``--from-results`` builds the same
summary from recorded runs (``<group>-seed<S>.json``) without training.
"""
import argparse
import concurrent.futures
import contextlib
import io
import itertools
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from convnet.utils import directory_problem, os_error_message, remove_stale_temporaries
from experiments import mnist
from experiments.stats import describe, welch

#: ``--set`` keys: each is the experiments.mnist option of the same name, its values written one way
SETTABLE = ("lr", "batch-size", "epochs", "momentum", "optimizer", "dropout", "augment", "validation")
#: a grid larger than this is a typing mistake (a seed range like 0-99999), refused before it is built
MAX_RUNS = 10_000
#: metrics.json files are a few kB; anything far larger is not one
MAX_METRICS_BYTES = 50_000_000
SUMMARY_JSON, SUMMARY_MD, SUMMARY_PNG = "summary.json", "summary.md", "summary.png"
#: where ``experiments`` lives, for the children's PYTHONPATH (workers may start elsewhere)
PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


class SweepError(Exception):
    """A failure to report as one line ``error: ...``; ``code`` is the exit status."""

    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------ the grid
@dataclass(frozen=True)
class Run:
    """One cell of the grid: ``python -m experiments.mnist *argv --seed seed --out out``."""
    recipe: str
    setting: str
    seed: int
    argv: tuple
    out: str

    @property
    def name(self):
        return f"{self.recipe}/{self.setting}/seed{self.seed}"

    def command(self, resume=False):
        return [sys.executable, "-m", "experiments.mnist", *self.argv, "--seed", str(self.seed), "--out", self.out,
                *(["--resume"] if resume else [])]


def parse_seeds(text):
    """'0-9' / '0,3,5' / '0-4,10' -> sorted distinct seeds; ValueError naming what is wrong."""
    seeds = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise ValueError(f"expected seeds like 0-9 or 0,3,5 (whole numbers, ranges with '-'), got {text!r}")
        first = int(match[1])
        last = int(match[2]) if match[2] is not None else first
        if last < first:
            raise ValueError(f"the range {part.strip()} runs backwards: write {last}-{first}")
        if last >= 2 ** 63:
            raise ValueError(f"seeds must be below 2**63, got {last}")
        if last - first + 1 + len(seeds) > MAX_RUNS:
            raise ValueError(f"{text!r} names more than {MAX_RUNS} seeds")
        seeds.extend(range(first, last + 1))
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(f"seed {repeated[0]} is listed twice in {text!r}")
    return sorted(seeds)


def _canonical(key, text):
    """One spelling per value of a ``--set`` key (folder names must not depend on how it was typed)."""
    try:
        if key in ("lr", "momentum"):
            value = float(text)
            return repr(value) if math.isfinite(value) else text       # mnist names the bad value
        if key in ("batch-size", "epochs", "validation"):
            return str(int(text))
        if key == "dropout":
            return "-".join(repr(float(r)) for r in re.split(r"[/-]", text))
    except ValueError:
        raise ValueError(f"--set {key}: {text!r} is not a number" if key != "dropout" else
                         f"--set dropout: expected three rates joined by '/', like 0.25/0.25/0.5, got {text!r}")
    if key == "augment":
        if text.lower() not in ("on", "off"):
            raise ValueError(f"--set augment: expected on or off, got {text!r}")
        return text.lower()
    return text


def _mnist_options(key, value):
    if key == "augment":
        return ["--augment" if value == "on" else "--no-augment"]
    if key == "dropout":
        return ["--dropout", value.replace("-", ",")]
    return [f"--{key}", value]


def parse_setting(text):
    """'lr=1e-3,2e-3' -> ('lr', ['0.001', '0.002'])."""
    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep or not values.strip():
        raise ValueError(f"expected KEY=VALUE[,VALUE...] like lr=1e-3,2e-3, got {text!r}")
    if key not in SETTABLE:
        raise ValueError(f"unknown key {key!r} in {text!r}: expected one of {', '.join(SETTABLE)} "
                         f"(experiments.mnist's options)")
    canonical = [_canonical(key, v.strip()) for v in values.split(",")]
    if len(set(canonical)) < len(canonical):
        raise ValueError(f"--set {text}: a value is listed twice")
    return key, canonical


def settings(dimensions):
    """Every combination of the ``--set`` dimensions: [(folder name, mnist options)], ``default`` without any."""
    combos = []
    for values in itertools.product(*[[(key, v) for v in vals] for key, vals in dimensions]):
        name = ",".join(f"{k}={v}" for k, v in values) or "default"
        combos.append((name, [o for k, v in values for o in _mnist_options(k, v)]))
    return combos


def _mnist_args(argv):
    """experiments.mnist's own reading of ``argv``, or SweepError with its message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return mnist.parse_args(argv)
    except SystemExit:
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        message = lines[-1] if lines else "invalid arguments"
        raise SweepError(message.replace("python -m experiments.mnist: error: ", ""), code=2) from None


def build_grid(args):
    """Every run of the sweep, after checking each (recipe, setting) with experiments.mnist's own parser."""
    out = Path(os.path.abspath(args.out))
    common = ["--quiet", "--threads", str(args.threads)]
    for name in ("epochs", "limit", "test_limit"):
        if getattr(args, name) is not None:
            common += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if args.data_dir is not None:
        common += ["--data-dir", os.path.abspath(args.data_dir)]
    if not args.plots:
        common.append("--no-plots")
    runs = []
    for recipe in args.recipe:
        for setting, options in settings(args.set):
            argv = ("--recipe", recipe, *options, *common)
            problem = None
            try:
                _mnist_args([*argv, "--out", str(out / recipe / setting / "seed0")])
            except SweepError as e:
                problem = e
            if problem:
                raise SweepError(f"--recipe {recipe}" + (f" --set {setting}" if setting != "default" else "") +
                                 f": {problem}", code=2)
            runs += [Run(recipe, setting, seed, argv, str(out / recipe / setting / f"seed{seed}"))
                     for seed in args.seeds]
    return runs


# ------------------------------------------------------------------ one run
def _read_metrics(path):
    """metrics.json as a dict, or None when absent; ValueError when it is not a readable JSON object."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if size > MAX_METRICS_BYTES:
        raise ValueError(f"{path} is {size} bytes, not a run's metrics")
    try:
        record = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} cannot be read as JSON: {e}") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path} holds a JSON {type(record).__name__}, not a run's metrics")
    return record


def held_out_accuracy(record, held="test"):
    """The final held-out accuracy of a recorded run (a float in [0, 1]), or ValueError saying what is missing."""
    try:
        accuracy = record["final"][held]["accuracy"]
    except (KeyError, TypeError):
        raise ValueError(f"no final {held} accuracy (final.{held}.accuracy)") from None
    if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) or not 0 <= accuracy <= 1:
        raise ValueError(f"final.{held}.accuracy is {accuracy!r}, expected a number in [0, 1]")
    return float(accuracy)


def run_state(run):
    """("done", metrics) for a finished run; ("resume", None) with a checkpoint to continue from;
    ("new", None) otherwise; ("conflict", message) when the folder holds another run's metrics."""
    out = Path(run.out)
    try:
        expected = _mnist_args([*run.argv, "--seed", str(run.seed), "--out", run.out])
    except SweepError as e:                   # e.g. the folder became unwritable since the sweep began
        return "conflict", str(e)
    held = "validation" if expected.validation is not None else "test"
    try:
        record = _read_metrics(out / mnist.METRICS)
    except ValueError as e:
        return "conflict", str(e)
    if record is not None:
        saved = record.get("args") if isinstance(record.get("args"), dict) else {}
        wanted = mnist._train_args(expected)
        changed = [f"--{k.replace('_', '-')} {saved.get(k, mnist.RESUME_DEFAULTS.get(k))} (the sweep's: {v})"
                   for k, v in wanted.items() if saved.get(k, mnist.RESUME_DEFAULTS.get(k)) != v]
        if changed:
            return "conflict", f"{out / mnist.METRICS} is a run with other settings: {', '.join(changed)}"
        try:
            held_out_accuracy(record, held)
        except ValueError as e:
            return "conflict", f"{out / mnist.METRICS}: {e}"
        if record.get("epochs_completed") == expected.epochs:
            return "done", record
    if (out / mnist.CHECKPOINT).is_file():
        return "resume", None
    return "new", None


def _die_with_parent():
    """In the child: be killed when the worker that started it dies (Linux), so a run lost with its
    worker does not go on training beside its retry."""
    with contextlib.suppress(Exception):
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)      # PR_SET_PDEATHSIG


#: local children, so that Ctrl-C or an error in the sweep can stop them; once stopping, none starts
_children = set()
_children_lock = threading.Lock()
_stopping = threading.Event()


@contextlib.contextmanager
def _run_lock(run):
    """Hold ``.seed<S>.lock`` beside the run's folder (POSIX): one process trains a run at a time.
    The child inherits the lock, so it is held until both the worker and the child are gone."""
    try:
        import fcntl
    except ImportError:
        yield None
        return
    path = Path(run.out).parent / f".seed{run.seed}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield f
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def execute(run):
    """Train one run in its own ``python -m experiments.mnist`` process unless it is finished already.

    Runs wherever it is called (a local pool thread or a Dask worker); returns a plain dict:
    ``status`` (done, skipped, failed), ``accuracy``, ``seconds``, ``error``. Whatever goes wrong is
    that run's failure, never the sweep's.
    """
    started = time.monotonic()
    result = {"recipe": run.recipe, "setting": run.setting, "seed": run.seed, "accuracy": None, "error": None}
    try:
        return _execute(run, result, started)
    except OSError as e:
        result["error"] = os_error_message(e)
    except Exception as e:                   # a bug here must not take the other runs down with it
        result["error"] = f"{type(e).__name__}: {e}"
    return _result(result, "failed", None, started)


def _execute(run, result, started):
    with _run_lock(run) as lock:
        state, detail = run_state(run)
        if state in ("done", "conflict"):
            return _result(result, state, detail, started, skipped=True)
        for name in (mnist.CHECKPOINT, mnist.MODEL, mnist.METRICS):    # what a killed run was writing
            remove_stale_temporaries(Path(run.out) / name)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH"))
                                                           if p))
        try:
            child = subprocess.Popen(run.command(resume=state == "resume"), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env,
                                     pass_fds=() if lock is None else (lock.fileno(),),
                                     preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
                                     start_new_session=True)     # Ctrl-C reaches it once: from the sweep
        except OSError as e:
            result["error"] = f"could not start experiments.mnist: {os_error_message(e)}"
            return _result(result, "failed", None, started)
        with _children_lock:
            _children.add(child)
            if _stopping.is_set():                      # the sweep was stopped while this one started
                child.send_signal(signal.SIGINT)
        try:
            _, stderr = child.communicate()
        finally:
            with _children_lock:
                _children.discard(child)
        state, detail = run_state(run)
        if state == "done" and child.returncode == 0:
            return _result(result, "done", detail, started)
        lines = [line for line in stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:")]
        why = (errors or lines or [f"exit status {child.returncode}"])[-1]
        result["error"] = f"{why} (exit status {child.returncode})"
        return _result(result, "failed", None, started)


def _result(result, state, detail, started, skipped=False):
    if state == "conflict":
        result["error"] = detail
        state = "failed"
    elif state == "done":
        held = "validation" if detail["args"].get("validation") is not None else "test"
        result["accuracy"], result["held_out"] = held_out_accuracy(detail, held), held
        state = "skipped" if skipped else "done"
    result["status"] = state
    result["seconds"] = time.monotonic() - started
    return result


# ------------------------------------------------------------------ running the grid
def cores():
    """The cores this process may run on."""
    with contextlib.suppress(AttributeError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class Progress:
    """A bar of runs done / failed / running with the time left, and one line per finished run."""

    def __init__(self, total, quiet=False):
        from tqdm import tqdm
        self.done = self.failed = 0
        self.bar = tqdm(total=total, unit="run", disable=quiet or total == 0, dynamic_ncols=True)
        self.quiet = quiet

    def finished(self, result, running):
        if result["status"] == "failed":
            self.failed += 1
            line = f"failed  {result['recipe']}/{result['setting']}/seed{result['seed']}: {result['error']}"
        else:
            self.done += 1
            line = (f"{'done' if result['status'] == 'done' else 'found':7} "
                    f"{result['recipe']}/{result['setting']}/seed{result['seed']}  "
                    f"{result['held_out']} accuracy {100 * result['accuracy']:.2f}%  {result['seconds']:.1f} s")
        if not self.quiet:
            self.bar.write(line)
        self.bar.set_postfix(done=self.done, failed=self.failed, running=running, refresh=False)
        self.bar.update(1)

    def close(self):
        self.bar.close()


def run_local(runs, workers, progress):
    """The runs on this machine, ``workers`` at a time; each run is a child process, so a pool of
    threads waiting on them is all the pool there is to manage."""
    results = []
    _stopping.clear()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
    try:
        pending = {pool.submit(execute, run) for run in runs}
        for future in concurrent.futures.as_completed(pending):
            results.append(future.result())
            running = min(workers, len(pending) - len(results))
            progress.finished(results[-1], running)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        with _children_lock:
            _stopping.set()
            for child in _children:
                with contextlib.suppress(OSError):
                    child.send_signal(signal.SIGINT)      # experiments.mnist keeps its last epoch's checkpoint
        raise
    finally:
        pool.shutdown(wait=True)
    return results


def run_dask(runs, scheduler, progress):
    """The runs as tasks on a Dask cluster; Dask runs again a task whose worker was lost."""
    try:
        from dask.distributed import Client, as_completed
    except ImportError:
        raise SweepError("--scheduler needs dask.distributed: pip install 'convnet[sweep]'") from None
    try:
        client = Client(scheduler, timeout="10s")
    except (OSError, TimeoutError) as e:
        raise SweepError(f"--scheduler {scheduler}: cannot reach the Dask scheduler ({e})") from None
    results = []
    with client:
        futures = {client.submit(execute, run, pure=False, key=f"sweep-{run.name}-{time.time_ns()}"): run
                   for run in runs}
        running = None
        try:
            for future in as_completed(futures):
                try:
                    results.append(future.result())
                except Exception as e:                  # e.g. KilledWorker: lost with too many workers
                    run = futures[future]
                    results.append({"recipe": run.recipe, "setting": run.setting, "seed": run.seed, "accuracy": None,
                                    "status": "failed", "seconds": 0.0, "error": f"{type(e).__name__}: {e}"})
                with contextlib.suppress(Exception):
                    running = sum(len(keys) for keys in client.processing().values())
                progress.finished(results[-1], running)
        except BaseException:
            client.cancel(list(futures))
            raise
    return results


# ------------------------------------------------------------------ summaries
def collect(runs, failures=None):
    """Every run of the grid as a row of the summary, from its folder: finished or why not."""
    failures = failures or {}
    rows = []
    for run in runs:
        row = {"recipe": run.recipe, "setting": run.setting, "seed": run.seed, "dir": run.out, "accuracy": None,
               "status": "not run", "error": failures.get(run.name)}
        state, detail = run_state(run)
        if state == "done":
            row.update(_finished_row(detail))
        elif state == "conflict":
            row.update(status="failed", error=detail)
        elif row["error"]:
            row["status"] = "failed"
        rows.append(row)
    return rows


def _finished_row(record):
    held = "validation" if (record.get("args") or {}).get("validation") is not None else "test"
    seconds = record.get("seconds_per_epoch")
    return {"status": "done", "accuracy": held_out_accuracy(record, held), "held_out": held,
            "epochs": record.get("epochs_completed"),
            "train_seconds": float(sum(seconds)) if isinstance(seconds, list) and
            all(isinstance(s, (int, float)) for s in seconds) else None}


def summarize(rows, command):
    """summary.json's content: every run, the statistics of each (recipe, setting), the recipes' differences."""
    groups = {}
    for row in rows:
        groups.setdefault((row["recipe"], row["setting"]), []).append(row)
    stats = []
    for (recipe, setting), members in groups.items():
        accuracies = {r["seed"]: r["accuracy"] for r in members if r["status"] == "done"}
        stats.append({"recipe": recipe, "setting": setting, **describe(list(accuracies.values())),
                      "runs": len(members), "failed": sum(r["status"] == "failed" for r in members),
                      "not_run": sum(r["status"] == "not run" for r in members), "accuracy_by_seed": accuracies})
    comparisons = []
    for a, b in itertools.combinations(stats, 2):
        if a["setting"] != b["setting"]:
            continue
        pa, pb = a["accuracy_by_seed"], b["accuracy_by_seed"]
        pairs = [{"seed": s, "a": pa[s], "b": pb[s], "difference": pa[s] - pb[s]} for s in sorted(pa) if s in pb]
        comparisons.append({"a": a["recipe"], "b": b["recipe"], "setting": a["setting"],
                            "welch": welch(list(pa.values()), list(pb.values())), "pairs": pairs})
    for s in stats:                      # JSON keys are strings; the per-seed values are in "runs" too
        s["accuracy_by_seed"] = {str(k): v for k, v in sorted(s["accuracy_by_seed"].items())}
    held = sorted({r.get("held_out", "test") for r in rows if r["status"] == "done"}) or ["test"]
    return {"command": command, "metric": f"final {' or '.join(held)} accuracy, from each run's metrics.json",
            "confidence": "95%: Student t for a mean, Welch-Satterthwaite for a difference of means",
            "groups": stats, "comparisons": comparisons, "runs": rows}


def _pct(x, digits=2):
    return "" if x is None else f"{100 * x:.{digits}f}"


def _interval(ci, digits=3, sign=""):
    return "n/a" if ci is None else f"[{100 * ci[0]:{sign}.{digits}f}, {100 * ci[1]:{sign}.{digits}f}]"


def markdown(summary):
    """summary.md: the tables a reader checks, in percent."""
    lines = ["# Sweep summary", "", f"Made by `{summary['command']}`.", "",
             f"{summary['metric'].split(',')[0].capitalize()} (%) of each run; 95% confidence intervals "
             "(Student t for a mean, Welch for a difference of means).", "",
             "| recipe | setting | n | mean | sd | 95% CI of the mean | min | median | max |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|"]
    for g in summary["groups"]:
        missing = [f"{g[k]} {k.replace('_', ' ')}" for k in ("failed", "not_run") if g[k]]
        n = f"{g['n']}" + (f" ({', '.join(missing)})" if missing else "")
        lines.append(f"| {g['recipe']} | {g['setting']} | {n} | {_pct(g['mean'], 3)} | {_pct(g['sd'], 3)} | "
                     f"{_interval(g['ci95'])} | {_pct(g['min'])} | {_pct(g['median'])} | {_pct(g['max'])} |")
    seeds = sorted({r["seed"] for r in summary["runs"]})
    lines += ["", "Every run:", "", "| recipe | setting | " + " | ".join(f"seed {s}" for s in seeds) + " |",
              "|---|---|" + "---:|" * len(seeds)]
    cells = {(r["recipe"], r["setting"], r["seed"]): r for r in summary["runs"]}
    for g in summary["groups"]:
        row = []
        for s in seeds:
            r = cells.get((g["recipe"], g["setting"], s))
            row.append("" if r is None else _pct(r["accuracy"]) if r["status"] == "done" else r["status"])
        lines.append(f"| {g['recipe']} | {g['setting']} | " + " | ".join(row) + " |")
    for c in summary["comparisons"]:
        w = c["welch"]
        lines += ["", f"{c['a']} - {c['b']} ({c['setting']}): "
                  + ("not enough runs for an interval (two a side needed)" if w is None else
                     f"{100 * w['difference']:+.3f} points, 95% CI {_interval(w['ci95'], sign='+')}"
                     + (f" (Welch, {w['df']:.1f} degrees of freedom)" if w["df"] else ""))]
        if c["pairs"]:
            lines += ["", f"| seed | {c['a']} | {c['b']} | difference |", "|---:|---:|---:|---:|"]
            lines += [f"| {p['seed']} | {_pct(p['a'])} | {_pct(p['b'])} | {100 * p['difference']:+.2f} |"
                      for p in c["pairs"]]
    failed = [r for r in summary["runs"] if r["status"] != "done"]
    if failed:
        lines += ["", "Runs without a result:", ""]
        lines += [f"- {r['recipe']}/{r['setting']}/seed{r['seed']}: {r['status']}"
                  + (f": {r['error']}" if r.get("error") else "") for r in failed]
    return "\n".join(lines) + "\n"


def plot(summary, path):
    """Every run's accuracy per group (a dot each), with the mean and its 95% interval."""
    from matplotlib.figure import Figure
    from convnet.plotting import save_figure
    groups = [g for g in summary["groups"] if g["n"]]
    fig = Figure(figsize=(max(4.0, 1.4 * len(groups) + 1.5), 4.0))
    ax = fig.add_subplot()
    for i, g in enumerate(groups):
        values = [100 * v for v in g["accuracy_by_seed"].values()]
        offsets = [0.25 * ((j % 7) / 6 - 0.5) if len(values) > 1 else 0 for j in range(len(values))]
        ax.scatter([i + o for o in offsets], values, s=14, alpha=0.7, color=f"C{i % 10}")
        if g["ci95"]:
            ax.errorbar(i + 0.3, 100 * g["mean"], yerr=[[100 * (g["mean"] - g["ci95"][0])],
                                                        [100 * (g["ci95"][1] - g["mean"])]],
                        fmt="o", color="k", capsize=4, ms=4)
    ax.set_xticks(range(len(groups)), [f"{g['recipe']}\n{g['setting']}" for g in groups], fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("every run (dots); mean and 95% CI (black)", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    save_figure(fig, path)


def summary_problem(out):
    """Why the summary cannot be written into ``out`` (a summary.json there that is not a sweep's), or None."""
    path = out / SUMMARY_JSON
    try:
        record = _read_metrics(path)
    except ValueError as e:
        return f"{e}: not a sweep's summary, left as it is"
    if record is None:
        others = [n for n in (SUMMARY_MD, SUMMARY_PNG) if (out / n).exists()]
        return f"{out / others[0]} exists without {SUMMARY_JSON}: not a sweep's, left as it is" if others else None
    if not {"command", "groups", "runs"} <= record.keys():
        return f"{path} is not a sweep's summary (no command, groups and runs), left as it is"
    return None


def write_summary(summary, out):
    from convnet.saving import write_json
    problem = summary_problem(out)
    if problem:
        raise SweepError(problem)
    out.mkdir(parents=True, exist_ok=True)
    write_json(summary, out / SUMMARY_JSON)
    from convnet.utils import atomic_path
    with atomic_path(out / SUMMARY_MD) as tmp:
        tmp.write_text(markdown(summary), encoding="utf-8")
    plot(summary, out / SUMMARY_PNG)


def recorded_rows(results, groups):
    """Rows for :func:`summarize` from recorded runs ``<group>-seed<S>.json`` (metrics.json or
    experiments.keras_mnist records): the group stands for the recipe, the setting is ``recorded``."""
    rows = []
    for group in groups:
        paths = sorted(results.glob(f"{group}-seed*.json"))
        for path in paths:
            match = re.fullmatch(re.escape(group) + r"-seed(\d+)\.json", path.name)
            if not match:
                continue
            row = {"recipe": group, "setting": "recorded", "seed": int(match[1]), "dir": str(path),
                   "accuracy": None, "status": "failed", "error": None}
            try:
                record = _read_metrics(path)
                row.update(_finished_row(record))
            except ValueError as e:
                row["error"] = str(e)
            rows.append(row)
        if not any(r["recipe"] == group for r in rows):
            raise SweepError(f"--groups {group}: no {group}-seed<S>.json in {results}", code=2)
    return sorted(rows, key=lambda r: (groups.index(r["recipe"]), r["seed"]))


# ------------------------------------------------------------------ command line
def _list(allowed=None, what="value"):
    def parse(text):
        items = [t.strip() for t in text.split(",")]
        if not all(items):
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        if allowed is not None:
            for item in items:
                if item not in allowed:
                    raise argparse.ArgumentTypeError(f"unknown {what} {item!r}: expected {', '.join(allowed)}")
        if len(set(items)) < len(items):
            raise argparse.ArgumentTypeError(f"a {what} is listed twice in {text!r}")
        return items
    return parse


def _typed(parse):
    def wrapped(text):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return wrapped


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m experiments.sweep", description=__doc__.split("\n")[0])
    p.add_argument("--recipe", type=_list(mnist.RECIPES, "recipe"), default=None, metavar="R1,R2",
                   help=f"recipes to train ({', '.join(mnist.RECIPES)})")
    p.add_argument("--seeds", type=_typed(parse_seeds), default=None, help="seeds, like 0-9 or 0,3,5")
    p.add_argument("--epochs", type=int, default=None, help="experiments.mnist's --epochs (default 10)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="train on the first N images only")
    p.add_argument("--test-limit", type=int, default=None, metavar="N", help="test on the first N images only")
    p.add_argument("--set", type=_typed(parse_setting), action="append", default=[], metavar="KEY=V1,V2",
                   help=f"one more dimension of the grid: an experiments.mnist option and its values; keys: "
                        f"{', '.join(SETTABLE)} (dropout as 0.25/0.25/0.5, augment as on/off)")
    p.add_argument("--data-dir", type=Path, default=None, help="MNIST cache (experiments.mnist's --data-dir)")
    p.add_argument("--threads", type=int, default=1, help="threads of each run (default 1)")
    p.add_argument("--workers", type=int, default=None,
                   help="runs at a time on this machine (default: the cores divided by --threads)")
    p.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                   help="run on this Dask cluster's workers instead of this machine")
    p.add_argument("--plots", action="store_true", help="let every run draw its plots (default: no per-run plots)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-run lines")
    p.add_argument("--from-results", type=Path, default=None, metavar="DIR",
                   help="train nothing: summarise the recorded runs DIR/<group>-seed<S>.json of --groups")
    p.add_argument("--groups", type=_list(), default=None, metavar="G1,G2",
                   help="with --from-results: the file prefixes to summarise, like default,mnist,keras")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="the sweep's folder")
    args = p.parse_args(argv)
    problem = directory_problem(args.out) or summary_problem(args.out)
    if problem:
        p.error(f"--out {args.out}: {problem}")
    if args.from_results is not None:
        if not args.from_results.is_dir():
            p.error(f"--from-results {args.from_results} is not a directory")
        if not args.groups:
            p.error("--from-results needs --groups, like --groups default,mnist,keras")
        given = [f"--{n.replace('_', '-')}" for n in ("recipe", "seeds", "epochs", "limit", "test_limit", "scheduler",
                                                      "workers") if getattr(args, n) is not None]
        if given or args.set:
            p.error(f"--from-results trains nothing: {', '.join(given or ['--set'])} does not apply")
        return args
    if args.groups:
        p.error("--groups goes with --from-results")
    for name in ("recipe", "seeds"):
        if getattr(args, name) is None:
            p.error(f"--{name} is required (or --from-results)")
    for name in ("epochs", "limit", "test_limit", "threads", "workers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    keys = [key for key, _ in args.set]
    for key in set(keys):
        if keys.count(key) > 1:
            p.error(f"--set {key} is given twice: list its values in one --set {key}=V1,V2")
    if "epochs" in keys and args.epochs is not None:
        p.error("--epochs and --set epochs=... both give the epochs: use one")
    if args.scheduler is not None:
        if args.workers is not None:
            p.error("--workers is for this machine's pool; with --scheduler the cluster's workers run the sweep")
        if not re.fullmatch(r"(tcp|tls)://[^\s/:]+:\d{1,5}", args.scheduler):
            p.error(f"--scheduler expects an address like tcp://HOST:8786, got {args.scheduler!r}")
    else:
        available = cores()
        if args.threads > available:
            p.error(f"--threads {args.threads} is more than the {available} cores here")
        if args.workers is None:
            args.workers = max(1, available // args.threads)
        elif args.workers * args.threads > available:
            p.error(f"--workers {args.workers} x --threads {args.threads} is more than the {available} cores "
                    f"here: at most --workers {max(1, available // args.threads)}")
    total = len(args.recipe) * len(args.seeds) * math.prod(len(v) for _, v in args.set)
    if total > MAX_RUNS:
        p.error(f"the grid has {total} runs, more than {MAX_RUNS}: fewer seeds or --set values")
    return args


def main(argv=None):
    """Run the sweep; returns the exit status (0 every run done, 1 some failed, 2 usage error, 130 interrupted)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join(["python", "-m", "experiments.sweep", *argv])
    args = parse_args(argv)
    out = Path(args.out)
    try:
        if args.from_results is not None:
            rows = recorded_rows(args.from_results, args.groups)
            summary = summarize(rows, command)
            write_summary(summary, out)
            print(markdown(summary))
            return 0 if all(r["status"] == "done" for r in rows) else 1
        return _sweep(args, command, out)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    except OSError as e:
        print(f"error: {os_error_message(e)}", file=sys.stderr)
        return 1


def _sweep(args, command, out):
    runs = build_grid(args)
    states = {run.name: run_state(run)[0] for run in runs}
    todo = [run for run in runs if states[run.name] != "done"]
    finished = len(runs) - len(todo)
    where = (f"the Dask cluster at {args.scheduler}" if args.scheduler else
             f"{args.workers} local worker{'s' * (args.workers > 1)} x {args.threads} thread"
             f"{'s' * (args.threads > 1)}")
    if not args.quiet:
        print(f"{len(runs)} run{'s' * (len(runs) != 1)} in {out}: {finished} finished already, {len(todo)} to run "
              f"on {where}", flush=True)
    progress = Progress(len(todo), quiet=args.quiet)
    started = time.monotonic()
    interrupted = False
    results = []
    try:
        if todo:
            results = (run_dask(todo, args.scheduler, progress) if args.scheduler else
                       run_local(todo, args.workers, progress))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.close()
    failures = {f"{r['recipe']}/{r['setting']}/seed{r['seed']}": r["error"] for r in results
                if r["status"] == "failed"}
    rows = collect(runs, failures)
    summary = summarize(rows, command)
    summary["wall_seconds"] = time.monotonic() - started
    write_summary(summary, out)
    done = sum(r["status"] == "done" for r in rows)
    failed = sum(r["status"] == "failed" for r in rows)
    print(f"{done} of {len(rows)} runs done, {failed} failed, in {summary['wall_seconds']:.1f} s; "
          f"summary: {out / SUMMARY_MD}", file=sys.stderr if interrupted else sys.stdout)
    if interrupted:
        print("interrupted: the same command continues the sweep (finished runs are kept)", file=sys.stderr)
        return 130
    return 0 if done == len(rows) else 1


if __name__ == "__main__":
    # run the importable module, not this __main__ copy: Dask sends execute and Run to the workers by name
    from experiments.sweep import main as module_main
    sys.exit(module_main())
