"""Look into backpropagation on one batch of MNIST, layer by layer.

    python -m experiments.backprop [--model PATH] [--batch-size 32] [--seed 0] [--out DIR]

Prints, for one batch of test digits:

* per layer: output shape, activation mean and std, fraction of dead ReLU
  units, the gradient norm arriving at the layer (dL/d output) and leaving
  it (dL/d input), and the norms of its parameter gradients;
* for every parameter (and the input): the relative error between the
  analytic gradient and a central-difference estimate on a float64 copy of
  the model, for a random sample of entries.

and writes PNGs into ``--out``:

* ``feature_maps.png``  both conv layers' outputs for one digit;
* ``filters.png``       the first conv layer's kernels;
* ``grad_norms.png``    per-layer gradient norms across training: from the
  model's recorded history (``fit(record_gradients=True)``) if it has one,
  otherwise recorded per batch during a short training (``--steps``) of a
  freshly initialised model of the same architecture;
* ``saliency.png``      d(class logit)/d(pixels) for a few digits.

The model defaults to the latest ``experiments.mnist`` run; without one, an
untrained seed model (seed 0) is used and the output says so.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

from convnet import Sequential, callbacks, layers, study
from convnet.plotting import plot_filters
from convnet.utils import os_error_message, record_output, written_by_convnet
from experiments.mnist import build_model
from experiments.predict import NoModelError, check_output_dir, resolve_model_path

#: The pictures written into --out.
OUTPUTS = ("feature_maps.png", "filters.png", "grad_norms.png", "saliency.png")

__all__ = ["load_or_init_model", "recorded_grad_norms", "short_training_grad_norms", "main"]


def load_or_init_model(path=None, runs_dir="runs", seed=0):
    """``(model, description, model_path or None)``: the given/latest trained model, else an untrained one.

    An explicit ``path`` that does not exist is an error (NoModelError); only
    the *default* falls back to an untrained model.
    """
    import convnet

    if path is None:
        try:
            path = resolve_model_path(None, runs_dir)
        except NoModelError:
            model = build_model(seed)
            model.compile("adam")
            return model, (f"NOTE: no trained model found in {runs_dir}/mnist-*/; using an UNTRAINED "
                           f"seed model (seed {seed}): the numbers describe the initialisation"), None
    else:
        path = resolve_model_path(path, runs_dir)
    model = convnet.load_model(path)
    if model.loss is None:
        model.compile("adam")
    return model, f"model: {path}", path


def recorded_grad_norms(model, model_path=None):
    """Per-epoch gradient norms ``{key: [norm per epoch]}`` recorded by ``fit(record_gradients=True)``, or None.

    Looked for in the model's ``history`` attribute, in the training history
    saved inside the model file, and in ``metrics.json`` beside it.
    """
    sources = []
    history = getattr(model, "history", None)
    if history is not None:
        sources.append(getattr(history, "history", history))
    if model_path is not None:
        from convnet import load_checkpoint
        try:
            sources.append(load_checkpoint(model_path, compile=False).history)
        except (OSError, ValueError):
            pass
        metrics = os.path.join(os.path.dirname(model_path), "metrics.json")
        if os.path.isfile(metrics):
            try:
                with open(metrics, encoding="utf-8") as f:
                    sources.append(json.load(f).get("history") or {})
            except (OSError, ValueError, AttributeError):
                pass
    for hist in sources:
        per_epoch = hist.get("grad_norms") if isinstance(hist, dict) else None
        if per_epoch and all(isinstance(e, dict) for e in per_epoch):
            return {k: [e.get(k, np.nan) for e in per_epoch] for k in per_epoch[0]}
    return None


def short_training_grad_norms(model, x, y, steps=300, batch_size=64, seed=0):
    """Train a freshly initialised copy of ``model``'s architecture for ``steps`` batches; per-step gradient norms."""
    fresh = Sequential.from_config({**model.get_config(), "seed": seed})
    fresh.compile("adam")
    recorder = callbacks.GradientNorms()
    n = min(len(x), steps * batch_size)
    fresh.fit(x[:n], y[:n], epochs=1, batch_size=batch_size, seed=seed, verbose=0, callbacks=[recorder])
    return recorder.norms


def build_parser():
    p = argparse.ArgumentParser(prog="python -m experiments.backprop",
                                description="Layer-by-layer backprop statistics, gradient check and pictures "
                                            "for one batch of MNIST.")
    p.add_argument("--model", metavar="PATH", help="model .npz or run directory (default: latest experiments.mnist "
                                                   "run, else an untrained seed model)")
    p.add_argument("--batch-size", type=int, default=32, help="digits in the batch (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="picks the batch and the gradient-check sample")
    p.add_argument("--out", default=os.path.join("runs", "backprop"), help="directory for the PNGs "
                                                                             "(default: %(default)s)")
    p.add_argument("--steps", type=int, default=300,
                   help="training steps for the gradient-norm plot when the model has no recorded history")
    p.add_argument("--check-entries", type=int, default=10,
                   help="entries per parameter in the gradient check (default: %(default)s)")
    p.add_argument("--check-examples", type=int, default=4,
                   help="digits of the batch used by the (slow) gradient check (default: %(default)s)")
    p.add_argument("--runs-dir", default="runs", help=argparse.SUPPRESS)
    return p


def main(argv=None):
    """Run the study; returns the exit status (0 done, 1 failed, 2 usage error, 130 interrupted).

    Every problem ends in one line ``error: ...`` on stderr, found before the work where possible.
    """
    from convnet.datasets import LOAD_ERRORS

    args = build_parser().parse_args(argv)
    for name in ("batch_size", "steps", "check_entries", "check_examples"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}",
                  file=sys.stderr)
            return 2
    if args.seed < 0:
        print(f"error: --seed must be a non-negative integer, got {args.seed}", file=sys.stderr)
        return 2
    try:
        check_output_dir(args.out)
        taken = [name for name in OUTPUTS if not written_by_convnet(os.path.join(args.out, name))]
        if taken:
            raise OSError(f"--out {args.out}: {', '.join(taken)} exist(s) and were not written by "
                          f"experiments.backprop; they are left as they are (choose another --out)")
        model, description, model_path = load_or_init_model(args.model, args.runs_dir, seed=args.seed)
        check_model(model, description)
    except (NoModelError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    try:
        return _study(args, model, description, model_path)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except LOAD_ERRORS as e:
        print(f"error: MNIST could not be loaded: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: {os_error_message(e)}", file=sys.stderr)
        return 1


def check_model(model, description):
    """The study needs an MNIST model (28x28x1 in, 10 classes out) with a Conv2D layer; raise NoModelError if not."""
    if tuple(model.input_shape) != (28, 28, 1) or tuple(model.output_shape) != (10,):
        raise NoModelError(f"{description}: maps {model.input_shape} to {model.output_shape}; the study runs MNIST "
                           f"digits through it and needs (28, 28, 1) -> (10,)")
    if not any(isinstance(layer, layers.Conv2D) for layer in model.layers):
        raise NoModelError(f"{description}: has no Conv2D layer, whose feature maps and filters the study draws")


def _study(args, model, description, model_path):
    from convnet.datasets import load_mnist, preprocess

    print(description)
    (x_train, y_train), (x_test, y_test) = load_mnist()
    rng = np.random.default_rng(args.seed)
    idx = rng.choice(len(x_test), size=min(args.batch_size, len(x_test)), replace=False)
    x, y = preprocess(x_test[idx]), y_test[idx].astype(np.int64)

    loss, rows = study.layer_statistics(model, x, y)
    acc = float(np.mean(model.forward(x).argmax(axis=1) == y))
    print(f"\nbatch of {len(x)} test digits (seed {args.seed}): loss {loss:.4f}, accuracy {acc:.1%}\n")
    print(study.format_layer_statistics(rows))
    print("\n(dead: units never positive on this batch; |dL/dout| arrives from above (for the softmax "
          "layer: dL/dlogits of the fused loss), |dL/din| leaves to the layer below)\n")

    t = time.perf_counter()
    n_check = min(args.check_examples, len(x))
    # A trained model is nearly sure of most digits: their loss and gradients are close to 0, and a
    # finite difference of a near-constant loss measures mostly round-off. Check on the hardest digits.
    probs = model.forward(x)
    hardest = np.argsort(probs[np.arange(len(y)), y])[:n_check]
    print(f"gradient check: float64 copy, the {n_check} digits of the batch with the highest loss, central "
          f"differences (h=1e-5) on {args.check_entries} random entries per array")
    zero_biases = [l.name for l in model.layers if "bias" in l.params and not np.any(l.params["bias"])]
    if zero_biases:
        print(f"  ({', '.join(zero_biases)}: biases are all zero, which puts the pre-activation of every blank "
              f"window exactly on the ReLU kink; the check replaces them by small random values in its copy)")
    errors = study.gradient_check(model, x[hardest], y[hardest], max_entries=args.check_entries,
                                    seed=args.seed, jitter_zero_biases=bool(zero_biases))
    print(study.format_gradient_check(errors))
    print(f"(gradient check took {time.perf_counter() - t:.1f}s)\n")

    os.makedirs(args.out, exist_ok=True)
    written = [study.plot_feature_maps(model, x[0], os.path.join(args.out, "feature_maps.png"))]
    first_conv = next(l for l in model.layers if isinstance(l, layers.Conv2D))
    written.append(plot_filters(first_conv.params["kernel"], os.path.join(args.out, "filters.png")))

    norms = recorded_grad_norms(model, model_path)
    if norms is not None:
        written.append(study.plot_gradient_norms(norms, os.path.join(args.out, "grad_norms.png"), xlabel="epoch",
                                                   title="mean parameter-gradient norm per epoch (recorded by fit)"))
    else:
        print(f"the model has no recorded gradient history: training a fresh copy for {args.steps} steps "
              f"(batch 64) to record per-step gradient norms ...")
        n = args.steps * 64
        norms = short_training_grad_norms(model, preprocess(x_train[:n]), y_train[:n], steps=args.steps,
                                          seed=args.seed)
        written.append(study.plot_gradient_norms(
            norms, os.path.join(args.out, "grad_norms.png"), xlabel="step",
            title=f"parameter-gradient norms, first {args.steps} steps of a fresh model"))
        first, last = {k: v[0] for k, v in norms.items()}, {k: v[-1] for k, v in norms.items()}
        print("  " + "  ".join(f"{k}: {first[k]:.3g} -> {last[k]:.3g}" for k in norms))

    n_sal = min(8, len(x))
    sal = study.saliency_map(model, x[:n_sal])
    pred = model.forward(x[:n_sal]).argmax(axis=1)
    written.append(study.plot_saliency(x[:n_sal], sal, y[:n_sal], pred, os.path.join(args.out, "saliency.png")))
    for path in written:
        record_output(path)
    print("wrote " + ", ".join(str(w) for w in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
