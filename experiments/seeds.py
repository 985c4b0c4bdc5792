"""Summarise the recorded seed runs: a table per group and a plot of every run's test accuracy per epoch.

    python -m experiments.seeds                        # reads experiments/results/, prints Markdown
    python -m experiments.seeds --plot docs/images/seeds.png

Groups, by file name in the results directory:

* ``keras-seed<S>.json``: Keras 3 / TensorFlow (``python -m experiments.keras_mnist``);
* ``mnist-seed<S>.json``: convnet, ``--recipe keras`` (the seed's recipe, constant learning rate);
* ``convnet-seed<S>.json``: convnet's recipe without augmentation (cosine decay, averaged
  weights: ``--no-augment``; the default before augmentation joined it);
* ``default-seed<S>.json``: the default command, convnet's recipe (cosine decay, averaged
  weights, augmentation), 10 epochs;
* ``augment-seed<S>.json``: convnet's recipe with augmentation but the seed's dropout, 20 epochs;
* ``long-seed<S>.json``: the default recipe over 30 epochs (``--epochs 30``).

For each group: every seed's final test accuracy, mean, standard deviation,
median, minimum; and for the two libraries' seed recipes the difference of
the means with its standard error and 95% confidence interval (Welch). The
statistics are experiments.stats', shared with experiments.sweep, which builds
the same tables from recorded runs (``python -m experiments.sweep --from-results
experiments/results --groups ...``).
"""
import argparse
import json
import re
import statistics
import sys
from pathlib import Path

from experiments.stats import describe, welch

GROUPS = [
    ("keras", "keras-seed", "Keras 3.15 / TF 2.21, seed recipe"),
    ("convnet-keras", "mnist-seed", "convnet, --recipe keras"),
    ("convnet", "convnet-seed", "convnet, --no-augment --dropout 0.25,0.25,0.5"),
    ("default", "default-seed", "convnet, default recipe"),
    ("augment", "augment-seed", "convnet, --dropout 0.25,0.25,0.5 --epochs 20"),
    ("long", "long-seed", "convnet, default recipe, 30 epochs"),
]


def load_group(results, prefix):
    """{seed: record} for the files ``<prefix><seed>.json`` in ``results``."""
    runs = {}
    for path in sorted(results.glob(f"{prefix}*.json")):
        match = re.fullmatch(re.escape(prefix) + r"(\d+)\.json", path.name)
        if not match:
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            accuracy = float(record["final"]["test"]["accuracy"])
            per_epoch = [float(a) for a in record["history"]["val_accuracy"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"error: {path}: not a recorded run with final test accuracy and a per-epoch "
                             f"history ({type(e).__name__}: {e})") from None
        runs[int(match.group(1))] = {"accuracy": accuracy, "per_epoch": per_epoch, "record": record}
    return dict(sorted(runs.items()))


def table(groups):
    seeds = sorted({s for runs in groups.values() for s in runs})
    head = "| run | " + " | ".join(str(s) for s in seeds) + " | mean | sd | median | min |"
    rows = [head, "|---|" + "---:|" * (len(seeds) + 4)]
    for key, prefix, label in GROUPS:
        runs = groups.get(key)
        if not runs:
            continue
        d = describe([r["accuracy"] for r in runs.values()])
        cells = [f"{100 * runs[s]['accuracy']:.2f}" if s in runs else "" for s in seeds]
        rows.append(f"| {label} ({d['n']} seeds) | " + " | ".join(cells) +
                    f" | {100 * d['mean']:.3f} | {100 * d['sd']:.3f} | {100 * d['median']:.2f} | {100 * d['min']:.2f} |")
    return "\n".join(rows)


def per_epoch_table(groups):
    """Mean over seeds of each epoch's test accuracy, per group: where in training the groups differ."""
    rows = []
    for key, _, label in GROUPS:
        runs = groups.get(key)
        if not runs:
            continue
        epochs = min(len(r["per_epoch"]) for r in runs.values())
        means = [statistics.fmean(r["per_epoch"][e] for r in runs.values()) for e in range(epochs)]
        rows.append((label, means))
    # the ten-epoch runs in one table, longer runs in another (a 30-column table hides the short ones)
    tables = [[r for r in rows if len(r[1]) <= SHORT_RUN], [r for r in rows if len(r[1]) > SHORT_RUN]]
    return "\n\n".join(_epoch_table(t) for t in tables if t)


#: runs of at most this many epochs share the first per-epoch table
SHORT_RUN = 10


def _epoch_table(rows):
    width = max(len(m) for _, m in rows)
    head = "| mean test accuracy after epoch | " + " | ".join(str(e + 1) for e in range(width)) + " |"
    lines = [head, "|---|" + "---:|" * width]
    for label, means in rows:
        cells = [f"{100 * m:.2f}" for m in means] + [""] * (width - len(means))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(groups, path):
    from convnet.plotting import save_figure
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    shown = [(k, label) for k, _, label in GROUPS if groups.get(k)]
    cols = min(3, len(shown))
    rows = -(-len(shown) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), sharey=True, squeeze=False)
    for ax in axes.flat[len(shown):]:
        ax.axis("off")
    for ax, (key, label) in zip(axes.flat, shown):
        for seed, run in groups[key].items():
            epochs = range(1, len(run["per_epoch"]) + 1)
            ax.plot(epochs, [100 * a for a in run["per_epoch"]], lw=1, alpha=0.8, color=f"C{seed % 10}",
                    label=f"seed {seed}")
        ax.axhline(99.34, color="k", lw=0.8, ls="--")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel("test accuracy (%)\n(dashed: the seed's 99.34%)")
    axes[0][0].set_ylim(98.8, 99.8)
    axes.flat[len(shown) - 1].legend(fontsize=6, ncol=2, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m experiments.seeds", description=__doc__.split("\n")[0])
    p.add_argument("--results", type=Path, default=Path("experiments/results"), metavar="DIR")
    p.add_argument("--plot", type=Path, default=None, metavar="PNG", help="also draw every run's test accuracy")
    args = p.parse_args(argv)
    if not args.results.is_dir():
        p.error(f"--results {args.results} is not a directory")
    groups = {key: load_group(args.results, prefix) for key, prefix, _ in GROUPS}
    if not any(groups.values()):
        p.error(f"no recorded runs (keras-seed<S>.json, mnist-seed<S>.json, ...) in {args.results}")
    print(table(groups))
    print()
    print(per_epoch_table(groups))
    a = [r["accuracy"] for r in groups["convnet-keras"].values()]
    b = [r["accuracy"] for r in groups["keras"].values()]
    if len(a) > 1 and len(b) > 1:
        w = welch(a, b)
        low, high = w["ci95"]
        print(f"\nconvnet (--recipe keras) - Keras: {100 * w['difference']:+.3f} points, standard error "
              f"{100 * w['se']:.3f} ({w['difference'] / w['se']:+.1f} standard errors), 95% CI "
              f"[{100 * low:+.3f}, {100 * high:+.3f}] (Welch)")
    if args.plot:
        plot(groups, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
