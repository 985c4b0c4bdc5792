"""How well a trained model recognises user-like images after each way of preparing them.

    python -m experiments.prep_eval --model PATH [--split dev|heldout] [--seed S] [--n N]
                                    [--sets photo,restroke,...] [--preps baseline,reference,current]
                                    [--out FILE.json]

For every set of :mod:`experiments.handwriting_sets` it generates ``--n``
images from the split's seed, prepares each one with every preparation and
prints the model's accuracy per set and preparation (an image the preparation
rejects counts as wrong). The preparations:

``baseline``
    convnet's preparation as it was before issue 14 (frozen here, so the
    comparison stays reproducible as :mod:`convnet.imageprep` changes).
``reference``
    a plain MNIST-style preparation written from the textbook recipe:
    polarity from the border, contrast stretch, crop to ink, 20x20 by
    area-averaging keeping the aspect, centre of mass to the centre.
``current``
    :func:`convnet.imageprep.mnist_style` as it is now.

The ``mnist`` column is the model on the untouched 28x28 MNIST test digits
the MNIST-based sets were made from (an upper bound for those sets).
Preparation choices are made on ``--split dev`` (seed 1, MNIST test digits
0-4999); ``--split heldout`` (seed 2, digits 5000-9999) is for reporting.
"""
import argparse
import json
import sys
import time

import numpy as np
from PIL import Image, ImageFilter

from experiments import handwriting_sets as hs

__all__ = ["PREPS", "baseline_prepare", "reference_prepare", "current_prepare", "evaluate", "main"]

FRAME, BOX = 28, 20


# ------------------------------------------------------------ the preparations compared
def _resize(a, size, resample=Image.Resampling.LANCZOS):
    return np.asarray(Image.fromarray(a.astype(np.float32), mode="F").resize(size, resample), np.float64)


def _frame_by_mass(digit, centre=FRAME / 2):
    h, w = digit.shape
    mass = digit.sum()
    cy = digit.sum(axis=1) @ np.arange(h) / mass
    cx = digit.sum(axis=0) @ np.arange(w) / mass
    top = int(np.clip(round(centre - cy), 0, FRAME - h))
    left = int(np.clip(round(centre - cx), 0, FRAME - w))
    out = np.zeros((FRAME, FRAME))
    out[top:top + h, left:left + w] = digit
    return out


def _border(g):
    return np.concatenate([g[0], g[-1], g[1:-1, 0], g[1:-1, -1]])


def baseline_prepare(image):
    """convnet.imageprep.mnist_style as of commit c7c6ea6 (before issue 14), for a uint8 greyscale array."""
    g = np.asarray(image, np.float64) / 255.0
    if np.median(_border(g)) > 0.5:
        g = 1 - g
    if min(g.shape) >= 3 * BOX:
        g = np.asarray(Image.fromarray(g.astype(np.float32), mode="F").filter(ImageFilter.MedianFilter(3)),
                       np.float64)
    if np.median(_border(g)) > 0.5:
        g = 1 - g
    ink = np.clip(g - np.median(_border(g)), 0, None)
    if ink.max() < 0.1:
        return None
    ink = ink / ink.max()
    rows, cols = np.flatnonzero((ink > 0.2).any(axis=1)), np.flatnonzero((ink > 0.2).any(axis=0))
    ink = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = ink.shape
    scale = BOX / max(h, w)
    digit = np.clip(_resize(ink, (max(1, round(w * scale)), max(1, round(h * scale)))), 0, 1)
    framed = _frame_by_mass(digit)
    return None if framed.max() <= 0 else framed / framed.max()


def reference_prepare(image):
    """The textbook MNIST-style recipe, written independently of convnet.imageprep (uint8 greyscale array)."""
    g = np.asarray(image, np.float64) / 255.0
    if _border(g).mean() > g.mean():               # the border is paper: lighter than average means dark ink
        g = 1 - g
    paper = np.median(_border(g))
    ink = np.clip(g - paper, 0, None)
    if ink.max() <= 0.05:
        return None
    ink /= ink.max()
    rows, cols = np.flatnonzero((ink > 0.3).any(axis=1)), np.flatnonzero((ink > 0.3).any(axis=0))
    ink = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = ink.shape
    scale = BOX / max(h, w)
    digit = np.clip(_resize(ink, (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX), 0, 1)
    return _frame_by_mass(digit) / digit.max()


def current_prepare(image):
    """:func:`convnet.imageprep.mnist_style`, with a rejected image as None."""
    from convnet.imageprep import ImagePrepError, mnist_style

    try:
        return mnist_style(image)
    except ImagePrepError:
        return None


PREPS = {"baseline": baseline_prepare, "reference": reference_prepare, "current": current_prepare}


# ------------------------------------------------------------------------ evaluation
def evaluate(model, sets, preps, seed, n, digits, digit_labels, fonts=None, progress=None):
    """``{set: {prep: accuracy, ..., "n": n, "rejected": {prep: count}}}`` plus the clean-MNIST accuracy."""
    results = {}
    for name in sets:
        prepared = {p: [] for p in preps}
        rejected = {p: 0 for p in preps}
        labels = []
        for image, label in hs.iter_set(name, seed, n, digits, digit_labels, fonts):
            labels.append(label)
            for p in preps:
                x = PREPS[p](image)
                if x is None:
                    rejected[p] += 1
                    x = np.full((FRAME, FRAME), np.nan)
                prepared[p].append(x)
        labels = np.array(labels)
        row = {"n": len(labels), "rejected": rejected}
        for p in preps:
            x = np.stack(prepared[p])
            ok = ~np.isnan(x).any(axis=(1, 2))
            predicted = np.full(len(x), -1)
            if ok.any():
                predicted[ok] = model.predict(x[ok].astype(np.float32)[..., None]).argmax(axis=1)
            row[p] = float(np.mean(predicted == labels))
        results[name] = row
        if progress:
            progress(name, row)
    return results


def format_table(results, preps):
    head = f"{'set':<10} {'n':>5}  " + "  ".join(f"{p:>9}" for p in preps) + "  rejected"
    lines = [head, "-" * len(head)]
    for name, row in results.items():
        cells = "  ".join(f"{row[p]:>9.1%}" for p in preps)
        rej = ",".join(str(row["rejected"][p]) for p in preps)
        lines.append(f"{name:<10} {row['n']:>5}  {cells}  {rej}")
    if len(results) > 1:
        means = "  ".join(f"{np.mean([r[p] for r in results.values()]):>9.1%}" for p in preps)
        lines.append(f"{'mean':<10} {'':>5}  {means}")
    return "\n".join(lines)


def build_parser():
    from convnet.argtypes import bounded_int, comma_list

    p = argparse.ArgumentParser(prog="python -m experiments.prep_eval",
                                description="Accuracy of a model on user-like digit images, per way of preparing them.")
    p.add_argument("--model", required=True, metavar="PATH", help="model .npz (or a run directory)")
    p.add_argument("--split", choices=sorted(hs.SPLITS), default="dev",
                   help="dev: seed 1, MNIST test digits 0-4999 (for choices); heldout: seed 2, digits 5000-9999")
    p.add_argument("--seed", type=bounded_int(0, 2 ** 32 - 1), help="override the split's seed")
    p.add_argument("--n", type=bounded_int(1, 100_000), default=1000, help="images per set (default %(default)s)")
    p.add_argument("--sets", type=lambda t: comma_list(t, hs.SETS, "set"), default=list(hs.SETS),
                   help=f"comma-separated, from {','.join(hs.SETS)} (default: all)")
    p.add_argument("--preps", type=lambda t: comma_list(t, list(PREPS), "preparation"), default=list(PREPS),
                   help=f"comma-separated, from {','.join(PREPS)} (default: all)")
    p.add_argument("--out", metavar="FILE", help="also write the figures as JSON to FILE (must not exist)")
    return p


def main(argv=None):
    import os

    from convnet.datasets import load_mnist
    from experiments.predict import NoModelError, load_model_for_inference, resolve_model_path

    args = build_parser().parse_args(argv)
    if args.out and os.path.exists(args.out):
        print(f"error: {args.out} exists; choose a new file name", file=sys.stderr)
        return 2
    try:
        model_path = resolve_model_path(args.model)
        model = load_model_for_inference(model_path)
    except (NoModelError, ValueError, OSError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if "fonts" in args.sets and not hs.available_fonts():
        print("error: set 'fonts' needs a handwriting font (e.g. apt-get install fonts-comic-neue "
              "fonts-dkg-handwriting fonts-humor-sans); see experiments.handwriting_sets.FONT_FILES", file=sys.stderr)
        return 2
    seed, part = hs.SPLITS[args.split]
    seed = seed if args.seed is None else args.seed
    _, (x_test, y_test) = load_mnist()
    digits, labels = x_test[part], y_test[part]
    clean = float(np.mean(model.predict((digits / 255.0).astype(np.float32)[..., None]).argmax(1) == labels))
    print(f"model: {model_path}\nsplit {args.split}: seed {seed}, MNIST test digits {part.start}-{part.stop - 1} "
          f"(as they are: {clean:.2%})\n")
    start = time.perf_counter()
    results = evaluate(model, args.sets, args.preps, seed, args.n, digits, labels,
                       progress=lambda name, row: print(f"  {name}: " + "  ".join(
                           f"{p} {row[p]:.1%}" for p in args.preps), file=sys.stderr))
    print(format_table(results, args.preps))
    print(f"\n({time.perf_counter() - start:.0f} s)")
    if args.out:
        record = {"model": model_path, "split": args.split, "seed": seed, "n": args.n,
                  "mnist_digits": [part.start, part.stop], "mnist_clean_accuracy": clean,
                  "fonts": [os.path.basename(f) for f in hs.available_fonts()] if "fonts" in args.sets else None,
                  "results": results}
        with open(args.out, "x") as f:
            json.dump(record, f, indent=1)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
