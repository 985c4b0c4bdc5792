"""Re-measure the figures a reader of the README will reproduce, and compare them with what it says.

    python -m tools.readme_figures            # the quick model (seconds)
    python -m tools.readme_figures --default  # also the default run (about two minutes on 2 cores)

Each figure is found in README.md by its sentence, the command is run as the README writes it
(into a temporary folder), and the test accuracy in its ``metrics.json`` is compared with the
README's. Exit status 1 when a figure no longer holds. ``tests/test_readme.py`` runs the quick one.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), os.pardir))

#: (name, the README's sentence holding the figure, the command's arguments after `-m experiments.mnist`)
FIGURES = {
    "quick": (r"--epochs 1 --limit 5000`[^*]*reaches \*\*(\d+\.\d+)%\*\*", ["--epochs", "1", "--limit", "5000"]),
    "default": (r"It ends at \*\*(\d+\.\d+)% test accuracy \((\d+) errors\)\*\*", []),
}


def stated(name, readme_text):
    """The accuracy (in %) the README states for ``name``."""
    m = re.search(FIGURES[name][0], readme_text)
    if m is None:
        raise ValueError(f"README.md no longer states the {name} figure in the expected sentence")
    return float(m.group(1))


def measure(name, threads=None):
    """Run the README's command for ``name``; the test accuracy (in %) it reaches."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run")
        cmd = [sys.executable, "-m", "experiments.mnist", *FIGURES[name][1], "--out", out, "--quiet", "--no-plots"]
        if threads:
            cmd += ["--threads", str(threads)]
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(out, "metrics.json"), encoding="utf-8") as f:
            return round(100 * json.load(f)["final"]["test"]["accuracy"], 2)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.readme_figures", description=__doc__.splitlines()[0])
    p.add_argument("--default", action="store_true", help="also re-run the default experiment (minutes)")
    args = p.parse_args(argv)
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    failed = 0
    for name in ["quick"] + (["default"] if args.default else []):
        want, got = stated(name, text), measure(name)
        ok = abs(want - got) < 0.005
        failed += not ok
        print(f"{name}: README {want:.2f}%, measured {got:.2f}%  {'ok' if ok else 'DIFFERS'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
