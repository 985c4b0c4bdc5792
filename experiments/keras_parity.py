"""Train convnet and Keras side by side from the same weights on the same batches: do they compute the same thing?

    python -m experiments.keras_parity --steps 300        # needs the bench extra (tensorflow-cpu)

Everything random is taken out: both start from convnet's seed-0 weights,
dropout is off (rates 0) and both take the first ``steps * 32`` training
images in order, batch 32, Adam(1e-3, epsilon 1e-7). What is left is the
arithmetic: forward, loss, backward and the Adam step in float32. The
output is the largest relative difference between the two libraries'
weights, and the two losses, at a few steps along the way, then the test
accuracy of both models. Beside it, the same measurement between convnet's
own two backends (the NumPy textbook and the numba engine), which compute
the same formulas and differ only in the order of their float32 sums: that
is how far rounding alone carries two runs apart. A mistake in a formula
would show as a Keras column far above the backends' one.
"""
import argparse
import os
import sys

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m experiments.keras_parity", description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=300, help="training steps (batches of 32), default 300")
    p.add_argument("--report", type=int, default=50, metavar="K", help="print every K steps (default 50)")
    p.add_argument("--threads", type=int, default=1, help="TensorFlow's threads (default 1)")
    p.add_argument("--test-images", type=int, default=10_000, metavar="N",
                   help="evaluate on the first N test images (default all 10,000)")
    args = p.parse_args(argv)
    for name, top in (("steps", 1875), ("report", 1875), ("threads", 64), ("test_images", 10_000)):
        value = getattr(args, name)
        if not 1 <= value <= top:
            p.error(f"--{name.replace('_', '-')} must be between 1 and {top}, got {value}")
    return args


def relative_difference(a_list, b_list):
    """max over arrays of ||a - b|| / ||b||."""
    return max(float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)) for a, b in zip(a_list, b_list))


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
        import keras
    except ImportError:
        print("error: TensorFlow is not installed (pip install -e \".[bench]\")", file=sys.stderr)
        return 2
    from experiments.keras_mnist import build, set_threads
    set_threads(tf, args.threads)
    import convnet
    from convnet import optimizers
    from convnet.architectures import mnist_cnn
    from convnet.datasets import load_mnist, preprocess

    (x, y), (x_test, y_test) = load_mnist(verbose=False)
    n = args.steps * 32
    x, y = preprocess(x[:n]), y[:n].astype(np.int64)
    x_test, y_test = preprocess(x_test[:args.test_images]), y_test[:args.test_images].astype(np.int64)

    ours = mnist_cnn(0, (0.0, 0.0, 0.0))
    ours.compile(optimizers.Adam(1e-3), "sparse_categorical_crossentropy", ["accuracy"])
    theirs = build(keras, dropout=(0.0, 0.0, 0.0))
    theirs.set_weights(ours.get_weights())
    print(f"start: largest relative weight difference {relative_difference(ours.get_weights(), theirs.get_weights()):.1e}")
    textbook = mnist_cnn(0, (0.0, 0.0, 0.0))
    textbook.compile(optimizers.Adam(1e-3), "sparse_categorical_crossentropy", ["accuracy"])
    print(f"{'step':>5} {'convnet loss':>13} {'keras loss':>11} {'max rel. weight difference: keras':>34} "
          f"{'numpy backend':>14}")
    for step in range(args.steps):
        xb, yb = x[step * 32:(step + 1) * 32], y[step * 32:(step + 1) * 32]
        loss_ours, _ = ours.train_step(xb, yb)
        with convnet.backend("numpy"):
            textbook.train_step(xb, yb)
        theirs.reset_metrics()                  # so "loss" is this batch's, not a running mean
        loss_theirs = float(theirs.train_on_batch(xb, yb, return_dict=True)["loss"])
        if (step + 1) % args.report == 0 or step == 0:
            diff = relative_difference(ours.get_weights(), theirs.get_weights())
            rounding = relative_difference(textbook.get_weights(), ours.get_weights())
            print(f"{step + 1:>5} {loss_ours:>13.6f} {loss_theirs:>11.6f} {diff:>34.2e} {rounding:>14.2e}",
                  flush=True)
    acc_ours = ours.evaluate(x_test, y_test)[1]
    acc_theirs = theirs.evaluate(x_test, y_test, batch_size=256, verbose=0)[1]
    acc_textbook = textbook.evaluate(x_test, y_test)[1]
    agree = float(np.mean(ours.predict(x_test).argmax(1) == theirs.predict(x_test, verbose=0).argmax(1)))
    print(f"test accuracy after {args.steps} steps: convnet {acc_ours:.4f} (numpy backend {acc_textbook:.4f}), "
          f"Keras {acc_theirs:.4f}; convnet and Keras predict the same label for {100 * agree:.2f}% of the "
          f"{len(x_test)} test images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
