"""The report of ``python -m benchmarks.isolated``: spreads, paired ratios, FLOPs, the floor and the tables."""
import statistics

from .isolated_worker import BATCH, EPOCH_STEPS, INFERENCE_BATCHES, LIBRARIES, TEST_IMAGES, TRAIN_IMAGES
from .report import format_table

TARGET_EPOCH_RATIO = 0.5                  # issue 15: convnet's fastest epoch <= 0.5 x Keras's fastest
TARGET_FLOOR_RATIO = 1.6                  # ... and <= 1.6 x the machine's floor for the epoch's FLOPs
TARGET_INFERENCE_RATIO = 0.6              # ... and inference <= 0.6 x Keras's, each at its fastest batch size


def spread(values):
    """Median, min, max and every value of a list of numbers (None when the list is empty)."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": list(values)}


def paired_ratios(results, key, top="convnet", bottom="keras"):
    """``top``'s ``key`` over ``bottom``'s, repeat by repeat, for the repeats where both ran.

    ``results`` maps a library to ``{repeat: worker record}``. Returns
    ``{"per_repeat": [{"repeat", "ratio", top, bottom}], "median", "min", "max",
    "median_over_fastest"}`` or None when no repeat has both. The last is
    ``top``'s median over ``bottom``'s fastest (smallest) figure in those
    repeats: the cautious reading when ``bottom``'s times scatter widely.
    """
    per_repeat = []
    for repeat in sorted(set(results.get(top, {})) & set(results.get(bottom, {}))):
        a, b = results[top][repeat].get(key), results[bottom][repeat].get(key)
        if a is None or not b:
            continue
        per_repeat.append({"repeat": repeat, "ratio": a / b, top: a, bottom: b})
    if not per_repeat:
        return None
    ratios = [p["ratio"] for p in per_repeat]
    fastest = min(p[bottom] for p in per_repeat)
    return {"per_repeat": per_repeat, "median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
            "median_over_fastest": statistics.median(p[top] for p in per_repeat) / fastest,
            "fastest": min(p[top] for p in per_repeat) / fastest}


def layer_macs(model):
    """Multiply-adds per image of each matrix product of ``model`` (a built convnet ``Sequential``).

    ``{layer name: (forward MACs, backward MACs)}`` for Conv2D and Dense
    layers: forward ``z = x W``; backward ``dW = x^T dz`` and, except for
    the first layer (no one needs its input gradient), ``dx = dz W^T``, each
    as many multiply-adds as the forward.
    """
    out = {}
    for i, layer in enumerate(model.layers):
        kernel = layer.params.get("kernel")
        if kernel is None:
            continue
        positions = int(np_prod(layer.output_shape[:-1]))     # output pixels (1 for Dense)
        forward = positions * int(kernel.size)
        out[layer.name] = (forward, forward * (1 if i == 0 else 2))
    return out


def np_prod(values):
    result = 1
    for v in values:
        result *= int(v)
    return result


def epoch_flops(model, images=TRAIN_IMAGES):
    """FLOPs (2 per multiply-add) of the matrix products of one training epoch over ``images`` images."""
    return 2.0 * images * sum(f + b for f, b in layer_macs(model).values())


def inference_flops(model, images=TEST_IMAGES):
    """FLOPs of the forward products over ``images`` images."""
    return 2.0 * images * sum(f for f, _ in layer_macs(model).values())


def summarize(results):
    """Per library: the spread of every measured figure over its successful repeats."""
    keys = ("epoch_s", "predict_s", "inference_s", "peak_rss_mb", "peak_rss_train_mb", "accuracy", "startup_s",
            "first_step_s", "epoch_measured_s", "predict_measured_s")
    return {lib: {"repeats_ok": len(runs), **{k: spread([runs[r].get(k) for r in sorted(runs)]) for k in keys}}
            for lib, runs in results.items()}



def _fmt_s(summary):
    if not summary:
        return "-"
    return f"{summary['median']:.3g} s ({summary['min']:.3g}-{summary['max']:.3g})"


def _fmt(summary, spec, unit=""):
    if not summary:
        return "-"
    return (f"{format(summary['median'], spec)}{unit} ({format(summary['min'], spec)}-"
            f"{format(summary['max'], spec)})")


def render_table(report):
    """The text printed at the end of a parent run."""
    machine, settings = report["machine"], report["settings"]
    blas = machine.get("numpy_blas") or {}
    out = [f"convnet vs Keras, one process per library: {machine['date']}, {machine['cpu_model']}, "
           f"{machine['cores']} cores, {machine['os']}",
           "versions: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v),
           f"numpy BLAS: {blas.get('internal_api')} {blas.get('version')} {blas.get('architecture')}",
           "environment: " + (", ".join(f"{k}={v}" for k, v in machine["env"].items() if v is not None)
                              or "none of the variables that change BLAS/thread behaviour is set"),
           f"threads: {settings['threads']} per library; repeats: {settings['repeats']}; epoch = "
           f"{settings['steps']} batches of {BATCH}"
           + (f" scaled x{settings['epoch_scale']:g}" if settings["epoch_scale"] != 1 else "")
           + f"; predict = {settings['images']:,} images"
           + (f" scaled x{settings['predict_scale']:g}" if settings["predict_scale"] != 1 else ""),
           "figures: median (min-max) over the repeats", ""]
    header = ["library", "runs", "epoch", "evaluate (10,000), fastest batch", "predict (10,000)", "peak RSS",
              "test accuracy", "import + 1st step", "start-up"]
    rows = []
    for lib, s in report["summary"].items():
        rows.append([lib, str(s["repeats_ok"]), _fmt_s(s["epoch_s"]), _fmt_s(s["inference_s"]),
                     _fmt_s(s["predict_s"]), _fmt(s["peak_rss_mb"], ".0f", " MB"), _fmt(s["accuracy"], ".4f"),
                     _fmt_s(s["first_step_s"]), _fmt_s(s["startup_s"])])
    out += format_table(header, rows)
    ratios = report.get("ratios") or {}
    if ratios.get("epoch"):
        out += ["", "paired ratios convnet/keras (same repeat; < 1: convnet faster):"]
        predict = {p["repeat"]: p["ratio"] for p in (ratios.get("predict") or {}).get("per_repeat", [])}
        for p in ratios["epoch"]["per_repeat"]:
            extra = f", predict {predict[p['repeat']]:.3f}" if p["repeat"] in predict else ""
            out.append(f"  repeat {p['repeat']}: epoch {p['ratio']:.3f} "
                       f"({p['convnet']:.3g} s / {p['keras']:.3g} s){extra}")
        e = ratios["epoch"]
        out.append(f"  median: epoch {e['median']:.3f} (min {e['min']:.3f}, max {e['max']:.3f})"
                   + (f", predict {ratios['predict']['median']:.3f}" if ratios.get("predict") else ""))
        out.append(f"  convnet's median over keras's fastest: epoch {e['median_over_fastest']:.3f}"
                   + (f", predict {ratios['predict']['median_over_fastest']:.3f}" if ratios.get("predict") else ""))
        caveat = (f"; an estimate: {settings['steps']} batches timed, not a whole epoch"
                  if settings["steps"] != EPOCH_STEPS else "")
        out += ["", f"EPOCH RATIO convnet/keras, fastest over fastest: {e['fastest']:.3f} "
                    f"(target <= {report['target_epoch_ratio']}: {_verdict(report['epoch_ratio_meets_target'])}"
                    f"{caveat}); median of the {len(e['per_repeat'])} paired ratio(s): {e['median']:.3f}"]
        inf = ratios.get("inference")
        if inf:
            out.append(f"INFERENCE RATIO convnet/keras (evaluate, 10,000 images, each at its fastest of batch sizes "
                       f"{', '.join(map(str, INFERENCE_BATCHES))}), fastest over fastest: {inf['fastest']:.3f} "
                       f"(target <= {TARGET_INFERENCE_RATIO}: {_verdict(report['inference_ratio_meets_target'])}); "
                       f"median of the paired ratios: {inf['median']:.3f}")
        rss = ratios.get("peak_rss")
        if rss:
            train = ratios.get("peak_rss_train")
            out.append(f"PEAK RSS convnet/keras: {rss['median']:.3f} over the whole run (median of the paired ratios; "
                       f"target <= 1/3)" + (f", {train['median']:.3f} up to the end of the epoch (before the "
                                             f"inference sweep)" if train else ""))
    floor = report.get("floor")
    if floor:
        out += ["", f"machine floor: the epoch's matrix products are {floor['epoch_flops'] / 1e12:.3f} TFLOP "
                    f"({floor['epoch_flops'] / TRAIN_IMAGES / 1e6:.2f} MFLOP per image, forward and backward); a "
                    f"{floor['gemm_size']}x{floor['gemm_size']} float32 GEMM ran at {floor['gemm_gflops']:.0f} GFLOP/s "
                    f"(best of {len(floor['gemm_gflops_values'])} measurements, "
                    f"{min(floor['gemm_gflops_values']):.0f}-{max(floor['gemm_gflops_values']):.0f}) on "
                    f"{settings['threads']} thread(s): floor {floor['epoch_floor_s']:.2f} s per epoch"]
        if floor.get("convnet_over_floor") is not None:
            out.append(f"FLOOR RATIO convnet's fastest epoch / floor: {floor['convnet_over_floor']:.2f} "
                       f"(target <= {TARGET_FLOOR_RATIO}: {_verdict(floor['convnet_over_floor'] <= TARGET_FLOOR_RATIO)})"
                       + (f"; keras: {floor['keras_over_floor']:.2f}" if floor.get("keras_over_floor") else ""))
    if report["failures"]:
        out += ["", "FAILED workers:"]
        for f in report["failures"]:
            out.append(f"  {f['library']}, repeat {f['repeat']}: {f['error']}")
            out += [f"    | {line}" for line in f.get("stderr_tail", "").splitlines()]
    if report["notes"]:
        out += ["", "notes:"] + [f"  - {n}" for n in report["notes"]]
    return "\n".join(out)


def _verdict(met):
    return "met" if met else "NOT met"



def floor_report(gflops_values, summary, model):
    """The machine's floor for an epoch and each library's fastest epoch over it."""
    from .machine import GEMM_SIZE

    flops = epoch_flops(model)
    best = max(gflops_values)
    floor = {"epoch_flops": flops, "inference_flops": inference_flops(model), "gemm_size": GEMM_SIZE,
             "gemm_gflops": best, "gemm_gflops_values": gflops_values, "epoch_floor_s": flops / (best * 1e9),
             "layer_macs_per_image": layer_macs(model), "target": TARGET_FLOOR_RATIO}
    floor["inference_floor_s"] = floor["inference_flops"] / (best * 1e9)
    for lib in ("convnet", "keras"):
        epochs = (summary.get(lib) or {}).get("epoch_s")
        floor[f"{lib}_over_floor"] = epochs["min"] / floor["epoch_floor_s"] if epochs else None
    return floor



# ------------------------------------------------------------------ scaling
def scaling_rows(results):
    """Table rows ``{batch, threads, <lib>_epoch_s, <lib>_images_per_s, ratio}``: each cell the fastest repeat.

    ``results`` maps ``(lib, batch, threads)`` to the list of worker records.
    """
    keys = sorted({(b, t) for _, b, t in results})
    rows = []
    for batch, threads in keys:
        row = {"batch": batch, "threads": threads}
        for lib in LIBRARIES:
            records = results.get((lib, batch, threads)) or []
            if records:
                best = min(r["epoch_s"] for r in records)
                row[f"{lib}_epoch_s"] = best
                row[f"{lib}_images_per_s"] = TRAIN_IMAGES / best
                row[f"{lib}_epoch_values"] = [r["epoch_s"] for r in records]
        if row.get("convnet_epoch_s") and row.get("keras_epoch_s"):
            row["ratio"] = row["convnet_epoch_s"] / row["keras_epoch_s"]
        rows.append(row)
    return rows


def render_scaling(rows):
    """The scaling table as text (one line per batch size and thread count)."""
    header = ["batch", "threads", "convnet epoch", "convnet images/s", "keras epoch", "keras images/s",
              "convnet/keras"]
    lines = []
    for row in rows:
        cells = [str(row["batch"]), str(row["threads"])]
        for lib in LIBRARIES:
            t = row.get(f"{lib}_epoch_s")
            cells += [f"{t:.2f} s" if t else "-", f"{row[f'{lib}_images_per_s']:,.0f}" if t else "-"]
        cells.append(f"{row['ratio']:.2f}" if row.get("ratio") else "-")
        lines.append(cells)
    return "\n".join(format_table(header, lines, first_left=False))


def plot_scaling(rows, path):
    """images/s against batch size, one line per library and thread count (PNG at ``path``)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from convnet.plotting import save_figure

    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    styles = {"convnet": "-o", "keras": "--s"}
    for lib in LIBRARIES:
        for threads in sorted({r["threads"] for r in rows}):
            points = [(r["batch"], r[f"{lib}_images_per_s"]) for r in rows
                      if r["threads"] == threads and r.get(f"{lib}_images_per_s")]
            if points:
                ax.plot(*zip(*points), styles[lib], label=f"{lib}, {threads} thread{'s' if threads > 1 else ''}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({r["batch"] for r in rows}), [str(b) for b in sorted({r["batch"] for r in rows})])
    ax.set_xlabel("batch size")
    ax.set_ylabel("training images per second (one epoch of fit)")
    ax.set_title("Seed model, one process per library")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)
