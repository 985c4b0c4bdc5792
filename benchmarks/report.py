"""The three outputs of a run: a table on the terminal, a JSON file, a bar chart.

The JSON file holds every figure (every repeat of every column of every
row), the agreement checks, the settings and the machine description; the
table and the chart are views of it, so :func:`render_table` and
:func:`plot` take the same dict that :func:`write_json` writes.
"""
import json
import math
import os

#: how each column is titled in the table and the chart
TITLES = {"convnet": "convnet", "numpy": "numpy backend", "tensorflow": "TensorFlow", "torch": "PyTorch"}
#: ratio columns: (name in JSON, numerator, denominator)
RATIOS = (("convnet/tensorflow", "convnet", "tensorflow"), ("numpy/convnet", "numpy", "convnet"),
          ("convnet/torch", "convnet", "torch"))


def row_record(case):
    """JSON-ready record of a measured :class:`~benchmarks.cases.Case`."""
    results = {lib: timed.summary() for lib, timed in case.columns.items() if timed.times_s}
    ratios = {}
    for key, top, bottom in RATIOS:
        if top in results and bottom in results:
            ratios[key] = results[top]["median_s"] / results[bottom]["median_s"]
    not_timed = {lib: "agreement check failed: not timed" for lib, c in case.checks.items() if not c["passed"]}
    return {"group": case.group, "name": case.name, "detail": case.detail, "note": case.note,
            "results": results, "ratios": ratios, "checks": case.checks,
            "skipped": {**case.skipped, **not_timed}}


def format_seconds(s):
    if s is None or not math.isfinite(s):
        return "-"
    for unit, factor in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if s >= factor:
            value = s / factor
            return f"{value:.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"
    return f"{s * 1e9:.3g} ns"


def _cell(result):
    median = result["median_s"]
    spread = (result["p75_s"] - result["p25_s"]) / 2 / median * 100 if median > 0 else 0.0
    return f"{format_seconds(median)} ±{spread:.0f}%"


def _check_cell(checks):
    if not checks:
        return "-"
    worst = max(c["max_rel_err"] for c in checks.values())
    ok = all(c["passed"] for c in checks.values())
    return f"{'ok' if ok else 'FAIL'} {worst:.1e}"


def format_table(header, rows, breaks=(), first_left=True):
    """Fixed-width text lines: ``header``, a rule, then ``rows`` (lists of strings).

    Columns are right-aligned (the first left-aligned with ``first_left``);
    a blank line goes before every row index in ``breaks``.
    """
    widths = [max([len(header[i])] + [len(r[i]) for r in rows]) for i in range(len(header))]

    def fmt(cells):
        return "  ".join(c.ljust(w) if i == 0 and first_left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))
    out = [fmt(header), fmt(["-" * w for w in widths])]
    for i, row in enumerate(rows):
        if i in breaks:
            out.append("")
        out.append(fmt(row))
    return out


def render_table(report):
    """The table printed at the end of a run (plain text, fixed-width columns)."""
    libs = report["columns"]
    ratio_keys = [key for key, top, bottom in RATIOS if top in libs and bottom in libs]
    header = ["benchmark"] + [TITLES[lib] for lib in libs] + ratio_keys + ["check"]
    lines = []
    for row in report["rows"]:
        cells = [row["name"]]
        for lib in libs:
            if lib in row["results"]:
                cells.append(_cell(row["results"][lib]))
            else:
                cells.append("-")
        cells += [f"{row['ratios'][k]:.2f}" if k in row["ratios"] else "-" for k in ratio_keys]
        cells.append(_check_cell(row["checks"]))
        lines.append((cells, row))
    machine = report["machine"]
    blas = machine.get("numpy_blas") or {}
    threads = machine["threads"]
    out = [f"convnet benchmarks, {machine['date']}, {machine['cpu_model']}, {machine['cores']} cores, "
           f"{machine['os']}",
           "versions: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v),
           f"threads: numba {threads.get('numba')} ({threads.get('numba_threading_layer')}), numpy BLAS "
           f"{blas.get('internal_api')} {blas.get('version')} {blas.get('architecture')} "
           f"x{blas.get('num_threads')}"
           + (f", TF intra/inter {threads['tensorflow']['intra_op']}/{threads['tensorflow']['inter_op']}"
              if "tensorflow" in threads else "")
           + (f", torch {threads['torch']['num_threads']}" if "torch" in threads else ""),
           "times: median per call over the repeats, ±half the interquartile range; "
           "ratios > 1 mean the first library is slower",
           ""]
    breaks = {i for i in range(1, len(lines)) if lines[i][1]["group"] != lines[i - 1][1]["group"]}
    out += format_table(header, [cells for cells, _ in lines], breaks)
    out += ["", "first calls (numba compile or cache load, TF tracing), not in the figures above:"]
    for cells, row in lines:
        firsts = [f"{TITLES[lib]} {format_seconds(r['first_call_s'])}" for lib, r in row["results"].items()]
        if firsts:
            out.append(f"  {row['name']}: " + ", ".join(firsts))
    notes = list(report["notes"]) + [f"{row['name']}: {row['note']}" for row in report["rows"] if row["note"]]
    notes += [f"{row['name']}: {lib}: {why}" for row in report["rows"] for lib, why in row["skipped"].items()]
    if notes:
        out += ["", "notes:"] + [f"  - {n}" for n in notes]
    return "\n".join(out)


def _strict(value):
    """Copy of ``value`` with infinities/NaN as None: strict JSON, readable by any parser."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def write_json(report, path):
    from convnet.utils import atomic_path      # (here, not at the top: a keras worker imports this module)

    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(_strict(report), f, indent=1, allow_nan=False)
            f.write("\n")


def plot(report, path):
    """Horizontal bars: each column's time relative to TensorFlow (or to convnet without TF), log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    libs = report["columns"]
    base = "tensorflow" if "tensorflow" in libs else "convnet"
    rows = [r for r in report["rows"] if base in r["results"]]
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.42 * len(rows) * max(1, len(libs)) / 2))
    height = 0.8 / len(libs)
    colors = {"convnet": "#1f77b4", "numpy": "#9ecae1", "tensorflow": "#ff7f0e", "torch": "#d62728"}
    for k, lib in enumerate(libs):
        ys, values = [], []
        for i, row in enumerate(rows):
            if lib in row["results"]:
                ys.append(i + (k - (len(libs) - 1) / 2) * height)
                values.append(row["results"][lib]["median_s"] / row["results"][base]["median_s"])
        ax.barh(ys, values, height=height, color=colors.get(lib), label=TITLES[lib])
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
        lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r["name"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel(f"time relative to {TITLES[base]} (median; lower is faster)")
    machine = report["machine"]
    others = " / ".join(TITLES[lib] for lib in libs if lib != "convnet")
    ax.set_title(f"convnet vs {others}: {machine['cpu_model']}, {machine['cores']} cores, "
                 f"{machine['date'][:10]}", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    from convnet.utils import atomic_path

    with atomic_path(path, suffix=os.path.splitext(path)[1]) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
