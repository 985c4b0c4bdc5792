"""Train the Keras reference (the seed CNN in Keras) on MNIST for given seeds, for the comparison with convnet.

    python -m experiments.keras_mnist --seeds 0-9            # needs the bench extra (tensorflow-cpu)
    python -m experiments.keras_mnist --seeds 3 --threads 1 --out-dir experiments/results

Same data as ``python -m experiments.mnist`` (convnet's verified MNIST, pixels
scaled to [0, 1]), the same model, 10 epochs, batch 32, Adam(1e-3, epsilon
1e-7), dropout 0.25/0.25/0.5, shuffled every epoch; weights, shuffling and
dropout come from Keras's own random streams after
``keras.utils.set_random_seed(seed)``. Each seed writes
``<out-dir>/keras-seed<S>.json``: the per-epoch history (train loss and
accuracy as Keras's ``fit`` reports them, test loss and accuracy after every
epoch, seconds), the final test loss, accuracy and error count, the final
model evaluated on the training set, versions and thread counts. A file that
already exists is left alone (the seed is skipped, said once).
"""
import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np


def parse_seeds(text):
    """'0-9' / '0,3,5' / '4' -> a sorted list of distinct non-negative seeds."""
    seeds = set()
    try:
        for part in text.split(","):
            if "-" in part:
                lo, hi = (int(s) for s in part.split("-", 1))
                if lo > hi:
                    raise ValueError
                seeds.update(range(lo, hi + 1))
            else:
                seeds.add(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seeds like 0-9 or 0,3,5, got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(seeds) > 1000:
        raise argparse.ArgumentTypeError(f"expected 1 to 1000 non-negative seeds, got {text!r}")
    return sorted(seeds)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m experiments.keras_mnist", description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=parse_seeds, default=[0], help="e.g. 0-9 or 0,3,5 (default 0)")
    p.add_argument("--epochs", type=int, default=10, help="default 10")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="TensorFlow's intra- and inter-op threads (default: TensorFlow's own choice)")
    p.add_argument("--out-dir", type=Path, default=Path("experiments/results"), metavar="DIR",
                   help="where keras-seed<S>.json goes (default experiments/results)")
    p.add_argument("--data-dir", type=Path, default=None, help="MNIST cache (default convnet's)")
    args = p.parse_args(argv)
    for name in ("epochs", "threads"):
        value = getattr(args, name)
        if value is not None and not 1 <= value <= 1000:
            p.error(f"--{name} must be between 1 and 1000, got {value}")
    return args


def build(keras, dropout=(0.25, 0.25, 0.5)):
    L = keras.layers
    d1, d2, d3 = dropout
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(32, 4, activation="relu"), L.MaxPooling2D(2), L.Dropout(d1),
        L.Conv2D(32, 4, activation="relu"), L.MaxPooling2D(2), L.Dropout(d2),
        L.Flatten(), L.Dense(256, activation="relu"), L.Dropout(d3), L.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3, epsilon=1e-7),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=False)
    return model


def run_seed(keras, seed, epochs, data, threads):
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(seed)
    model = build(keras)
    history = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": [], "seconds": []}

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            history["seconds"].append(time.perf_counter() - self.start)
            for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
                history[key].append(float(logs[key]))
            print(f"seed {seed} epoch {epoch + 1}/{epochs}: loss {logs['loss']:.4f} acc {logs['accuracy']:.4f} "
                  f"test loss {logs['val_loss']:.4f} test acc {logs['val_accuracy']:.4f}", flush=True)

    started = time.perf_counter()
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, shuffle=True, validation_data=(x_test, y_test),
              verbose=0, callbacks=[Record()])
    test_loss, test_acc = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    train_loss, train_acc = model.evaluate(x_train, y_train, batch_size=256, verbose=0)
    errors = int(np.sum(model.predict(x_test, batch_size=256, verbose=0).argmax(axis=1) != y_test))
    import tensorflow as tf
    return {
        "experiment": "keras_mnist",
        "library": "keras",
        "seed": seed,
        "recipe": "keras: 10 epochs, batch 32, Adam(1e-3, eps 1e-7), dropout 0.25/0.25/0.5, "
                  "keras.utils.set_random_seed(seed) for weights, shuffling and dropout",
        "versions": {"python": platform.python_version(), "numpy": np.__version__,
                     "tensorflow": tf.__version__, "keras": keras.__version__},
        "threads": threads,
        "data": {"train_examples": len(x_train), "test_examples": len(x_test)},
        "params": model.count_params(),
        "epochs_completed": len(history["loss"]),
        "history": history,
        "mean_seconds_per_epoch": float(np.mean(history["seconds"])),
        "wall_seconds": time.perf_counter() - started,
        "final": {
            "train_running_mean": {"loss": history["loss"][-1], "accuracy": history["accuracy"][-1],
                                   "note": "mean over the last epoch's batches, dropout on (Keras's fit)"},
            "train": {"loss": float(train_loss), "accuracy": float(train_acc),
                      "note": "final model evaluated on the training set, dropout off"},
            "test": {"loss": float(test_loss), "accuracy": float(test_acc), "errors": errors},
        },
    }


def set_threads(tf, n):
    """TensorFlow's intra- and inter-op threads; once TensorFlow has run (in this process) they are fixed,
    and then a note on stderr says which counts are in use instead."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    except RuntimeError:
        print(f"note: TensorFlow is already initialised in this process; it keeps intra/inter-op threads "
              f"{tf.config.threading.get_intra_op_parallelism_threads()}/"
              f"{tf.config.threading.get_inter_op_parallelism_threads()} instead of {n}", file=sys.stderr)


def main(argv=None):
    args = parse_args(argv)
    todo = [s for s in args.seeds if not (args.out_dir / f"keras-seed{s}.json").exists()]
    skipped = sorted(set(args.seeds) - set(todo))
    if skipped:
        print(f"already recorded, skipped: seeds {', '.join(map(str, skipped))}")
    if not todo:
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
        import keras
    except ImportError:
        print("error: TensorFlow is not installed (pip install -e \".[bench]\")", file=sys.stderr)
        return 2
    if args.threads is not None:
        set_threads(tf, args.threads)
    keras.utils.disable_interactive_logging()
    from convnet.datasets import load_mnist, preprocess
    (x_train, y_train), (x_test, y_test) = load_mnist(args.data_dir, verbose=False)
    data = ((preprocess(x_train), y_train.astype(np.int64)), (preprocess(x_test), y_test.astype(np.int64)))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    from convnet.saving import write_json
    for seed in todo:
        result = run_seed(keras, seed, args.epochs, data, args.threads)
        result["threads"] = {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                             "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}
        path = args.out_dir / f"keras-seed{seed}.json"
        write_json(result, path)
        f = result["final"]["test"]
        print(f"seed {seed}: test accuracy {f['accuracy']:.4f} ({f['errors']} errors), loss {f['loss']:.4f} "
              f"-> {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
