"""Train the seed CNN on MNIST and write everything a reader needs to check the result.

    python -m experiments.mnist                       # 10 epochs, batch 32, Adam(1e-3), convnet's recipe
    python -m experiments.mnist --recipe keras        # exactly as Keras trains the seed model
    python -m experiments.mnist --no-augment          # convnet's recipe without the augmentation
    python -m experiments.mnist --epochs 30           # longer: the schedule stretches to the run
    python -m experiments.mnist --validation 10000    # hold out the last 10,000 training images
    python -m experiments.mnist --epochs 1 --limit 5000
    python -m experiments.mnist --out runs/a --resume  # continue an interrupted run
    python -m experiments.mnist --backend numpy --epochs 1 --limit 5000   # the textbook tier alone

The model is the Keras MNIST CNN (150,858 parameters)::

    Conv2D(32, 4, relu) -> MaxPool2D(2) -> Dropout(0.25)
    Conv2D(32, 4, relu) -> MaxPool2D(2) -> Dropout(0.25)
    Flatten -> Dense(256, relu) -> Dropout(0.5) -> Dense(10, softmax)

Two recipes train it (``--recipe``):

* ``convnet`` (the default): Adam whose learning rate falls along half a
  cosine from ``--lr`` to 0 over the run (:class:`convnet.schedules.CosineDecay`),
  an exponential moving average of the weights (``use_ema=True``,
  ``ema_momentum=0.999``) that replaces the weights at the end of ``fit`` and
  is what the per-epoch test figures measure, and augmentation: every
  training batch gets random rotations (up to 10 degrees), zooms (0.9-1.1)
  and shifts (up to 2 pixels), :class:`convnet.augment.RandomAffine`
  (``--no-augment`` leaves it out), with lighter dropout (0.1/0.1/0.3) since
  the augmentation regularises too;
* ``keras``: constant learning rate, no averaging, no augmentation (unless
  ``--augment``), dropout 0.25/0.25/0.5: the seed's own recipe, as Keras runs
  it (the runs recorded before the recipes existed are this one).

The settings were chosen on a validation split (``experiments/results/validation/``).
``--validation N`` trains on all but the last N training images and reports
on those N instead of the test set: recipes are chosen there, never on the
test set.

The run directory (``--out``, default ``runs/mnist-<timestamp>/``) gets

* ``metrics.json``: arguments, seed, library versions, per-epoch history,
  seconds per epoch, final train/test loss and accuracy, confusion matrix;
* ``model.npz``: the trained model (:func:`convnet.load_model`);
* ``checkpoint.npz``: rewritten after every epoch, for ``--resume``;
* plots (unless ``--no-plots``): ``data_labels.png``, ``data_samples.png``,
  ``history.png`` (loss and accuracy per epoch, training and test),
  ``confusion_matrix.png`` (test set), ``misclassified.png`` (the most
  confident test mistakes, predicted vs true) and ``filters.png`` (the
  learned first-layer filters).

When a run finishes, the file ``latest`` next to the run directory (by
default ``runs/latest``) is rewritten to hold the run directory's absolute
path, so other tools can find the newest model (:func:`latest_run`).

Training is resumable bit for bit: ``fit`` seeds epoch ``e``'s shuffling and
dropout from ``(seed, e)``, and the checkpoint holds weights and optimizer
state, so 1 epoch + ``--resume`` for a second equals 2 epochs straight (on
the same machine with the same thread count: BLAS may sum in another order
with other threads, which changes the last bits).
Ctrl-C (or SIGTERM) stops the run, keeps the checkpoint of the last completed
epoch and prints the command that resumes it (exit status 130).

One process writes a run: the directory's ``.convnet-run`` file is locked
while it runs, so a second ``experiments.mnist`` on the same ``--out`` (new
or ``--resume``) is refused with the first one's pid; a killed run's lock
goes with its process. ``--resume`` in a directory that no run made (no
``.convnet-run``) is refused when it holds a ``model.npz``, ``metrics.json``
or plot the resumed run would write over.

Two "train accuracies" are reported: the running mean over the last epoch's
batches with dropout on (what Keras prints, what the history holds) and a
clean evaluation of the final model on the training set (dropout off).
"""
import argparse
import contextlib
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import convnet
from convnet import optimizers, schedules
from convnet.architectures import mnist_cnn
from convnet.augment import RandomAffine
from convnet.callbacks import ModelCheckpoint, SwapEMAWeights
from convnet.saving import ModelFileError, load_checkpoint, save_model, write_json
from convnet.utils import atomic_path, directory_problem, os_error_message

#: Arguments that must not change between a run and its ``--resume``.
RESUME_ARGS = ("batch_size", "optimizer", "lr", "momentum", "seed", "limit", "test_limit", "dropout", "recipe",
               "augment", "validation")
#: What checkpoints written before an argument existed meant by leaving it out.
RESUME_DEFAULTS = {"recipe": "keras", "augment": False, "validation": None}

RECIPES = ("convnet", "keras")
MNIST_TRAIN_IMAGES = 60_000
#: convnet's recipe: the weights' moving average (Keras's ``ema_momentum``)
EMA_MOMENTUM = 0.999
#: each recipe's dropout rates: the seed's, and lighter ones beside augmentation (which regularises too)
DROPOUT = {"keras": (0.25, 0.25, 0.5), "convnet": (0.1, 0.1, 0.3)}
#: ``--augment``: what RandomAffine draws for every training image
AUGMENT = {"rotation_range": 10.0, "zoom_range": 0.1, "shift_range": 2.0}

DEFAULT_LR = {"adam": 1e-3, "sgd": 0.01}
CHECKPOINT = "checkpoint.npz"
MODEL = "model.npz"
METRICS = "metrics.json"
LATEST = "latest"
PLOTS = ["data_labels.png", "data_samples.png", "history.png", "confusion_matrix.png", "misclassified.png",
         "filters.png"]


class CLIError(Exception):
    """A mistake or failure to report as one line ``error: ...``; ``code`` is the exit status (2: usage)."""

    def __init__(self, message, code=2):
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------ model
def build_model(seed=0, dropout=(0.25, 0.25, 0.5)):
    """The seed CNN (150,858 parameters), weights drawn from ``seed``: :func:`convnet.architectures.mnist_cnn`."""
    return mnist_cnn(seed, dropout)


def make_optimizer(name, lr, momentum, recipe="keras", total_steps=None):
    """The optimizer of a recipe: ``keras`` a constant ``lr``; ``convnet`` a cosine decay of ``lr`` to 0
    over ``total_steps`` and the weights' moving average."""
    extra = {}
    if recipe == "convnet":
        lr = schedules.CosineDecay(lr, decay_steps=total_steps)
        extra = {"use_ema": True, "ema_momentum": EMA_MOMENTUM}
    if name == "adam":
        return optimizers.Adam(learning_rate=lr, **extra)
    return optimizers.SGD(learning_rate=lr, momentum=momentum, **extra)


# ------------------------------------------------------------------ arguments
def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m experiments.mnist", description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=10, help="total epochs (default 10)")
    p.add_argument("--batch-size", type=int, default=32, help="default 32")
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: adam 1e-3, sgd 0.01)")
    p.add_argument("--momentum", type=float, default=0.0, help="SGD momentum (default 0)")
    p.add_argument("--seed", type=int, default=0, help="weights, shuffling and dropout (default 0)")
    p.add_argument("--recipe", choices=RECIPES, default="convnet",
                   help="convnet (default): cosine learning-rate decay, averaged weights and augmentation; "
                        "keras: constant learning rate, as Keras trains the seed model")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random rotations (10 degrees), zooms (10%%) and shifts (2 pixels) of every training "
                        "batch (default: on with --recipe convnet, off with --recipe keras)")
    p.add_argument("--validation", type=int, default=None, metavar="N",
                   help="train on all but the last N training images and evaluate on those N instead of the "
                        "test set (for choosing settings without looking at the test set)")
    p.add_argument("--dropout", type=_rates, default=None, metavar="R1,R2,R3",
                   help="the three dropout rates (default: 0.1,0.1,0.3 with --recipe convnet, the seed's "
                        "0.25,0.25,0.5 with --recipe keras)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="train on the first N examples only")
    p.add_argument("--test-limit", type=int, default=None, metavar="N", help="test on the first N examples only")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="run directory (default runs/mnist-<timestamp>)")
    p.add_argument("--resume", action="store_true", help=f"continue from DIR/{CHECKPOINT} (needs --out)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument("--no-plots", action="store_true", help="write no PNG files (faster)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="threads sharing convnet's large matrix products (default: "
                        "convnet.engine.threads' default, 2 on a machine with 2+ cores; 1 is fully serial)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="MNIST cache (default $CONVNET_DATA or ~/.cache/convnet/mnist)")
    p.add_argument("--backend", choices=convnet.backends.BACKENDS, default="numba",
                   help="numba: the engine (default); numpy: the textbook tier alone (same results to "
                        "rounding, about 5x slower)")
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size", "limit", "test_limit", "threads", "validation"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.lr is None:
        args.lr = DEFAULT_LR[args.optimizer]
    if args.augment is None:
        args.augment = args.recipe == "convnet"
    if args.dropout is None:
        args.dropout = list(DROPOUT[args.recipe])
    if not (math.isfinite(args.lr) and args.lr > 0):
        p.error(f"--lr must be positive (and finite), got {args.lr}")
    if not 0 <= args.momentum <= 1:                       # also false for nan
        p.error(f"--momentum must be in [0, 1], got {args.momentum}")
    if args.optimizer != "sgd" and args.momentum:
        p.error("--momentum applies to --optimizer sgd only")
    if not 0 <= args.seed < 2 ** 63:
        p.error(f"--seed must be a non-negative integer (below 2**63), got {args.seed}")
    if args.resume and args.out is None:
        p.error("--resume needs --out DIR: the run directory holding the checkpoint")
    if args.validation is not None and args.validation >= _train_size(args, held_out=False):
        p.error(f"--validation {args.validation} leaves no training images: expected fewer than "
                f"{_train_size(args, held_out=False)}")
    data_dir = args.data_dir or os.environ.get("CONVNET_DATA") or None
    if data_dir is not None:
        problem = directory_problem(Path(data_dir).expanduser(), writable=False)
        if problem:
            p.error(f"{'--data-dir' if args.data_dir else 'CONVNET_DATA'} {data_dir}: {problem}")
    if args.out is None:
        args.out = _new_run_dir(Path("runs"))
    problem = directory_problem(args.out)
    if problem:
        p.error(f"--out {args.out}: {problem}")
    return args


def _rates(text):
    """'0.25,0.25,0.5' -> [0.25, 0.25, 0.5] (three rates in [0, 1))."""
    try:
        rates = [float(r) for r in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers like 0.25,0.25,0.5, got {text!r}") from None
    if len(rates) != 3 or not all(0 <= r < 1 for r in rates):
        raise argparse.ArgumentTypeError(f"expected three rates in [0, 1) like 0.25,0.25,0.5, got {text!r}")
    return rates


def _new_run_dir(runs):
    base = runs / time.strftime("mnist-%Y%m%d-%H%M%S")
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


def _args_dict(args):
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


def latest_run(runs_dir="runs"):
    """The directory of the most recently finished run recorded in ``runs_dir/latest``."""
    pointer = Path(runs_dir) / LATEST
    if not pointer.is_file():
        raise FileNotFoundError(f"{pointer} does not exist: no run has finished in {runs_dir} yet")
    with open(pointer, "rb") as f:                  # a path, not a file to read whole whatever its size
        text = f.read(4096)
    try:
        run = text.decode("utf-8").strip()
    except UnicodeDecodeError:
        run = ""
    if not os.path.isabs(run):                      # what _point_latest_at writes: one absolute path
        raise FileNotFoundError(f"{pointer} does not name a run directory")
    return Path(run)


def versions():
    import matplotlib
    import numba
    return {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
            "matplotlib": matplotlib.__version__, "convnet": convnet.__version__}


# ------------------------------------------------------------------ data
def load_data(args, say):
    """(x_train, y_train), (x_test, y_test) as float32 NHWC in [0, 1] and int64 labels, limited.

    With ``--validation N`` the second pair is the last N training images (and the first pair the rest).
    """
    from convnet.datasets import load_mnist, preprocess
    (x_train, y_train), (x_test, y_test) = load_mnist(args.data_dir, verbose=not args.quiet)
    x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    if args.validation is not None:
        cut = len(x_train) - args.validation         # parse_args made sure some are left to train on
        x_train, y_train, x_test, y_test = x_train[:cut], y_train[:cut], x_train[cut:], y_train[cut:]
    x_test, y_test = x_test[:args.test_limit], y_test[:args.test_limit]
    say(f"MNIST: {len(x_train)} training and {len(x_test)} {_held_out(args)} images")
    x_train = preprocess(x_train)         # rebinding lets the uint8 original go before the next one
    x_test = preprocess(x_test)
    return (x_train, y_train.astype(np.int64)), (x_test, y_test.astype(np.int64))


# ------------------------------------------------------------------ run
def main(argv=None):
    """Run the experiment; returns the exit status (0 done, 1 failed, 2 usage error, 130 interrupted).

    Every failure ends in one line ``error: ...`` on stderr, never a traceback.
    """
    from convnet.datasets import LOAD_ERRORS

    args = parse_args(argv)
    try:
        with _sigterm_as_interrupt(), _thread_limit(args.threads), convnet.backend(args.backend):
            return _run(args)
    except CLIError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:                           # before training started (fit's own is handled)
        print("\ninterrupted before training started; nothing to resume.", file=sys.stderr)
        return 130
    except LOAD_ERRORS as e:
        print(f"error: MNIST could not be loaded: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: {os_error_message(e)}", file=sys.stderr)
        return 1


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (kill, a closing terminal, a job scheduler) ends the run as Ctrl-C does: checkpoint kept,
    nothing half-made left behind."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _thread_limit(threads):
    """Let ``threads`` threads share convnet's large products (None: convnet's default)."""
    if threads is None:
        yield
        return
    from convnet.engine import threads as convnet_threads
    previous = convnet_threads.get_num_threads()
    convnet_threads.set_num_threads(threads)
    try:
        yield
    finally:
        convnet_threads.set_num_threads(previous)


def _run(args):
    """Take the run directory (created if new, locked for this process), then :func:`_run_owned`.

    Whatever ends the run, the lock is let go; a new run that completed no
    epoch leaves nothing behind (its marker, plots and the directories it
    created go).
    """
    created = _make_dirs(args.out)
    owner = None
    try:
        owner = RunOwner(args.out)
        return _run_owned(args, owner)
    finally:
        nothing_done = not args.resume and not (args.out / CHECKPOINT).exists()
        if owner is not None:
            # the marker goes with a run that did nothing, or with a directory a refused --resume found
            owner.release(remove=owner.created and (nothing_done or not owner.started))
        for d in reversed(created):
            with contextlib.suppress(OSError):
                d.rmdir()                                  # only if empty: a refused run leaves none behind


#: the run's owner file in a run directory: what marks a directory as a run, locked while a process writes it
RUN_MARKER = ".convnet-run"


class RunOwner:
    """One writer per run: ``DIR/.convnet-run``, held under an exclusive ``flock`` for as long as the run goes.

    A second ``experiments.mnist`` on the same directory (a new run or a
    ``--resume``) is refused while the first lives; the lock goes with its
    process, so the file a killed run leaves behind is no obstacle (its
    content, the last owner's pid and host, is only shown in the message).
    ``created`` says whether the file is new: a directory without it was
    not made by a run.
    """

    def __init__(self, out):
        self.path, self.started = Path(out) / RUN_MARKER, False
        flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0)
        try:
            self.fd, self.created = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o666), True
        except FileExistsError:
            try:
                self.fd, self.created = os.open(self.path, flags), False
            except OSError as e:
                raise CLIError(f"--out {out}: {RUN_MARKER} cannot be opened ({os_error_message(e)}): "
                               f"choose another --out", code=1) from None
        try:
            import fcntl
        except ImportError:                      # no flock (Windows): one writer is then the user's care
            return
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(self.fd, 200, 0).decode("utf-8", "replace").strip()
            os.close(self.fd)
            raise CLIError(f"--out {out} is in use by another experiments.mnist ({holder or 'a running process'}); "
                           f"wait for it to end, or choose another --out", code=1) from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pid {os.getpid()} on {platform.node()}\n".encode(), 0)

    def release(self, remove=False):
        if remove:
            with contextlib.suppress(OSError):
                self.path.unlink()
        os.close(self.fd)                        # and with it the lock


def _run_owned(args, owner):
    """Build or resume the model, train with checkpoints, then evaluate and write the results."""
    say = (lambda *a, **k: None) if args.quiet else print
    out = args.out
    started = time.perf_counter()
    checkpoint_path = out / CHECKPOINT

    if args.resume:
        if owner.created:
            # not a run's directory: a resumed run must not write over what the user keeps there
            taken = [n for n in (MODEL, METRICS, *PLOTS) if (out / n).exists() or (out / n).is_symlink()]
            if taken:
                raise CLIError(f"--resume: {out} was not made by experiments.mnist (it has no {RUN_MARKER}) and "
                               f"holds {', '.join(taken)}, which the resumed run would write over: copy "
                               f"{CHECKPOINT} into a new directory and resume there")
        model, start_epoch, history = _resume(args, checkpoint_path)
        say(f"resuming {out} after epoch {start_epoch} of {args.epochs}")
    else:
        if checkpoint_path.exists():
            raise CLIError(f"{checkpoint_path} exists: add --resume to continue that run, or choose another --out")
        if any(p.name != RUN_MARKER for p in out.iterdir()):
            raise CLIError(f"--out {out} already holds files that are not a run's checkpoint: choose a new or "
                           f"empty directory (nothing in it is overwritten)")
        model = build_model(args.seed, args.dropout)
        total_steps = args.epochs * -(-_train_size(args) // args.batch_size)
        model.compile(make_optimizer(args.optimizer, args.lr, args.momentum, args.recipe, total_steps),
                      "sparse_categorical_crossentropy", ["accuracy"])
        start_epoch, history = 0, {}
    owner.started = True
    checkpoint = ModelCheckpoint(checkpoint_path, history=history, metadata={"args": _train_args(args)})
    # the per-epoch test figures measure the averaged weights, which is what the run ends with
    callbacks = ([SwapEMAWeights()] if model.optimizer.use_ema else []) + [checkpoint]
    try:
        (x_train, y_train), (x_test, y_test) = load_data(args, say)
        say(f"recipe: {args.recipe}" + (f", augmented with {RandomAffine(**AUGMENT)}" if args.augment else ""))
        if not args.no_plots:
            _plot_data(out, x_train, y_train)
        model.summary(print_fn=say)
        model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                  validation_data=(x_test, y_test), seed=args.seed, verbose=0 if args.quiet else 1,
                  callbacks=callbacks, initial_epoch=start_epoch, record_gradients=True,
                  augment=RandomAffine(**AUGMENT) if args.augment else None)
        results = _finish(args, model, checkpoint.history, (x_train, y_train), (x_test, y_test), start_epoch,
                          time.perf_counter() - started)
    except KeyboardInterrupt:
        _clean_up_if_nothing_done(args, checkpoint, start_epoch)
        return _interrupted(args, checkpoint, start_epoch)
    except (OSError, FloatingPointError) as e:
        _clean_up_if_nothing_done(args, checkpoint, start_epoch)
        return _failed(args, checkpoint, start_epoch, e)
    print(_summary(results, out, _held_out(args)), flush=True)
    return 0


def _make_dirs(out):
    """Create the run directory; returns the directories created (outermost first), and checks
    that files can be created in it before any work is done."""
    created, path = [], Path(os.path.abspath(out))
    while not path.exists():
        created.insert(0, path)
        path = path.parent
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".convnet-write-test-", dir=out)    # removed at once
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        for d in reversed(created):
            with contextlib.suppress(OSError):
                d.rmdir()
        raise CLIError(f"--out {out}: cannot write there: {os_error_message(e)}") from None
    return created


def _clean_up_if_nothing_done(args, checkpoint, start_epoch):
    """No epoch completed in a new run: remove what this run wrote (its plots; :func:`_run` then its
    marker and the directories it created), so no empty run is left behind. Nothing else is touched."""
    if args.resume or checkpoint.epochs_completed or start_epoch:
        return
    if args.out.is_dir():
        for name in PLOTS:
            with contextlib.suppress(OSError):
                (args.out / name).unlink()


def _resume(args, checkpoint_path):
    """Model, epochs done and history from the run's checkpoint, after checking the arguments match."""
    if not checkpoint_path.exists():
        raise CLIError(f"--resume: no checkpoint at {checkpoint_path}")
    try:
        ckpt = load_checkpoint(checkpoint_path)
    except ModelFileError as e:
        raise CLIError(f"--resume: {e}", code=1) from e
    saved = ckpt.metadata.get("args")
    if not isinstance(saved, dict):
        raise CLIError(f"--resume: {checkpoint_path} does not record the settings of its run (metadata 'args' "
                       f"is {type(saved).__name__}, expected an object): not written by experiments.mnist?", code=1)
    changed = [f"--{k.replace('_', '-')} {saved.get(k, RESUME_DEFAULTS.get(k))} -> {getattr(args, k)}"
               for k in RESUME_ARGS if saved.get(k, RESUME_DEFAULTS.get(k)) != getattr(args, k)]
    if changed:
        raise CLIError(f"--resume needs the same settings as the interrupted run; changed: {', '.join(changed)}")
    if args.recipe == "convnet" and saved.get("epochs") != args.epochs:
        raise CLIError(f"--resume: the convnet recipe's learning rate decays over the whole run, so --epochs "
                       f"must stay {saved.get('epochs')} (got {args.epochs}); --recipe keras runs can be extended")
    if ckpt.epoch > args.epochs:
        raise CLIError(f"{checkpoint_path} already has {ckpt.epoch} epochs, more than --epochs {args.epochs}")
    return ckpt.model, ckpt.epoch, ckpt.history


def _interrupted(args, checkpoint, start_epoch):
    """Ctrl-C: the checkpoint already holds the last completed epoch; say how to continue."""
    done = checkpoint.epochs_completed or start_epoch
    print(f"\ninterrupted after {done} of {args.epochs} epochs.", file=sys.stderr)
    if done == 0:
        print("no epoch was completed, so there is nothing to resume.", file=sys.stderr)
    else:
        print(f"checkpoint of epoch {done}: {checkpoint.path}\nresume with:\n  {_resume_command(args)}",
              file=sys.stderr)
    return 130


def _failed(args, checkpoint, start_epoch, e):
    """A write failed (disk full, folder removed, ...) or the loss diverged: one line, then how to continue."""
    message = os_error_message(e) if isinstance(e, OSError) else str(e)
    print(f"error: {message}", file=sys.stderr)
    done = checkpoint.epochs_completed or start_epoch
    if done and isinstance(e, OSError):
        print(f"the checkpoint of epoch {done} is intact: {checkpoint.path}\nonce the problem is fixed, resume "
              f"with:\n  {_resume_command(args)}", file=sys.stderr)
    return 1


def _resume_command(args):
    return " ".join(shlex.quote(a) for a in ["python", "-m", "experiments.mnist", *_cli_args(args), "--resume"])


def _cli_args(args):
    """The command-line options that reproduce ``args`` (defaults included)."""
    argv = ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--optimizer", args.optimizer,
            "--lr", repr(args.lr), "--seed", str(args.seed), "--recipe", args.recipe, "--out", str(args.out)]
    if args.optimizer == "sgd":
        argv += ["--momentum", repr(args.momentum)]
    argv += ["--dropout", ",".join(repr(float(r)) for r in args.dropout)]
    for name in ("limit", "test_limit", "validation", "data_dir", "threads"):
        if getattr(args, name) is not None:
            argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if args.backend != "numba":
        argv += ["--backend", args.backend]
    argv += ["--augment" if args.augment else "--no-augment"]
    argv += [flag for flag, on in (("--quiet", args.quiet), ("--no-plots", args.no_plots)) if on]
    return argv


def _train_args(args):
    """The settings a checkpoint records: those ``--resume`` must find unchanged, and the epochs."""
    return {"epochs": args.epochs, **{k: getattr(args, k) for k in RESUME_ARGS}}


def _train_size(args, held_out=True):
    """How many images the run trains on (before any are loaded): MNIST's 60,000, ``--limit``,
    less the ``--validation`` ones unless ``held_out=False``."""
    n = min(args.limit or MNIST_TRAIN_IMAGES, MNIST_TRAIN_IMAGES)
    return n - (args.validation or 0 if held_out else 0)


def _held_out(args):
    return "validation" if args.validation is not None else "test"


def _plot_data(out, x, y):
    from convnet.datasets.plots import plot_label_distribution, plot_samples
    plot_label_distribution(y, out / "data_labels.png", title="MNIST training labels")
    plot_samples(x, y, out / "data_samples.png", n=25, title="MNIST training samples")


def _finish(args, model, history, train, test, start_epoch, wall_seconds):
    """Evaluate, save the model, draw the plots, write metrics.json and the ``latest`` pointer."""
    from convnet import plotting
    (x_train, y_train), (x_test, y_test) = train, test
    out = args.out
    held = _held_out(args)                 # "test", or "validation" with --validation
    train_eval = model.evaluate(x_train, y_train)
    test_eval = model.evaluate(x_test, y_test)
    probs = model.predict(x_test)
    predicted = probs.argmax(axis=1)
    epochs_done = len(history.get("loss", []))

    save_model(model, out / MODEL, epoch=epochs_done, history=history, metadata={"args": _train_args(args)})
    if not args.no_plots:
        plotting.plot_history(history, out / "history.png", validation_label=held,
                              title=f"seed CNN on MNIST ({len(x_train)} training images)")
        plotting.plot_confusion_matrix(y_test, predicted, out / "confusion_matrix.png",
                                       title=f"{held} confusion matrix")
        plotting.plot_misclassified(x_test, y_test, probs, out / "misclassified.png",
                                    title=f"misclassified {held} digits")
        plotting.plot_filters(model.layers[0].params["kernel"], out / "filters.png")

    seconds = history.get("seconds", [])
    results = {
        "experiment": "mnist",
        "args": _args_dict(args),
        "seed": args.seed,
        "versions": versions(),
        "data": {"train_examples": len(x_train), f"{held}_examples": len(x_test)},
        "model": {"params": model.count_params(), "config": model.get_config()},
        "epochs_completed": epochs_done,
        "resumed_from_epoch": start_epoch if args.resume else None,
        "history": history,
        "seconds_per_epoch": seconds,
        "mean_seconds_per_epoch": float(np.mean(seconds)) if seconds else None,
        "wall_seconds_this_invocation": wall_seconds,
        "final": {
            "train_running_mean": {"loss": _last(history, "loss"), "accuracy": _last(history, "accuracy"),
                                   "note": "mean over the last epoch's batches, dropout on (Keras semantics)"},
            "train": {"loss": train_eval[0], "accuracy": train_eval[1],
                      "note": "final model evaluated on the training set, dropout off"},
            held: {"loss": test_eval[0], "accuracy": test_eval[1], "errors": int(np.sum(predicted != y_test))},
        },
        "confusion_matrix": plotting.confusion_matrix(y_test, predicted).tolist(),
        "files": [MODEL, CHECKPOINT, METRICS] + ([] if args.no_plots else PLOTS),
    }
    write_json(results, out / METRICS)
    _point_latest_at(out)
    return results


def _point_latest_at(out):
    """Rewrite ``<parent>/latest`` to name ``out``, unless a file of that name is not such a pointer
    (then it is left alone: convnet never overwrites a file it did not write)."""
    pointer = out.parent / LATEST
    if pointer.exists() or pointer.is_symlink():
        try:
            ours = pointer.is_file() and not pointer.is_symlink() and pointer.stat().st_size < 4096 and \
                os.path.isabs(pointer.read_text(encoding="utf-8").strip())
        except (OSError, UnicodeDecodeError):
            ours = False
        if not ours:
            print(f"note: {pointer} is not a run pointer written by experiments.mnist; left as it is",
                  file=sys.stderr)
            return
    try:
        with atomic_path(pointer) as tmp:
            tmp.write_text(f"{out.resolve()}\n", encoding="utf-8")
    except OSError as e:
        print(f"note: could not record the run in {pointer}: {os_error_message(e)}", file=sys.stderr)


def _last(history, key):
    values = history.get(key) or [None]
    return values[-1]


def _summary(results, out, held="test"):
    f = results["final"]
    return "\n".join([
        f"final train loss {f['train_running_mean']['loss']:.4f}  accuracy {f['train_running_mean']['accuracy']:.4f}"
        "  (running mean of the last epoch, dropout on)",
        f"final train loss {f['train']['loss']:.4f}  accuracy {f['train']['accuracy']:.4f}"
        "  (evaluated after training, dropout off)",
        f"final {held + ' ' if held == 'test' else held} loss {f[held]['loss']:.4f}  "
        f"accuracy {f[held]['accuracy']:.4f}  ({f[held]['errors']} errors)",
        f"results in {out}/",
    ])


if __name__ == "__main__":
    sys.exit(main())
