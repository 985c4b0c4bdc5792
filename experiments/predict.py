"""Recognise your own handwritten digits with a trained model.

    python -m experiments.predict IMAGE [IMAGE ...] [--model PATH] [--show] [--out DIR]

Each image (PNG, JPEG, ...; any size; dark ink on light paper or the
reverse) is converted the way MNIST was made (:func:`convnet.imageprep.mnist_style`)
and classified. One line per image: the predicted digit and the top-3
probabilities. ``--show`` also writes ``<image name>.prediction.png``: the
28x28 input the network saw beside a bar chart of its ten probabilities.

The model defaults to the one saved by the latest ``python -m experiments.mnist``
run (``runs/mnist-<timestamp>/model.npz``). A file that cannot be read, is
not an image or holds no ink gets an error message; the other images are
still processed, and the exit code is 1 if any image failed.
"""
import argparse
import glob
import os
import sys
from pathlib import Path

import numpy as np

from convnet.imageprep import ImagePrepError, mnist_style
from convnet.limits import file_problem
from convnet.utils import record_output, written_by_convnet

__all__ = ["find_latest_model", "resolve_model_path", "load_model_for_inference", "classify",
           "plot_prediction", "main"]

#: Where ``experiments.mnist`` puts its runs, relative to the working directory.
RUNS_DIR = "runs"


class NoModelError(RuntimeError):
    """No trained model was given and none was found in the runs directory."""


def find_latest_model(runs_dir=RUNS_DIR):
    """Path of ``model.npz`` from the latest ``experiments.mnist`` run, or None.

    Reads the ``runs/latest`` pointer that a finished run writes
    (:func:`experiments.mnist.latest_run`); without it, takes the
    ``runs/mnist-<timestamp>/model.npz`` whose directory sorts last
    (timestamps sort chronologically).
    """
    from experiments.mnist import MODEL, latest_run

    try:
        path = os.path.join(latest_run(runs_dir), MODEL)
        if os.path.isfile(path):
            return path
    except (FileNotFoundError, OSError):
        pass
    candidates = sorted(glob.glob(os.path.join(runs_dir, "mnist-*", MODEL)))
    return candidates[-1] if candidates else None


def resolve_model_path(path=None, runs_dir=RUNS_DIR):
    """The model file to load: ``path`` (a ``.npz`` or a run directory holding ``model.npz``) or the latest run's."""
    if path is None:
        found = find_latest_model(runs_dir)
        if found is None:
            raise NoModelError(
                f"no trained model found (looked for {os.path.join(runs_dir, 'mnist-*', 'model.npz')}); "
                f"train one with `python -m experiments.mnist` or pass --model PATH")
        return found
    if os.path.isdir(path):
        path = os.path.join(path, "model.npz")
    problem = file_problem(Path(path))
    if problem:          # a FIFO, /dev/zero, a loop of links: said as what they are, not "does not exist"
        raise NoModelError(f"model file {problem}")
    return path


def load_model_for_inference(path):
    """Load a saved model and check it maps a (28, 28, 1) image to 10 classes."""
    import convnet

    model = convnet.load_model(path)
    if tuple(model.input_shape) != (28, 28, 1) or tuple(model.output_shape) != (10,):
        raise NoModelError(f"model {path} maps {model.input_shape} to {model.output_shape}; "
                           f"expected an MNIST model mapping (28, 28, 1) to (10,)")
    return model


def shown(name):
    """``name`` as it may be printed: as is when every character is printable, else Python-quoted with
    escapes (a newline or a terminal escape sequence in a file name cannot forge or hide a line)."""
    return name if name.isprintable() else repr(name)


def classify(model, images):
    """``(digits, probabilities)`` for ``(N, 28, 28)`` MNIST-style images (probabilities ``(N, 10)``)."""
    x = np.asarray(images, dtype=np.float32)[..., None]
    probs = model.predict(x)
    return probs.argmax(axis=1), probs


def format_prediction(name, probs, k=3):
    """``"name: 7   (7: 98.1%  1: 1.2%  9: 0.3%)"``."""
    top = np.argsort(probs)[::-1][:k]
    ranked = "  ".join(f"{d}: {probs[d]:6.1%}" for d in top)
    return f"{name}: {top[0]}   ({ranked})"


def plot_prediction(image, probs, path, title=None):
    """PNG of the preprocessed 28x28 input beside the ten class probabilities (written atomically)."""
    from convnet.study import new_figure, save_figure

    fig, (ax_img, ax_bar) = new_figure(1, 2, figsize=(7, 3.2), gridspec_kw={"width_ratios": [1, 1.4]})
    ax_img.imshow(image, cmap="gray", vmin=0, vmax=1)
    ax_img.set_title("network input (28x28)")
    ax_img.set_xticks([]), ax_img.set_yticks([])
    best = int(np.argmax(probs))
    colors = ["tab:orange" if d == best else "tab:blue" for d in range(10)]
    ax_bar.barh(range(10), probs, color=colors)
    ax_bar.set_yticks(range(10))
    ax_bar.invert_yaxis()
    ax_bar.set_xlim(0, 1)
    ax_bar.set_xlabel("probability")
    ax_bar.set_title(f"predicted {best} ({probs[best]:.1%})")
    if title:
        fig.suptitle(title, parse_math=False)        # a file name is text: "a$_$b.png" is no formula
    save_figure(fig, path)
    return path


def output_names(images):
    """``{input: output file name}`` for ``--show``: ``<name>.prediction.png``, and ``<name>.<k>.prediction.png``
    when another input of the run has the same name (``a/seven.png``, ``b/seven.png``)."""
    names, used = {}, set()
    for image in images:
        key = os.path.realpath(image)
        if key in names:
            continue
        base, k = os.path.basename(image) or "image", 1
        name = f"{base}.prediction.png"
        while name in used:
            k += 1
            name = f"{base}.{k}.prediction.png"
        used.add(name)
        names[key] = name
    return {image: names[os.path.realpath(image)] for image in images}


def check_output_dir(path):
    """Raise ``OSError`` with a clear message unless ``path`` is (or can be made) a writable directory."""
    from convnet.utils import directory_problem

    problem = directory_problem(path)
    if problem:
        raise OSError(f"--out {path}: {problem}")


def build_parser():
    p = argparse.ArgumentParser(prog="python -m experiments.predict",
                                description="Classify images of handwritten digits with a trained MNIST model.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="PNG/JPEG files, one digit each")
    p.add_argument("--model", metavar="PATH",
                   help="model .npz (or a run directory); default: the latest experiments.mnist run")
    p.add_argument("--show", action="store_true",
                   help="write <image>.prediction.png: the preprocessed input and the probabilities")
    p.add_argument("--out", metavar="DIR", default=os.path.join(RUNS_DIR, "predict"),
                   help="directory for the --show pictures (default: %(default)s)")
    p.add_argument("--runs-dir", default=RUNS_DIR, help=argparse.SUPPRESS)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.show:
            check_output_dir(args.out)
        model_path = resolve_model_path(args.model, args.runs_dir)
        model = load_model_for_inference(model_path)
    except (NoModelError, ValueError, OSError, KeyError) as e:
        print(f"error: {shown(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(f"model: {shown(model_path)}")
    failed = 0
    outputs = output_names(args.images) if args.show else {}
    for name in args.images:
        try:
            image = mnist_style(name)
        except ImagePrepError as e:
            print(f"{shown(name)}: error: {shown(e.reason)}", file=sys.stderr)
            failed += 1
            continue
        except MemoryError:
            print(f"{shown(name)}: error: not enough memory to prepare this image", file=sys.stderr)
            failed += 1
            continue
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        _, probs = classify(model, image[None])
        print(format_prediction(shown(name), probs[0]))
        if args.show:
            out = os.path.join(args.out, outputs[name])
            if not written_by_convnet(out):
                print(f"{shown(name)}: error: {shown(out)} exists and was not written by experiments.predict; "
                      f"it is left as it is (choose another --out)", file=sys.stderr)
                failed += 1
                continue
            try:
                plot_prediction(image, probs[0], out, title=shown(os.path.basename(name)))
                record_output(out)
            except OSError as e:
                print(f"{shown(name)}: error: cannot write {shown(out)}: {e.strerror or e}", file=sys.stderr)
                failed += 1
                continue
            print(f"  wrote {shown(out)}")
    if failed:
        print(f"{failed} of {len(args.images)} images failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
