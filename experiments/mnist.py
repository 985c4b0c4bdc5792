"""Train the seed CNN on MNIST and write everything a reader needs to check the result.

    python -m experiments.mnist                       # 10 epochs, batch 32, Adam(1e-3)
    python -m experiments.mnist --epochs 1 --limit 5000
    python -m experiments.mnist --out runs/a --resume  # continue an interrupted run

The model is the Keras MNIST CNN (150,858 parameters)::

    Conv2D(32, 4, relu) -> MaxPool2D(2) -> Dropout(0.25)
    Conv2D(32, 4, relu) -> MaxPool2D(2) -> Dropout(0.25)
    Flatten -> Dense(256, relu) -> Dropout(0.5) -> Dense(10, softmax)

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
Ctrl-C stops the run, keeps the checkpoint of the last completed epoch and
prints the command that resumes it (exit status 130).

Two "train accuracies" are reported: the running mean over the last epoch's
batches with dropout on (what Keras prints, what the history holds) and a
clean evaluation of the final model on the training set (dropout off).
"""
import argparse
import contextlib
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

import convnet
from convnet import optimizers
from convnet.architectures import mnist_cnn
from convnet.callbacks import ModelCheckpoint
from convnet.saving import ModelFileError, load_checkpoint, save_model, write_json
from convnet.utils import atomic_path

#: Arguments that must not change between a run and its ``--resume``.
RESUME_ARGS = ("batch_size", "optimizer", "lr", "momentum", "seed", "limit", "test_limit", "dropout")

DEFAULT_LR = {"adam": 1e-3, "sgd": 0.01}
CHECKPOINT = "checkpoint.npz"
MODEL = "model.npz"
METRICS = "metrics.json"
LATEST = "latest"
PLOTS = ["data_labels.png", "data_samples.png", "history.png", "confusion_matrix.png", "misclassified.png",
         "filters.png"]


# ------------------------------------------------------------------ model
def build_model(seed=0, dropout=(0.25, 0.25, 0.5)):
    """The seed CNN (150,858 parameters), weights drawn from ``seed``: :func:`convnet.architectures.mnist_cnn`."""
    return mnist_cnn(seed, dropout)


def make_optimizer(name, lr, momentum):
    if name == "adam":
        return optimizers.Adam(learning_rate=lr)
    return optimizers.SGD(learning_rate=lr, momentum=momentum)


# ------------------------------------------------------------------ arguments
def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m experiments.mnist", description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=10, help="total epochs (default 10)")
    p.add_argument("--batch-size", type=int, default=32, help="default 32")
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: adam 1e-3, sgd 0.01)")
    p.add_argument("--momentum", type=float, default=0.0, help="SGD momentum (default 0)")
    p.add_argument("--seed", type=int, default=0, help="weights, shuffling and dropout (default 0)")
    p.add_argument("--dropout", type=_rates, default=[0.25, 0.25, 0.5], metavar="R1,R2,R3",
                   help="the three dropout rates (default 0.25,0.25,0.5)")
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
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size", "limit", "test_limit", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.lr is None:
        args.lr = DEFAULT_LR[args.optimizer]
    if args.lr <= 0:
        p.error(f"--lr must be positive, got {args.lr}")
    if args.optimizer != "sgd" and args.momentum:
        p.error("--momentum applies to --optimizer sgd only")
    if args.resume and args.out is None:
        p.error("--resume needs --out DIR: the run directory holding the checkpoint")
    if args.out is None:
        args.out = _new_run_dir(Path("runs"))
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
    return Path(pointer.read_text(encoding="utf-8").strip())


def versions():
    import matplotlib
    import numba
    return {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
            "matplotlib": matplotlib.__version__, "convnet": convnet.__version__}


# ------------------------------------------------------------------ data
def load_data(args, say):
    """(x_train, y_train), (x_test, y_test) as float32 NHWC in [0, 1] and int64 labels, limited."""
    from convnet.datasets import load_mnist, preprocess
    (x_train, y_train), (x_test, y_test) = load_mnist(args.data_dir, verbose=not args.quiet)
    x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    x_test, y_test = x_test[:args.test_limit], y_test[:args.test_limit]
    say(f"MNIST: {len(x_train)} training and {len(x_test)} test images")
    x_train = preprocess(x_train)         # rebinding lets the uint8 original go before the next one
    x_test = preprocess(x_test)
    return (x_train, y_train.astype(np.int64)), (x_test, y_test.astype(np.int64))


# ------------------------------------------------------------------ run
def main(argv=None):
    """Run the experiment; returns the exit status (0 done, 130 interrupted)."""
    args = parse_args(argv)
    with _thread_limit(args.threads):
        return _run(args)


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
    """Build or resume the model, train with checkpoints, then evaluate and write the results."""
    say = (lambda *a, **k: None) if args.quiet else print
    out = args.out
    started = time.perf_counter()
    checkpoint_path = out / CHECKPOINT

    if args.resume:
        model, start_epoch, history = _resume(args, checkpoint_path)
        say(f"resuming {out} after epoch {start_epoch} of {args.epochs}")
    else:
        if checkpoint_path.exists():
            raise SystemExit(f"error: {checkpoint_path} exists: add --resume to continue that run, "
                             f"or choose another --out")
        model = build_model(args.seed, args.dropout)
        model.compile(make_optimizer(args.optimizer, args.lr, args.momentum),
                      "sparse_categorical_crossentropy", ["accuracy"])
        start_epoch, history = 0, {}
    out.mkdir(parents=True, exist_ok=True)

    (x_train, y_train), (x_test, y_test) = load_data(args, say)
    if not args.no_plots:
        _plot_data(out, x_train, y_train)
    model.summary(print_fn=say)

    train_args = {k: getattr(args, k) for k in RESUME_ARGS}
    checkpoint = ModelCheckpoint(checkpoint_path, history=history, metadata={"args": train_args})
    try:
        model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                  validation_data=(x_test, y_test), seed=args.seed, verbose=0 if args.quiet else 1,
                  callbacks=[checkpoint], initial_epoch=start_epoch, record_gradients=True)
        results = _finish(args, model, checkpoint.history, (x_train, y_train), (x_test, y_test), start_epoch,
                          time.perf_counter() - started)
    except KeyboardInterrupt:
        return _interrupted(args, checkpoint, start_epoch)
    print(_summary(results, out), flush=True)
    return 0


def _resume(args, checkpoint_path):
    """Model, epochs done and history from the run's checkpoint, after checking the arguments match."""
    if not checkpoint_path.exists():
        raise SystemExit(f"error: --resume: no checkpoint at {checkpoint_path}")
    try:
        ckpt = load_checkpoint(checkpoint_path)
    except ModelFileError as e:
        raise SystemExit(f"error: --resume: {e}") from e
    saved = ckpt.metadata.get("args", {})
    changed = [f"--{k.replace('_', '-')} {saved.get(k)} -> {getattr(args, k)}"
               for k in RESUME_ARGS if saved.get(k) != getattr(args, k)]
    if changed:
        raise SystemExit(f"error: --resume needs the same settings as the interrupted run; "
                         f"changed: {', '.join(changed)}")
    if ckpt.epoch > args.epochs:
        raise SystemExit(f"error: {checkpoint_path} already has {ckpt.epoch} epochs, more than --epochs {args.epochs}")
    return ckpt.model, ckpt.epoch, ckpt.history


def _interrupted(args, checkpoint, start_epoch):
    """Ctrl-C: the checkpoint already holds the last completed epoch; say how to continue."""
    done = checkpoint.epochs_completed or start_epoch
    print(f"\ninterrupted after {done} of {args.epochs} epochs.", file=sys.stderr)
    if done == 0:
        print("no epoch was completed, so there is nothing to resume.", file=sys.stderr)
    else:
        command = " ".join(shlex.quote(a) for a in ["python", "-m", "experiments.mnist", *_cli_args(args),
                                                     "--resume"])
        print(f"checkpoint of epoch {done}: {checkpoint.path}\nresume with:\n  {command}", file=sys.stderr)
    return 130


def _cli_args(args):
    """The command-line options that reproduce ``args`` (defaults included)."""
    argv = ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--optimizer", args.optimizer,
            "--lr", repr(args.lr), "--seed", str(args.seed), "--out", str(args.out)]
    if args.optimizer == "sgd":
        argv += ["--momentum", repr(args.momentum)]
    for name in ("limit", "test_limit", "data_dir", "threads"):
        if getattr(args, name) is not None:
            argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    argv += [flag for flag, on in (("--quiet", args.quiet), ("--no-plots", args.no_plots)) if on]
    return argv


def _plot_data(out, x, y):
    from convnet.datasets.plots import plot_label_distribution, plot_samples
    plot_label_distribution(y, out / "data_labels.png", title="MNIST training labels")
    plot_samples(x, y, out / "data_samples.png", n=25, title="MNIST training samples")


def _finish(args, model, history, train, test, start_epoch, wall_seconds):
    """Evaluate, save the model, draw the plots, write metrics.json and the ``latest`` pointer."""
    from convnet import plotting
    (x_train, y_train), (x_test, y_test) = train, test
    out = args.out
    train_eval = model.evaluate(x_train, y_train)
    test_eval = model.evaluate(x_test, y_test)
    probs = model.predict(x_test)
    predicted = probs.argmax(axis=1)
    epochs_done = len(history.get("loss", []))

    train_args = {k: getattr(args, k) for k in RESUME_ARGS}
    save_model(model, out / MODEL, epoch=epochs_done, history=history,
                              metadata={"args": train_args})
    if not args.no_plots:
        plotting.plot_history(history, out / "history.png", validation_label="test",
                              title=f"seed CNN on MNIST ({len(x_train)} training images)")
        plotting.plot_confusion_matrix(y_test, predicted, out / "confusion_matrix.png",
                                       title="test confusion matrix")
        plotting.plot_misclassified(x_test, y_test, probs, out / "misclassified.png",
                                    title="misclassified test digits")
        plotting.plot_filters(model.layers[0].params["kernel"], out / "filters.png")

    seconds = history.get("seconds", [])
    results = {
        "experiment": "mnist",
        "args": _args_dict(args),
        "seed": args.seed,
        "versions": versions(),
        "data": {"train_examples": len(x_train), "test_examples": len(x_test)},
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
            "test": {"loss": test_eval[0], "accuracy": test_eval[1], "errors": int(np.sum(predicted != y_test))},
        },
        "confusion_matrix": plotting.confusion_matrix(y_test, predicted).tolist(),
        "files": [MODEL, CHECKPOINT, METRICS] + ([] if args.no_plots else PLOTS),
    }
    write_json(results, out / METRICS)
    with atomic_path(out.parent / LATEST) as tmp:
        tmp.write_text(f"{out.resolve()}\n", encoding="utf-8")
    return results


def _last(history, key):
    values = history.get(key) or [None]
    return values[-1]


def _summary(results, out):
    f = results["final"]
    return "\n".join([
        f"final train loss {f['train_running_mean']['loss']:.4f}  accuracy {f['train_running_mean']['accuracy']:.4f}"
        "  (running mean of the last epoch, dropout on)",
        f"final train loss {f['train']['loss']:.4f}  accuracy {f['train']['accuracy']:.4f}"
        "  (evaluated after training, dropout off)",
        f"final test  loss {f['test']['loss']:.4f}  accuracy {f['test']['accuracy']:.4f}"
        f"  ({f['test']['errors']} errors)",
        f"results in {out}/",
    ])


if __name__ == "__main__":
    sys.exit(main())
